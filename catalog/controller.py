"""The controller: keeps routes, ready counts and endpoints true, and moves
the replicas of a lost node.

It follows node registrations, replicas and their reports in etcd and
reconciles after every burst of changes (and every few seconds regardless).
Only one controller acts at a time: it holds a lock under its lease, so
several Marina processes can run and one takes over when another dies.

A node whose registration is gone is only declared lost after a grace
period: an etcd restart or a short stall of its agent must not move every
pod. A lost node whose agent registers again is ready again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from catalog import environments as envs
from catalog.engines.base import Engine
from catalog.errors import Conflict, MarinaError, SchedulingFailed, StoreUnavailable
from catalog.nodeagent import NODES
from catalog.routing import ROUTES, routes_for
from catalog.scheduling import NodeCapacity, choose_node, usage
from catalog.store import Store
from catalog.tasks import LOCKS

log = logging.getLogger(__name__)

LOCK = "/marina/locks/controller"
WATCHED = ("/marina/replicas/", "/marina/replica-status/", NODES, envs.ENVIRONMENTS)


@dataclass(frozen=True)
class ControllerSettings:
    lease_ttl: int = 5
    """Seconds the controller's lock outlives a controller that died."""
    lost_after: float = 15.0
    """Seconds a node may stay unregistered before it is declared lost and its
    replicas move (five times a node agent's 3-second lease)."""
    orphan_drain_after: float = 10.0
    """Seconds a draining replica may wait while no task of its environment
    runs before it is stopped (its action died for good)."""


