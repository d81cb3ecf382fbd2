"""The gateway agent against a real etcd and a real HAProxy."""

from __future__ import annotations

from collections.abc import Callable

from tests.support import Backend, Etcd, Gateway, free_port, http_get, wait_for


def route(port: int, *backends: Backend, mode: str = "http", **extra: object) -> dict[str, object]:
    return {
        "port": port,
        "mode": mode,
        "backends": [{"host": b.host, "port": b.port} for b in backends],
        **extra,
    }


def serves(gw: Gateway, port: int, body: str) -> Callable[[], bool]:
    return lambda: http_get(gw.url(port), timeout=1) == (200, body)


def status(etcd: Etcd, gw: Gateway) -> dict[str, object]:
    return etcd.get(f"/marina/gateway/status/{gw.ident}") or {}


def test_route_appears_changes_and_disappears(etcd, cluster, backends, gateways):
    a, b = backends("a"), backends("b")
    gw = gateways(etcd.url, cluster)
    static_port = free_port(gw.address)
    etcd.put(f"/marina/gateway/routes/{cluster}/keep", route(30001, a))
    etcd.put(f"/marina/gateway/routes/{cluster}/web", route(static_port, a))
    wait_for(serves(gw, static_port, "a"), what="new route outside the range")
    wait_for(serves(gw, 30001, "a"), what="new route inside the range")
    etcd.put(f"/marina/gateway/routes/{cluster}/web", route(static_port, b))
    wait_for(serves(gw, static_port, "b"), what="backend change")
    etcd.delete(f"/marina/gateway/routes/{cluster}/web")
    wait_for(lambda: _refused(gw.address, static_port), what="route removal")
    assert http_get(gw.url(30001)) == (200, "a")
    st = wait_for(
        lambda: status(etcd, gw).get("routes") == 1 and status(etcd, gw),
        what="status with one route",
    )
    assert st["address"] == gw.address
    assert st["last_error"] is None
    assert st["applied_revision"] > 0


def _refused(host: str, port: int) -> bool:
    import socket

    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return True
    return False
