"""The engine protocol: where and how pods run, at the level Kubernetes works at.

The catalog hands an engine desired state (a pod with its containers,
environment, links, resources, package files, secrets, services and a replica
count) and reads observed state back (each replica's node, address,
readiness, restarts and the reason of its last failure; each service's
endpoints in the form gateways route to). Placement, addresses and restarts
are each engine's private business. Callers wait on the engine's stream of
changes, never on a polling loop.

A driver declares what it can do in `capabilities`; what it cannot do raises
`NotSupported` naming the driver and the operation, and callers check
`require` before they start.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import NewType, NotRequired, Protocol, TypedDict

from catalog.documents import Readiness
from catalog.errors import ActionFailed, NotSupported

ClusterKey = NewType("ClusterKey", str)
"""The engine-wide name of one cluster (`<environment>-<cluster name>`)."""
PodId = NewType("PodId", str)


class Capability(enum.Enum):
    APPLY = "apply"
    SCALE = "scale"
    RESTART = "restart"
    LOGS = "logs"
    DRAIN = "drain"
    RENDER = "render"


class Port(TypedDict):
    containerPort: int


class ContainerSpec(TypedDict):
    name: str
    image: NotRequired[str]
    command: list[str]
    args: NotRequired[list[str]]
    env: NotRequired[dict[str, str]]
    secrets: NotRequired[dict[str, str]]
    ports: NotRequired[list[Port]]
    cores: NotRequired[float]
    memory: NotRequired[int]
    readiness: NotRequired[Readiness]
    """Ready when this passes, instead of when the ports accept connections."""


class ServiceSpec(TypedDict):
    name: str
    port: int
    targetPort: int
    scope: str
    """`internal` (the cluster only), `public` (the gateways), `cloud`, `host`."""
    ip: NotRequired[str]
    """The service's stable address inside the cluster, once given one."""
    hosts: NotRequired[list[str]]
    """Host names a public HTTP service answers to on the gateways."""
    paths: NotRequired[list[str]]
    """Path prefixes within those host names (none: every path)."""
    tls: NotRequired[dict[str, str]]
    """`{"certificate": SECRET, "key": SECRET}`: two of the pod's secrets."""


class PodSpec(TypedDict):
    id: PodId
    name: str
    environment: str
    package: str | None
    containers: list[ContainerSpec]
    labels: dict[str, str]
    links: dict[str, str]
    """Alias -> service name; the engine gives Docker-link variables for each."""
    env: dict[str, str]
    """Variables every container gets (service addresses, link variables)."""
    services: list[ServiceSpec]
    replicas: int


class ReplicaState(TypedDict):
    name: str
    node: str
    address: str
    ready: bool
    """Its containers run and pass their readiness checks (accept connections
    on their ports, for a container without one)."""
    serving: bool
    """Ready, and every gateway routes to it."""
    restarts: int
    reason: str
    """Why it last stopped or cannot start ("exited with code 3", "command
    not found"); empty while it runs fine."""
    draining: bool
    """Taken out of its routes, to be stopped."""
    current: bool
    """Runs the pod's latest template and restart generation."""


class PodState(TypedDict):
    pod: PodId
    desired: int
    ready: int
    serving: int
    updated: int
    """Replicas not draining that are current and ready."""
    generation: int
    template: str
    pending: str
    """Why replicas that should run do not (no node fits, ...); empty when none."""
    services: list[ServiceSpec]
    """The pod's services with the addresses the engine gave them."""
    replicas: list[ReplicaState]


class Endpoint(TypedDict):
    host: str
    port: int


class Engine(Protocol):
    name: str
    capabilities: frozenset[Capability]

    async def run(self, stop: asyncio.Event) -> None:
        """What the driver keeps doing in the background, until `stop` is set."""

    async def apply_pod(self, cluster: ClusterKey, spec: PodSpec) -> None:
        """Make the pod and its services be as `spec` says (create or update)."""

    async def scale_pod(self, cluster: ClusterKey, pod: PodId, replicas: int) -> None:
        """Run exactly `replicas` replicas of the pod."""

    async def restart_pod(self, cluster: ClusterKey, pod: PodId) -> None:
        """Restart every replica, one at a time (in place where the driver can:
        capability RESTART); done when every replica is `current` and serves."""

    async def recreate_pod(self, cluster: ClusterKey, pod: PodId) -> None:
        """Replace every replica by a new one, new ones first."""

    async def delete_pod(self, cluster: ClusterKey, pod: PodId) -> None:
        """Stop every replica and forget the pod and its services."""

    async def pod_state(self, cluster: ClusterKey, pod: PodId) -> PodState | None:
        """What runs of the pod now; None when the engine does not know it."""

    async def endpoints(self, cluster: ClusterKey, service: str) -> list[Endpoint]:
        """Where gateways send a service's traffic (ready, not draining)."""

    def changes(self, cluster: ClusterKey | None) -> AsyncGenerator[None, None]:
        """Yields whenever the observed state of the cluster (of any, with
        None) may have changed."""

    def logs(
        self, cluster: ClusterKey, pod: PodId, *, replica: int, tail: int | None, follow: bool
    ) -> AsyncIterator[bytes]:
        """A replica's output (its first container's), from `tail` lines back."""

    async def node_states(self, cluster: ClusterKey) -> dict[str, str]:
        """`ready` or `cordoned` for every node the engine sees alive, `lost` for
        those it gave up on (their pods were moved); others are absent."""

    async def cordon(self, cluster: ClusterKey, node: str) -> None:
        """Place nothing new on the node."""

    async def uncordon(self, cluster: ClusterKey, node: str) -> None:
        """Place pods on the node again."""

    async def forget_node(self, cluster: ClusterKey, node: str) -> None:
        """The node is gone (or new under a removed one's name): drop what the
        engine kept about it (cordoned, lost)."""

    async def drain(
        self, cluster: ClusterKey, node: str, *, progress: Progress | None = None
    ) -> None:
        """Cordon, then move every replica off the node; return when they serve elsewhere."""

    def render(
        self,
        cluster: ClusterKey,
        specs: list[PodSpec],
        *,
        namespace: str,
        files: Mapping[str, Mapping[str, bytes]] | None = None,
    ) -> list[tuple[str, dict[str, object]]]:
        """The Kubernetes objects the engine would apply for these pods, in order;
        `files` holds each package's files (shipped as a ConfigMap)."""

    async def delete_cluster(self, cluster: ClusterKey) -> None:
        """Forget every pod of the cluster and stop what runs."""


