"""The local engine's reconciler: replicas, placement, drains and routes.

One reconciler acts at a time (a lock under its lease), so several Marina
processes can run and one takes over when another dies. Each pass, for every
cluster with pods, it:
- declares a node lost once its agent has been unregistered for a grace
  period (an etcd restart or a stalled agent must not move every pod), and
  forgets the replicas that ran there;
- keeps each pod at its replica count on schedulable nodes (registered
  workers, not cordoned), placing the most-free node first; a replica on a
  cordoned node, or of an old template, is replaced first and drained once
  its replacements serve;
- restarts a pod's replicas in place one at a time when its generation moves;
- publishes routes from ready replicas, and stops a draining replica once
  every gateway applied routes without it.
Everything it decides is recorded in etcd before it acts, so a pass cut off
anywhere is finished by the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from catalog import keys
from catalog.addresses import allocate, release
from catalog.engines.base import PodSpec, ServiceSpec
from catalog.engines.local.placement import NodeCapacity, choose_node, usage
from catalog.engines.local.records import (
    NodeRecord,
    PodRecord,
    Replica,
    ReplicaRecord,
    read_replicas,
)
from catalog.errors import Conflict, SchedulingFailed
from catalog.ids import new_id
from catalog.leading import Leadership
from catalog.routing import publish_certificates, route_keys, routes_for
from catalog.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcilerSettings:
    lease_ttl: int = 5
    """Seconds the reconciler's lock outlives a reconciler that died."""
    lost_after: float = 15.0
    """Seconds a node may stay unregistered before its replicas are replaced
    elsewhere (five times a node agent's 3-second lease)."""
    drain_timeout: float = 30.0
    """Seconds a draining replica waits for gateways that do not report
    before it is stopped anyway."""
    drain_grace: float = 1.0
    """Seconds a drained replica keeps running after every gateway stopped
    sending it requests, for the ones in flight to finish."""
    resync: float = 2.0
    """Seconds between passes when nothing changes."""


def link_env(spec: PodSpec, services: dict[str, ServiceSpec]) -> dict[str, str]:
    """Kubernetes service variables for every service of the cluster, and
    Docker-link variables for the pod's links."""
    env: dict[str, str] = {}
    for name, service in services.items():
        upper = name.upper().replace("-", "_")
        env[f"{upper}_SERVICE_HOST"] = service["ip"]
        env[f"{upper}_SERVICE_PORT"] = str(service["port"])
    for alias, target in spec.get("links", {}).items():
        linked = services.get(target)
        if linked is None:
            continue
        upper, ip, port = alias.upper().replace("-", "_"), linked["ip"], linked["port"]
        url = f"tcp://{ip}:{port}"
        env[f"{upper}_PORT"] = url
        env[f"{upper}_PORT_{port}_TCP"] = url
        env[f"{upper}_PORT_{port}_TCP_ADDR"] = ip
        env[f"{upper}_PORT_{port}_TCP_PORT"] = str(port)
        env[f"{upper}_PORT_{port}_TCP_PROTO"] = "tcp"
    return {**env, **spec.get("env", {})}


def replica_ready(replica: Replica) -> bool:
    """Its node reports it ready, at the generation it should run."""
    status = replica["status"]
    return bool(
        status is not None
        and status["ready"]
        and status["node"] == replica["node"]
        and status["generation"] == replica["generation"]
    )


