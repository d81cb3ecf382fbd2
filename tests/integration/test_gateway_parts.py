"""The gateway's HAProxy processes: the port range, and parts of a few
hundred routes on ports of their own; a change to one never restarts another."""

from __future__ import annotations

import re

from tests.integration.test_gateway import route, serves, status
from tests.support import Gateway, free_port, free_ports, wait_for


def pids(gw: Gateway, pattern: str) -> list[int]:
    return [int(p) for f in gw.state_dir.glob(f"{pattern}.pid") for p in f.read_text().split()]


def settle(etcd: object, gw: Gateway, revision: int) -> None:
    """Wait until the gateway has applied `revision`: no reload half done."""
    wait_for(
        lambda: status(etcd, gw).get("applied_revision", 0) >= revision,  # type: ignore[arg-type]
        what=f"revision {revision} applied",
    )


def part_serving(gw: Gateway, port: int) -> str:
    """The static part whose configuration binds `port`."""
    [part] = [
        f.stem
        for f in gw.state_dir.glob("static-*.cfg")
        if re.search(rf"^\s+bind \S+:{port}$", f.read_text(), re.MULTILINE)
    ]
    return part


def test_each_part_reloads_alone(etcd, cluster, backends, gateways):
    a, b = backends("a"), backends("b")
    # Two routes per static part, so that three ports make two parts.
    gw = gateways(etcd.url, cluster, "--shard-routes", "2")
    settle(etcd, gw, etcd.put(f"/marina/gateway/routes/{cluster}/in", route(30001, a)))
    wait_for(serves(gw, 30001, "a"), what="range route")
    range_pids = pids(gw, "range")
    outside = free_ports(gw.address, 3)
    for i, port in enumerate(outside):
        settle(etcd, gw, etcd.put(f"/marina/gateway/routes/{cluster}/out{i}", route(port, b)))
        wait_for(serves(gw, port, "b"), what=f"static route {i}")
    assert pids(gw, "range") == range_pids
    parts = {port: part_serving(gw, port) for port in outside}
    assert parts[outside[0]] == parts[outside[1]] != parts[outside[2]], parts
    static_pids = pids(gw, "static-*")
    settle(etcd, gw, etcd.put(f"/marina/gateway/routes/{cluster}/in2", route(30002, b)))
    wait_for(serves(gw, 30002, "b"), what="second range route")
    assert pids(gw, "static-*") == static_pids
    assert pids(gw, "range") == range_pids
    assert serves(gw, 30001, "a")()
    # A new port goes to the part with room, and restarts only that one.
    full, roomy = parts[outside[0]], parts[outside[2]]
    before = {part: pids(gw, part) for part in (full, roomy)}
    extra = free_port(gw.address)
    settle(etcd, gw, etcd.put(f"/marina/gateway/routes/{cluster}/extra", route(extra, a)))
    wait_for(serves(gw, extra, "a"), what="a route in the part with room")
    assert part_serving(gw, extra) == roomy
    assert pids(gw, full) == before[full]
    assert pids(gw, roomy) != before[roomy]
    # A route's port stays in its part when the route changes.
    etcd.put(f"/marina/gateway/routes/{cluster}/out0", route(outside[0], a, balance="source"))
    wait_for(serves(gw, outside[0], "a"), what="a changed route")
    assert part_serving(gw, outside[0]) == full
    assert pids(gw, roomy) != before[roomy]
    etcd.delete(f"/marina/gateway/routes/{cluster}/extra")
    wait_for(lambda: status(etcd, gw).get("routes") == 5, what="extra route removed")
    # The last route of its own port gone: the static processes go too.
    for i in range(3):  # one at a time, under the wipe guard's share
        etcd.delete(f"/marina/gateway/routes/{cluster}/out{i}")
        wait_for(lambda i=i: status(etcd, gw).get("routes") == 4 - i, what="a route removed")
    wait_for(lambda: pids(gw, "static-*") == [], what="static process retired")
    assert serves(gw, 30002, "b")()


def test_metrics_of_the_agent_and_of_each_haproxy_on_loopback(etcd, cluster, backends, gateways):
    from tests.support import http_get

    a = backends("a")
    mport = free_port()
    gw = gateways(etcd.url, cluster, "--metrics-port", str(mport))
    outside = free_port(gw.address)
    etcd.put(f"/marina/gateway/routes/{cluster}/in", route(30001, a))
    etcd.put(f"/marina/gateway/routes/{cluster}/out", route(outside, a))
    wait_for(serves(gw, outside, "a"), what="both routes")
    wait_for(serves(gw, 30001, "a"), what="range route")
    # haproxy.pid lists every process, for cleanup after a killed agent:
    # those that serve and the standbys that wait for the next change.
    serving = lambda: pids(gw, "range") + pids(gw, "static-*")  # noqa: E731
    wait_for(
        lambda: (
            # The range's and that of the part a new port would go to.
            len(pids(gw, "standby-*")) == 2
            and sorted(pids(gw, "haproxy")) == sorted(serving() + pids(gw, "standby-*"))
        ),
        what="haproxy.pid listing every process",
    )
    assert len(serving()) == 2
    wait_for(
        lambda: "marina_gateway_routes 2\n" in http_get(f"http://127.0.0.1:{mport}/metrics")[1],
        what="the agent's metrics",
    )
    code, text = http_get(f"http://127.0.0.1:{mport}/haproxy/metrics")
    assert code == 200
    shard = part_serving(gw, outside)
    assert 'haproxy_process_uptime_seconds{process="pool"}' in text
    assert f'haproxy_process_uptime_seconds{{process="{shard}"}}' in text
    assert text.count("# TYPE haproxy_process_uptime_seconds ") == 1
    # Not on the gateway's public address.
    import socket

    with socket.socket() as s:
        assert s.connect_ex((gw.address, mport)) != 0


def test_proxy_protocol_and_check_interval_reach_the_backends(etcd, cluster, backends, gateways):
    a = backends("a")
    gw = gateways(etcd.url, cluster)
    etcd.put(
        f"/marina/gateway/routes/{cluster}/pp",
        route(30009, a, mode="tcp", proxy_protocol=True, check_interval_ms=500),
    )
    wait_for(lambda: status(etcd, gw).get("routes") == 1, what="route applied")
    config = "".join(p.read_text() for p in gw.state_dir.glob("*.cfg"))
    assert f"server s1 {a.host}:{a.port} check inter 500ms send-proxy-v2" in config
    # The back end now sees a PROXY v2 header first, not an HTTP request.
    import socket

    with socket.create_connection((gw.address, 30009), timeout=2) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = s.recv(100)
    assert not reply.startswith(b"HTTP/1.0 200")
