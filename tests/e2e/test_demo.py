"""`make demo`'s program: it serves, prints its URL, and Ctrl-C stops everything."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.support import http_get, wait_for


def test_demo_serves_and_stops_cleanly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C" in line or not line:
                break
        url = next(ln.split()[2] for ln in lines if ln.startswith("public URL:"))
        bodies = {http_get(url)[1] for _ in range(6)}
        assert bodies == {
            "<h1>Served by the blue back end</h1>\n",
            "<h1>Served by the green back end</h1>\n",
        }
        gateway_files = next(ln.split()[2] for ln in lines if ln.startswith("gateway files:"))
        with open(f"{gateway_files}/haproxy.pid") as f:
            pid = int(f.read().split()[-1])
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        proc.stdout.close()  # type: ignore[union-attr]
    assert proc.returncode == 0

    def gone() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_for(gone, timeout=10, what="the demo's haproxy to stop")
