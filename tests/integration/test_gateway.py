"""The gateway agent against a real etcd and a real HAProxy."""

from __future__ import annotations

import os
from collections.abc import Callable

from tests.support import Backend, Etcd, Gateway, free_port, free_ports, http_get, wait_for


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


def metrics(gw: Gateway, port: int) -> dict[str, float]:
    _, text = http_get(f"http://127.0.0.1:{port}/metrics")
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


BAD_ROUTES = {
    "newline-host": {
        "port": 30010,
        "mode": "http",
        "backends": [{"host": "127.0.0.1\n    stats enable", "port": 80}],
    },
    "space-host": {
        "port": 30011,
        "mode": "http",
        "backends": [{"host": "127.0.0.1 backup", "port": 80}],
    },
    "port-zero": {"port": 0, "mode": "http", "backends": []},
    "port-high": {"port": 70000, "mode": "http", "backends": []},
    "port-string": {"port": "30012", "mode": "http", "backends": []},
    "etcd-port": {"port": 2379, "mode": "tcp", "backends": []},
    "bad-mode": {"port": 30013, "mode": "udp", "backends": []},
    "bad-balance": {"port": 30014, "mode": "http", "balance": "random\nfoo", "backends": []},
    "backend-port": {"port": 30015, "mode": "http", "backends": [{"host": "h", "port": -1}]},
    "not-json": "{port: 1",
    "bad\nname": {"port": 30016, "mode": "http", "backends": []},
    # `$` matches before a final newline: each of these passed a `$` regex.
    "trailing-newline\n": {"port": 30017, "mode": "http", "backends": []},
    "host-newline": {
        "port": 30018,
        "mode": "http",
        "backends": [{"host": "backend.example\n", "port": 80}],
    },
    # `ipaddress` takes any text after an IPv6 zone's `%`.
    "zone-address": {
        "port": 30019,
        "mode": "http",
        "address": "fe80::1%lo\n    stats enable",
        "backends": [],
    },
    "zone-host": {
        "port": 30021,
        "mode": "http",
        "backends": [{"host": "fe80::1%x backup", "port": 80}],
    },
}


def test_bad_routes_are_skipped_and_reported_without_harm(etcd, cluster, backends, gateways):
    good = backends("good")
    mport = free_port()
    gw = gateways(etcd.url, cluster, "--metrics-port", str(mport))
    for name, value in BAD_ROUTES.items():
        etcd.put(f"/marina/gateway/routes/{cluster}/{name}", value)
    etcd.put(f"/marina/gateway/routes/{cluster}/good", route(30020, good))
    etcd.put(f"/marina/gateway/routes/{cluster}/metrics-port", route(mport, good))
    wait_for(serves(gw, 30020, "good"), what="the good route")
    st = wait_for(
        lambda: (
            len(status(etcd, gw).get("skipped", [])) == len(BAD_ROUTES) + 1 and status(etcd, gw)
        ),
        what="every bad route reported",
    )
    reasons = {s["service"]: s["reason"] for s in st["skipped"]}
    assert "must be an IP address or a host name" in reasons["newline-host"]
    assert "must be an IP address or a host name" in reasons["space-host"]
    assert "from 1 to 65535" in reasons["port-zero"]
    assert "from 1 to 65535" in reasons["port-high"]
    assert "from 1 to 65535" in reasons["port-string"]
    assert "reserved" in reasons["etcd-port"]
    assert "reserved" in reasons["metrics-port"]
    assert "mode 'udp'" in reasons["bad-mode"]
    assert "balance" in reasons["bad-balance"]
    assert "backends[0].port" in reasons["backend-port"]
    assert "not JSON" in reasons["not-json"]
    assert "service name" in reasons["bad\nname"]
    assert "service name" in reasons["trailing-newline\n"]
    assert "must be an IP address or a host name" in reasons["host-newline"]
    assert "must be an IP address" in reasons["zone-address"]
    assert "must be an IP address or a host name" in reasons["zone-host"]
    config = "".join(p.read_text() for p in gw.state_dir.glob("*.cfg"))
    assert "frontend fe_range" in config
    assert "stats enable" not in config and "backup" not in config and "udp" not in config
    assert metrics(gw, mport)["marina_gateway_skipped_routes"] == len(BAD_ROUTES) + 1
    for port in (30010, 30011, 30013):
        assert _refused_or_closed(gw, port)


def _refused_or_closed(gw: Gateway, port: int) -> bool:
    try:
        code, _ = http_get(gw.url(port), timeout=1)
    except OSError:
        return True
    return code != 200


