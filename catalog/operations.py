"""What each action does, as idempotent steps on the environment document.

Every step records its result on the object it changes before the next one
starts, so a task that is run again after its worker died skips what is done
(a node already deployed, a replica already moved) and never leaves a node
or replica that the model does not know of.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from catalog import environments as envs
from catalog.addresses import allocate
from catalog.engines.base import Engine
from catalog.errors import ActionFailed, NotFound, NotSupported, SchedulingFailed
from catalog.export import export_archive
from catalog.providers.base import Provider
from catalog.routing import gateways_applied, route_revisions
from catalog.scheduling import NodeCapacity, choose_node, usage
from catalog.store import Store
from catalog.tasks import BY_ENVIRONMENT, Outcome, TaskContext

READY_TIMEOUT = 60.0
MAX_REPLICAS = 50


class Operations:
    """The task runner: dispatches a task to the action it names."""

    def __init__(self, store: Store, provider: Provider, engine: Engine) -> None:
        self.store = store
        self.provider = provider
        self.engine = engine

    async def __call__(self, ctx: TaskContext) -> Outcome:
        method = ctx.task["method"]
        if method == "destroy":
            return await self.destroy(ctx)
        doc = (await envs.load(self.store, ctx.environment)).value
        obj = doc["objects"].get(ctx.object_id)
        if obj is None:
            raise ActionFailed(method, f"object {ctx.object_id} is no longer in the environment")
        kind = obj["?"]["type"]
        handler = getattr(self, f"{_snake(kind)}_{method}", None)
        if handler is None:
            raise ActionFailed(method, f"{kind} has no action {method}")
        outcome: Outcome = await handler(ctx, obj)
        return outcome

    # -- helpers ---------------------------------------------------------------

    async def _doc(self, ctx: TaskContext) -> dict[str, Any]:
        return dict((await envs.load(self.store, ctx.environment)).value)

    async def _edit_object(self, ctx: TaskContext, obj_id: str, **fields: Any) -> None:
        def edit(doc: dict[str, Any]) -> None:
            if obj_id in doc["objects"]:
                doc["objects"][obj_id].update(fields)

        await envs.change(self.store, ctx.environment, edit)

    def _cluster_of(self, doc: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
        cluster = doc["objects"].get(obj.get("cluster", ""))
        if cluster is None:
            raise ActionFailed("deploy", "its cluster is no longer in the environment")
        return dict(cluster)

    def _nodes(
        self, doc: dict[str, Any], cluster: dict[str, Any], role: str | None = None
    ) -> list[dict[str, Any]]:
        nodes = [doc["objects"][n] for n in cluster["nodes"] if n in doc["objects"]]
        return [n for n in nodes if role is None or n["role"] == role]

    # -- nodes -----------------------------------------------------------------

    async def _deploy_node(self, ctx: TaskContext, cluster: dict[str, Any], node_id: str) -> bool:
        """Run the node's missing steps; True if any ran."""
        key = cluster["key"]
        ran = False
        doc = await self._doc(ctx)
        node = doc["objects"][node_id]
        name = node["?"]["name"]
        if not node["steps"]["deployInstance"]:
            address = await self.provider.deploy_instance(key, node)
            node = {**node, "address": address, "steps": {**node["steps"], "deployInstance": True}}
            await self._edit_object(ctx, node_id, address=address, steps=node["steps"])
            await ctx.log(f"{name}: deployInstance done ({address})")
            ran = True
        if not node["steps"]["setupEtcd"]:
            await self.provider.setup_etcd(key, node)
            node["steps"] = {**node["steps"], "setupEtcd": True}
            await self._edit_object(ctx, node_id, steps=node["steps"])
            await ctx.log(f"{name}: setupEtcd done")
            ran = True
        if not node["steps"]["setupNode"] or node["state"] == "lost":
            props = cluster["properties"]
            node["capacity"] = {"cores": props["nodeCores"], "memory": props["nodeMemory"]}
            await self.provider.setup_node(key, node)
            node["steps"] = {**node["steps"], "setupNode": True}
            await self._edit_object(
                ctx, node_id, steps=node["steps"], state="ready", capacity=node["capacity"]
            )
            await ctx.log(f"{name}: setupNode done; the node is ready")
            ran = True
        return ran

    async def _add_node(self, ctx: TaskContext, cluster_id: str, role: str) -> str:
        def add(doc: dict[str, Any]) -> str:
            cluster = doc["objects"][cluster_id]
            taken = [
                doc["objects"][n]["index"]
                for n in cluster["nodes"]
                if n in doc["objects"] and doc["objects"][n]["role"] == role
            ]
            node = envs.make_node(cluster_id, role, max(taken, default=0) + 1)
            doc["objects"][node["?"]["id"]] = node
            doc["order"].append(node["?"]["id"])
            cluster["nodes"].append(node["?"]["id"])
            return str(node["?"]["id"])

        node_id: str = await envs.change(self.store, ctx.environment, add)
        return node_id

    async def _forget_node(self, ctx: TaskContext, cluster_id: str, node_id: str) -> None:
        def forget(doc: dict[str, Any]) -> None:
            doc["objects"].pop(node_id, None)
            doc["order"] = [i for i in doc["order"] if i != node_id]
            cluster = doc["objects"].get(cluster_id)
            if cluster:
                cluster["nodes"] = [n for n in cluster["nodes"] if n != node_id]

        await envs.change(self.store, ctx.environment, forget)

    # -- cluster actions ---------------------------------------------------------

    async def kubernetes_cluster_deploy(self, ctx: TaskContext, cluster: dict[str, Any]) -> Outcome:
        doc = await self._doc(ctx)
        pending = [n["?"]["id"] for n in self._nodes(doc, cluster) if n["state"] != "ready"]
        if not pending and cluster["state"] == "ready":
            return Outcome.noop("the cluster is already deployed")
        await self._edit_object(ctx, cluster["?"]["id"], state="deploying")
        order = {"master": 0, "minion": 1, "gateway": 2}
        nodes = sorted(self._nodes(doc, cluster), key=lambda n: (order[n["role"]], n["index"]))
        for node in nodes:
            await self._deploy_node(ctx, cluster, node["?"]["id"])
        await self._edit_object(ctx, cluster["?"]["id"], state="ready")
        return Outcome.done(f"{len(nodes)} nodes ready", nodes=len(nodes))

    def _require_ready(self, cluster: dict[str, Any], action: str) -> None:
        if cluster.get("state") != "ready":
            raise ActionFailed(action, "the cluster is not deployed; run its deploy action first")

    async def kubernetes_cluster_scaleNodesUp(
        self, ctx: TaskContext, cluster: dict[str, Any]
    ) -> Outcome:
        return await self._scale_by(ctx, cluster, "minion", "maxNodes", "worker nodes", +1)

    async def kubernetes_cluster_scaleGatewaysUp(
        self, ctx: TaskContext, cluster: dict[str, Any]
    ) -> Outcome:
        return await self._scale_by(ctx, cluster, "gateway", "maxGateways", "gateway nodes", +1)

    async def kubernetes_cluster_scaleNodesDown(
        self, ctx: TaskContext, cluster: dict[str, Any]
    ) -> Outcome:
        return await self._scale_by(ctx, cluster, "minion", "maxNodes", "worker nodes", -1)

    async def kubernetes_cluster_scaleGatewaysDown(
        self, ctx: TaskContext, cluster: dict[str, Any]
    ) -> Outcome:
        return await self._scale_by(ctx, cluster, "gateway", "maxGateways", "gateway nodes", -1)

    async def kubernetes_cluster_scaleNodes(
        self, ctx: TaskContext, cluster: dict[str, Any]
    ) -> Outcome:
        return await self._scale_to(
            ctx, cluster, "minion", "maxNodes", "worker nodes", int(ctx.args["count"])
        )

    async def kubernetes_cluster_scaleGateways(
        self, ctx: TaskContext, cluster: dict[str, Any]
    ) -> Outcome:
        return await self._scale_to(
            ctx, cluster, "gateway", "maxGateways", "gateway nodes", int(ctx.args["count"])
        )

    def _members(self, doc: dict[str, Any], cluster: dict[str, Any], role: str) -> list[Any]:
        """The nodes of `role` that count towards its size: not lost, not on
        their way out (pending ones count: a resumed run finishes them)."""
        return [
            n
            for n in self._nodes(doc, cluster, role)
            if n["state"] not in ("lost", "cordoned", "removing")
        ]

    async def _scale_by(
        self,
        ctx: TaskContext,
        cluster: dict[str, Any],
        role: str,
        limit: str,
        what: str,
        step: int,
    ) -> Outcome:
        """One more or one fewer, pinned as an absolute count when the task
        starts: a resumed run reaches that count, it does not add another."""
        self._require_ready(cluster, f"scale {what} {'up' if step > 0 else 'down'}")
        doc = await self._doc(ctx)
        now = len(self._members(doc, cluster, role))
        target = int(await ctx.pinned("nodes", now + step))
        maximum = cluster["properties"][limit]
        if target > maximum:
            return Outcome.noop(f"the cluster already has the maximum of {maximum} {what}")
        if target < 1:
            return Outcome.noop(
                "at least one node must remain"
                if role == "minion"
                else "at least one gateway must remain"
            )
        return await self._scale_to(ctx, cluster, role, limit, what, target)

    async def _scale_to(
        self,
        ctx: TaskContext,
        cluster: dict[str, Any],
        role: str,
        limit: str,
        what: str,
        want: int,
    ) -> Outcome:
        """Add or remove nodes of `role` until exactly `want` are ready.

        Every step is recorded on the nodes (a pending node, a cordoned one),
        so running this again after a crash finishes what was begun and
        never adds or removes one node too many.
        """
        self._require_ready(cluster, f"scale {what}")
        maximum = cluster["properties"][limit]
        if want > maximum:
            raise ActionFailed(
                f"scale {what}", f"count {want} exceeds the cluster's {limit} of {maximum}"
            )
        cluster_id = cluster["?"]["id"]
        added: list[str] = []
        removed: list[str] = []
        for _ in range(2 * maximum + 2):
            doc = await self._doc(ctx)
            cluster = doc["objects"][cluster_id]
            leaving = [
                n for n in self._nodes(doc, cluster, role) if n["state"] in ("cordoned", "removing")
            ]
            members = self._members(doc, cluster, role)
            unfinished = [n for n in members if n["state"] != "ready"]
            if leaving:  # a removal that was cut off: finish it first
                removed.append(await self._remove_node(ctx, cluster, leaving[0]))
            elif unfinished:  # an addition that was cut off
                await self._deploy_node(ctx, cluster, unfinished[0]["?"]["id"])
                added.append(unfinished[0]["?"]["name"])
            elif len(members) < want:
                node_id = await self._add_node(ctx, cluster_id, role)
                await self._deploy_node(ctx, cluster, node_id)
                added.append((await self._doc(ctx))["objects"][node_id]["?"]["name"])
            elif len(members) > want:
                victim = await self._victim(cluster, members, role)
                removed.append(await self._remove_node(ctx, cluster, victim))
            else:
                break
        else:
            raise ActionFailed(f"scale {what}", f"did not reach {want} {what}", retryable=True)
        if not added and not removed:
            return Outcome.noop(f"the cluster already has {want} {what}", count=want)
        names = ", ".join(added + removed)
        return Outcome.done(
            f"{names} {'added' if added else 'removed'}", count=want, added=added, removed=removed
        )

    async def _victim(
        self, cluster: dict[str, Any], members: list[dict[str, Any]], role: str
    ) -> dict[str, Any]:
        """The node to remove: the emptiest worker, the newest gateway."""
        if role != "minion":
            return max(members, key=lambda n: n["index"])
        load = {n["?"]["name"]: 0 for n in members}
        for replica in (await self.engine.replicas(cluster["key"])).values():
            if replica["node"] in load:
                load[replica["node"]] += 1
        return min(members, key=lambda n: (load[n["?"]["name"]], -n["index"]))

    async def _remove_node(
        self, ctx: TaskContext, cluster: dict[str, Any], node: dict[str, Any]
    ) -> str:
        """Cordon, move every replica off, stop the agent, forget the node.

        Each state is recorded first, and moving a replica finds the
        replacement an earlier run started, so this can run again at any point.
        """
        name: str = node["?"]["name"]
        if node["state"] not in ("cordoned", "removing"):
            await self._edit_object(ctx, node["?"]["id"], state="cordoned")
            await ctx.log(f"{name} cordoned")
        if node["role"] == "minion":
            replicas = await self.engine.replicas(cluster["key"])
            for replica_id, replica in replicas.items():
                if replica["node"] == name:
                    await self._move_replica(ctx, cluster, replica_id)
        await self._edit_object(ctx, node["?"]["id"], state="removing")
        await self.provider.remove_node(cluster["key"], node)
        await self._forget_node(ctx, cluster["?"]["id"], node["?"]["id"])
        await ctx.log(f"{name} removed")
        return name

    async def kubernetes_cluster_exportConfig(
        self, ctx: TaskContext, cluster: dict[str, Any]
    ) -> Outcome:
        doc = await self._doc(ctx)
        name = f"{doc['name']}-{cluster['properties']['name']}.tar.gz"
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
        archive, manifests = export_archive(doc, cluster)
        await ctx.attach(safe, archive, content_type="application/gzip")
        await ctx.log(f"exported {len(manifests)} manifests to {safe}")
        return Outcome.done(f"{len(manifests)} manifests", file=safe, manifests=manifests)

    # -- pods --------------------------------------------------------------------

    async def kubernetes_application_deploy(self, ctx: TaskContext, app: dict[str, Any]) -> Outcome:
        changed = False
        for pod_id in app["pods"]:
            doc = await self._doc(ctx)
            pod = doc["objects"][pod_id]
            outcome = await self._reconcile_pod(ctx, pod, pod["replicas"]["desired"])
            changed = changed or outcome.changed
        await self._edit_object(ctx, app["?"]["id"], state="deployed")
        if not changed:
            return Outcome.noop("every pod already runs its replicas")
        return Outcome.done(f"{len(app['pods'])} pods deployed")

    async def kubernetes_pod_scalePodUp(self, ctx: TaskContext, pod: dict[str, Any]) -> Outcome:
        want = int(await ctx.pinned("replicas", pod["replicas"]["desired"] + 1))
        if want > MAX_REPLICAS:
            return Outcome.noop(f"the pod already has the maximum of {MAX_REPLICAS} replicas")
        return await self._reconcile_pod(ctx, pod, want)

    async def kubernetes_pod_scalePodDown(self, ctx: TaskContext, pod: dict[str, Any]) -> Outcome:
        want = int(await ctx.pinned("replicas", pod["replicas"]["desired"] - 1))
        if want < 0:
            return Outcome.noop("the pod already has no replicas")
        return await self._reconcile_pod(ctx, pod, want)

    async def kubernetes_pod_scalePod(self, ctx: TaskContext, pod: dict[str, Any]) -> Outcome:
        return await self._reconcile_pod(ctx, pod, int(ctx.args["replicas"]))

    async def kubernetes_pod_recreatePod(self, ctx: TaskContext, pod: dict[str, Any]) -> Outcome:
        doc = await self._doc(ctx)
        cluster = self._cluster_of(doc, pod)
        self._require_ready(cluster, "recreatePod")
        # The replicas to replace are those of when the task started, not the
        # replacements a resumed run finds.
        mine = sorted(await self._pod_replicas(cluster, pod))
        targets: list[str] = await ctx.pinned("recreate", mine)
        for replica_id in targets:
            await self._move_replica(ctx, cluster, replica_id, same_node_ok=True, pod=pod)
        await self._finish_draining(ctx, cluster, pod)
        if not targets:
            return Outcome.noop("the pod has no replicas to recreate")
        return Outcome.done(f"{len(targets)} replicas recreated")

    async def kubernetes_pod_restartContainers(
        self, ctx: TaskContext, pod: dict[str, Any]
    ) -> Outcome:
        doc = await self._doc(ctx)
        cluster = self._cluster_of(doc, pod)
        self._require_ready(cluster, "restartContainers")
        if "restart" not in self.engine.capabilities:
            raise NotSupported(self.engine.name, "restart containers in place")
        mine = await self._pod_replicas(cluster, pod)
        for replica_id, replica in mine.items():
            await self.engine.restart_replica(cluster["key"], replica_id)
            await self._wait_ready(cluster, [replica_id], generation=replica["generation"] + 1)
            await ctx.log(f"{replica['name']} restarted")
        if not mine:
            return Outcome.noop("the pod has no replicas to restart")
        return Outcome.done(f"{len(mine)} replicas restarted")

    async def _pod_replicas(
        self, cluster: dict[str, Any], pod: dict[str, Any]
    ) -> dict[str, dict[str, Any]]:
        return {
            i: r
            for i, r in (await self.engine.replicas(cluster["key"])).items()
            if r["pod"] == pod["?"]["id"] and not r.get("draining")
        }

    async def _ensure_services(self, ctx: TaskContext, pod: dict[str, Any]) -> list[Any]:
        services = [dict(s) for s in pod["spec"].get("services", [])]
        known = {s["name"]: s for s in pod.get("services", [])}
        changed = False
        for service in services:
            service.setdefault("targetPort", service["port"])
            service.setdefault("scope", "internal")
            service["ip"] = known.get(service["name"], {}).get("ip")
            if not service["ip"]:
                service["ip"] = await allocate(
                    self.store, "service", f"{ctx.environment}/{service['name']}"
                )
                changed = True
        if changed or len(services) != len(known):
            await self._edit_object(ctx, pod["?"]["id"], services=services)
        return services

    def _link_env(self, doc: dict[str, Any], pod: dict[str, Any]) -> dict[str, str]:
        """Docker-link and Kubernetes service variables for the pod's replicas."""
        services = {
            s["name"]: s
            for o in doc["objects"].values()
            if o["?"]["type"] == "KubernetesPod"
            for s in o.get("services", [])
            if s.get("ip")
        }
        env: dict[str, str] = {}
        for name, service in services.items():
            upper = name.upper().replace("-", "_")
            env[f"{upper}_SERVICE_HOST"] = service["ip"]
            env[f"{upper}_SERVICE_PORT"] = str(service["port"])
        for alias, target in pod["spec"].get("links", {}).items():
            service = services.get(target)
            if service is None:
                continue
            upper, ip, port = alias.upper(), service["ip"], service["port"]
            url = f"tcp://{ip}:{port}"
            env[f"{upper}_PORT"] = url
            env[f"{upper}_PORT_{port}_TCP"] = url
            env[f"{upper}_PORT_{port}_TCP_ADDR"] = ip
            env[f"{upper}_PORT_{port}_TCP_PORT"] = str(port)
            env[f"{upper}_PORT_{port}_TCP_PROTO"] = "tcp"
        return env

    async def _capacity(
        self, doc: dict[str, Any], cluster: dict[str, Any], replicas: dict[str, dict[str, Any]]
    ) -> list[NodeCapacity]:
        nodes = [
            NodeCapacity(
                n["?"]["name"], float(n["capacity"]["cores"]), int(n["capacity"]["memory"])
            )
            for n in self._nodes(doc, cluster, "minion")
            if n["state"] == "ready" and n.get("capacity")
        ]
        return usage(nodes, list(replicas.values()))

    async def _place(
        self,
        ctx: TaskContext,
        cluster: dict[str, Any],
        pod: dict[str, Any],
        *,
        avoid: frozenset[str] = frozenset(),
        replaces: str | None = None,
    ) -> str:
        doc = await self._doc(ctx)
        pod = doc["objects"][pod["?"]["id"]]
        replicas = await self.engine.replicas(cluster["key"])
        nodes = await self._capacity(doc, cluster, replicas)
        containers = pod["spec"]["containers"]
        node = choose_node(nodes, containers, pod=pod["spec"]["name"], avoid=avoid)
        replica_id = await self.engine.start_replica(
            cluster["key"],
            {
                "pod": pod["?"]["id"],
                "podName": pod["spec"]["name"],
                "env": self._link_env(doc, pod),
                "environment": ctx.environment,
                "node": node,
                "containers": containers,
                "package": pod["?"].get("package"),
                "labels": pod["spec"].get("labels", {}),
                "created": time.time(),
                # Who started it and whom it replaces: how a resumed run
                # finds its own work instead of repeating it.
                "task": ctx.task["id"],
                "replaces": replaces,
            },
        )
        await ctx.log(f"replica {replica_id} of {pod['spec']['name']} placed on {node}")
        return replica_id

    async def _reconcile_pod(self, ctx: TaskContext, pod: dict[str, Any], want: int) -> Outcome:
        doc = await self._doc(ctx)
        cluster = self._cluster_of(doc, pod)
        self._require_ready(cluster, "deploy pod")
        await self._ensure_services(ctx, pod)
        replicas = {"desired": want, "ready": pod["replicas"]["ready"]}
        await self._edit_object(ctx, pod["?"]["id"], replicas=replicas, state="deploying")
        # A run cut off while retiring left replicas draining: they go first.
        stopped = await self._finish_draining(ctx, cluster, pod)
        mine = await self._pod_replicas(cluster, pod)
        # Replicas this task started before it was cut off are waited for too.
        started = [i for i, r in mine.items() if r.get("task") == ctx.task["id"]]
        fresh = 0
        try:
            while len(mine) + fresh < want:
                started.append(await self._place(ctx, cluster, pod))
                fresh += 1
        except SchedulingFailed:
            # What runs is what the pod has; the request that did not fit is not kept.
            running = {"desired": len(mine) + fresh, "ready": pod["replicas"]["ready"]}
            await self._edit_object(ctx, pod["?"]["id"], replicas=running, state="running")
            raise
        if started:
            await self._wait_ready(cluster, started)
            await self._wait_routed(ctx, cluster, pod, include=started)
        extra = sorted(mine.items(), key=lambda kv: kv[1].get("created", 0), reverse=True)[
            : max(0, len(mine) - want)
        ]
        for replica_id, replica in extra:
            await self._retire(ctx, cluster, replica_id, replica)
        await self._edit_object(ctx, pod["?"]["id"], state="running")
        if not started and not extra and not stopped:
            return Outcome.noop(f"the pod already runs {want} replicas", replicas=want)
        return Outcome.done(
            f"{want} replicas", replicas=want, started=len(started), stopped=len(extra) + stopped
        )

    async def _finish_draining(
        self, ctx: TaskContext, cluster: dict[str, Any], pod: dict[str, Any]
    ) -> int:
        """Stop the pod's replicas that an earlier run left draining."""
        replicas = await self.engine.replicas(cluster["key"])
        left = {
            i: r for i, r in replicas.items() if r["pod"] == pod["?"]["id"] and r.get("draining")
        }
        for replica_id, replica in left.items():
            await ctx.log(f"finishing the retirement of {replica['name']}")
            await self._retire(ctx, cluster, replica_id, replica)
        return len(left)

    async def _move_replica(
        self,
        ctx: TaskContext,
        cluster: dict[str, Any],
        replica_id: str,
        *,
        same_node_ok: bool = False,
        pod: dict[str, Any] | None = None,
    ) -> None:
        """Start a replacement, wait until it serves, then retire the old replica.

        Idempotent: a replacement that an earlier run started (it names the
        replica it `replaces`) is used instead of starting another, and an old
        replica already gone or draining is only finished off.
        """
        replicas = await self.engine.replicas(cluster["key"])
        old = replicas.get(replica_id)
        new = next((i for i, r in replicas.items() if r.get("replaces") == replica_id), None)
        doc = await self._doc(ctx)
        pod_id = old["pod"] if old is not None else (pod or {}).get("?", {}).get("id")
        pod = doc["objects"].get(pod_id) if pod_id else None
        if pod is None:
            if old is not None:
                await self.engine.stop_replica(cluster["key"], replica_id)
            return
        if old is None and new is None and not same_node_ok:
            return  # already moved and retired by an earlier run
        # (With `same_node_ok`, neither left means a run retired it in place
        # and was cut off before the replacement: it is placed below.)
        if new is None and old is not None and not old.get("draining"):
            avoid = frozenset() if same_node_ok else frozenset({old["node"]})
            try:
                new = await self._place(ctx, cluster, pod, avoid=avoid, replaces=replica_id)
            except SchedulingFailed:
                if not same_node_ok:
                    raise
                await ctx.log(
                    f"no room to start a replacement first; replacing {old['name']} in place",
                    level="warning",
                )
        if new is None:
            if old is not None:
                await self._retire(ctx, cluster, replica_id, old)
                old = None
            new = await self._place(ctx, cluster, pod, replaces=replica_id)
        await self._wait_ready(cluster, [new])
        await self._wait_routed(ctx, cluster, pod, include=[new])
        if old is not None:
            await self._retire(ctx, cluster, replica_id, old)

    async def _retire(
        self, ctx: TaskContext, cluster: dict[str, Any], replica_id: str, replica: dict[str, Any]
    ) -> None:
        """Take a replica out of every route, wait for the gateways, then stop it."""
        if not replica.get("draining"):
            await self.engine.update_replica(cluster["key"], replica_id, draining=True)
            await ctx.log(f"replica {replica_id} ({replica['name']}) draining")
        doc = await self._doc(ctx)
        pod = doc["objects"].get(replica["pod"])
        if pod is not None:
            await self._wait_routed(ctx, cluster, pod, exclude=[replica_id])
        await self.engine.stop_replica(cluster["key"], replica_id)
        await ctx.log(f"replica {replica_id} ({replica['name']}) stopped")

    async def _wait_ready(
        self, cluster: dict[str, Any], ids: list[str], *, generation: int | None = None
    ) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            replicas = await self.engine.replicas(cluster["key"])
            waiting = []
            for i in ids:
                status = (replicas.get(i) or {}).get("status") or {}
                if not status.get("ready") or (
                    generation is not None and status.get("generation") != generation
                ):
                    waiting.append(i)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise ActionFailed(
                    "wait",
                    f"replicas {', '.join(waiting)} not ready after {READY_TIMEOUT:.0f}s",
                    retryable=True,
                )
            await asyncio.sleep(0.02)

    async def _wait_routed(
        self,
        ctx: TaskContext,
        cluster: dict[str, Any],
        pod: dict[str, Any],
        *,
        include: tuple[str, ...] | list[str] = (),
        exclude: tuple[str, ...] | list[str] = (),
    ) -> None:
        """Wait until the routes of the pod's services include/exclude these
        replicas and every gateway of the cluster has applied them."""
        deadline = time.monotonic() + READY_TIMEOUT
        replicas = await self.engine.replicas(cluster["key"])
        ips_in = {replicas[i]["ip"] for i in include if i in replicas}
        ips_out = {replicas[i]["ip"] for i in exclude if i in replicas}
        doc = await self._doc(ctx)
        pod = doc["objects"].get(pod["?"]["id"], pod)
        serving = [n for n in self._nodes(doc, cluster) if n["state"] == "ready"]
        # The master's gateway serves internal routes, gateway nodes public ones.
        groups = {
            ".internal/": [
                f"{cluster['key']}-{n['?']['name']}" for n in serving if n["role"] == "master"
            ],
            f"{cluster['key']}/": [
                f"{cluster['key']}-{n['?']['name']}" for n in serving if n["role"] == "gateway"
            ],
        }
        while True:
            routes = await route_revisions(self.store, cluster["key"], pod.get("services", []))
            hosts = [set(r["hosts"]) for r in routes]
            if all(ips_in <= h and not (ips_out & h) for h in hosts):
                applied = True
                for marker, ids in groups.items():
                    revision = max((r["revision"] for r in routes if marker in r["key"]), default=0)
                    applied = applied and await gateways_applied(self.store, ids, revision)
                if applied:
                    return
            if time.monotonic() > deadline:
                raise ActionFailed(
                    "routes",
                    f"gateways did not apply the new routes within {READY_TIMEOUT:.0f}s",
                    retryable=True,
                )
            await asyncio.sleep(0.02)

    # -- environment -------------------------------------------------------------

    async def destroy(self, ctx: TaskContext) -> Outcome:
        try:
            doc = await self._doc(ctx)
        except NotFound:
            return Outcome.noop("the environment is already gone")
        await envs.change(self.store, ctx.environment, lambda d: d.update(status="deleting"))
        for cluster in envs.clusters(doc):
            for replica_id in await self.engine.replicas(cluster["key"]):
                await self.engine.stop_replica(cluster["key"], replica_id)
            for node in self._nodes(doc, cluster):
                await self.provider.remove_node(cluster["key"], node)
                await ctx.log(f"{node['?']['name']} removed")
            await self.store.delete_prefix(f"/marina/gateway/routes/{cluster['key']}/")
            await self.store.delete_prefix(f"/marina/gateway/routes/{cluster['key']}.internal/")
            await self.store.delete_prefix(f"/marina/clusters/{cluster['key']}/")
        for obj in doc["objects"].values():
            for service in obj.get("services", []):
                if service.get("ip"):
                    await self.store.delete(f"/marina/addresses/{service['ip']}")
        await self.store.delete_prefix(f"{BY_ENVIRONMENT}{ctx.environment}/")
        await self.store.delete(envs.env_key(ctx.environment))
        return Outcome.done("environment deleted")


def _snake(kind: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in kind).lstrip("_")
