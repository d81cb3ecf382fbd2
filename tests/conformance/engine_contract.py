"""The engine protocol's behaviour, as one suite every engine driver passes.

`test_engines.py` runs it against each driver through the `engine` fixture's
parameter. Each test drives the driver through the protocol only (apply,
scale, restart, drain, logs, changes, render) and checks what a user would
notice: requests answered through the gateways, the reasons of failures,
the objects an export would hold. A driver that declares it lacks a
capability skips the tests that need it, by that declaration.
"""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import kubernetes_validate
import pytest

from catalog.engines.base import (
    Capability,
    ClusterKey,
    Engine,
    PodId,
    PodSpec,
    PodState,
    wait_pod,
)
from tests.support import http_get, wait_for

T = TypeVar("T")
SERVE = 'exec python3 -m http.server --bind "$POD_IP" 8080 --directory /pod/work'


@dataclass
class Harness:
    """An engine running in a loop of its own, with a cluster of nodes."""

    engine: Engine
    cluster: ClusterKey
    loop: asyncio.AbstractEventLoop
    gateway: str
    """The address a gateway node serves public routes on."""
    nodes: list[str]
    """Worker node names."""
    stop: Callable[[], None]
    counter: list[int] = field(default_factory=lambda: [0])
    created: list[PodId] = field(default_factory=list)

    def run(self, coroutine: Awaitable[T], *, timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)  # type: ignore[arg-type]

    def pod(self, name: str, *, command: str = SERVE, replicas: int = 1, port: int = 0) -> PodSpec:
        self.counter[0] += 1
        public = port or 30600 + self.counter[0]
        self.created.append(PodId(f"{name}-{self.counter[0]}"))
        return {
            "id": PodId(f"{name}-{self.counter[0]}"),
            "name": f"{name}-{self.counter[0]}",
            "environment": "conformance",
            "package": None,
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.11-slim",
                    "command": ["sh", "-c", command],
                    "ports": [{"containerPort": 8080}],
                    "cores": 0.1,
                    "memory": 32,
                }
            ],
            "labels": {"app": name},
            "links": {},
            "env": {},
            "services": [
                {
                    "name": f"{name}-{self.counter[0]}",
                    "port": public,
                    "targetPort": 8080,
                    "scope": "public",
                }
            ],
            "replicas": replicas,
        }

    def wait(
        self, spec: PodSpec, done: Callable[[PodState], bool], what: str, timeout: float = 90
    ) -> PodState:
        return self.run(
            wait_pod(self.engine, self.cluster, spec["id"], done, timeout=timeout, what=what),
            timeout=timeout + 10,
        )

    def clean(self) -> None:
        """Delete the pods a test made, so the next test has the nodes to itself."""
        for pod in self.created:
            self.run(self.engine.delete_pod(self.cluster, pod))
        self.created.clear()

    def url(self, spec: PodSpec) -> str:
        return f"http://{self.gateway}:{spec['services'][0]['port']}/"


def status_of(url: str) -> int:
    """The HTTP status, or 0 when the gateway closes or refuses the connection."""
    try:
        return http_get(url, timeout=5)[0]
    except (OSError, http.client.HTTPException):
        return 0


def serving(n: int) -> Callable[[PodState], bool]:
    return lambda s: s["serving"] == n and len(s["replicas"]) == n and s["updated"] == n


def needs(harness: Harness, capability: Capability) -> None:
    if capability not in harness.engine.capabilities:
        pytest.skip(f"the {harness.engine.name} engine declares no {capability.value} capability")


# -- the contract -----------------------------------------------------------------------


def test_an_applied_pod_serves_through_the_gateways(engine: Harness) -> None:
    spec = engine.pod("web")
    engine.run(engine.engine.apply_pod(engine.cluster, spec))
    state = engine.wait(spec, serving(1), "one replica serving")
    replica = state["replicas"][0]
    assert replica["node"] in engine.nodes and replica["address"] and replica["ready"]
    assert http_get(engine.url(spec))[0] == 200
    endpoints = engine.run(engine.engine.endpoints(engine.cluster, spec["services"][0]["name"]))
    assert [e["port"] for e in endpoints] == [8080]


def test_scaling_up_and_down_reaches_exactly_the_count(engine: Harness) -> None:
    needs(engine, Capability.SCALE)
    spec = engine.pod("scaled")
    engine.run(engine.engine.apply_pod(engine.cluster, spec))
    engine.wait(spec, serving(1), "one replica")
    engine.run(engine.engine.scale_pod(engine.cluster, spec["id"], 3))
    state = engine.wait(spec, serving(3), "three replicas")
    assert len({r["address"] for r in state["replicas"]}) == 3
    engine.run(engine.engine.scale_pod(engine.cluster, spec["id"], 1))
    state = engine.wait(spec, serving(1), "one replica again")
    assert [r["draining"] for r in state["replicas"]] == [False]
    engine.run(engine.engine.scale_pod(engine.cluster, spec["id"], 0))
    state = engine.wait(spec, lambda s: not s["replicas"], "no replica")
    assert state["desired"] == 0


