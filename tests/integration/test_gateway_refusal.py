"""A route that makes HAProxy refuse the configuration is left out and
reported with HAProxy's words; every other route is served.

Validation rejects every value known to break the configuration, so these
tests build the offending route directly, as a value that slipped past the
rules would arrive: the point is that such a gap costs one route, not the
gateway.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.agent import Agent
from gateway.planning import QUIET_SHARD_ROUTES, SHARD_ROUTES
from gateway.routes import Backend, Route
from gateway.settings import Settings
from tests.support import Backend as HTTPBackend
from tests.support import free_port, fresh_address, http_get

# Renders as a server line cut in two: the second half is no HAProxy keyword.
BROKEN = Backend("127.0.0.1\n    no-such-keyword", 80)


def make_agent(
    tmp_path: Path,
    address: str,
    *,
    shard_routes: int = SHARD_ROUTES,
    quiet_shard_routes: int = QUIET_SHARD_ROUTES,
) -> Agent:
    """An agent driven directly: its etcd is never contacted."""
    return Agent(
        Settings(
            etcd=["http://127.0.0.1:9"],
            cluster="refusal",
            address=address,
            state_dir=tmp_path / "gw",
            port_range=(30000, 30063),
            shard_routes=shard_routes,
            quiet_shard_routes=quiet_shard_routes,
        )
    )


async def stop_all(agent: Agent) -> None:
    for proxy in list(agent.proxies.values()):
        await proxy.stop()


def test_refused_route_is_isolated_and_reported(tmp_path: Path):
    address = fresh_address()
    good = HTTPBackend("good")
    agent = make_agent(tmp_path, address)
    static = free_port(address)
    desired = {
        "evil": Route("evil", free_port(address), "http", (BROKEN,)),
        "fine": Route("fine", 30004, "http", (Backend(good.host, good.port),)),
        "web": Route("web", static, "http", (Backend(good.host, good.port),)),
    }

    async def scenario() -> tuple[bool, dict[str, object]]:
        try:
            applied = await agent.reload_isolating(dict(desired), None)
            return applied, agent.status()
        finally:
            await stop_all(agent)

    try:
        applied, status = asyncio.run(scenario())
    finally:
        good.stop()
    assert applied
    [skipped] = status["skipped"]  # type: ignore[misc]
    assert skipped["service"] == "evil"
    assert "haproxy refused this route" in skipped["reason"]
    assert "unknown keyword 'no-such-keyword:80'" in skipped["reason"]
    assert agent.layout is not None
    assert sorted(agent.layout.routes()) == ["fine", "web"]
    config = "".join(p.read_text() for p in (tmp_path / "gw").glob("*.cfg"))
    assert "no-such-keyword" not in config


def test_served_while_running(tmp_path: Path):
    """The same, observed from outside while HAProxy runs."""
    address = fresh_address()
    good = HTTPBackend("good")
    agent = make_agent(tmp_path, address)
    static = free_port(address)
    desired = {
        "evil": Route("evil", 30005, "http", (BROKEN,)),
        "web": Route("web", static, "http", (Backend(good.host, good.port),)),
    }

    async def scenario() -> tuple[int, str]:
        try:
            await agent.reload_isolating(dict(desired), None)
            return await asyncio.to_thread(http_get, f"http://{address}:{static}/")
        finally:
            await stop_all(agent)

    try:
        assert asyncio.run(scenario()) == (200, "good")
    finally:
        good.stop()


def test_a_refusal_that_names_no_line_is_found_by_checking_halves(tmp_path: Path):
    address = fresh_address()
    agent = make_agent(tmp_path, address)
    ok = (Backend("127.0.0.1", 8080),)
    desired = {f"r{i}": Route(f"r{i}", 30010 + i, "http", ok) for i in range(7)}
    desired["r5"] = Route("r5", 30015, "http", (BROKEN,))
    found = asyncio.run(agent._find_refused(desired, "a message naming nothing"))
    assert list(found) == ["r5"]
    assert "unknown keyword 'no-such-keyword:80'" in found["r5"]
