"""Route validation: every rule, and the port-ownership tie break."""

from __future__ import annotations

import json

import pytest

from gateway.routes import Backend, Route, Skipped, parse_route, select_routes

RESERVED = frozenset({2379, 2380})


def parse(service: str, doc: object) -> Route | Skipped:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return parse_route(service, raw, reserved_ports=RESERVED)


def test_valid_route_with_defaults():
    got = parse(
        "web",
        {
            "port": 8080,
            "backends": [{"host": "127.0.0.5", "port": 80}, {"host": "db.local", "port": 5432}],
        },
    )
    assert got == Route("web", 8080, "http", (Backend("127.0.0.5", 80), Backend("db.local", 5432)))


def test_duplicate_backends_collapse():
    got = parse("web", {"port": 1, "backends": [{"host": "::1", "port": 80}] * 3})
    assert isinstance(got, Route) and got.backends == (Backend("::1", 80),)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"port": 0, "backends": []}, "port 0 must be an integer from 1 to 65535"),
        ({"port": 65536, "backends": []}, "port 65536"),
        ({"port": True, "backends": []}, "port True"),
        ({"port": 2379, "backends": []}, "reserved"),
        ({"port": 80, "mode": "udp", "backends": []}, "mode 'udp'"),
        ({"port": 80, "balance": "x y", "backends": []}, "balance 'x y'"),
        ({"port": 80, "scope": "world", "backends": []}, "scope 'world'"),
        ({"port": 80, "check": "yes", "backends": []}, "check 'yes'"),
        ({"port": 80, "backends": "127.0.0.1"}, "backends must be a list"),
        ({"port": 80, "backends": ["127.0.0.1"]}, "backends[0] must be an object"),
        ({"port": 80, "backends": [{"host": "a b", "port": 1}]}, "backends[0].host 'a b'"),
        ({"port": 80, "backends": [{"host": "a\nb", "port": 1}]}, "backends[0].host 'a\\\\nb'"),
        ({"port": 80, "backends": [{"host": "-bad", "port": 1}]}, "backends[0].host"),
        ({"port": 80, "backends": [{"host": "a", "port": 0}]}, "backends[0].port 0"),
        ({"port": 80, "backends": [{"host": "a", "port": 1}] * 300}, "at most 256"),
        ([1, 2], "must be a JSON object"),
        (b"\xff", "not JSON"),
    ],
)
def test_each_rule_is_reported(doc, fragment):
    got = parse("web", doc)
    assert isinstance(got, Skipped)
    assert fragment in got.reason


def test_every_problem_is_reported_at_once():
    got = parse("bad name", {"port": 0, "mode": "udp", "backends": [{"host": "", "port": 0}]})
    assert isinstance(got, Skipped)
    for fragment in (
        "service name",
        "port 0",
        "mode 'udp'",
        "backends[0].host",
        "backends[0].port",
    ):
        assert fragment in got.reason


def test_first_service_by_name_keeps_a_contested_port():
    doc = json.dumps({"port": 9000, "backends": []}).encode()
    routes, skipped = select_routes({"b": doc, "a": doc}, reserved_ports=RESERVED)
    assert list(routes) == ["a"]
    assert skipped == [Skipped("b", "port 9000 is already served for 'a'")]


def test_cache_parses_only_changed_values_and_forgets_removed_ones():
    cache: dict[str, tuple[bytes, Route | Skipped]] = {}
    a = json.dumps({"port": 1, "backends": []}).encode()
    b = json.dumps({"port": 2, "backends": []}).encode()
    select_routes({"a": a, "b": b}, reserved_ports=RESERVED, cache=cache)
    first = cache["a"][1]
    routes, _ = select_routes(
        {"a": a, "b": b.replace(b"2", b"3")}, reserved_ports=RESERVED, cache=cache
    )
    assert cache["a"][1] is first
    assert routes["b"].port == 3
    select_routes({"b": b}, reserved_ports=RESERVED, cache=cache)
    assert set(cache) == {"b"}


def test_routes_on_their_own_address_may_share_a_port():
    doc = {"port": 80, "backends": []}
    raw = {
        "a": json.dumps({**doc, "address": "127.0.9.1"}).encode(),
        "b": json.dumps({**doc, "address": "127.0.9.2"}).encode(),
        "c": json.dumps({**doc, "address": "127.0.9.2"}).encode(),
        "d": json.dumps({**doc, "address": "not an ip\n"}).encode(),
    }
    routes, skipped = select_routes(raw, reserved_ports=RESERVED)
    assert sorted(routes) == ["a", "b"]
    reasons = {s.service: s.reason for s in skipped}
    assert "already served for 'b'" in reasons["c"]
    assert "address 'not an ip\\\\n' must be an IP address" in reasons["d"]


def test_bind_failures_name_address_and_port():
    from gateway.haproxy import bound_ports_failing

    text = (
        "[ALERT] Starting frontend fe_x: cannot bind socket (Address already in use) "
        "[127.77.1.4:40000]\n[ALERT] Starting frontend fe_y: cannot bind socket "
        "(Address already in use) [[::1]:40001]"
    )
    assert bound_ports_failing(text) == {("127.77.1.4", 40000), ("::1", 40001)}


def test_selection_a_change_at_a_time_agrees_with_selecting_anew():
    """Random changes, conflicts and broken values included: the selection kept
    up to date a change at a time says what `select_routes` says of the
    whole, and so do host names, which make it select anew."""
    import json
    import random

    from gateway.routes import RouteSelection, select_routes

    rng = random.Random(11)
    reserved = frozenset({2379})
    selection = RouteSelection(reserved_ports=reserved)
    raw: dict[str, bytes] = {}
    changed: set[str] | None = None
    for step in range(600):
        for _ in range(rng.choice((1, 1, 1, 3, 12))):
            service = f"s{rng.randrange(40)}"
            changed = None if changed is None else changed | {service}
            kind = rng.random()
            if kind < 0.2:
                raw.pop(service, None)
                continue
            doc: dict[str, object] = {
                "port": rng.choice((30001, 30002, 40000, 40001, 2379, 41000 + rng.randrange(30))),
                "mode": "http",
                "backends": [{"host": "127.0.0.1", "port": rng.randrange(1, 4)}],
            }
            if kind < 0.25:
                doc["port"] = "not a port"
            elif kind < 0.3:
                doc["address"] = "127.0.0.9"
            elif kind < 0.32 and step > 300:
                doc["hosts"] = [f"h{rng.randrange(3)}.example"]
            raw[service] = json.dumps(doc).encode()
        if step == 0:
            changed = set(raw)
        before = dict(selection.routes)
        ours = selection.select(raw, changed if step % 50 else None)
        changed = set()
        assert ours == select_routes(raw, reserved_ports=reserved), step
        # What the selection says it touched covers every route it changed.
        if selection.touched is not None:
            moved = {s for s in before.keys() | ours[0].keys() if before.get(s) != ours[0].get(s)}
            assert moved <= selection.touched, step
