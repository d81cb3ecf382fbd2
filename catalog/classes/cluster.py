"""KubernetesCluster: deploy it, scale its workers and gateways, export it."""

from __future__ import annotations

from typing import Literal

from catalog import environments as envs
from catalog.classes.nodes import ROLE_ORDER, add_node, deploy_node, remove_node
from catalog.classes.registry import action, count_schema
from catalog.classes.runtime import Runtime
from catalog.documents import ClusterObject, EnvironmentDocument, NodeObject
from catalog.engines.base import Capability, PodId, require
from catalog.errors import ActionFailed, NotSupported
from catalog.export import export_archive, namespace_of, pod_spec, pods_of
from catalog.packages import get_package
from catalog.providers.base import single_master
from catalog.tasks import Outcome

CLASS = "KubernetesCluster"
LIMITS: dict[str, tuple[Literal["maxNodes", "maxGateways"], str]] = {
    "minion": ("maxNodes", "worker nodes"),
    "gateway": ("maxGateways", "gateway nodes"),
}


@action(CLASS, "deploy", "Deploy", "Create the nodes and bring the cluster up.")
async def deploy(rt: Runtime, cluster: ClusterObject) -> Outcome:
    doc = await rt.doc()
    pending = [n["?"]["id"] for n in rt.nodes(doc, cluster) if n["state"] != "ready"]
    if not pending and cluster["state"] == "ready":
        return Outcome.noop("the cluster is already deployed")
    masters = envs.master_count(cluster["properties"])
    if masters > 1 and single_master(rt.provider) is not None:
        # Refused when the cluster is added or imported; one stored by a
        # Marina of another provider (the same etcd) reaches this far.
        raise NotSupported(rt.provider.name, f"run {masters} masters (masterCount): it runs one")
    await rt.edit_object(cluster["?"]["id"], state="deploying")
    # Masters first, master-0 first: a later master joins the etcd and the
    # control plane of the ones before it.
    nodes = sorted(rt.nodes(doc, cluster), key=lambda n: (ROLE_ORDER[n["role"]], n["index"]))
    for node in nodes:
        await deploy_node(rt, cluster, node["?"]["id"])
    await rt.edit_object(cluster["?"]["id"], state="ready")
    return Outcome.done(f"{len(nodes)} nodes ready", nodes=len(nodes))


@action(CLASS, "scaleNodesUp", "Add a node", "Add one worker node, up to the maximum.")
async def scale_nodes_up(rt: Runtime, cluster: ClusterObject) -> Outcome:
    return await _scale_by(rt, cluster, "minion", +1)


@action(
    CLASS,
    "scaleNodesDown",
    "Remove a node",
    "Move the pods of the emptiest worker elsewhere, then remove it.",
    destructive=True,
)
async def scale_nodes_down(rt: Runtime, cluster: ClusterObject) -> Outcome:
    return await _scale_by(rt, cluster, "minion", -1)


@action(CLASS, "scaleGatewaysUp", "Add a gateway", "Add one gateway node, up to the maximum.")
async def scale_gateways_up(rt: Runtime, cluster: ClusterObject) -> Outcome:
    return await _scale_by(rt, cluster, "gateway", +1)


@action(
    CLASS,
    "scaleGatewaysDown",
    "Remove a gateway",
    "Remove one gateway node; at least one remains.",
    destructive=True,
)
async def scale_gateways_down(rt: Runtime, cluster: ClusterObject) -> Outcome:
    return await _scale_by(rt, cluster, "gateway", -1)


@action(
    CLASS,
    "scaleNodes",
    "Set worker nodes",
    "Scale worker nodes to a count.",
    schema=count_schema("Worker nodes", 20),
    destructive=True,
)
async def scale_nodes(rt: Runtime, cluster: ClusterObject) -> Outcome:
    return await _scale_to(rt, cluster, "minion", rt.ctx.integer("count"))


@action(
    CLASS,
    "scaleGateways",
    "Set gateway nodes",
    "Scale gateway nodes to a count.",
    schema=count_schema("Gateway nodes", 5),
    destructive=True,
)
async def scale_gateways(rt: Runtime, cluster: ClusterObject) -> Outcome:
    return await _scale_to(rt, cluster, "gateway", rt.ctx.integer("count"))


