"""Gateway benchmark against confd, in the same run, on the same machine.

Every gateway figure is taken with the gateway's default settings (port range
30000-32767, default debouncing). confd (see `bench/confd.py`) renders the
same route keys into HAProxy and reloads it seamlessly; the `ratios` are
gateway / confd, so below 0.5 means at most half of confd's time. confd's
HAProxy gets the gateway's start-up tuning; `vs_stock_confd_*` compare with
confd under HAProxy's stock global section, as its users run it.

Each confd figure is taken beside the gateway's: new-route samples alternate
between the two (each on its own address, both running), and confd's burst
and table follow the gateway's at once. On a machine shared with other work,
load changes by the minute; measured minutes apart, the ratios said more
about that than about either agent.

- `reload_path_ms`: a new route on a port outside the range (a reload);
- `runtime_path_ms`: a new route on a port inside the range (no reload);
- `burst_2000`: 2,000 routes written at once, inside and outside the range
  (the median of five rounds, each sample listed, and the ratio of each
  round to confd's burst taken right after it);
- `table_10000`: one route added to a table of 10,000 (2,700 in the range,
  the rest on ports of their own), on both paths, against the same with a
  few routes (`vs_few_routes_p50`); `table_10000_held_unchecked` the same
  with no health checks on the held routes (the new ones keep theirs), to
  show what checking 10,000 routes every 2 s costs the machine;
- `changes_under_load`, `backend_changes`: requests lost and reloads while
  routes change under new-connection load from wrk.

Prints one JSON document. Everything runs on loopback.

    python bench/gateway.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
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

from bench.confd import Confd, locate
from tests.support import (
    Etcd,
    FastBackend,
    Gateway,
    free_port,
    http_get,
    wait_for,
)

# Bursts: rounds of the gateway inside and outside the range, then confd.
ROUNDS = 5
TARGETS = {
    "reload_path_ratio_p50_and_max": 0.5,
    "runtime_path_ratio_p50_and_max": 0.5,
    "burst_2000_ratio": 0.5,
    "failed_requests": 0,
    "backend_change_reloads": 0,
}


_used: set[str] = set()


def fresh_address() -> str:
    """A loopback address of the benchmark's own (127.79.x.y), picked at
    random: tests running beside it take theirs from 127.77.x.y by process
    id, and one of their servers on a port of a burst would be taken for a
    route the agent failed to serve."""
    while True:
        address = f"127.79.{random.randint(0, 254)}.{random.randint(2, 254)}"
        if address not in _used:
            _used.add(address)
            return address


def route(port: int, *backends: FastBackend, mode: str = "http", check: bool = True) -> str:
    doc: dict[str, object] = {
        "port": port,
        "mode": mode,
        "backends": [{"host": b.host, "port": b.port} for b in backends],
    }
    if not check:
        doc["check"] = False
    return json.dumps(doc)


REQUEST = b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"


def answers_200(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(REQUEST)
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def first_200(host: str, port: int, *, timeout: float = 10.0) -> float:
    """Poll with raw requests until one answers 200; the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers_200(host, port):
            return time.monotonic()
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


class Target:
    """What the measurements talk to: a gateway agent or confd, one cluster
    of route keys, served on one address."""

    def __init__(
        self, cluster: str, address: str, stop: Any, pid: int, ident: str | None = None
    ) -> None:
        self.cluster, self.address, self.stop, self.pid = cluster, address, stop, pid
        self.ident = ident  # a gateway's id in its status key


def start_gateway(etcd: Etcd, work: Path, cluster: str) -> tuple[Target, Gateway, int]:
    """A gateway with default settings, apart from logging and a metrics port."""
    address = fresh_address()
    mport = port_for_harness()
    gw = Gateway(
        etcd.url,
        cluster,
        address,
        work / f"gw-{cluster}",
        "--metrics-port",
        str(mport),
        "--log-level",
        "WARNING",
    ).start()
    wait_for(
        lambda: http_get(f"http://127.0.0.1:{mport}/metrics")[0] == 200,
        timeout=20,
        what="gateway metrics",
    )
    wait_for(
        lambda: metrics("127.0.0.1", mport)["marina_gateway_reloads_total"] >= 1,
        timeout=20,
        what="gateway's first configuration",
    )
    assert gw.proc is not None
    return Target(cluster, address, gw.stop, gw.proc.pid, gw.ident), gw, mport


