"""The controller: keeps routes, ready counts and endpoints true, and moves
the replicas of a lost node.

It follows node registrations, replicas and their reports in etcd and
reconciles after every burst of changes (and every few seconds regardless).
Only one controller acts at a time: it holds a lock under its lease, so
several Marina processes can run and one takes over when another dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from catalog import environments as envs
from catalog.engines.base import Engine
from catalog.errors import Conflict, MarinaError, SchedulingFailed, StoreUnavailable
from catalog.nodeagent import NODES
from catalog.routing import ROUTES, routes_for
from catalog.scheduling import NodeCapacity, choose_node, usage
from catalog.store import Store

log = logging.getLogger(__name__)

LOCK = "/marina/locks/controller"
WATCHED = ("/marina/replicas/", "/marina/replica-status/", NODES, envs.ENVIRONMENTS)


class Controller:
    def __init__(self, store: Store, engine: Engine, *, lease_ttl: int = 5) -> None:
        self.store = store
        self.engine = engine
        self.lease_ttl = lease_ttl
        self.wake = asyncio.Event()

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
                except StoreUnavailable as exc:
                    log.warning("controller paused: %s", exc)
                    lease, leader = None, False
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
        lost = [
            n
            for n in nodes
            if n["state"] in ("ready", "cordoned")
            and n["steps"]["setupNode"]
            and n["?"]["name"] not in registered
        ]
        replicas = await self.engine.replicas(key)
        if lost:
            await self._mark_lost(doc["id"], lost)
            await self._reschedule(doc, cluster, lost, replicas)
            replicas = await self.engine.replicas(key)
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

    async def _mark_lost(self, env_id: str, lost: list[dict[str, Any]]) -> None:
        names = ", ".join(n["?"]["name"] for n in lost)
        log.warning("nodes lost (their agents stopped renewing): %s", names)

        def edit(doc: dict[str, Any]) -> None:
            for node in lost:
                if node["?"]["id"] in doc["objects"]:
                    doc["objects"][node["?"]["id"]]["state"] = "lost"

        await envs.change(self.store, env_id, edit)

    async def _reschedule(
        self,
        doc: dict[str, Any],
        cluster: dict[str, Any],
        lost: list[dict[str, Any]],
        replicas: dict[str, dict[str, Any]],
    ) -> None:
        gone = {n["?"]["name"] for n in lost}
        healthy = [
            n
            for n in (doc["objects"][i] for i in cluster["nodes"] if i in doc["objects"])
            if n["role"] == "minion"
            and n["state"] == "ready"
            and n["?"]["name"] not in gone
            and n.get("capacity")
        ]
        staying = [r for r in replicas.values() if r["node"] not in gone]
        for replica in replicas.values():
            if replica["node"] not in gone:
                continue
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
            log.warning("replica %s moved from lost %s to %s", replica["id"], replica["node"], node)