@action(
    CLASS,
    "exportConfig",
    "Export configuration",
    "A .tar.gz of Kubernetes manifests and an apply.sh that recreates the "
    "environment on another cluster with kubectl alone.",
)
async def export_config(rt: Runtime, cluster: ClusterObject) -> Outcome:
    doc = await rt.doc()
    name = f"{doc['name']}-{cluster['properties']['name']}.tar.gz"
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    require(rt.engine, Capability.RENDER, "render Kubernetes objects")
    specs = [pod_spec(doc, pod) for pod in pods_of(doc, cluster)]
    # Package files travel as ConfigMaps, read now: not from what this process last applied.
    files = {
        package: dict((await get_package(rt.store, package)).files)
        for package in sorted({s["package"] for s in specs if s["package"]})
    }
    manifests = rt.engine.render(
        rt.key(cluster), specs, namespace=namespace_of(doc, cluster), files=files
    )
    archive, names = export_archive(doc, cluster, manifests)
    await rt.ctx.attach(safe, archive, content_type="application/gzip")
    await rt.ctx.log(f"exported {len(names)} manifests to {safe}")
    return Outcome.done(f"{len(names)} manifests", file=safe, manifests=names)


def members(
    rt: Runtime, doc: EnvironmentDocument, cluster: ClusterObject, role: str
) -> list[NodeObject]:
    """The nodes of `role` that count towards its size: not lost, not on their
    way out (pending ones count: a resumed run finishes them)."""
    return [
        n
        for n in rt.nodes(doc, cluster, role)
        if n["state"] not in ("lost", "cordoned", "removing")
    ]


async def _scale_by(rt: Runtime, cluster: ClusterObject, role: str, step: int) -> Outcome:
    """One more or one fewer, pinned as an absolute count when the task starts:
    a resumed run reaches that count, it does not add another."""
    limit, what = LIMITS[role]
    rt.require_ready(cluster, f"scale {what} {'up' if step > 0 else 'down'}")
    now = len(members(rt, await rt.doc(), cluster, role))
    target = await rt.ctx.pinned("nodes", now + step)
    maximum = cluster["properties"][limit]
    if target > maximum:
        return Outcome.noop(f"the cluster already has the maximum of {maximum} {what}")
    if target < 1:
        return Outcome.noop(
            "at least one node must remain"
            if role == "minion"
            else "at least one gateway must remain"
        )
    return await _scale_to(rt, cluster, role, target)


async def _scale_to(rt: Runtime, cluster: ClusterObject, role: str, want: int) -> Outcome:
    """Add or remove nodes of `role` until exactly `want` are ready.

    Every step is recorded on the nodes (a pending node, a cordoned one), so
    running this again after a crash finishes what was begun and never adds
    or removes one node too many.
    """
    limit, what = LIMITS[role]
    rt.require_ready(cluster, f"scale {what}")
    maximum = cluster["properties"][limit]
    if want > maximum:
        raise ActionFailed(
            f"scale {what}", f"count {want} exceeds the cluster's {limit} of {maximum}"
        )
    cluster_id = cluster["?"]["id"]
    added: list[str] = []
    removed: list[str] = []
    for _ in range(2 * maximum + 2):
        doc = await rt.doc()
        cluster = envs.cluster_in(doc, cluster_id)
        leaving = [
            n for n in rt.nodes(doc, cluster, role) if n["state"] in ("cordoned", "removing")
        ]
        current = members(rt, doc, cluster, role)
        unfinished = [n for n in current if n["state"] != "ready"]
        if leaving:  # a removal that was cut off: finish it first
            removed.append(await remove_node(rt, cluster, leaving[0]))
        elif unfinished:  # an addition that was cut off
            await deploy_node(rt, cluster, unfinished[0]["?"]["id"])
            added.append(unfinished[0]["?"]["name"])
        elif len(current) < want:
            node_id = await add_node(rt, cluster_id, role)
            await deploy_node(rt, cluster, node_id)
            added.append(envs.node_in(await rt.doc(), node_id)["?"]["name"])
        elif len(current) > want:
            victim = await _victim(rt, doc, cluster, current, role)
            removed.append(await remove_node(rt, cluster, victim))
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
    rt: Runtime,
    doc: EnvironmentDocument,
    cluster: ClusterObject,
    current: list[NodeObject],
    role: str,
) -> NodeObject:
    """The node to remove: the emptiest worker, the newest gateway."""
    if role != "minion":
        return max(current, key=lambda n: n["index"])
    load = {n["?"]["name"]: 0 for n in current}
    for pod in pods_of(doc, cluster):
        state = await rt.engine.pod_state(rt.key(cluster), PodId(pod["?"]["id"]))
        for replica in state["replicas"] if state else []:
            if replica["node"] in load:
                load[replica["node"]] += 1
    return min(current, key=lambda n: (load[n["?"]["name"]], -n["index"]))
