"""The gateway's two HAProxy processes: routes on ports of their own, and the
port range; a change to one never restarts the other."""

from __future__ import annotations

from tests.integration.test_gateway import route, serves, status
from tests.support import Gateway, free_port, wait_for


def pids(gw: Gateway, part: str) -> list[int]:
    return [int(p) for p in (gw.state_dir / f"{part}.pid").read_text().split()]


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
    static_pids = pids(gw, "haproxy")
    etcd.put(f"/marina/gateway/routes/{cluster}/in2", route(30002, b))
    wait_for(serves(gw, 30002, "b"), what="second range route")
    assert pids(gw, "haproxy") == static_pids
    assert pids(gw, "range") == range_pids
    assert serves(gw, 30001, "a")()
    # The last route of its own port gone: the static process goes too.
    for i in range(3):  # one at a time, under the wipe guard's share
        etcd.delete(f"/marina/gateway/routes/{cluster}/out{i}")
        wait_for(lambda i=i: status(etcd, gw).get("routes") == 4 - i, what="a route removed")
    wait_for(lambda: pids(gw, "haproxy") == [], what="static process retired")
    assert serves(gw, 30002, "b")()
