"""The local engine: pods run as sandboxed process groups under node agents.

Desired state is one document per pod under `keys.LOCAL_PODS` (its spec,
replica count, restart generation and template); the engine's reconciler
(`reconciling.py`) turns it into replica documents that node agents run, and
node agents report each replica under their lease. Everything here reads and
writes those documents; nothing waits in a polling loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path
from typing import Any, cast

from catalog import keys
from catalog.addresses import allocate, release
from catalog.engines.base import (
    Capability,
    Changes,
    ClusterKey,
    Endpoint,
    PodId,
    PodSpec,
    PodState,
    Progress,
    ProgressReport,
    ReplicaState,
    ServiceSpec,
    failure_reasons,
)
from catalog.engines.local.reconciling import Reconciler, replica_ready
from catalog.engines.local.records import PodRecord, Replica, read_replicas
from catalog.engines.rendering import manifests_for_specs
from catalog.errors import ActionFailed, NotFound
from catalog.routing import route_keys
from catalog.store import Store, Versioned

LOG_CHUNK = 65536


def template_of(spec: PodSpec, recreate: int) -> str:
    """What a replica must be replaced for when it changes (not its count)."""
    shape = {
        "containers": spec["containers"],
        "env": spec["env"],
        "links": spec["links"],
        "package": spec["package"],
        "labels": spec["labels"],
        "recreate": recreate,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


class LocalEngine:
    name = "local"
    capabilities = frozenset(Capability)

    def __init__(self, store: Store, *, state_dir: Path) -> None:
        self.store = store
        self.state_dir = state_dir

    # -- desired state -----------------------------------------------------------------

    async def apply_pod(self, cluster: ClusterKey, spec: PodSpec) -> None:
        known = await self.store.get(keys.local_pod(cluster, spec["id"]))
        ips = {s["name"]: s.get("ip") for s in (known.value["spec"]["services"] if known else [])}
        services: list[ServiceSpec] = []
        for service in spec["services"]:
            ip = ips.get(service["name"]) or await allocate(
                self.store, "service", f"{cluster}/{service['name']}", reuse=True
            )
            services.append({**service, "ip": ip})
        spec = {**spec, "services": services}

        def change(doc: Any) -> Any:
            doc = doc or {"generation": 0, "recreate": 0}
            doc.update(spec=spec, replicas=spec["replicas"], pending="")
            doc["template"] = template_of(spec, doc["recreate"])
            return doc

        await self.store.update(keys.local_pod(cluster, spec["id"]), change)
        for gone in set(ips) - {s["name"] for s in services}:
            await self._forget_service(cluster, gone, ips[gone])

    async def _pod_doc(self, cluster: ClusterKey, pod: PodId) -> Versioned:
        found = await self.store.get(keys.local_pod(cluster, pod))
        if found is None:
            raise NotFound("pod", pod)
        return found

    async def scale_pod(self, cluster: ClusterKey, pod: PodId, replicas: int) -> None:
        await self._pod_doc(cluster, pod)

        def change(doc: Any) -> Any:
            if doc is None:
                raise NotFound("pod", pod)
            doc["replicas"], doc["pending"] = replicas, ""
            return doc

        await self.store.update(keys.local_pod(cluster, pod), change)

    async def restart_pod(self, cluster: ClusterKey, pod: PodId) -> None:
        def change(doc: Any) -> Any:
            if doc is None:
                raise NotFound("pod", pod)
            doc["generation"] = int(doc.get("generation", 0)) + 1
            return doc

        await self.store.update(keys.local_pod(cluster, pod), change)

    async def recreate_pod(self, cluster: ClusterKey, pod: PodId) -> None:
        def change(doc: Any) -> Any:
            if doc is None:
                raise NotFound("pod", pod)
            doc["recreate"] = int(doc.get("recreate", 0)) + 1
            doc["template"] = template_of(doc["spec"], doc["recreate"])
            return doc

        await self.store.update(keys.local_pod(cluster, pod), change)

    async def delete_pod(self, cluster: ClusterKey, pod: PodId) -> None:
        found = await self.store.get(keys.local_pod(cluster, pod))
        if found is None:
            return
        # The reconciler drains and stops replicas whose pod is gone.
        await self.store.delete(keys.local_pod(cluster, pod))
        for service in found.value["spec"]["services"]:
            await self._forget_service(cluster, service["name"], service.get("ip"))

    async def _forget_service(self, cluster: str, name: str, ip: str | None) -> None:
        for key in route_keys(cluster, {"name": name, "scope": "public"}):
            await self.store.delete(key)
        await release(self.store, ip)

    async def cordon(self, cluster: ClusterKey, node: str) -> None:
        await self.store.put(keys.local_cordoned(cluster, node), {"node": node})

    async def uncordon(self, cluster: ClusterKey, node: str) -> None:
        await self.store.delete(keys.local_cordoned(cluster, node))

    async def forget_node(self, cluster: ClusterKey, node: str) -> None:
        for prefix in (keys.LOCAL_CORDONED, keys.LOCAL_LOST, keys.LOCAL_KNOWN):
            await self.store.delete(f"{prefix}{cluster}/{node}")

    async def drain(
        self,
        cluster: ClusterKey,
        node: str,
        *,
        progress: Progress | None = None,
        timeout: float = 120.0,
    ) -> None:
        await self.cordon(cluster, node)
        reports: dict[str, ProgressReport] = {}
        names: dict[str, str] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with Changes(self, cluster) as changes:
            while True:
                replicas = await self._replicas(cluster)
                left = [r for r in replicas.values() if r["node"] == node]
                # Pods that had replicas here stay watched: their replicas' ends are news.
                pods = {**names, **{r["pod"]: r["podName"] for r in left}}
                names = pods
                states = {p: await self.pod_state(cluster, PodId(p)) for p in pods}
                if progress is not None:
                    for pod, state in states.items():
                        if pod not in reports:  # the first look is the baseline
                            reports[pod] = ProgressReport(pods[pod], progress)
                        await reports[pod](state)
                if not left:
                    return
                if loop.time() > deadline:
                    reasons = failure_reasons(states.values())
                    raise ActionFailed(
                        "drain",
                        f"{len(left)} replicas still on {node} after {timeout:.0f}s"
                        + (f" ({'; '.join(reasons)})" if reasons else ""),
                        retryable=True,
                    )
                await changes.next(1.0)

    async def delete_cluster(self, cluster: ClusterKey) -> None:
        for found in await self.store.list(f"{keys.LOCAL_PODS}{cluster}/"):
            for service in found.value["spec"]["services"]:
                await self._forget_service(cluster, service["name"], service.get("ip"))
        await self.store.delete_prefix(f"{keys.LOCAL_PODS}{cluster}/")
        for replica in (await self._replicas(cluster)).values():
            await self.store.delete(keys.replica(cluster, replica["id"]))
            await release(self.store, replica.get("ip"))
        await self.store.delete_prefix(f"{keys.LOCAL_CORDONED}{cluster}/")
        await self.store.delete_prefix(f"{keys.LOCAL_LOST}{cluster}/")
        await self.store.delete_prefix(f"{keys.LOCAL_KNOWN}{cluster}/")
        await self.store.delete_prefix(f"{keys.ROUTES}{cluster}/")
        await self.store.delete_prefix(f"{keys.ROUTES}{cluster}.internal/")
        await self.store.delete_prefix(f"{keys.GATEWAY_CERTS}{cluster}/")  # and private keys

    # -- observed state ------------------------------------------------------------------

    async def _replicas(self, cluster: str) -> dict[str, Replica]:
        return await read_replicas(self.store, cluster)

    async def pod_state(self, cluster: ClusterKey, pod: PodId) -> PodState | None:
        found = await self.store.get(keys.local_pod(cluster, pod))
        if found is None:
            return None
        doc = cast(PodRecord, found.value)
        mine = sorted(
            (r for r in (await self._replicas(cluster)).values() if r["pod"] == pod),
            key=lambda r: (r["created"], r["id"]),
        )
        serving = await self._serving_addresses(cluster, doc["spec"]["services"])
        replicas: list[ReplicaState] = []
        for replica in mine:
            status = replica["status"]
            ready = replica_ready(replica)
            draining = bool(replica.get("draining"))
            replicas.append(
                {
                    "name": replica["name"],
                    "node": replica["node"],
                    "address": replica["ip"],
                    "ready": ready,
                    "serving": ready
                    and not draining
                    and (serving is None or replica["ip"] in serving),
                    "restarts": status["restarts"] if status else 0,
                    "reason": (replica.get("drainReason") if draining else None)
                    or (status["reason"] if status else "")
                    or "",
                    "draining": draining,
                    "current": replica["template"] == doc["template"]
                    and replica["generation"] >= doc["generation"],
                }
            )
        active = [r for r in replicas if not r["draining"]]
        return {
            "pod": pod,
            "desired": int(doc["replicas"]),
            "ready": sum(1 for r in active if r["ready"]),
            "serving": sum(1 for r in active if r["serving"]),
            "updated": sum(1 for r in active if r["current"] and r["ready"]),
            "generation": int(doc["generation"]),
            "template": str(doc["template"]),
            "pending": str(doc.get("pending", "")),
            "services": doc["spec"]["services"],
            "replicas": replicas,
        }

    async def _serving_addresses(
        self, cluster: str, services: list[ServiceSpec]
    ) -> set[str] | None:
        """Addresses in every route of these services that every gateway applied;
        None when the pod has no service (readiness is all there is)."""
        if not services:
            return None
        routes = [await self.store.get(k) for s in services for k in route_keys(cluster, s)]
        if any(r is None for r in routes):
            return set()
        hosts = [{b["host"] for b in r.value["backends"]} for r in routes if r is not None]
        gateways = await self._gateway_revisions(cluster)
        for route in routes:
            assert route is not None
            marker = ".internal/" if ".internal/" in route.key else "/"
            group = [rev for internal, rev in gateways.values() if internal == (marker != "/")]
            if group and min(group) < route.mod_revision:
                return set()
        return set.intersection(*hosts)

    async def _gateway_revisions(self, cluster: str) -> dict[str, tuple[bool, int]]:
        """Each gateway of the cluster: whether it serves internal routes, and
        the revision it applied (0 when it reports nothing)."""
        found: dict[str, tuple[bool, int]] = {}
        for node in await self.store.list(f"{keys.NODES}{cluster}/"):
            role = node.value.get("role")
            if role not in ("master", "gateway"):
                continue
            status = await self.store.get(keys.gateway_status(f"{cluster}-{node.value['node']}"))
            applied = int(status.value.get("applied_revision", 0)) if status else 0
            found[node.value["node"]] = (role == "master", applied)
        return found

    async def endpoints(self, cluster: ClusterKey, service: str) -> list[Endpoint]:
        route = await self.store.get(f"{keys.ROUTES}{cluster}.internal/{service}")
        if route is None:
            return []
        return [{"host": b["host"], "port": int(b["port"])} for b in route.value["backends"]]

    async def node_states(self, cluster: ClusterKey) -> dict[str, str]:
        cordoned = {
            v.key.rsplit("/", 1)[1]
            for v in await self.store.list(f"{keys.LOCAL_CORDONED}{cluster}/")
        }
        states = {
            v.key.rsplit("/", 1)[1]: "lost"
            for v in await self.store.list(f"{keys.LOCAL_LOST}{cluster}/")
        }
        for v in await self.store.list(f"{keys.NODES}{cluster}/"):
            states[v.value["node"]] = "cordoned" if v.value["node"] in cordoned else "ready"
        return states

    async def changes(self, cluster: ClusterKey | None) -> AsyncGenerator[None, None]:
        scope = f"{cluster}/" if cluster else ""
        prefixes = [
            f"{keys.REPLICAS}{scope}",
            f"{keys.REPLICA_STATUS}{scope}",
            f"{keys.LOCAL_PODS}{scope}",
            f"{keys.NODES}{scope}",
            f"{keys.LOCAL_LOST}{scope}",
            f"{keys.ROUTES}{cluster or ''}",
            f"{keys.GATEWAY_STATUS}{f'{cluster}-' if cluster else ''}",
        ]
        async for _ in self.store.watch_many(prefixes):
            yield None

    async def logs(
        self, cluster: ClusterKey, pod: PodId, *, replica: int, tail: int | None, follow: bool
    ) -> AsyncIterator[bytes]:
        state = await self.pod_state(cluster, pod)
        if state is None:
            raise NotFound("pod", pod)
        if not 0 <= replica < len(state["replicas"]):
            raise NotFound("replica", str(replica))
        chosen = [r for r in (await self._replicas(cluster)).values() if r["pod"] == pod]
        chosen.sort(key=lambda r: (r.get("created", 0), r["id"]))
        target = chosen[replica]
        container = target["containers"][0]["name"]
        path = (
            self.state_dir / "nodes" / cluster / target["node"] / "replicas" / target["id"]
            / f"{container}.log"
        )  # fmt: skip
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            data = handle.read()
            if tail is not None:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-tail:]) if tail else b""
            if data:
                yield data
            while follow:
                chunk = handle.read(LOG_CHUNK)
                if chunk:
                    yield chunk
                    continue
                if not path.exists():
                    return  # the replica is gone
                # A file has no change stream; a short sleep is what `tail -f` does.
                await asyncio.sleep(0.2)

    def render(
        self,
        cluster: ClusterKey,
        specs: list[PodSpec],
        *,
        namespace: str,
        files: Mapping[str, Mapping[str, bytes]] | None = None,
    ) -> list[tuple[str, dict[str, object]]]:
        return manifests_for_specs(specs, namespace=namespace, files=files)

    async def run(self, stop: asyncio.Event) -> None:
        await Reconciler(self.store).run(stop)
