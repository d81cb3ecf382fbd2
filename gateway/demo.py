"""A gateway on one machine: etcd, two back ends, one agent and a route.

`make demo` runs this: it starts everything on loopback, publishes one route,
prints the public URL and keeps serving until Ctrl-C, then stops every process
it started.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ADDRESS = "127.0.0.80"
PUBLIC_PORT = 30080


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
            return
        time.sleep(0.05)
    raise SystemExit(f"demo: {what} did not start within {timeout:.0f}s")


def _put(etcd: str, key: str, value: dict[str, object]) -> None:
    import base64

    body = json.dumps(
        {
            "key": base64.b64encode(key.encode()).decode(),
            "value": base64.b64encode(json.dumps(value).encode()).decode(),
        }
    )
    req = urllib.request.Request(
        etcd + "/v3/kv/put", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(req, timeout=5).close()


def main() -> int:
    # Ctrl-C stops the demo even when it was started from a shell that leaves
    # SIGINT ignored (a background job); Python would then never raise it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for binary in ("etcd", "haproxy"):
        if shutil.which(binary) is None:
            print(f"demo: {binary} is not installed; run `make deps`", file=sys.stderr)
            return 1
    work = Path(tempfile.mkdtemp(prefix="marina-demo-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port, peer = _free_port(), _free_port()
        etcd = f"http://127.0.0.1:{port}"
        log = open(work / "demo.log", "ab")  # noqa: SIM115 - lives as long as the processes
        procs.append(
            subprocess.Popen(
                [
                    "etcd",
                    "--data-dir",
                    str(work / "etcd"),
                    "--listen-client-urls",
                    etcd,
                    "--advertise-client-urls",
                    etcd,
                    "--listen-peer-urls",
                    f"http://127.0.0.1:{peer}",
                    "--log-level",
                    "error",
                ],
                stdout=log,
                stderr=log,
            )
        )
        _wait(etcd + "/health", "etcd")
        backends = []
        for name in ("blue", "green"):
            site = work / name
            site.mkdir()
            (site / "index.html").write_text(f"<h1>Served by the {name} back end</h1>\n")
            bport = _free_port()
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "http.server",
                        str(bport),
                        "--bind",
                        "127.0.0.1",
                        "--directory",
                        str(site),
                    ],
                    stdout=log,
                    stderr=log,
                )
            )
            backends.append({"host": "127.0.0.1", "port": bport})
        metrics = _free_port()
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway.cli",
                    "--etcd",
                    etcd,
                    "--cluster",
                    "demo",
                    "--address",
                    ADDRESS,
                    "--state-dir",
                    str(work / "gateway"),
                    "--metrics-port",
                    str(metrics),
                ],
                stdout=log,
                stderr=log,
            )
        )
        _put(
            etcd,
            "/marina/gateway/routes/demo/web",
            {"port": PUBLIC_PORT, "mode": "http", "backends": backends},
        )
        url = f"http://{ADDRESS}:{PUBLIC_PORT}/"
        _wait(url, "the gateway route")
        print(f"etcd:          {etcd}")
        print(f"public URL:    {url}  (balanced over two back ends)")
        print(f"metrics:       http://127.0.0.1:{metrics}/metrics")
        print(f"gateway files: {work / 'gateway'}")
        print("Routes live under /marina/gateway/routes/demo/ in etcd. Ctrl-C stops everything.")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("demo: a process stopped; see " + str(work / "demo.log"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
