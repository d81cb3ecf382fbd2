"""What the engine observes, mirrored into the environments users read.

For every deployed cluster it records each pod's serving replica count, the
state of each replica (node, address, ready, restarts, the reason of its last
failure), the public URLs through the cluster's gateways, and which nodes are
lost, as the engine decides it (after a grace period: an etcd restart or a
stalled agent must not count); a lost node is ready again once seen.
It works with any engine, through the engine protocol only.

One observer acts at a time (a lock under its lease), so several Marina
processes can run and one takes over when another dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TypedDict

from catalog import environments as envs
from catalog import keys
from catalog.documents import (
    ClusterObject,
    EnvironmentDocument,
    NodeObject,
    PodStatus,
    ReplicaSummary,
    is_cluster,
    is_pod,
)
from catalog.engines.base import ClusterKey, Engine, PodId, PodState
from catalog.errors import MarinaError
from catalog.ids import ObjectId
from catalog.leading import Leadership
from catalog.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObserverSettings:
    lease_ttl: int = 5
    """Seconds the observer's lock outlives an observer that died."""
    resync: float = 2.0
    """Seconds between passes when nothing changes."""


CRASH_WINDOW = 60.0
"""Seconds after a replica's restart during which its pod counts as failing:
a crash-looping replica is ready for moments between restarts."""


class PodUpdate(TypedDict):
    """What the observer writes on a pod object."""

    ready: int
    endpoints: list[str]
    status: PodStatus


def replica_summary(
    state: PodState, before: list[ReplicaSummary] | None = None, *, now: float = 0.0
) -> list[ReplicaSummary]:
    """Each replica as users see it; `restarted` is when its restart count
    last grew (carried over from `before`, the previous summary)."""
    known = {r["name"]: r for r in before or []}
    summary: list[ReplicaSummary] = []
    for r in state["replicas"]:
        was = known.get(r["name"])
        restarted = was.get("restarted") if was else None
        if r["restarts"] and (was is None or r["restarts"] > was["restarts"]):
            restarted = now
        shown: ReplicaSummary = {
            "name": r["name"],
            "node": r["node"],
            "address": r["address"],
            "ready": r["ready"],
            "restarts": r["restarts"],
            "reason": r["reason"],
        }
        if restarted:
            shown["restarted"] = restarted
        if r["draining"]:
            shown["draining"] = True
        summary.append(shown)
    return summary


def failing_pods(doc: EnvironmentDocument, *, now: float) -> list[str]:
    """Pods with a replica that is down and says why (crashed, cannot start),
    or that restarted lately: while there is one, the environment is
    `degraded`, not `ready`."""
    return [
        pod["?"]["name"]
        for pod in doc["objects"].values()
        if is_pod(pod)
        and any(
            (not r["ready"] and r["reason"]) or now - r.get("restarted", 0) < CRASH_WINDOW
            for r in (pod["status"]["replicas"] if "status" in pod else [])
        )
    ]


def environment_status(doc: EnvironmentDocument, *, now: float) -> str:
    """What the environment's status should be; deleting (or any other) stays."""
    if doc["status"] not in ("ready", "degraded"):
        return doc["status"]
    return "degraded" if failing_pods(doc, now=now) else "ready"