def require(engine: Engine, capability: Capability, operation: str) -> None:
    """Refuse early what the driver declares it cannot do."""
    if capability not in engine.capabilities:
        raise NotSupported(engine.name, operation)


Progress = Callable[[str], Awaitable[None]]
"""Where an engine reports what it does while a caller waits (a task's log)."""


class ProgressReport:
    """Tells a pod's changes in words, once each: replicas placed, serving,
    draining, stopped."""

    def __init__(self, pod_name: str, progress: Progress) -> None:
        self.pod_name = pod_name
        self.progress = progress
        self.known: dict[str, ReplicaState] = {}
        self.first = True

    async def __call__(self, state: PodState | None) -> None:
        now = {r["name"]: r for r in state["replicas"]} if state else {}
        if self.first:  # what ran before is not news
            self.known, self.first = now, False
            return
        for name, replica in now.items():
            was = self.known.get(name)
            if was is None:
                await self.progress(
                    f"replica {name} of {self.pod_name} placed on {replica['node']}"
                )
            if replica["draining"] and not (was and was["draining"]):
                why = f": {replica['reason']}" if replica["reason"] else ""
                await self.progress(f"replica {name} on {replica['node']} draining{why}")
            if replica["serving"] and not (was and was["serving"]):
                await self.progress(f"replica {name} serves")
        for name, replica in self.known.items():
            if name not in now:
                # Draining can begin and end between two looks.
                how = "stopped" if replica["draining"] else "draining and stopped"
                await self.progress(f"replica {name} on {replica['node']}: {how}")
        self.known = now


async def wait_pod(
    engine: Engine,
    cluster: ClusterKey,
    pod: PodId,
    done: Callable[[PodState], bool],
    *,
    timeout: float,
    what: str,
    report: Callable[[PodState | None], Awaitable[None]] | None = None,
) -> PodState:
    """Follow the engine's changes until `done(state)`; fail with the reasons seen.

    A pod that does not converge within `timeout` fails the action with what
    its replicas report (a crash loop, a command not found, no room), not
    with a bare timeout.
    """
    deadline = time.monotonic() + timeout
    async with Changes(engine, cluster) as changes:
        while True:
            state = await engine.pod_state(cluster, pod)
            if report is not None:
                await report(state)
            if state is not None and done(state):
                return state
            left = deadline - time.monotonic()
            if left <= 0:
                raise ActionFailed("wait", f"{what} after {timeout:.0f}s: {describe(state)}")
            # A change, or a re-read now and then: a lost event costs a second at most.
            await changes.next(min(left, 1.0))


class Changes:
    """An engine's change stream, waited on with a time limit.

    A time limit must not cancel the stream's pending step (that would end
    the stream), so the step stays pending across waits.
    """

    def __init__(self, engine: Engine, cluster: ClusterKey | None) -> None:
        self.stream = engine.changes(cluster)
        self.pending: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Changes:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.pending is not None:
            self.pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await self.pending
        await self.stream.aclose()

    async def next(self, timeout: float) -> bool:
        """Whether a change came within `timeout` seconds."""
        if self.pending is None:
            self.pending = asyncio.ensure_future(anext(self.stream))
        done, _ = await asyncio.wait({self.pending}, timeout=timeout)
        if not done:
            return False
        finished, self.pending = self.pending, None
        if finished.exception() is not None:  # the stream ended: fall back to re-reading
            await asyncio.sleep(min(timeout, 0.2))
            return False
        return True


def failure_reasons(states: Iterable[PodState | None]) -> list[str]:
    """Every distinct reason these pods give for replicas that do not run."""
    found = {s["pending"] for s in states if s and s["pending"]}
    found |= {r["reason"] for s in states if s for r in s["replicas"] if r["reason"]}
    return sorted(found)


def describe(state: PodState | None) -> str:
    """A pod's state in words, with every distinct failure reason."""
    if state is None:
        return "the engine does not know the pod"
    reasons = failure_reasons([state])
    text = f"{state['serving']} of {state['desired']} replicas serving"
    return text + (f" ({'; '.join(reasons)})" if reasons else "")