def test_a_restart_replaces_every_replica_and_keeps_serving(engine: Harness) -> None:
    spec = engine.pod("restarted", replicas=2)
    engine.run(engine.engine.apply_pod(engine.cluster, spec))
    before = engine.wait(spec, serving(2), "two replicas")
    engine.run(engine.engine.restart_pod(engine.cluster, spec["id"]))
    after = engine.wait(spec, lambda s: serving(2)(s) and s != before, "the restart", timeout=120)
    assert after["generation"] > before["generation"] or after["template"] != before["template"]
    wait_for(lambda: status_of(engine.url(spec)) == 200, timeout=30, what="the restarted pod")


def test_a_crash_is_reported_with_its_exit_code(engine: Harness) -> None:
    spec = engine.pod("crashing", command="echo starting; exit 3")
    engine.run(engine.engine.apply_pod(engine.cluster, spec))
    state = engine.wait(
        spec,
        lambda s: any("exited with code 3" in r["reason"] for r in s["replicas"]),
        "the crash to be reported",
    )
    assert state["serving"] == 0 and state["ready"] == 0


def test_a_missing_command_is_reported_as_such(engine: Harness) -> None:
    spec = engine.pod("missing", command="exec no-such-command-here")
    engine.run(engine.engine.apply_pod(engine.cluster, spec))
    engine.wait(
        spec,
        lambda s: any("not found" in r["reason"] for r in s["replicas"]),
        "command not found to be reported",
    )


def test_logs_tail_and_follow(engine: Harness) -> None:
    needs(engine, Capability.LOGS)
    ticking = "(while true; do echo tick; sleep 0.2; done) & "
    command = 'for i in 1 2 3; do echo "line $i"; done; ' + ticking + SERVE
    spec = engine.pod("logging", command=command)
    engine.run(engine.engine.apply_pod(engine.cluster, spec))
    engine.wait(spec, serving(1), "the replica")

    async def read(tail: int | None, follow: bool, until: bytes) -> bytes:
        got = b""
        stream = engine.engine.logs(engine.cluster, spec["id"], replica=0, tail=tail, follow=follow)
        async for chunk in stream:
            got += chunk
            if until in got:
                break
        return got

    everything = engine.run(read(None, False, b"\0"))
    assert everything.startswith(b"line 1\nline 2\nline 3\n")
    last = engine.run(read(2, False, b"\0"))
    assert len(last.splitlines()) == 2 and last.splitlines()[-1] == b"tick"
    # Following from the end: only what is written from now on arrives.
    followed = engine.run(read(0, True, b"tick\ntick\n"), timeout=30)
    assert b"line" not in followed and followed.count(b"tick") >= 2


def test_the_change_stream_tells_of_a_change(engine: Harness) -> None:
    async def first_change() -> bool:
        stream = engine.engine.changes(engine.cluster)
        try:
            waiting = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0.2)  # the watch is in place before the change
            await engine.engine.apply_pod(engine.cluster, engine.pod("watched"))
            await asyncio.wait_for(waiting, 20)
            return True
        finally:
            await stream.aclose()

    assert engine.run(first_change())


def test_a_drain_moves_every_replica_and_loses_no_request(engine: Harness) -> None:
    needs(engine, Capability.DRAIN)
    spec = engine.pod("drained", replicas=2)
    engine.run(engine.engine.apply_pod(engine.cluster, spec))
    state = engine.wait(spec, serving(2), "two replicas")
    victim = state["replicas"][0]["node"]
    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            results.append(status_of(engine.url(spec)))

    thread = threading.Thread(target=load)
    thread.start()
    try:
        engine.run(engine.engine.drain(engine.cluster, victim), timeout=180)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
        engine.run(engine.engine.uncordon(engine.cluster, victim))
    after = engine.wait(spec, serving(2), "two replicas elsewhere")
    assert victim not in {r["node"] for r in after["replicas"]}
    assert len(results) > 10 and set(results) == {200}, {c: results.count(c) for c in set(results)}


def test_deleting_a_pod_stops_it_and_its_route(engine: Harness) -> None:
    spec = engine.pod("deleted")
    engine.run(engine.engine.apply_pod(engine.cluster, spec))
    engine.wait(spec, serving(1), "the replica")
    engine.run(engine.engine.delete_pod(engine.cluster, spec["id"]))
    assert engine.run(engine.engine.pod_state(engine.cluster, spec["id"])) is None
    deadline = time.monotonic() + 30
    while status_of(engine.url(spec)) == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status_of(engine.url(spec)) != 200


def test_render_gives_valid_kubernetes_objects_in_order(engine: Harness) -> None:
    needs(engine, Capability.RENDER)
    spec = engine.pod("rendered", replicas=2)
    objects = engine.engine.render(engine.cluster, [spec], namespace="conformance")
    kinds = [o["kind"] for _, o in objects]
    assert kinds[0] == "Namespace" and "Deployment" in kinds and "Service" in kinds
    assert kinds.index("Service") < kinds.index("Deployment")
    for _, manifest in objects:
        kubernetes_validate.validate(manifest, "1.33", strict=True)
    deployment = next(o for _, o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2  # type: ignore[index]


def test_what_a_driver_cannot_do_is_refused_by_name(engine: Harness) -> None:
    from catalog.engines.base import require
    from catalog.errors import NotSupported

    for capability in Capability:
        if capability in engine.engine.capabilities:
            require(engine.engine, capability, capability.value)
        else:
            with pytest.raises(NotSupported, match=engine.engine.name):
                require(engine.engine, capability, capability.value)
