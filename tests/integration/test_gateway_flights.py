"""Static parts reload in the background (flights) with real HAProxy: a part
in flight is left alone until its new process is confirmed or refused, and
what changed meanwhile follows; a refused flight costs the routes to blame
and keeps the running process serving.

The agent is driven directly (no etcd): route values go into `raw` as they
would arrive from a watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

from gateway.planning import POOL, plan_changes
from gateway.routes import Backend, Route
from tests.integration.test_gateway_refusal import BROKEN, make_agent, stop_all
from tests.support import Backend as HTTPBackend
from tests.support import free_port, free_ports, fresh_address, http_get


def value(port: int, backend: HTTPBackend) -> bytes:
    return json.dumps(
        {"port": port, "mode": "http", "backends": [{"host": backend.host, "port": backend.port}]}
    ).encode()


async def get(url: str) -> tuple[int, str]:
    return await asyncio.to_thread(http_get, url)


def test_a_change_to_a_part_in_flight_follows_once_it_lands(tmp_path: Path) -> None:
    address = fresh_address()
    one, two = HTTPBackend("one"), HTTPBackend("two")
    agent = make_agent(tmp_path, address)
    first, second = free_port(address), free_port(address)

    async def scenario() -> dict[str, object]:
        try:
            agent.known = True
            agent.raw = {"a": value(first, one)}
            agent.changed = None
            await agent.reconcile()
            await agent._land(wait=True)
            await agent.reconcile()
            assert await get(f"http://{address}:{first}/") == (200, "one")
            # A new port: the part reloads in the background.
            agent.raw["b"] = value(second, one)
            agent.changed = {"b"}
            await agent.reconcile()
            [part] = agent.flights
            # Meanwhile route a moves to another backend: the plan leaves the
            # part in flight alone, so nothing is sent to either process.
            agent.raw["a"] = value(first, two)
            agent.changed.add("a")
            runtime_updates = agent.metrics.runtime_updates
            await agent.reconcile()
            assert agent.metrics.runtime_updates == runtime_updates
            assert agent.metrics.applied_revision == 0  # not all applied yet
            # It lands; the next look sends what changed to the new process.
            await agent._land(wait=True)
            assert part not in agent.flights
            await agent.reconcile()
            assert agent.metrics.runtime_updates == runtime_updates + 1
            return {
                "a": await get(f"http://{address}:{first}/"),
                "b": await get(f"http://{address}:{second}/"),
                "served": sorted(agent.layout.routes()) if agent.layout else [],
            }
        finally:
            await stop_all(agent)

    try:
        seen = asyncio.run(scenario())
    finally:
        one.stop()
        two.stop()
    assert seen == {"a": (200, "two"), "b": (200, "one"), "served": ["a", "b"]}


def test_a_refused_flight_keeps_the_part_serving_and_leaves_out_the_route(tmp_path: Path) -> None:
    address = fresh_address()
    good = HTTPBackend("good")
    agent = make_agent(tmp_path, address)
    ports = free_ports(address, 3)
    web = Route("web", ports[0], "http", (Backend(good.host, good.port),))
    more = Route("more", ports[1], "http", (Backend(good.host, good.port),))
    evil = Route("evil", ports[2], "http", (BROKEN,))

    async def scenario() -> dict[str, object]:
        try:
            assert await agent.reload_isolating({"web": web}, None)
            assert agent.layout is not None
            [pid] = [p.pid for part, p in agent.proxies.items() if part != POOL]
            desired = {"web": web, "more": more, "evil": evil}
            plan = plan_changes(agent.layout, desired, map_path="")
            agent.layout = plan.layout
            parts = set(plan.reloads) - {POOL}
            assert len(parts) == 1
            await agent._launch(parts, desired)
            await agent._land(wait=True)
            # Refused: the process that served keeps serving what it did.
            after_refusal = {
                "web": await get(f"http://{address}:{ports[0]}/"),
                "pid kept": [p.pid for part, p in agent.proxies.items() if part != POOL] == [pid],
                "served": sorted(agent.layout.routes()),
                "refused": sorted(agent.refused),
            }
            del desired["evil"]
            plan = plan_changes(agent.layout, desired, map_path="")
            agent.layout = plan.layout
            await agent._launch(set(plan.reloads) - {POOL}, desired)
            await agent._land(wait=True)
            return {
                **after_refusal,
                "more": await get(f"http://{address}:{ports[1]}/"),
                "served after": sorted(agent.layout.routes()),
                "reason": agent.refused["evil"][1],
            }
        finally:
            await stop_all(agent)

    try:
        seen = asyncio.run(scenario())
    finally:
        good.stop()
    reason = seen.pop("reason")
    assert "unknown keyword 'no-such-keyword:80'" in str(reason)
    assert seen == {
        "web": (200, "good"),
        "pid kept": True,
        "served": ["web"],
        "refused": ["evil"],
        "more": (200, "good"),
        "served after": ["more", "web"],
    }


def test_the_applied_revision_follows_each_landing_not_the_last_flight(tmp_path: Path) -> None:
    """A revision counts as applied once the flights it started have landed,
    even while a later one is still in the air, so a steady stream of new
    ports does not hold the status back."""
    address = fresh_address()
    one = HTTPBackend("one")
    agent = make_agent(tmp_path, address, shard_routes=1)  # a part per new port
    ports = free_ports(address, 3)

    async def change(revision: int, service: str, port: int) -> None:
        agent.revision = revision
        agent.raw[service] = value(port, one)
        agent.changed = {service}
        await agent.reconcile()

    async def waiting_on_fifo(pid: int) -> None:
        # The standby must wait on its FIFO before it is frozen, so that the
        # flight can hand it the configuration.
        for _ in range(500):
            if Path(f"/proc/{pid}/wchan").read_text() == "wait_for_partner":
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the standby never opened its FIFO")

    async def freeze_standby(part: str) -> int:
        """Freeze the process waiting to become `part`'s next one: the
        flight that hands it a configuration cannot land until it thaws."""
        standby = agent.proxies[part]._standby
        assert standby is not None
        pid = standby[0].pid
        await waiting_on_fifo(pid)
        os.kill(pid, signal.SIGSTOP)
        frozen.append(pid)
        return pid

    frozen: list[int] = []

    async def scenario() -> list[int]:
        seen = []
        try:
            agent.known = True
            agent.changed = None
            await change(1, "a", ports[0])
            await agent._land(wait=True)
            await agent.reconcile()
            seen.append(agent.metrics.applied_revision)
            first = await freeze_standby("static-1")
            await change(2, "b", ports[1])
            second = await freeze_standby("static-2")
            await change(3, "c", ports[2])
            assert set(agent.flights) == {"static-1", "static-2"}
            assert agent.metrics.applied_revision == 1
            os.kill(first, signal.SIGCONT)
            await agent.flights["static-1"].task
            await agent.reconcile()
            seen.append(agent.metrics.applied_revision)
            assert set(agent.flights) == {"static-2"}
            os.kill(second, signal.SIGCONT)
            await agent._land(wait=True)
            await agent.reconcile()
            seen.append(agent.metrics.applied_revision)
            seen.append((await get(f"http://{address}:{ports[2]}/"))[0])
            return seen
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            await stop_all(agent)

    try:
        assert asyncio.run(scenario()) == [1, 2, 3, 200]
    finally:
        one.stop()
