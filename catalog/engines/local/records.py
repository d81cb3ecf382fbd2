"""The documents the local engine keeps in etcd, typed.

Written by the engine (pods), the reconciler (replicas, lost nodes) and the
node agents (registrations, reports); read by all three. Keys in
`catalog.keys`.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict, cast

from catalog import keys
from catalog.engines.base import ContainerSpec, PodSpec
from catalog.store import Store


class NodeRecord(TypedDict):
    """A node agent's registration, under its lease."""

    node: str
    address: str
    role: str
    cores: float
    memory: int
    pid: int
    started: float


class PodRecord(TypedDict):
    """A pod's desired state."""

    spec: PodSpec
    replicas: int
    generation: int
    """Bumped by an in-place restart; replicas follow one at a time."""
    recreate: int
    template: str
    """What a replica is replaced for when it changes: a digest of the spec."""
    pending: NotRequired[str]


class ReplicaRecord(TypedDict):
    """A replica the reconciler placed: what its node agent runs."""

    pod: str
    podName: str
    name: str
    environment: str
    node: str
    containers: list[ContainerSpec]
    package: str | None
    labels: dict[str, str]
    env: dict[str, str]
    ip: str
    generation: int
    template: str
    created: float
    draining: NotRequired[bool]
    drainReason: NotRequired[str]


class ReplicaReport(TypedDict):
    """What a node agent reports of a replica, under its lease."""

    node: str
    state: str
    ready: bool
    ip: str
    pod: str
    restarts: int
    generation: int
    pids: list[int]
    reason: str


class Replica(ReplicaRecord):
    """A replica record with its id and its latest report (None: no report)."""

    id: str
    status: ReplicaReport | None


async def read_replicas(store: Store, cluster: str) -> dict[str, Replica]:
    """Every replica of the cluster, by id, with its latest report."""
    prefix = f"{keys.REPLICAS}{cluster}/"
    reports = {
        v.key.rsplit("/", 1)[1]: cast(ReplicaReport, v.value)
        for v in await store.list(f"{keys.REPLICA_STATUS}{cluster}/")
    }
    found: dict[str, Replica] = {}
    for v in await store.list(prefix):
        ident = v.key[len(prefix) :]
        found[ident] = cast(Replica, {**v.value, "id": ident, "status": reports.get(ident)})
    return found
