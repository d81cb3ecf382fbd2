"""Real servers for tests and benchmarks: etcd, HTTP back ends, gateway agents."""

from __future__ import annotations

import contextlib
import http.server
import itertools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from catalog.pki import ensure_etcd_pki
from catalog.server import EmbeddedEtcd

_addresses = itertools.count(2)


def fresh_address() -> str:
    """A loopback address no other test in this process uses (127.77.x.y)."""
    n = next(_addresses) + (os.getpid() % 50) * 1000
    return f"127.77.{(n // 250) % 250 + 1}.{n % 250 + 2}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct free ports: bind(0) can hand out one twice."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(host)
        if port not in ports:
            ports.append(port)
    return ports


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # a probe that fails is retried until the deadline
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class Etcd:
    """An etcd server on loopback with its data in `data_dir`."""

    def __init__(self, data_dir: Path, *, port: int | None = None, pki: Path | None = None) -> None:
        """With `pki` (a directory), it speaks TLS and wants client certificates."""
        self.data_dir = data_dir
        self.port = port or free_port()
        self.peer_port = free_port()
        self.pki = ensure_etcd_pki(pki) if pki else None
        self.tls = self.pki.client if self.pki else None
        self.url = f"{'https' if pki else 'http'}://127.0.0.1:{self.port}"
        self._context: ssl.SSLContext | None = None
        if self.tls:
            self._context = ssl.create_default_context(cafile=str(self.tls.ca))
            self._context.load_cert_chain(str(self.tls.cert), str(self.tls.key))

    def start(self) -> Etcd:
        """Start (or start again) the same server, through Marina's own launcher."""
        self._etcd = EmbeddedEtcd(self.data_dir, self.port, peer_port=self.peer_port, pki=self.pki)
        self._etcd.spawn()
        self._etcd.wait_healthy()
        return self

    def stop(self) -> None:
        self._etcd.stop()

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10, context=self._context) as r:
            result: dict[str, Any] = json.loads(r.read())
            return result

    def put(self, key: str, value: str | dict[str, Any]) -> int:
        import base64

        text = value if isinstance(value, str) else json.dumps(value)
        reply = self.call(
            "/v3/kv/put",
            {
                "key": base64.b64encode(key.encode()).decode(),
                "value": base64.b64encode(text.encode()).decode(),
            },
        )
        return int(reply["header"]["revision"])

    def put_many(self, items: list[tuple[str, str]]) -> int:
        """Write many keys in transactions of at most 128 operations."""
        import base64

        revision = 0
        for start in range(0, len(items), 128):
            ops = [
                {
                    "request_put": {
                        "key": base64.b64encode(k.encode()).decode(),
                        "value": base64.b64encode(v.encode()).decode(),
                    }
                }
                for k, v in items[start : start + 128]
            ]
            reply = self.call("/v3/kv/txn", {"success": ops})
            revision = int(reply["header"]["revision"])
        return revision

    def delete(self, key: str, *, prefix: bool = False) -> int:
        import base64

        body = {"key": base64.b64encode(key.encode()).decode()}
        if prefix:
            from gateway.etcd import prefix_end

            body["range_end"] = base64.b64encode(prefix_end(key.encode())).decode()
        return int(self.call("/v3/kv/deleterange", body)["header"]["revision"])

    def get(self, key: str) -> Any:
        import base64

        reply = self.call("/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()})
        kvs = reply.get("kvs", [])
        return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None

    def compact(self) -> None:
        revision = int(self.call("/v3/kv/range", {"key": "AA=="})["header"]["revision"])
        self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})


class Backend:
    """An HTTP server on loopback that answers with its own name."""

    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        self.name = name
        body = name.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 512

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # health checks connect and hang up; that is not an error

        self.server = Server((host, 0), Handler)
        self.host = host
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def http_get(url: str, *, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


class Gateway:
    """A `marina-gateway` process."""

    def __init__(
        self, etcd_url: str, cluster: str, address: str, state_dir: Path, *extra: str
    ) -> None:
        self.cluster = cluster
        self.address = address
        self.state_dir = state_dir
        self.ident = f"{cluster}-{address}"
        self.args = [
            sys.executable,
            "-m",
            "gateway.cli",
            "--etcd",
            etcd_url,
            "--cluster",
            cluster,
            "--address",
            address,
            "--state-dir",
            str(state_dir),
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state_dir.parent / f"gateway-{address}.log"

    def start(self) -> Gateway:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as logfile:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=logfile)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # An agent killed earlier leaves its HAProxy serving; end it too.
        for record in self.state_dir.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                for pid in record.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)

    def url(self, port: int) -> str:
        return f"http://{self.address}:{port}/"


class FastBackend:
    """An HTTP back end that answers its name, served by its own HAProxy process.

    HAProxy answers `http-request return` without a Python interpreter in the
    path, so load tests measure the gateway, not the back end.
    """

    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        self.name, self.host, self.port = name, host, free_port(host)
        self.config = Path(tempfile.mkdtemp(prefix="marina-backend-")) / "backend.cfg"
        self.config.write_text(
            "global\n    maxconn 4000\n"
            "defaults\n    mode http\n    timeout client 10s\n    timeout connect 5s\n"
            "    timeout server 10s\n"
            f"frontend be\n    bind {host}:{self.port}\n"
            f'    http-request return status 200 content-type text/plain string "{name}"\n'
        )
        self.proc = subprocess.Popen(
            ["haproxy", "-f", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _connects(host, self.port), what=f"back end {name}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.config.parent, ignore_errors=True)


class Hammer:
    """A load generator process; `result()` waits for its JSON counts."""

    def __init__(self, host: str, port: int, *, seconds: float, rate: float) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.loadgen",
                "hammer",
                host,
                str(port),
                str(seconds),
                str(rate),
            ],
            stdout=subprocess.PIPE,
        )

    def result(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=120)
        result: dict[str, Any] = json.loads(out)
        return result


def _connects(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True
