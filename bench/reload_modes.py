"""Which HAProxy reload loses fewer connections under connection churn?

Compares the two seamless reloads the gateway could use, each under the same
new-connection load from wrk, and prints JSON:

- `master_cli`: master-worker mode (`-W -S`), `reload` on the master CLI;
- `socket_handover`: a new process started with `-x <stats socket> -sf <old>`
  (`expose-fd listeners`), which the gateway uses.

    python bench/reload_modes.py [--reloads N]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gateway import Wrk
from tests.support import FastBackend, free_port, wait_for


def config(work: Path, port: int, backend: FastBackend) -> Path:
    path = work / "haproxy.cfg"
    path.write_text(
        "global\n    maxconn 4000\n"
        f"    stats socket {work}/stats.sock mode 600 level admin expose-fd listeners\n"
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n"
        "    timeout server 30s\n"
        f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n"
        f"backend be\n    server s1 {backend.host}:{backend.port}\n"
    )
    return path


def unix_command(path: Path, line: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(line.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def run_master_cli(backend: FastBackend, reloads: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="marina-reload-"))
    port = free_port()
    cfg = config(work, port, backend)
    master = work / "master.sock"
    proc = subprocess.Popen(
        ["haproxy", "-W", "-S", str(master), "-f", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(master.exists, what="master CLI")
        wait_for(lambda: _serves(port), what="first worker")
        load = Wrk("127.0.0.1", port, seconds=reloads * 0.2 + 1)
        time.sleep(0.5)
        for _ in range(reloads):
            # The master re-executes itself on reload; its socket is briefly gone.
            wait_for(
                lambda: unix_command(master, "reload") is not None,
                what="the master CLI to take a reload",
            )
            time.sleep(0.2)
        return {"reloads": reloads, **load.result()}
    finally:
        proc.terminate()
        proc.wait()


def run_socket_handover(backend: FastBackend, reloads: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="marina-reload-"))
    port = free_port()
    cfg = config(work, port, backend)
    procs = [
        subprocess.Popen(
            ["haproxy", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    ]
    try:
        wait_for(lambda: _serves(port), what="first process")
        load = Wrk("127.0.0.1", port, seconds=reloads * 0.2 + 1)
        time.sleep(0.5)
        for _ in range(reloads):
            old = procs[-1]
            procs.append(
                subprocess.Popen(
                    [
                        "haproxy",
                        "-f",
                        str(cfg),
                        "-x",
                        str(work / "stats.sock"),
                        "-sf",
                        str(old.pid),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            time.sleep(0.2)
        return {"reloads": reloads, **load.result()}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            proc.wait()


def _serves(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reloads", type=int, default=30)
    args = parser.parse_args()
    backend = FastBackend("reload-bench")
    try:
        result = {
            "benchmark": "reload_modes",
            "master_cli": run_master_cli(backend, args.reloads),
            "socket_handover": run_socket_handover(backend, args.reloads),
        }
    finally:
        backend.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