class Observer:
    def __init__(
        self, store: Store, engine: Engine, settings: ObserverSettings | None = None
    ) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings or ObserverSettings()

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        leadership = Leadership(
            self.store, keys.CONTROLLER_LOCK, "observer", settings.lease_ttl, settings.resync
        )
        await leadership.run(stop, work=self._pass, changes=lambda: self.engine.changes(None))

    async def _pass(self) -> None:
        await self.observe()

    async def observe(self) -> None:
        for found in await self.store.list(keys.ENVIRONMENTS):
            doc: EnvironmentDocument = found.value
            if doc["status"] == "deleting":
                continue
            for cluster in envs.clusters(doc):
                if cluster["state"] in ("ready", "deploying"):
                    await self._cluster(doc, cluster)

    async def _cluster(self, doc: EnvironmentDocument, cluster: ClusterObject) -> None:
        key = ClusterKey(cluster["key"])
        seen = await self.engine.node_states(key)
        nodes = envs.nodes_of(doc, cluster)
        # The engine says when a node is lost: it moves the node's pods at that
        # moment, and the model must say so no later.
        lost = [
            n
            for n in nodes
            if seen.get(n["?"]["name"]) == "lost"
            and n["state"] in ("ready", "cordoned")
            and n["steps"]["setupNode"]
        ]
        back = [n for n in nodes if n["state"] == "lost" and seen.get(n["?"]["name"]) == "ready"]
        if back:
            await self._set_state(doc["id"], back, "ready")
        if lost:
            await self._set_state(doc["id"], lost, "lost")
        seen = {name: state for name, state in seen.items() if state != "lost"}
        gateways = [
            n
            for n in nodes
            if n["role"] == "gateway" and n["state"] == "ready" and n["?"]["name"] in seen
        ]
        updates: dict[ObjectId, PodUpdate] = {}
        now = time.time()
        for pod in envs.pods_of(doc):
            if pod["cluster"] != cluster["?"]["id"]:
                continue
            state = await self.engine.pod_state(key, PodId(pod["?"]["id"]))
            if state is None:
                continue
            endpoints = [
                f"http://{g['address']}:{s['port']}/"
                for s in state["services"]
                if s.get("scope") == "public"
                for g in gateways
            ]
            before = pod["status"]["replicas"] if "status" in pod else None
            update: PodUpdate = {
                "ready": state["serving"],
                "endpoints": endpoints,
                "status": {
                    "replicas": replica_summary(state, before, now=now),
                    "pending": state["pending"],
                },
            }
            shown = {
                "ready": pod["replicas"]["ready"],
                "endpoints": pod.get("endpoints"),
                "status": pod.get("status"),
            }
            if update != shown:
                updates[pod["?"]["id"]] = update
        cluster_endpoints = sorted(
            {e for u in updates.values() for e in u["endpoints"]}
            | {
                e
                for p in envs.pods_of(doc)
                if p["cluster"] == cluster["?"]["id"] and p["?"]["id"] not in updates
                for e in p.get("endpoints", [])
            }
        )
        stale = environment_status(doc, now=now) != doc["status"]  # a crash window ended
        if updates or stale or cluster.get("endpoints") != cluster_endpoints:
            await self._record(doc["id"], cluster["?"]["id"], updates, cluster_endpoints)

    async def _record(
        self,
        env_id: str,
        cluster_id: ObjectId,
        updates: dict[ObjectId, PodUpdate],
        endpoints: list[str],
    ) -> None:
        def edit(doc: EnvironmentDocument) -> None:
            for pod_id, update in updates.items():
                pod = doc["objects"].get(pod_id)
                if pod is not None and is_pod(pod):
                    pod["replicas"] = {**pod["replicas"], "ready": update["ready"]}
                    pod["endpoints"] = update["endpoints"]
                    pod["status"] = update["status"]
            cluster = doc["objects"].get(cluster_id)
            if cluster is not None and is_cluster(cluster):
                cluster["endpoints"] = endpoints
            doc["status"] = environment_status(doc, now=time.time())

        with contextlib.suppress(MarinaError):
            await envs.change(self.store, env_id, edit)

    async def _set_state(self, env_id: str, nodes: list[NodeObject], state: str) -> None:
        names = ", ".join(n["?"]["name"] for n in nodes)
        if state == "lost":
            log.warning("nodes lost: %s", names)
        else:
            log.warning("nodes back: %s", names)
        before = {n["?"]["id"]: n["state"] for n in nodes}

        def edit(doc: EnvironmentDocument) -> None:
            for node_id, was in before.items():
                node = doc["objects"].get(node_id)
                # Only the state this pass saw: an action may have moved on since.
                if node is not None and node["state"] == was:
                    node["state"] = state

        await envs.change(self.store, env_id, edit)