class Reconciler:
    def __init__(self, store: Store, settings: ReconcilerSettings | None = None) -> None:
        self.store = store
        self.settings = settings or ReconcilerSettings()
        self.soon = False
        # Replica documents written so far: a pass reads them again only after one.
        self.replica_writes = 0
        # In memory: a new leader starts these clocks again (it errs on waiting).
        self.missing_since: dict[tuple[str, str], float] = {}
        self.draining_since: dict[tuple[str, str], float] = {}
        self.confirmed_since: dict[tuple[str, str], float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        leadership = Leadership(
            self.store, keys.LOCAL_RECONCILER_LOCK, "local engine", settings.lease_ttl,
            settings.resync,
        )  # fmt: skip
        prefixes = [
            keys.LOCAL_PODS, keys.REPLICAS, keys.REPLICA_STATUS, keys.NODES,
            keys.LOCAL_CORDONED, keys.GATEWAY_STATUS,
        ]  # fmt: skip
        await leadership.run(
            stop,
            work=self._pass,
            changes=lambda: self.store.watch_many(prefixes),
            demoted=self.missing_since.clear,
        )

    async def _pass(self) -> float | None:
        self.soon = False
        await self.reconcile()
        return 0.25 if self.soon else None

    async def reconcile(self) -> None:
        clusters = {
            v.key[len(keys.LOCAL_PODS) :].split("/", 1)[0]
            for v in await self.store.list(keys.LOCAL_PODS)
        }
        clusters |= {
            v.key[len(keys.REPLICAS) :].split("/", 1)[0]
            for v in await self.store.list(keys.REPLICAS)
        }
        for cluster in sorted(clusters):
            await self.reconcile_cluster(cluster)

    async def reconcile_cluster(self, cluster: str) -> None:
        pods = {
            v.key.rsplit("/", 1)[1]: v.value
            for v in await self.store.list(f"{keys.LOCAL_PODS}{cluster}/")
        }
        registered = {
            v.value["node"]: v.value for v in await self.store.list(f"{keys.NODES}{cluster}/")
        }
        cordoned = {
            v.key.rsplit("/", 1)[1]
            for v in await self.store.list(f"{keys.LOCAL_CORDONED}{cluster}/")
        }
        replicas = await self._replicas(cluster)
        known = {
            v.key.rsplit("/", 1)[1] for v in await self.store.list(f"{keys.LOCAL_KNOWN}{cluster}/")
        }
        for name in set(registered) - known:  # so that its going away is noticed
            await self.store.put(f"{keys.LOCAL_KNOWN}{cluster}/{name}", {"node": name})
        lost = self._lost_nodes(cluster, registered, replicas, known)
        await self._record_lost(cluster, lost, registered)
        for replica in [r for r in replicas.values() if r["node"] in lost]:
            log.warning("replica %s forgotten: node %s is lost", replica["id"], replica["node"])
            await self._stop(cluster, replica)
            del replicas[replica["id"]]
        schedulable = {
            name: node
            for name, node in registered.items()
            if node.get("role") == "minion" and name not in cordoned
        }
        services = {
            s["name"]: s for p in pods.values() for s in p["spec"]["services"] if s.get("ip")
        }
        for pod_id, pod in sorted(pods.items()):
            mine = {i: r for i, r in replicas.items() if r["pod"] == pod_id}
            written = self.replica_writes
            await self._converge(
                cluster, pod_id, pod, mine, replicas, schedulable, cordoned, services
            )
            if self.replica_writes != written:  # read again only what this pod changed
                replicas = await self._replicas(cluster)
        for replica in replicas.values():
            if replica["pod"] not in pods:
                await self._mark_draining(cluster, replica, "its pod was deleted")
        await self._publish(cluster, pods, replicas)
        await self._finish_drains(cluster, pods, replicas, registered)

    def _lost_nodes(
        self,
        cluster: str,
        registered: dict[str, NodeRecord],
        replicas: dict[str, Replica],
        known: set[str],
    ) -> set[str]:
        now = time.monotonic()
        assigned = {r["node"] for r in replicas.values()} | known
        lost = set()
        for key in [k for k in self.missing_since if k[0] == cluster and k[1] not in assigned]:
            del self.missing_since[key]
        for node in assigned:
            if node in registered:
                self.missing_since.pop((cluster, node), None)
                continue
            since = self.missing_since.setdefault((cluster, node), now)
            if now - since >= self.settings.lost_after:
                lost.add(node)
        return lost

    async def _record_lost(
        self, cluster: str, lost: set[str], registered: dict[str, NodeRecord]
    ) -> None:
        """Lost nodes are recorded for the observer; one that registers again is not lost."""
        recorded = {
            v.key.rsplit("/", 1)[1] for v in await self.store.list(f"{keys.LOCAL_LOST}{cluster}/")
        }
        for node in lost - recorded:
            log.warning("node %s lost: unregistered for %.0fs", node, self.settings.lost_after)
            await self.store.put(f"{keys.LOCAL_LOST}{cluster}/{node}", {"node": node})
        for node in recorded & set(registered):
            log.warning("node %s back: its agent registered again", node)
            await self.store.delete(f"{keys.LOCAL_LOST}{cluster}/{node}")

    async def _replicas(self, cluster: str) -> dict[str, Replica]:
        return await read_replicas(self.store, cluster)

    async def _converge(
        self,
        cluster: str,
        pod_id: str,
        pod: PodRecord,
        mine: dict[str, Replica],
        everyone: dict[str, Replica],
        schedulable: dict[str, NodeRecord],
        cordoned: set[str],
        services: dict[str, ServiceSpec],
    ) -> None:
        want = int(pod["replicas"])
        active = [r for r in mine.values() if not r.get("draining")]
        healthy = [
            # A node that stopped reporting keeps its replicas until it is lost:
            # an etcd restart or a stalled agent must not move every pod.
            r
            for r in active
            if r["node"] not in cordoned and r.get("template") == pod["template"]
        ]
        stale = [r for r in active if r not in healthy]
        healthy.sort(key=lambda r: (r.get("created", 0), r["id"]))
        pending = ""
        if len(healthy) < want:
            nodes = usage(
                [
                    NodeCapacity(name, float(n.get("cores", 2)), int(n.get("memory", 2048)))
                    for name, n in schedulable.items()
                ],
                [r for r in everyone.values() if r["node"] in schedulable],
            )
            for _ in range(want - len(healthy)):
                try:
                    node = choose_node(nodes, pod["spec"]["containers"], pod=pod["spec"]["name"])
                except SchedulingFailed as exc:
                    pending = exc.reason
                    break
                replica = await self._start(cluster, pod_id, pod, node, services)
                healthy.append(replica)
                nodes = usage(nodes, [replica])
        elif len(healthy) > want:
            # Not ready ones go first, then the newest.
            extra = sorted(healthy, key=lambda r: (replica_ready(r), -r.get("created", 0)))
            for replica in extra[: len(healthy) - want]:
                await self._mark_draining(cluster, replica, "the pod runs fewer replicas")
                healthy.remove(replica)
        in_place = [r for r in stale if r["node"] not in cordoned]
        for replica in [r for r in stale if not replica_ready(r)]:
            # It serves nobody: nothing is lost by stopping it before its replacement.
            why = "its node is drained" if replica["node"] in cordoned else "replaced"
            await self._mark_draining(cluster, replica, why)
            stale.remove(replica)
            in_place = [r for r in in_place if r is not replica]
        if stale and sum(1 for r in healthy if replica_ready(r)) >= want:
            for replica in stale:
                why = "its node is drained" if replica["node"] in cordoned else "replaced"
                await self._mark_draining(cluster, replica, why)
        elif (
            pending
            and in_place
            and all(replica_ready(r) for r in healthy)
            and not any(r.get("draining") for r in mine.values())
        ):
            # No room to start a new replica first: replace an old one in place,
            # one at a time, so the others keep serving.
            await self._mark_draining(
                cluster,
                min(in_place, key=lambda r: r.get("created", 0)),
                "no room to start its replacement first: replacing it in place",
            )
        elif stale and not pending and not schedulable:
            pending = "no schedulable node to move replicas to"
        generation = int(pod.get("generation", 0))
        behind = [r for r in healthy if int(r.get("generation", 0)) < generation]
        if behind and all(replica_ready(r) for r in healthy):
            # One at a time: the others keep serving while it restarts.
            await self._edit_replica(cluster, behind[0]["id"], generation=generation)
        if pod.get("pending", "") != pending:
            await self._set_pending(cluster, pod_id, pod, pending)

    async def _start(
        self,
        cluster: str,
        pod_id: str,
        pod: PodRecord,
        node: str,
        services: dict[str, ServiceSpec],
    ) -> Replica:
        ident = new_id()[:12]
        spec = pod["spec"]
        doc: ReplicaRecord = {
            "pod": pod_id,
            "podName": spec["name"],
            "name": f"{spec['name']}-{ident[:5]}",
            "environment": spec["environment"],
            "node": node,
            "containers": spec["containers"],
            "package": spec["package"],
            "labels": spec["labels"],
            "env": link_env(spec, services),
            "ip": await allocate(self.store, "pod", f"{cluster}/{ident}"),
            "generation": int(pod.get("generation", 0)),
            "template": pod["template"],
            "created": time.time(),
        }
        await self.store.create(keys.replica(cluster, ident), doc)
        self.replica_writes += 1
        log.info("replica %s of %s placed on %s", ident, spec["name"], node)
        return {**doc, "id": ident, "status": None}

    async def _edit_replica(self, cluster: str, ident: str, **fields: Any) -> None:
        self.replica_writes += 1

        def edit(doc: Any) -> Any:
            if doc is None:
                raise Conflict(keys.replica(cluster, ident), "gone")
            doc.update(fields)
            return doc

        with contextlib.suppress(Conflict):
            await self.store.update(keys.replica(cluster, ident), edit)

    async def _set_pending(self, cluster: str, pod_id: str, seen: PodRecord, pending: str) -> None:
        """Record why replicas do not run, unless the pod changed since this
        pass read it (its new count is judged by the next pass)."""

        def edit(doc: Any) -> Any:
            if doc is None or (doc["replicas"], doc["template"]) != (
                seen["replicas"],
                seen["template"],
            ):
                raise Conflict(keys.local_pod(cluster, pod_id), "changed")
            doc["pending"] = pending
            return doc

        with contextlib.suppress(Conflict):
            await self.store.update(keys.local_pod(cluster, pod_id), edit)

    async def _mark_draining(self, cluster: str, replica: Replica, why: str) -> None:
        if not replica.get("draining"):
            await self._edit_replica(cluster, replica["id"], draining=True, drainReason=why)
            replica["draining"] = True
            log.info("replica %s draining: %s", replica["id"], why)

    async def _stop(self, cluster: str, replica: Replica) -> None:
        self.replica_writes += 1
        await self.store.delete(keys.replica(cluster, replica["id"]))
        await release(self.store, replica.get("ip"))
        self.draining_since.pop((cluster, replica["id"]), None)
        self.confirmed_since.pop((cluster, replica["id"]), None)

    async def _publish(
        self, cluster: str, pods: dict[str, PodRecord], replicas: dict[str, Replica]
    ) -> None:
        published = {
            v.key: v.value
            for prefix in (f"{keys.ROUTES}{cluster}/", f"{keys.ROUTES}{cluster}.internal/")
            for v in await self.store.list(prefix)
        }
        for pod_id, pod in pods.items():
            ready = [
                r["ip"]
                for r in replicas.values()
                if r["pod"] == pod_id and replica_ready(r) and not r.get("draining")
            ]
            for service in pod["spec"]["services"]:
                if not service.get("ip"):
                    continue
                for key, route in routes_for(cluster, service, ready).items():
                    if published.get(key) != route:
                        await self.store.put(key, route)
        await self._publish_certificates(cluster, pods)

    async def _publish_certificates(self, cluster: str, pods: dict[str, PodRecord]) -> None:
        """TLS services' certificates from their pods' secrets: written for
        each host, replaced when a secret changes, gone with the service."""
        tls = [
            (
                service,
                {k: v for c in pod["spec"]["containers"] for k, v in c.get("secrets", {}).items()},
            )
            for pod in pods.values()
            for service in pod["spec"]["services"]
            if service.get("tls")
        ]
        await publish_certificates(self.store, cluster, tls)

    async def _finish_drains(
        self,
        cluster: str,
        pods: dict[str, PodRecord],
        replicas: dict[str, Replica],
        registered: dict[str, NodeRecord],
    ) -> None:
        """Stop draining replicas that no route names and whose gateways know it."""
        draining = [r for r in replicas.values() if r.get("draining")]
        if not draining:
            return
        applied: dict[bool, list[int]] = {True: [], False: []}
        for name, node in registered.items():
            if node.get("role") in ("master", "gateway"):
                status = await self.store.get(keys.gateway_status(f"{cluster}-{name}"))
                revision = int(status.value.get("applied_revision", 0)) if status else 0
                applied[node["role"] == "master"].append(revision)
        now = time.monotonic()
        for replica in draining:
            pod = pods.get(replica["pod"])
            routes = [
                await self.store.get(key)
                for service in (pod["spec"]["services"] if pod else [])
                for key in route_keys(cluster, service)
            ]
            if any(
                r is not None and any(b["host"] == replica["ip"] for b in r.value["backends"])
                for r in routes
            ):
                continue  # still routed: the next pass publishes routes without it
            # Internal routes are served by the master's gateway, public ones by gateway nodes.
            confirmed = all(
                min(applied[".internal/" in r.key], default=r.mod_revision) >= r.mod_revision
                for r in routes
                if r is not None
            )
            since = self.draining_since.setdefault((cluster, replica["id"]), now)
            if not confirmed and now - since < self.settings.drain_timeout:
                continue
            if not confirmed:
                log.warning("replica %s stopped: its gateways did not confirm", replica["id"])
            elif now - self.confirmed_since.setdefault((cluster, replica["id"]), now) < (
                self.settings.drain_grace
            ):
                self.soon = True  # look again once the grace is over
                continue
            await self._stop(cluster, replica)
            log.info("replica %s stopped", replica["id"])