def test_backend_changes_need_no_reload(etcd, cluster, backends, gateways):
    servers = [backends(f"r{i}") for i in range(3)]
    mport = free_port()
    gw = gateways(etcd.url, cluster, "--metrics-port", str(mport))
    outside = free_port(gw.address)
    key_in, key_out = (f"/marina/gateway/routes/{cluster}/{n}" for n in ("in", "out"))
    etcd.put(key_in, route(30005, servers[0]))
    revision = etcd.put(key_out, route(outside, servers[0]))
    wait_for(serves(gw, 30005, "r0"), what="range route")
    wait_for(serves(gw, outside, "r0"), what="static route")
    wait_for(
        lambda: metrics(gw, mport)["marina_gateway_applied_revision"] >= revision,
        what="the first two routes applied",
    )
    before = metrics(gw, mport)
    for i in range(1, 10):
        chosen = servers[i % 3]
        etcd.put(key_in, route(30005, chosen))
        etcd.put(key_out, route(outside, chosen))
        wait_for(serves(gw, 30005, chosen.name), what=f"range change {i}")
        wait_for(serves(gw, outside, chosen.name), what=f"static change {i}")
    etcd.put(key_in, route(30005, *servers))
    wait_for(
        lambda: {http_get(gw.url(30005))[1] for _ in range(12)} == {"r0", "r1", "r2"},
        what="all three replicas serving",
    )
    # A new route inside the range needs no reload either.
    etcd.put(f"/marina/gateway/routes/{cluster}/new", route(30006, servers[1]))
    wait_for(serves(gw, 30006, "r1"), what="new range route")
    after = metrics(gw, mport)
    assert after["marina_gateway_reloads_total"] == before["marina_gateway_reloads_total"]
    assert (
        after["marina_gateway_runtime_updates_total"]
        > before["marina_gateway_runtime_updates_total"]
    )


def test_serves_through_etcd_outage_and_catches_up(own_etcd, cluster, backends, gateways):
    a, b = backends("a"), backends("b")
    gw = gateways(own_etcd.url, cluster)
    key = f"/marina/gateway/routes/{cluster}/web"
    own_etcd.put(key, route(30007, a))
    wait_for(serves(gw, 30007, "a"), what="route before the outage")
    own_etcd.stop()
    for _ in range(20):
        assert http_get(gw.url(30007)) == (200, "a")
    own_etcd.start()
    own_etcd.put(key, route(30007, b))
    wait_for(serves(gw, 30007, "b"), timeout=20, what="change after etcd came back")
    wait_for(
        lambda: status(own_etcd, gw).get("last_error") is None and status(own_etcd, gw),
        timeout=20,
        what="status reported again",
    )


def test_relists_after_compaction(own_etcd, cluster, backends, gateways):
    a, b = backends("a"), backends("b")
    gw = gateways(own_etcd.url, cluster)
    key = f"/marina/gateway/routes/{cluster}/web"
    own_etcd.put(key, route(30008, a))
    wait_for(serves(gw, 30008, "a"), what="first route")
    own_etcd.stop()
    own_etcd.start()
    # While the watch reconnects, changes happen and the history is compacted.
    own_etcd.put(key, route(30008, b))
    own_etcd.put(f"/marina/gateway/routes/{cluster}/other", route(30009, a))
    own_etcd.compact()
    wait_for(serves(gw, 30008, "b"), timeout=20, what="change behind a compaction")
    wait_for(serves(gw, 30009, "a"), timeout=20, what="route behind a compaction")


def test_wipe_guard_holds_mass_removal(etcd, cluster, backends, gateways):
    a = backends("a")
    gw = gateways(etcd.url, cluster, "--wipe-hold", "2")
    for i in range(4):
        etcd.put(f"/marina/gateway/routes/{cluster}/s{i}", route(30030 + i, a))
    for i in range(4):
        wait_for(serves(gw, 30030 + i, "a"), what=f"route {i}")
    etcd.delete(f"/marina/gateway/routes/{cluster}/", prefix=True)
    st = wait_for(lambda: status(etcd, gw).get("held") and status(etcd, gw), what="held wipe")
    assert sorted(st["held"]) == ["s0", "s1", "s2", "s3"]
    for i in range(4):
        assert http_get(gw.url(30030 + i)) == (200, "a")
    wait_for(lambda: _refused_or_closed(gw, 30030), timeout=10, what="wipe applied after hold")
    wait_for(lambda: status(etcd, gw).get("held") == [], what="status without held routes")


def test_wipe_guard_releases_when_routes_return(etcd, cluster, backends, gateways):
    a = backends("a")
    gw = gateways(etcd.url, cluster, "--wipe-hold", "30")
    key = f"/marina/gateway/routes/{cluster}/only"
    etcd.put(key, route(30040, a))
    wait_for(serves(gw, 30040, "a"), what="route")
    etcd.delete(key)
    wait_for(lambda: status(etcd, gw).get("held") == ["only"], what="held removal")
    etcd.put(key, route(30040, a))
    wait_for(lambda: status(etcd, gw).get("held") == [], what="hold released")
    assert http_get(gw.url(30040)) == (200, "a")


