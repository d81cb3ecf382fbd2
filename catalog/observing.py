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
from dataclasses import dataclass
from typing import Any

from catalog import environments as envs
from catalog import keys
from catalog.engines.base import ClusterKey, Engine, PodId
from catalog.errors import MarinaError
from catalog.leading import Leadership
from catalog.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObserverSettings:
    lease_ttl: int = 5
    """Seconds the observer's lock outlives an observer that died."""
    resync: float = 2.0
    """Seconds between passes when nothing changes."""


def replica_summary(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": r["name"],
            "node": r["node"],
            "address": r["address"],
            "ready": r["ready"],
            "restarts": r["restarts"],
            "reason": r["reason"],
            **({"draining": True} if r["draining"] else {}),
        }
        for r in state["replicas"]
    ]


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
            doc = found.value
            if doc.get("status") == "deleting":
                continue
            for cluster in envs.clusters(doc):
                if cluster["state"] in ("ready", "deploying"):
                    await self._cluster(doc, cluster)

    async def _cluster(self, doc: dict[str, Any], cluster: dict[str, Any]) -> None:
        key = ClusterKey(cluster["key"])
        seen = await self.engine.node_states(key)
        nodes = [doc["objects"][n] for n in cluster["nodes"] if n in doc["objects"]]
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
        updates: dict[str, dict[str, Any]] = {}
        for pod in doc["objects"].values():
            if pod["?"]["type"] != "KubernetesPod" or pod.get("cluster") != cluster["?"]["id"]:
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
            update = {
                "ready": state["serving"],
                "endpoints": endpoints,
                "status": {"replicas": replica_summary(dict(state)), "pending": state["pending"]},
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
                for p in doc["objects"].values()
                if p["?"]["type"] == "KubernetesPod"
                and p.get("cluster") == cluster["?"]["id"]
                and p["?"]["id"] not in updates
                for e in p.get("endpoints", [])
            }
        )
        if updates or cluster.get("endpoints") != cluster_endpoints:
            await self._record(doc["id"], cluster["?"]["id"], updates, cluster_endpoints)

    async def _record(
        self, env_id: str, cluster_id: str, updates: dict[str, dict[str, Any]], endpoints: list[str]
    ) -> None:
        def edit(doc: dict[str, Any]) -> None:
            for pod_id, update in updates.items():
                pod = doc["objects"].get(pod_id)
                if pod is not None:
                    pod["replicas"] = {**pod["replicas"], "ready": update["ready"]}
                    pod["endpoints"] = update["endpoints"]
                    pod["status"] = update["status"]
            if cluster_id in doc["objects"]:
                doc["objects"][cluster_id]["endpoints"] = endpoints

        with contextlib.suppress(MarinaError):
            await envs.change(self.store, env_id, edit)

    async def _set_state(self, env_id: str, nodes: list[dict[str, Any]], state: str) -> None:
        names = ", ".join(n["?"]["name"] for n in nodes)
        if state == "lost":
            log.warning("nodes lost: %s", names)
        else:
            log.warning("nodes back: %s", names)
        before = {n["?"]["id"]: n["state"] for n in nodes}

        def edit(doc: dict[str, Any]) -> None:
            for node_id, was in before.items():
                node = doc["objects"].get(node_id)
                # Only the state this pass saw: an action may have moved on since.
                if node is not None and node["state"] == was:
                    node["state"] = state

        await envs.change(self.store, env_id, edit)