def start_confd(etcd: Etcd, binary: Path, cluster: str, *, tuned: bool = True) -> Target:
    address = fresh_address()
    placeholder = port_for_harness(address)
    confd = Confd(
        binary,
        etcd_url=etcd.url,
        cluster=cluster,
        address=address,
        placeholder=placeholder,
        tuned=tuned,
    )
    first_200_or_open(address, placeholder)
    return Target(cluster, address, confd.stop, confd.proc.pid)


def first_200_or_open(host: str, port: int, *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.01)
    raise TimeoutError(f"{host}:{port} never opened")


def new_route_latency(
    etcd: Etcd,
    target: Target,
    backend: FastBackend,
    ports: list[int],
    name: str,
    *,
    timeout: float = 10.0,
) -> list[float]:
    samples = []
    for i, port in enumerate(ports):
        time.sleep(0.05)  # one at a time: each put meets an idle agent
        started = time.monotonic()
        etcd.put(f"/marina/gateway/routes/{target.cluster}/{name}{i}", route(port, backend))
        try:
            samples.append((first_200(target.address, port, timeout=timeout) - started) * 1000)
        except TimeoutError:
            samples.append(math.inf)  # never served: counted as missed
    return samples


def interleaved_latency(
    etcd: Etcd,
    targets: dict[str, Target],
    backend: FastBackend,
    count: int,
    name: str,
) -> dict[str, list[float]]:
    """New routes on fresh ports, one for each target in turn: on a machine
    whose load changes by the minute, both see the same load."""
    ports = {key: free_ports(target.address, count) for key, target in targets.items()}
    samples: dict[str, list[float]] = {key: [] for key in targets}
    for i in range(count):
        for key, target in targets.items():
            samples[key] += new_route_latency(etcd, target, backend, [ports[key][i]], f"{name}{i}-")
    return samples


# Ports the bursts and tables write routes for: the gateway's range and the
# 10,000-route table's static ports. A port the harness takes for itself (a
# metrics port, confd's placeholder) must lie outside them: one that fell
# inside made that route unservable (reserved by the gateway, or bound
# twice in confd's configuration, which then never loaded).
ROUTE_PORTS = (range(30000, 32768), range(40000, 47300))


def port_for_harness(address: str = "127.0.0.1") -> int:
    """A free port outside `ROUTE_PORTS`."""
    while True:
        port = free_port(address)
        if not any(port in ports for ports in ROUTE_PORTS):
            return port


def free_ports(address: str, count: int) -> list[int]:
    """Distinct free ports outside `ROUTE_PORTS` (bind(0) can repeat one)."""
    ports: list[int] = []
    while len(ports) < count:
        port = port_for_harness(address)
        if port not in ports:
            ports.append(port)
    return ports


def summary(samples: list[float]) -> dict[str, float]:
    served = [s for s in samples if s != math.inf]
    return {
        "routes": len(samples),
        "missed": len(samples) - len(served),
        "p50": round(statistics.median(served), 1),
        "p99": round(percentile(served, 0.99), 1),
        "max": round(max(served), 1),
    }


