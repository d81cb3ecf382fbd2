"""The gateway's HAProxy processes: the port range, and shards of the routes
on ports of their own; a change to one never restarts another."""

from __future__ import annotations

from tests.integration.test_gateway import route, serves, status
from tests.support import Gateway, free_port, wait_for


def pids(gw: Gateway, pattern: str) -> list[int]:
    return [int(p) for f in gw.state_dir.glob(f"{pattern}.pid") for p in f.read_text().split()]


def test_each_part_reloads_alone(etcd, cluster, backends, gateways):
    a, b = backends("a"), backends("b")
    gw = gateways(etcd.url, cluster)
    etcd.put(f"/marina/gateway/routes/{cluster}/in", route(30001, a))
    wait_for(serves(gw, 30001, "a"), what="range route")
    range_pids = pids(gw, "range")
    outside = [free_port(gw.address) for _ in range(3)]
    for i, port in enumerate(outside):
        etcd.put(f"/marina/gateway/routes/{cluster}/out{i}", route(port, b))
        wait_for(serves(gw, port, "b"), what=f"static route {i}")
    assert pids(gw, "range") == range_pids
    static_pids = pids(gw, "static-*")
    etcd.put(f"/marina/gateway/routes/{cluster}/in2", route(30002, b))
    wait_for(serves(gw, 30002, "b"), what="second range route")
    assert pids(gw, "static-*") == static_pids
    assert pids(gw, "range") == range_pids
    assert serves(gw, 30001, "a")()
    # Ports of one shard restart only that shard's process.
    by_port = {port: pids(gw, f"static-{port % 4}") for port in outside}
    extra = next(p for p in (free_port(gw.address) for _ in range(20)) if p % 4 == outside[0] % 4)
    etcd.put(f"/marina/gateway/routes/{cluster}/extra", route(extra, a))
    wait_for(serves(gw, extra, "a"), what="a route in the first port's shard")
    for port in outside[1:]:
        if port % 4 != outside[0] % 4:
            assert pids(gw, f"static-{port % 4}") == by_port[port]
    assert pids(gw, f"static-{outside[0] % 4}") != by_port[outside[0]]
    etcd.delete(f"/marina/gateway/routes/{cluster}/extra")
    wait_for(lambda: status(etcd, gw).get("routes") == 5, what="extra route removed")
    # The last route of its own port gone: the static processes go too.
    for i in range(3):  # one at a time, under the wipe guard's share
        etcd.delete(f"/marina/gateway/routes/{cluster}/out{i}")
        wait_for(lambda i=i: status(etcd, gw).get("routes") == 4 - i, what="a route removed")
    wait_for(lambda: pids(gw, "static-*") == [], what="static process retired")
    assert serves(gw, 30002, "b")()