class Controller:
    def __init__(
        self, store: Store, engine: Engine, settings: ControllerSettings | None = None
    ) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings or ControllerSettings()
        self.lease_ttl = self.settings.lease_ttl
        self.wake = asyncio.Event()
        # When each node was first seen unregistered, and each draining
        # replica first seen without a task: in memory, so a new leader
        # starts these clocks again (it errs on the side of waiting).
        self.missing_since: dict[tuple[str, str], float] = {}
        self.unattended_since: dict[tuple[str, str], float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        watchers = [asyncio.create_task(self._watch(stop, p)) for p in WATCHED]
        lease: int | None = None
        leader = False
        try:
            while not stop.is_set():
                try:
                    if lease is None or not await self.store.refresh_lease(lease):
                        lease, leader = await self.store.grant_lease(self.lease_ttl), False
                    if not leader:
                        try:
                            await self.store.create(LOCK, {"lease": lease}, lease=lease)
                            leader = True
                        except Conflict:
                            leader = False
                    if leader:
                        await self.reconcile()
                    else:
                        self.missing_since.clear()
                except StoreUnavailable as exc:
                    log.warning("controller paused: %s", exc)
                    lease, leader = None, False
                    # Nothing could be seen while the store was away.
                    self.missing_since.clear()
                except MarinaError as exc:
                    log.warning("controller pass failed: %s", exc)
                self.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.lease_ttl / 3)
                await asyncio.sleep(0.01)  # gather a burst of changes into one pass
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            if lease is not None:
                with contextlib.suppress(MarinaError):
                    await self.store.revoke_lease(lease)

    async def _watch(self, stop: asyncio.Event, prefix: str) -> None:
        while not stop.is_set():
            try:
                async for _ in self.store.watch(prefix):
                    self.wake.set()
            except StoreUnavailable:
                await asyncio.sleep(1)

    async def reconcile(self) -> None:
        for found in await self.store.list(envs.ENVIRONMENTS):
            doc = found.value
            if doc.get("status") == "deleting":
                continue
            for cluster in envs.clusters(doc):
                if cluster["state"] in ("ready", "deploying"):
                    await self._cluster(doc, cluster)

    async def _cluster(self, doc: dict[str, Any], cluster: dict[str, Any]) -> None:
        key = cluster["key"]
        registered = {v.key.rsplit("/", 1)[1] for v in await self.store.list(f"{NODES}{key}/")}
        nodes = [doc["objects"][n] for n in cluster["nodes"] if n in doc["objects"]]
        now = time.monotonic()
        lost = []
        for node in nodes:
            name = node["?"]["name"]
            watched = node["state"] in ("ready", "cordoned") and node["steps"]["setupNode"]
            if not watched or name in registered:
                self.missing_since.pop((key, name), None)
                continue
            since = self.missing_since.setdefault((key, name), now)
            if now - since >= self.settings.lost_after:
                lost.append(node)
        back = [n for n in nodes if n["state"] == "lost" and n["?"]["name"] in registered]
        replicas = await self.engine.replicas(key)
        if back:
            await self._set_state(doc["id"], back, "ready")
        if lost:
            await self._set_state(doc["id"], lost, "lost")
        # Every pass, not only when a node is lost: a replica that found no
        # room then moves once there is some.
        gone = {n["?"]["name"] for n in lost} | {
            n["?"]["name"] for n in nodes if n["state"] == "lost" and n not in back
        }
        stranded = [r for r in replicas.values() if r["node"] in gone and not r.get("draining")]
        if stranded and await self._reschedule(doc, cluster, gone, stranded, replicas):
            replicas = await self.engine.replicas(key)
        await self._stop_orphaned_drains(doc["id"], key, replicas)
        pods = [
            o
            for o in doc["objects"].values()
            if o["?"]["type"] == "KubernetesPod" and o.get("cluster") == cluster["?"]["id"]
        ]
        gateways = [
            n
            for n in nodes
            if n["role"] == "gateway" and n["state"] == "ready" and n["?"]["name"] in registered
        ]
        # One read of what is published per pass, not one per route.
        published = {
            v.key: v.value
            for prefix in (f"{ROUTES}{key}/", f"{ROUTES}{key}.internal/")
            for v in await self.store.list(prefix)
        }
        updates: dict[str, dict[str, Any]] = {}
        for pod in pods:
            mine = [r for r in replicas.values() if r["pod"] == pod["?"]["id"]]
            ready = [
                r
                for r in mine
                if (r.get("status") or {}).get("ready")
                and (r.get("status") or {}).get("node") == r["node"]
                and not r.get("draining")
            ]
            for service in pod.get("services", []):
                for route_key, route in routes_for(key, service, [r["ip"] for r in ready]).items():
                    if published.get(route_key) != route:
                        await self.store.put(route_key, route)
            endpoints = [
                f"http://{g['address']}:{s['port']}/"
                for s in pod.get("services", [])
                if s.get("scope") == "public"
                for g in gateways
            ]
            counted = sum(1 for r in ready)
            if pod["replicas"]["ready"] != counted or pod.get("endpoints") != endpoints:
                updates[pod["?"]["id"]] = {"ready": counted, "endpoints": endpoints}
        cluster_endpoints = sorted(
            {e for u in updates.values() for e in u["endpoints"]}
            | {e for p in pods if p["?"]["id"] not in updates for e in p.get("endpoints", [])}
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
            if cluster_id in doc["objects"]:
                doc["objects"][cluster_id]["endpoints"] = endpoints

        with contextlib.suppress(MarinaError):
            await envs.change(self.store, env_id, edit)

    async def _set_state(self, env_id: str, nodes: list[dict[str, Any]], state: str) -> None:
        names = ", ".join(n["?"]["name"] for n in nodes)
        if state == "lost":
            log.warning("nodes lost (unregistered for %.0fs): %s", self.settings.lost_after, names)
        else:
            log.warning("nodes back (their agents registered again): %s", names)
        before = {n["?"]["id"]: n["state"] for n in nodes}

        def edit(doc: dict[str, Any]) -> None:
            for node_id, was in before.items():
                node = doc["objects"].get(node_id)
                # Only the state this pass saw: an action may have moved on since.
                if node is not None and node["state"] == was:
                    node["state"] = state

        await envs.change(self.store, env_id, edit)

    async def _stop_orphaned_drains(
        self, env_id: str, cluster_key: str, replicas: dict[str, dict[str, Any]]
    ) -> None:
        """Stop draining replicas that no running task will stop.

        Only an action drains a replica, under its environment's lock; one
        that stays draining while no task holds the lock was left by an
        action that died for good. It is out of every route already.
        """
        draining = {i for i, r in replicas.items() if r.get("draining")}
        for seen in [k for k in self.unattended_since if k[0] == cluster_key]:
            if seen[1] not in draining:
                del self.unattended_since[seen]
        if not draining:
            return
        if await self.store.get(f"{LOCKS}{env_id}") is not None:
            for ident in draining:
                self.unattended_since.pop((cluster_key, ident), None)
            return
        now = time.monotonic()
        for ident in draining:
            since = self.unattended_since.setdefault((cluster_key, ident), now)
            if now - since >= self.settings.orphan_drain_after:
                log.warning("stopping replica %s: left draining by an action that died", ident)
                await self.engine.stop_replica(cluster_key, ident)
                del self.unattended_since[(cluster_key, ident)]

    async def _reschedule(
        self,
        doc: dict[str, Any],
        cluster: dict[str, Any],
        gone: set[str],
        stranded: list[dict[str, Any]],
        replicas: dict[str, dict[str, Any]],
    ) -> bool:
        """Move replicas off lost nodes to nodes that fit; whether any moved."""
        healthy = [
            n
            for n in (doc["objects"][i] for i in cluster["nodes"] if i in doc["objects"])
            if n["role"] == "minion"
            and n["state"] == "ready"
            and n["?"]["name"] not in gone
            and n.get("capacity")
        ]
        staying = [r for r in replicas.values() if r["node"] not in gone]
        moved = False
        for replica in stranded:
            nodes = usage(
                [
                    NodeCapacity(
                        n["?"]["name"], float(n["capacity"]["cores"]), int(n["capacity"]["memory"])
                    )
                    for n in healthy
                ],
                staying,
            )
            try:
                node = choose_node(nodes, replica["containers"], pod=replica["podName"])
            except SchedulingFailed as exc:
                log.warning("replica %s stays down: %s", replica["id"], exc)
                continue
            await self.engine.update_replica(cluster["key"], replica["id"], node=node)
            staying.append({**replica, "node": node})
            moved = True
            log.warning("replica %s moved from lost %s to %s", replica["id"], replica["node"], node)
        return moved
