"""Planning: which changes fit the running layout and which need a reload."""

from __future__ import annotations

import dataclasses
import random

import pytest

from gateway.agent import Agent
from gateway.planning import (
    MIN_SPARES,
    POOL,
    build_layout,
    key_of,
    plan_changes,
    routes_by_part,
    slots_for,
)
from gateway.routes import Backend, Route
from gateway.settings import Settings

RANGE = (30000, 32767)
MAP = "/state/ports.map"


def r(
    service: str,
    port: int,
    *hosts: str,
    mode: str = "http",
    balance: str = "roundrobin",
    check: bool = True,
) -> Route:
    return Route(service, port, mode, tuple(Backend(h, 80) for h in hosts), balance, check)


def test_slots_leave_room_to_double():
    assert [slots_for(n) for n in (0, 1, 2, 3, 5, 9)] == [4, 4, 4, 8, 16, 32]


def test_layout_places_routes_and_spares():
    layout = build_layout(
        {"a": r("a", 80, "127.0.0.2"), "b": r("b", 30001, "127.0.0.3")}, port_range=RANGE
    )
    assert set(layout.static) == {"a"}
    assert layout.port_map() == {30001: "pool_1"}
    spares = [b for b in layout.pool if b.route is None]
    assert len(spares) == MIN_SPARES["http"] + MIN_SPARES["tcp"]


def test_backend_change_is_runtime_only():
    layout = build_layout({"a": r("a", 80, "127.0.0.2")}, port_range=RANGE)
    plan = plan_changes(layout, {"a": r("a", 80, "127.0.0.3", "127.0.0.4")}, map_path=MAP)
    assert plan.reload is None
    assert plan.commands == [
        "set server be_a/s1 addr 127.0.0.3 port 80",
        "set server be_a/s1 state ready",
        "set server be_a/s2 addr 127.0.0.4 port 80",
        "set server be_a/s2 state ready",
    ]
    assert layout.static["a"].servers == (Backend("127.0.0.2", 80),), "plan must not mutate"
    shrink = plan_changes(plan.layout, {"a": r("a", 80, "127.0.0.4")}, map_path=MAP)
    assert shrink.commands == [
        "set server be_a/s1 addr 127.0.0.4 port 80",
        "set server be_a/s1 state ready",
        "set server be_a/s2 state maint",
    ]


def test_new_route_in_range_takes_a_spare():
    layout = build_layout({}, port_range=RANGE)
    plan = plan_changes(layout, {"n": r("n", 30005, "127.0.0.2", mode="tcp")}, map_path=MAP)
    assert plan.reload is None
    assert plan.commands[-1].startswith(f"add map {MAP} 30005 pool_")
    assert plan.layout.port_map()[30005] == plan.commands[-1].split()[-1]


def test_freed_port_is_reused_in_one_change():
    layout = build_layout({"a": r("a", 30001, "127.0.0.2")}, port_range=RANGE)
    desired = {"a": r("a", 30002, "127.0.0.2"), "b": r("b", 30001, "127.0.0.3")}
    plan = plan_changes(layout, desired, map_path=MAP)
    assert plan.reload is None
    assert plan.commands.index(f"del map {MAP} 30001") < plan.commands.index(
        next(c for c in plan.commands if c.startswith(f"add map {MAP} 30001"))
    )
    assert set(plan.layout.port_map()) == {30001, 30002}


def test_changes_that_need_a_reload():
    layout = build_layout(
        {"a": r("a", 80, "127.0.0.2"), "p": r("p", 30001, "127.0.0.2")}, port_range=RANGE
    )
    cases = {
        "new port outside the range": {**layout.routes(), "z": r("z", 81, "127.0.0.2")},
        "static route removed": {"p": r("p", 30001, "127.0.0.2")},
        "balance changed": {**layout.routes(), "a": r("a", 80, "127.0.0.2", balance="source")},
        "slots exceeded": {
            **layout.routes(),
            "a": r("a", 80, *(f"127.0.0.{i}" for i in range(2, 9))),
        },
        "host name": {**layout.routes(), "p": r("p", 30001, "db.local")},
    }
    for what, desired in cases.items():
        assert plan_changes(layout, desired, map_path=MAP).reload, what


def test_spares_run_out():
    layout = build_layout({}, port_range=RANGE)
    desired = {f"s{i}": r(f"s{i}", 30000 + i, "127.0.0.2") for i in range(MIN_SPARES["http"] + 1)}
    assert "no spare http backend" in (plan_changes(layout, desired, map_path=MAP).reload or "")


def test_no_range_means_every_new_route_reloads():
    layout = build_layout({}, port_range=None)
    assert layout.pool == []
    assert plan_changes(layout, {"a": r("a", 30001, "127.0.0.2")}, map_path=MAP).reload


def test_a_burst_of_two_thousand_routes_needs_no_reload():
    layout = build_layout({}, port_range=(30000, 32767))
    desired = {f"s{i}": r(f"s{i}", 30000 + i, "127.0.0.2") for i in range(2000)}
    plan = plan_changes(layout, desired, map_path=MAP)
    assert plan.reload is None
    assert len(plan.layout.port_map()) == 2000


def test_spares_never_outnumber_the_free_ports_of_the_range():
    layout = build_layout({"a": r("a", 30001, "127.0.0.2")}, port_range=(30000, 30099))
    assert len(layout.pool) == 100