def burst(
    etcd: Etcd,
    target: Target,
    backend: FastBackend,
    ports: list[int],
    name: str,
    *,
    check: bool = True,
) -> dict[str, object]:
    """Write routes for `ports` at once; seconds until every sampled one serves.

    The clock first waits for the last four ports written, polled one at a
    time (a sweep of many ports would take a core from what it measures).
    The gateway starts its HAProxy processes side by side and may confirm
    them in any order, so then every 20th port is looked at once: one that
    does not serve yet is polled until it does, and the clock stops at the
    last of them. A port that began to serve during that look counts as
    serving before it (the look takes a few milliseconds). Every port is
    checked after the clock stops.
    """
    items = [
        (f"/marina/gateway/routes/{target.cluster}/{name}{i}", route(port, backend, check=check))
        for i, port in enumerate(ports)
    ]
    sample = ports[:: max(1, len(ports) // 100)]
    started = time.monotonic()
    etcd.put_many(items)
    written = time.monotonic() - started
    converged = max(first_200(target.address, port, timeout=120) for port in ports[-4:])
    late = [port for port in sample if not answers_200(target.address, port)]
    for port in late:
        converged = max(converged, first_200(target.address, port, timeout=120))
    for port in ports:
        first_200(target.address, port, timeout=120)
    return {
        "routes": len(ports),
        "seconds": round(converged - started, 3),
        "write_seconds": round(written, 3),
        "sampled_serving": len(sample) + 4,
        "late_after_last_written": len(late),
        "all_serving": len(ports),
    }


def median_burst(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The sample of median time, with every sample's seconds."""
    ordered = sorted(samples, key=lambda b: float(b["seconds"]))
    return {**ordered[len(ordered) // 2], "samples": [b["seconds"] for b in samples]}


def table_then_change(
    etcd: Etcd,
    target: Target,
    backend: FastBackend,
    *,
    in_range: int,
    outside: int,
    changes: int,
    runtime_path: bool,
    check: bool = True,
) -> dict[str, object]:
    """A table of `in_range` + `outside` routes (health-checked unless
    `check` is false), then single new routes (checked, as by default)."""
    ports = [30000 + i for i in range(in_range)] + [40000 + i for i in range(outside)]
    loaded = burst(etcd, target, backend, ports, "t", check=check)
    figures: dict[str, object] = {"routes": len(ports), "table_seconds": loaded["seconds"]}
    figures["busy_cpu_share_while_held"] = busy_cpu_share(1.0)
    spare = free_ports(target.address, changes)
    figures["reload_path_ms"] = summary(
        new_route_latency(etcd, target, backend, spare, "tx", timeout=120)
    )
    if runtime_path:
        free = [30000 + in_range + i for i in range(changes)]
        figures["runtime_path_ms"] = summary(
            new_route_latency(etcd, target, backend, free, "ti", timeout=120)
        )
    explain_missed(etcd, target, figures)
    return figures


def busy_cpu_share(seconds: float) -> float:
    """The share of the machine's processor time in use over `seconds`."""

    def times() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait

    total, idle = times()
    time.sleep(seconds)
    total2, idle2 = times()
    return round(1 - (idle2 - idle) / max(1, total2 - total), 2)


def explain_missed(etcd: Etcd, target: Target, figures: dict[str, Any]) -> None:
    """A gateway reports the routes it left out, and why, in its status key:
    with a route missed, the reasons go beside the figures."""
    missed = any(isinstance(f, dict) and f.get("missed") for f in figures.values())
    if not missed or target.ident is None:
        return
    doc = etcd.get(f"/marina/gateway/status/{target.ident}") or {}
    figures["skipped"] = doc.get("skipped", "no status")


def measure_gateway(
    etcd: Etcd, work: Path, backends: list[FastBackend], quick: bool, confd: Path | None
) -> tuple[Any, Any]:
    """The gateway's figures, and confd's counterparts taken beside each of
    them (interleaved samples, or right after), so both meet the same load."""
    result: dict[str, Any] = {"settings": "defaults"}
    theirs: dict[str, Any] = {}
    n = 10 if quick else 40

    def beside(measure: Any) -> Any:
        """confd's counterpart, unless confd is missing; one that fails is
        reported, and the other figures are still taken."""
        if confd is None:
            return None
        try:
            return measure()
        except (TimeoutError, OSError) as exc:
            theirs.setdefault("failed", []).append(str(exc))
            return None

    target, _, mport = start_gateway(etcd, work, "gw-latency")
    try:
        pair = {"gateway": target}
        other = beside(lambda: start_confd(etcd, confd, "confd-latency"))  # type: ignore[arg-type]
        if other is not None:
            pair["confd"] = other
        try:
            samples = interleaved_latency(etcd, pair, backends[0], n, "o")
        finally:
            if other is not None:
                other.stop()
        if other is not None:
            theirs["reload_path_ms"] = summary(samples["confd"])
        result["reload_path_ms"] = summary(samples["gateway"])
        inside = list(range(30000, 30000 + n))
        result["runtime_path_ms"] = summary(
            new_route_latency(etcd, target, backends[0], inside, "r")
        )
        explain_missed(etcd, target, result)

        # Route changes under new-connection load; every fourth one reloads.
        changes = 40 if quick else 200
        etcd.put(f"/marina/gateway/routes/{target.cluster}/hot", route(32767, *backends))
        first_200(target.address, 32767)
        before = metrics("127.0.0.1", mport)
        load = Wrk(target.address, 32767, seconds=4 if quick else 10)
        time.sleep(0.3)
        spare_ports = free_ports(target.address, changes // 4 + 1)
        last = 0
        for i in range(changes):
            if i % 4 == 3:
                last = etcd.put(
                    f"/marina/gateway/routes/{target.cluster}/x{i}",
                    route(spare_ports[i // 4], backends[0]),
                )
            else:
                chosen = backends[: 1 + i % 3]
                last = etcd.put(
                    f"/marina/gateway/routes/{target.cluster}/hot", route(32767, *chosen)
                )
            time.sleep(0.02)
        loaded = load.result()
        # Every change applied, so that a reload put off by the burst counts
        # here and not among the backend changes below.
        wait_for(
            lambda: metrics("127.0.0.1", mport)["marina_gateway_applied_revision"] >= last,
            timeout=30,
            what="changes under load applied",
        )
        after = metrics("127.0.0.1", mport)
        result["changes_under_load"] = {
            "changes": changes,
            "requests": loaded["requests"],
            "new_connections_per_s": loaded["rate"],
            "failed_requests": loaded["failed"],
            "failures": loaded["failures"],
            "reloads": after["marina_gateway_reloads_total"]
            - before["marina_gateway_reloads_total"],
        }

        # Backend-only changes: replicas added, removed and moved.
        before = metrics("127.0.0.1", mport)
        key = f"/marina/gateway/routes/{target.cluster}/r0"
        for i in range(100):
            chosen = [backends[(i + j) % 3] for j in range(1 + i % 3)]
            etcd.put(key, route(30000, *chosen))
            time.sleep(0.015)
        wait_for(
            lambda: (
                metrics("127.0.0.1", mport)["marina_gateway_applied_revision"]
                >= before["marina_gateway_applied_revision"] + 100
            ),
            what="backend changes",
        )
        after = metrics("127.0.0.1", mport)
        result["backend_changes"] = {
            "changes": 100,
            "reloads": after["marina_gateway_reloads_total"]
            - before["marina_gateway_reloads_total"],
            "runtime_updates": after["marina_gateway_runtime_updates_total"]
            - before["marina_gateway_runtime_updates_total"],
        }
        result["agent_peak_rss_mb"] = peak_rss_mb(target.pid)
    finally:
        target.stop()
    count = 200 if quick else 2000
    # A burst is one sample: rounds of the three, in turn, and the
    # median of each (every sample is kept beside it).
    samples: dict[str, list[dict[str, Any]]] = {"inside_range": [], "outside_range": []}
    for round_ in range(1 if quick else ROUNDS):
        for path, ports in (
            ("inside_range", list(range(30000, 30000 + count))),
            ("outside_range", list(range(40000, 40000 + count))),
        ):
            target, _, _ = start_gateway(etcd, work, f"gw-burst-{path}-{round_}")
            try:
                samples[path].append(burst(etcd, target, backends[1], ports, "b"))
            finally:
                target.stop()

        def confd_burst(round_: int = round_) -> Any:
            other = start_confd(etcd, confd, f"confd-burst-{round_}")  # type: ignore[arg-type]
            try:
                samples.setdefault("confd", []).append(
                    burst(etcd, other, backends[1], list(range(40000, 40000 + count)), "b")
                )
            finally:
                other.stop()

        beside(confd_burst)
    result[f"burst_{count}"] = {
        path: median_burst(samples[path]) for path in ("inside_range", "outside_range")
    }
    if len(samples.get("confd", [])) == len(samples["inside_range"]):
        theirs[f"burst_{count}"] = median_burst(samples["confd"])
    table = {
        "in_range": 270 if quick else 2700,
        "outside": 730 if quick else 7300,
        "changes": 5 if quick else 10,
    }
    target, _, _ = start_gateway(etcd, work, "gw-table")
    try:
        result["table_10000"] = table_then_change(
            etcd, target, backends[2], **table, runtime_path=True
        )
        result["agent_peak_rss_mb"] = max(result["agent_peak_rss_mb"], peak_rss_mb(target.pid))
        held = result["table_10000"]
        # A single change with 10,000 routes held against the same with a few.
        held["vs_few_routes_p50"] = {
            path: round(held[f"{path}_ms"]["p50"] / result[f"{path}_ms"]["p50"], 2)
            for path in ("reload_path", "runtime_path")
        }
    finally:
        target.stop()
    # The same without health checks on the held routes: 10,000 routes
    # checked every 2 s against one local backend keep the machine busy,
    # and that is most of what a change costs more with them held.
    target, _, _ = start_gateway(etcd, work, "gw-table-unchecked")
    try:
        unchecked = table_then_change(
            etcd, target, backends[2], **table, runtime_path=True, check=False
        )
        unchecked["vs_few_routes_p50"] = {
            path: round(unchecked[f"{path}_ms"]["p50"] / result[f"{path}_ms"]["p50"], 2)
            for path in ("reload_path", "runtime_path")
        }
        result["table_10000_held_unchecked"] = unchecked
    finally:
        target.stop()

    def confd_table() -> Any:
        other = start_confd(etcd, confd, "confd-table")  # type: ignore[arg-type]
        try:
            theirs["table_10000"] = table_then_change(
                etcd, other, backends[2], **table, runtime_path=False
            )
        finally:
            other.stop()

    beside(confd_table)
    return result, theirs


def measure_stock_confd(etcd: Etcd, binary: Path, backends: list[FastBackend], quick: bool) -> Any:
    """confd as its users run it: HAProxy's stock global section."""
    n = 10 if quick else 40
    count = 200 if quick else 2000
    stock: dict[str, Any] = {}
    target = start_confd(etcd, binary, "confd-stock-latency", tuned=False)
    try:
        ports = free_ports(target.address, n)
        stock["reload_path_ms"] = summary(new_route_latency(etcd, target, backends[0], ports, "o"))
    finally:
        target.stop()
    target = start_confd(etcd, binary, "confd-stock-burst", tuned=False)
    try:
        stock[f"burst_{count}"] = burst(
            etcd, target, backends[1], list(range(40000, 40000 + count)), "b"
        )
    finally:
        target.stop()
    return stock


def ratios(gateway: Any, confd: Any, count: int) -> dict[str, Any]:
    """gateway / confd for every figure both have."""
    if "unavailable" in confd:
        return {}

    def ratio(ours: float, theirs: float) -> float:
        return round(ours / theirs, 2)

    burst_key = f"burst_{count}"
    out: dict[str, Any] = {}
    for stat in ("p50", "max"):
        if "reload_path_ms" in confd:
            out[f"reload_path_{stat}"] = ratio(
                gateway["reload_path_ms"][stat], confd["reload_path_ms"][stat]
            )
            out[f"runtime_path_{stat}"] = ratio(
                gateway["runtime_path_ms"][stat], confd["reload_path_ms"][stat]
            )
        if "table_10000" in confd:
            for path in ("reload_path_ms", "runtime_path_ms"):
                out[f"table_10000_{path[:-3]}_{stat}"] = ratio(
                    gateway["table_10000"][path][stat],
                    confd["table_10000"]["reload_path_ms"][stat],
                )
    if burst_key in confd:
        theirs = confd[burst_key]
        for path in ("inside_range", "outside_range"):
            ours = gateway[burst_key][path]
            out[f"{burst_key}_{path}"] = ratio(ours["seconds"], theirs["seconds"])
            # Each round's gateway bursts and confd's were taken one after
            # the other: the ratio of each round, as well as of the medians.
            out[f"{burst_key}_{path}_by_round"] = [
                ratio(g, c) for g, c in zip(ours["samples"], theirs["samples"], strict=False)
            ]
    stock = confd.get("stock_haproxy_settings")
    if stock and "unavailable" not in stock:
        for stat in ("p50", "max"):
            out[f"vs_stock_confd_reload_path_{stat}"] = ratio(
                gateway["reload_path_ms"][stat], stock["reload_path_ms"][stat]
            )
        for path in ("inside_range", "outside_range"):
            out[f"vs_stock_confd_{burst_key}_{path}"] = ratio(
                gateway[burst_key][path]["seconds"], stock[burst_key]["seconds"]
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller figures, for a smoke run")
    parser.add_argument("--skip-confd", action="store_true", help="measure the gateway only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="marina-bench-"))
    etcd = Etcd(work / "etcd").start()
    backends = [FastBackend(f"f{i}") for i in range(3)]
    result: dict[str, Any] = {"benchmark": "gateway", "targets": TARGETS}
    try:
        binary, reason = (None, "skipped (--skip-confd)") if args.skip_confd else locate()
        result["gateway"], confd = measure_gateway(etcd, work, backends, args.quick, binary)
        if binary is None:
            confd = {"unavailable": reason}
        elif "unavailable" not in confd:
            confd = {"binary": str(binary), "reload": "seamless (-x, -sf)", **confd}
            try:
                confd["stock_haproxy_settings"] = measure_stock_confd(
                    etcd, binary, backends, args.quick
                )
            except (TimeoutError, OSError) as exc:
                confd["stock_haproxy_settings"] = {"unavailable": f"failed: {exc}"}
        result["confd"] = confd
        result["ratios"] = ratios(result["gateway"], result["confd"], 200 if args.quick else 2000)
        result["cpu_count"] = os.cpu_count()
    finally:
        for b in backends:
            b.stop()
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