def test_two_gateways_serve_every_route(etcd, cluster, backends, gateways):
    a = backends("a")
    first, second = gateways(etcd.url, cluster), gateways(etcd.url, cluster)
    etcd.put(f"/marina/gateway/routes/{cluster}/web", route(30050, a))
    etcd.put(f"/marina/gateway/routes/{cluster}/raw", route(30051, a, mode="tcp"))
    for gw in (first, second):
        wait_for(serves(gw, 30050, "a"), what=f"http route on {gw.address}")
        wait_for(serves(gw, 30051, "a"), what=f"tcp route on {gw.address}")
        wait_for(lambda g=gw: status(etcd, g).get("routes") == 2, what="status of both routes")


def test_busy_port_skips_only_that_route(etcd, cluster, backends, gateways):
    import socket

    a = backends("a")
    gw = gateways(etcd.url, cluster)
    busy = socket.socket()
    busy.bind((gw.address, 0))
    busy.listen()
    busy_port = busy.getsockname()[1]
    try:
        free = free_port(gw.address)
        etcd.put(f"/marina/gateway/routes/{cluster}/taken", route(busy_port, a))
        etcd.put(f"/marina/gateway/routes/{cluster}/fine", route(free, a))
        wait_for(serves(gw, free, "a"), what="the route whose port is free")
        st = wait_for(
            lambda: status(etcd, gw).get("skipped") and status(etcd, gw), what="busy port reported"
        )
        assert st["skipped"][0]["service"] == "taken"
        assert "could not be bound" in st["skipped"][0]["reason"]
        assert f"held by pid {os.getpid()}" in st["skipped"][0]["reason"]
    finally:
        busy.close()


def test_agent_crash_keeps_serving_and_restart_adopts(etcd, cluster, backends, gateways):
    a, b = backends("a"), backends("b")
    gw = gateways(etcd.url, cluster)
    key = f"/marina/gateway/routes/{cluster}/web"
    etcd.put(key, route(30060, a))
    wait_for(serves(gw, 30060, "a"), what="route")
    gw.kill()
    assert http_get(gw.url(30060)) == (200, "a")
    gw.start()
    etcd.put(key, route(30060, b))
    wait_for(serves(gw, 30060, "b"), what="change after the agent restarted")
    import subprocess

    def running(pattern: str) -> list[str]:
        return subprocess.run(
            ["pgrep", "-f", f"haproxy -f {gw.state_dir}/{pattern}"], capture_output=True, text=True
        ).stdout.split()

    serving = r"[^ ]*\.cfg( |$)"
    procs = running(serving)
    wait_for(lambda: len(running(serving)) == 1, what="one haproxy left after adoption", timeout=15)
    assert procs
    # The standbys the killed agent left were ended: one per part at most.
    wait_for(lambda: 0 < len(running(r"[^ ]*\.cfg\.fifo")) <= 5, what="standbys", timeout=15)


def test_reloads_under_load_lose_no_request(etcd, cluster, gateways):
    from tests.support import FastBackend, Hammer

    servers = [FastBackend(f"f{i}") for i in range(2)]
    try:
        gw = gateways(etcd.url, cluster)
        etcd.put(f"/marina/gateway/routes/{cluster}/web", route(30070, *servers))
        wait_for(serves(gw, 30070, "f0"), what="route under test")
        load = Hammer(gw.address, 30070, seconds=4, rate=400)
        ports = free_ports(gw.address, 10)
        reloads = 0
        for i, port in enumerate(ports):
            # Each new port outside the range is a reload.
            etcd.put(f"/marina/gateway/routes/{cluster}/extra{i}", route(port, servers[i % 2]))
            wait_for(serves(gw, port, f"f{i % 2}"), what=f"reload {i}")
            reloads += 1
        result = load.result()
        assert reloads == 10
        assert result["requests"] > 500
        assert result["failed"] == 0, result["failures"]
    finally:
        for s in servers:
            s.stop()


def test_routes_with_their_own_address_are_served_there(etcd, cluster, backends, gateways):
    from tests.support import fresh_address

    a, b = backends("a"), backends("b")
    gw = gateways(etcd.url, cluster)
    first, second = fresh_address(), fresh_address()
    etcd.put(f"/marina/gateway/routes/{cluster}/one", route(30001, a, address=first))
    etcd.put(f"/marina/gateway/routes/{cluster}/two", route(30001, b, address=second))
    wait_for(
        lambda: http_get(f"http://{first}:30001/", timeout=1) == (200, "a"),
        what="route on the first service address",
    )
    wait_for(
        lambda: http_get(f"http://{second}:30001/", timeout=1) == (200, "b"),
        what="route on the second service address",
    )
    assert _refused_or_closed(gw, 30001)


def test_a_deep_state_directory_still_gets_a_socket(etcd, cluster, backends, tmp_path):
    from tests.support import Gateway, fresh_address

    a = backends("a")
    deep = tmp_path / ("very-long-folder-name-" * 6) / "gateway"
    gw = Gateway(etcd.url, cluster, fresh_address(), deep, "--port-range", "30000-30010")
    gw.start()
    try:
        etcd.put(f"/marina/gateway/routes/{cluster}/web", route(30003, a))
        wait_for(serves(gw, 30003, "a"), what="route behind a deep state directory")
    finally:
        gw.stop()
