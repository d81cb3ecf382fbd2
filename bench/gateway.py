"""Gateway benchmark: route latency, loss under change, bursts, reloads, memory.

Prints one JSON document. Everything runs on loopback: a real etcd, real
HAProxy started by the agent, back ends and load generators as processes.

    python bench/gateway.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import (
    Etcd,
    FastBackend,
    Gateway,
    free_port,
    fresh_address,
    http_get,
    wait_for,
)

TARGETS = {
    "new_route_p50_ms": 20,
    "new_route_p99_ms": 50,
    "failed_requests": 0,
    "burst_2000_s": 1.5,
    "burst_10000_s": 6.0,
    "backend_change_reloads": 0,
}


def route(port: int, *backends: FastBackend, mode: str = "http") -> str:
    return json.dumps(
        {
            "port": port,
            "mode": mode,
            "backends": [{"host": b.host, "port": b.port} for b in backends],
        }
    )


def first_200(host: str, port: int, *, timeout: float = 10.0) -> float:
    """Poll with raw requests until one answers 200; the monotonic time it did."""
    request = b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                s.sendall(request)
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return time.monotonic()
        except OSError:
            pass
        time.sleep(0.0005)
    raise TimeoutError(f"{host}:{port} never answered 200")


class Wrk:
    """wrk opening a new connection for every request (`Connection: close`)."""

    def __init__(self, host: str, port: int, *, seconds: float) -> None:
        if shutil.which("wrk") is None:
            raise SystemExit("bench: wrk is not installed (Debian package wrk)")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                "wrk",
                "-t1",
                "-c6",
                f"-d{math.ceil(seconds)}s",
                "-H",
                "Connection: close",
                f"http://{host}:{port}/",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )

    def result(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=120)
        if "requests in" not in out:
            raise SystemExit(f"bench: wrk printed no summary:\n{out}")
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        failures = {}
        socket_errors = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
        )
        if socket_errors:
            for kind, n in zip(
                ("connect", "read", "write", "timeout"), socket_errors.groups(), strict=True
            ):
                if int(n):
                    failures[kind] = int(n)
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if non_2xx:
            failures["non_2xx"] = int(non_2xx.group(1))
        return {
            "requests": requests,
            "rate": rate,
            "failed": sum(failures.values()),
            "failures": failures,
        }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def metrics(address: str, port: int) -> dict[str, float]:
    _, text = http_get(f"http://{address}:{port}/metrics")
    return {
        ln.split()[0]: float(ln.split()[1])
        for ln in text.splitlines()
        if ln and not ln.startswith("#")
    }


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def start_gateway(etcd: Etcd, work: Path, cluster: str, port_range: str) -> tuple[Gateway, int]:
    address = fresh_address()
    mport = free_port(address)
    gw = Gateway(
        etcd.url,
        cluster,
        address,
        work / f"gw-{cluster}",
        "--port-range",
        port_range,
        "--metrics-port",
        str(mport),
        "--log-level",
        "WARNING",
    ).start()
    wait_for(
        lambda: http_get(f"http://{address}:{mport}/metrics")[0] == 200,
        timeout=20,
        what="gateway metrics",
    )
    wait_for(
        lambda: metrics(address, mport)["marina_gateway_reloads_total"] >= 1,
        timeout=20,
        what="gateway's first configuration",
    )
    return gw, mport


def new_route_latency(
    etcd: Etcd, gw: Gateway, backend: FastBackend, ports: list[int], name: str
) -> list[float]:
    samples = []
    for i, port in enumerate(ports):
        time.sleep(0.05)  # one at a time: each put meets an idle agent
        started = time.monotonic()
        etcd.put(f"/marina/gateway/routes/{gw.cluster}/{name}{i}", route(port, backend))
        samples.append((first_200(gw.address, port) - started) * 1000)
    return samples


def burst(
    etcd: Etcd, gw: Gateway, backend: FastBackend, count: int, base: int
) -> dict[str, object]:
    items = [
        (f"/marina/gateway/routes/{gw.cluster}/b{i}", route(base + i, backend))
        for i in range(count)
    ]
    started = time.monotonic()
    revision = etcd.put_many(items)
    written = time.monotonic() - started
    first_200(gw.address, base + count - 1, timeout=120)
    wait_for(
        lambda: (
            (etcd.get(f"/marina/gateway/status/{gw.ident}") or {}).get("applied_revision", 0)
            >= revision
        ),
        timeout=120,
        interval=0.005,
        what="burst applied",
    )
    converged = time.monotonic() - started
    sample = range(0, count, max(1, count // 200))
    serving = sum(http_get(gw.url(base + i))[0] == 200 for i in sample)
    return {
        "routes": count,
        "seconds": round(converged, 3),
        "write_seconds": round(written, 3),
        "sampled": len(sample),
        "sampled_serving": serving,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller figures, for a smoke run")
    args = parser.parse_args()
    n_routes = 10 if args.quick else 40
    n_changes = 40 if args.quick else 200
    bursts = (200, 1000) if args.quick else (2000, 10000)
    work = Path(tempfile.mkdtemp(prefix="marina-bench-"))
    etcd = Etcd(work / "etcd").start()
    backends = [FastBackend(f"f{i}") for i in range(3)]
    gateways: list[Gateway] = []
    result: dict[str, object] = {"benchmark": "gateway", "targets": TARGETS}
    try:
        gw, mport = start_gateway(etcd, work, "lat", "30000-30999")
        gateways.append(gw)
        in_range = new_route_latency(
            etcd, gw, backends[0], list(range(30000, 30000 + n_routes)), "r"
        )
        outside = new_route_latency(
            etcd, gw, backends[0], [free_port(gw.address) for _ in range(n_routes // 2)], "o"
        )
        result["new_route_ms"] = {
            "routes": len(in_range),
            "p50": round(statistics.median(in_range), 2),
            "p99": round(percentile(in_range, 0.99), 2),
        }
        result["new_route_outside_range_ms"] = {
            "routes": len(outside),
            "p50": round(statistics.median(outside), 2),
            "p99": round(percentile(outside, 0.99), 2),
        }

        # (b) route changes under new-connection load; every fourth change reloads.
        etcd.put(f"/marina/gateway/routes/{gw.cluster}/hot", route(30999, *backends))
        first_200(gw.address, 30999)
        before = metrics(gw.address, mport)
        load = Wrk(gw.address, 30999, seconds=10 if not args.quick else 4)
        time.sleep(0.3)
        spare_ports = [free_port(gw.address) for _ in range(n_changes // 4 + 1)]
        for i in range(n_changes):
            if i % 4 == 3:
                port = spare_ports[i // 4]
                etcd.put(f"/marina/gateway/routes/{gw.cluster}/x{i}", route(port, backends[0]))
            else:
                chosen = backends[: 1 + i % 3]
                etcd.put(f"/marina/gateway/routes/{gw.cluster}/hot", route(30999, *chosen))
            time.sleep(0.02)
        changed_for = time.monotonic() - load.started
        loaded = load.result()
        after = metrics(gw.address, mport)
        result["changes_under_load"] = {
            "changes": n_changes,
            "changes_seconds": round(changed_for, 2),
            "requests": loaded["requests"],
            "new_connections_per_s": loaded["rate"],
            "failed_requests": loaded["failed"],
            "failures": loaded["failures"],
            "reloads": after["marina_gateway_reloads_total"]
            - before["marina_gateway_reloads_total"],
        }

        # (d) backend-only changes: replicas added, removed and moved.
        before = metrics(gw.address, mport)
        key = f"/marina/gateway/routes/{gw.cluster}/r0"
        for i in range(100):
            chosen = [backends[(i + j) % 3] for j in range(1 + i % 3)]
            etcd.put(key, route(30000, *chosen))
            time.sleep(0.015)
        wait_for(
            lambda: (
                metrics(gw.address, mport)["marina_gateway_applied_revision"]
                >= before["marina_gateway_applied_revision"] + 100
            ),
            what="backend changes",
        )
        after = metrics(gw.address, mport)
        result["backend_changes"] = {
            "changes": 100,
            "reloads": after["marina_gateway_reloads_total"]
            - before["marina_gateway_reloads_total"],
            "runtime_updates": after["marina_gateway_runtime_updates_total"]
            - before["marina_gateway_runtime_updates_total"],
        }
        result["latency_gateway_peak_rss_mb"] = peak_rss_mb(gw.proc.pid)  # type: ignore[union-attr]
        gw.stop()

        # (c) bursts, each on a fresh gateway whose range holds the whole burst.
        result["bursts"] = []
        for count in bursts:
            bgw, _ = start_gateway(etcd, work, f"burst{count}", f"20000-{20000 + count + 99}")
            gateways.append(bgw)
            figures = burst(etcd, bgw, backends[1], count, 20000)
            figures["agent_peak_rss_mb"] = peak_rss_mb(bgw.proc.pid)  # type: ignore[union-attr]
            result["bursts"].append(figures)  # type: ignore[union-attr]
            bgw.stop()
        result["agent_peak_rss_mb"] = max(
            [result["latency_gateway_peak_rss_mb"]]
            + [b["agent_peak_rss_mb"] for b in result["bursts"]]  # type: ignore[union-attr]
        )
        result["cpu_count"] = os.cpu_count()
    finally:
        for g in gateways:
            g.stop()
        for b in backends:
            b.stop()
        etcd.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