def test_a_new_port_outside_the_range_leaves_the_pool_alone():
    layout = build_layout({"p": r("p", 30001, "127.0.0.2")}, port_range=RANGE)
    desired = {**layout.routes(), "z": r("z", 81, "127.0.0.2"), "q": r("q", 30002, "127.0.0.3")}
    plan = plan_changes(layout, desired, map_path=MAP)
    assert plan.reload_static and plan.reload_pool is None
    assert any(c.startswith(f"add map {MAP} 30002 ") for c in plan.pool_commands)


def test_ports_outside_the_range_fill_parts_in_turn_and_keep_them():
    routes = {f"s{i}": r(f"s{i}", 40000 + i, "127.0.0.2") for i in range(5)}
    layout = build_layout(routes, port_range=RANGE, shard_routes=2)
    parts = [layout.static[s].part for s in sorted(routes)]
    assert parts == ["static-0", "static-0", "static-1", "static-1", "static-2"]
    # A new port goes to the part with room, and only that part reloads.
    new = plan_changes(layout, {**layout.routes(), "t": r("t", 41000, "127.0.0.2")}, map_path=MAP)
    assert set(new.reloads) == {"static-2"}
    assert new.layout.placement[(None, 41000)] == "static-2"
    # A route changed beyond its slots reloads the part its port is in.
    changed = {**layout.routes(), "s0": r("s0", 40000, "127.0.0.2", balance="source")}
    assert set(plan_changes(layout, changed, map_path=MAP).reloads) == {"static-0"}
    # Built again from the placement, every port stays; a new one fills a hole.
    kept = {"s1": routes["s1"], "s4": routes["s4"], "u": r("u", 42000, "127.0.0.2")}
    again = build_layout(kept, port_range=RANGE, placement=layout.placement, shard_routes=2)
    assert {s: b.part for s, b in again.static.items()} == {
        "s1": "static-0",
        "s4": "static-2",
        "u": "static-0",
    }


def _rebuilt(layout):
    """`layout`'s derived indexes built afresh from its slots."""
    fresh = dataclasses.replace(layout)
    fresh._served = fresh._members = fresh._pool_index = fresh._spares = None
    spares = {sig: sorted(b.name for b in stack) for sig, stack in fresh.spares().items()}
    return fresh.routes(), fresh.members(), fresh.pool_index(), spares


def _tables(layout):
    """A copy of everything a layout holds, its indexes included."""
    return (
        dict(layout.static),
        list(layout.pool),
        dict(layout.placement),
        dict(layout.sizes),
        _kept(layout),
    )


def _kept(layout):
    spares = {sig: sorted(b.name for b in stack) for sig, stack in layout.spares().items()}
    return layout.routes(), layout.members(), layout.pool_index(), spares


@pytest.mark.parametrize("seed", [7, 11, 23])
def test_indexes_kept_through_plans_and_merges_match_ones_built_afresh(tmp_path, seed):
    """Plans and merges keep a layout's indexes up to date a change at a
    time; after every step of random changes (ports in and out of the range,
    routes added, moved, changed and removed, parts reloaded in any order)
    they equal indexes built from the slots."""
    settings = Settings(
        etcd=["http://127.0.0.1:9"],
        cluster="indexes",
        address="127.0.0.1",
        state_dir=tmp_path / "gw",
        port_range=(30000, 30099),
        shard_routes=4,
    )
    agent = Agent(settings)
    rng = random.Random(seed)
    ports = [*range(30000, 30040), *range(40000, 40040)]
    desired: dict[str, Route] = {}
    layout = build_layout({}, port_range=settings.port_range, shard_routes=4)
    for step in range(300):
        for _ in range(rng.randint(1, 6)):
            service = f"s{rng.randint(0, 40)}"
            if rng.random() < 0.25:
                desired.pop(service, None)
                continue
            port = rng.choice(ports)
            if any(r.port == port for s, r in desired.items() if s != service):
                continue
            backends = tuple(Backend("127.0.0.1", 8000 + rng.randint(0, 3)) for _ in range(2))
            desired[service] = Route(service, port, "http", backends[: rng.randint(1, 2)])
        before = _tables(layout)
        plan = plan_changes(layout, desired, map_path=MAP)
        # A plan shares the running layout's tables until it changes them,
        # and never changes the running layout.
        assert _tables(layout) == before, f"step {step}: the running layout changed"
        layout = plan.layout
        assert _kept(layout) == _rebuilt(layout), f"step {step}: plan"
        static_parts = set(plan.reloads) - {POOL}
        assert routes_by_part(layout, static_parts, desired, plan.placed) == routes_by_part(
            layout, static_parts, desired
        ), f"step {step}: the routes of a part from the plan's hint"
        # Reload what the plan asks for, a part at a time in random order,
        # each from the routes placed in it, as the agent's flights do.
        parts = list(plan.reloads)
        rng.shuffle(parts)
        for part in parts:
            if part == POOL:
                fresh = build_layout(
                    {s: r for s, r in desired.items() if layout.in_pool(r)},
                    port_range=settings.port_range,
                    shard_routes=4,
                )
            else:
                own = {
                    s: r
                    for s, r in desired.items()
                    if not layout.in_pool(r) and layout.placement.get(key_of(r)) == part
                }
                fresh = build_layout(
                    own,
                    port_range=settings.port_range,
                    spares=False,
                    placement=layout.placement,
                    shard_routes=4,
                )
            layout = agent._merge(layout, fresh, {part})
            assert _kept(layout) == _rebuilt(layout), f"step {step}: merge of {part}"
        served = layout.routes()
        # Whatever a plan left for later, the next one sees: nothing served
        # that is not desired as it is, unless a reload of it is pending.
        assert all(desired.get(s) == r for s, r in served.items() if s in desired) or plan.reloads
