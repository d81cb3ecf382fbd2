"""How new ports are shared among static parts, with real HAProxy: a burst
fills big parts (few processes to start), a port that comes alone goes to a
small one, so one new route restarts a small process however many routes
the gateway holds.

The agent is driven directly (no etcd): changes go through `_take` as they
would arrive from a watch, so bursts are told apart as in service.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.agent import BURST_EVENTS, BURST_WINDOW, Agent
from gateway.etcd import Event
from gateway.watching import Changed
from tests.integration.test_gateway_flights import value
from tests.integration.test_gateway_refusal import make_agent, stop_all
from tests.support import Backend as HTTPBackend
from tests.support import free_ports, fresh_address, http_get

BURST = 2 * BURST_EVENTS + 3


async def change(agent: Agent, values: dict[str, bytes]) -> None:
    """`values` in one watch message, applied as the agent's loop would:
    looked at again (a reload put off to a burst's end is due after a
    quiet moment) until the revision is applied."""
    agent._take(
        Changed(
            tuple(
                Event(agent.prefix + service.encode(), data, agent.revision + 1 + i)
                for i, (service, data) in enumerate(values.items())
            )
        )
    )
    for _ in range(100):
        await agent.reconcile()
        await agent._land(wait=True)
        if agent.metrics.applied_revision == agent.revision:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"revision {agent.revision} never applied")


async def start_empty(agent: Agent) -> None:
    agent.known = True
    agent.raw = {}
    agent.changed = None
    await agent.reconcile()


def routes_per_part(agent: Agent) -> dict[str, int]:
    assert agent.layout is not None
    return {part: len(members) for part, members in agent.layout.members().items()}


def configured_routes(agent: Agent, part: str) -> int:
    """Routes in the configuration the part's process was started with."""
    text = agent.proxies[part].config_path.read_text()
    return text.count("\nlisten be_")


def test_a_burst_fills_big_parts_and_a_port_alone_a_small_one(tmp_path: Path) -> None:
    address = fresh_address()
    backend = HTTPBackend("one")
    agent = make_agent(tmp_path, address, shard_routes=16, quiet_shard_routes=3)
    ports = free_ports(address, BURST + 5)
    burst, alone = ports[:BURST], ports[BURST:]

    async def scenario() -> dict[str, object]:
        try:
            await start_empty(agent)
            await change(agent, {f"b{i:03}": value(p, backend) for i, p in enumerate(burst)})
            after_burst = routes_per_part(agent)

            def waiting() -> bool:
                """Whether the part the next port alone goes to has its
                process started, waiting."""
                proxy = agent.proxies.get("static-3")
                return proxy is not None and proxy.standby_pid_path.exists()

            # Not while the burst goes on (starting a process takes from
            # it), but the agent is due to look again when it ends, and then
            # it starts one.
            during = waiting()
            due = agent._next_wakeup()
            assert due is not None and due <= BURST_WINDOW
            await asyncio.sleep(due + 0.01)
            await agent.reconcile()
            after = waiting()  # the burst is over
            singles = []
            for i, port in enumerate(alone):
                await change(agent, {f"s{i}": value(port, backend)})
                assert agent.layout is not None
                part = agent.layout.placement[(None, port)]
                singles.append((part, configured_routes(agent, part)))
            served = [await asyncio.to_thread(http_get, f"http://{address}:{p}/") for p in ports]
            return {
                "after_burst": after_burst,
                "waiting": (during, after),
                "singles": singles,
                "served": served,
            }
        finally:
            await stop_all(agent)

    try:
        seen = asyncio.run(scenario())
    finally:
        backend.stop()
    # The burst filled parts of 16: 43 routes in three processes.
    assert seen["after_burst"] == {"static-0": 16, "static-1": 16, "static-2": BURST - 32}
    assert seen["waiting"] == (False, True)
    # Ports that came alone went to new parts of at most 3, not to the
    # burst's last part with room: each restarted a process of 1 to 3 routes.
    assert seen["singles"] == [
        ("static-3", 1),
        ("static-3", 2),
        ("static-3", 3),
        ("static-4", 1),
        ("static-4", 2),
    ]
    assert seen["served"] == [(200, "one")] * len(ports)


def test_a_port_alone_fills_a_small_part_left_by_a_burst(tmp_path: Path) -> None:
    """A burst that ends with a part below the small size leaves room there:
    ports that come alone fill it before a new process is started."""
    address = fresh_address()
    backend = HTTPBackend("one")
    agent = make_agent(tmp_path, address, shard_routes=BURST - 1, quiet_shard_routes=3)
    ports = free_ports(address, BURST + 3)

    async def scenario() -> list[str]:
        try:
            await start_empty(agent)
            await change(
                agent, {f"b{i:03}": value(p, backend) for i, p in enumerate(ports[:BURST])}
            )
            await asyncio.sleep(BURST_WINDOW + 0.1)
            parts = []
            for i, port in enumerate(ports[BURST:]):
                await change(agent, {f"s{i}": value(port, backend)})
                assert agent.layout is not None
                parts.append(agent.layout.placement[(None, port)])
            return parts
        finally:
            await stop_all(agent)

    try:
        parts = asyncio.run(scenario())
    finally:
        backend.stop()
    # static-1 kept one route of the burst: two more fit, the third does not.
    assert parts == ["static-1", "static-1", "static-2"]
