"""MasterNode, MinionNode and GatewayNode: how a node comes and goes.

A node is deployed in recorded, idempotent steps (`deployInstance` ->
`setupEtcd` -> `setupNode`), each written on the node object once done, so
a run cut off and started again skips what is done. A node is removed in
recorded states too (`cordoned` -> drained -> `removing` -> forgotten). The
node kinds declare no actions of their own: the cluster's actions drive them.
"""

from __future__ import annotations

from catalog import environments as envs
from catalog.classes.runtime import Runtime
from catalog.documents import ClusterObject, EnvironmentDocument, NodeObject, is_cluster
from catalog.engines.base import Capability, require
from catalog.ids import ObjectId

ROLE_ORDER = {"master": 0, "minion": 1, "gateway": 2}


async def deploy_node(rt: Runtime, cluster: ClusterObject, node_id: str) -> bool:
    """Run the node's missing steps; True if any ran."""
    key = cluster["key"]
    ran = False
    node = envs.node_in(await rt.doc(), node_id)
    name = node["?"]["name"]
    if not node["steps"]["deployInstance"]:
        address = await rt.provider.deploy_instance(key, node)
        node = {**node, "address": address, "steps": {**node["steps"], "deployInstance": True}}
        await rt.edit_object(node_id, address=address, steps=node["steps"])
        await rt.ctx.log(f"{name}: deployInstance done ({address})")
        ran = True
    if not node["steps"]["setupEtcd"]:
        await rt.provider.setup_etcd(key, node)
        node["steps"] = {**node["steps"], "setupEtcd": True}
        await rt.edit_object(node_id, steps=node["steps"])
        await rt.ctx.log(f"{name}: setupEtcd done")
        ran = True
    if not node["steps"]["setupNode"] or node["state"] == "lost":
        props = cluster["properties"]
        node["capacity"] = {"cores": props["nodeCores"], "memory": props["nodeMemory"]}
        await rt.engine.forget_node(rt.key(cluster), name)  # it may bear a removed one's name
        await rt.provider.setup_node(key, node)
        node["steps"] = {**node["steps"], "setupNode": True}
        await rt.edit_object(node_id, steps=node["steps"], state="ready", capacity=node["capacity"])
        await rt.ctx.log(f"{name}: setupNode done; the node is ready")
        ran = True
    return ran


async def add_node(rt: Runtime, cluster_id: str, role: str) -> str:
    """A new node object of `role` in the cluster (not deployed yet); its id."""

    def add(doc: EnvironmentDocument) -> str:
        cluster = envs.cluster_in(doc, cluster_id)
        taken = [n["index"] for n in envs.nodes_of(doc, cluster) if n["role"] == role]
        node = envs.make_node(cluster["?"]["id"], role, max(taken, default=0) + 1)
        doc["objects"][node["?"]["id"]] = node
        doc["order"].append(node["?"]["id"])
        cluster["nodes"].append(node["?"]["id"])
        return node["?"]["id"]

    return await envs.change(rt.store, rt.ctx.environment, add)


async def remove_node(rt: Runtime, cluster: ClusterObject, node: NodeObject) -> str:
    """Cordon, drain (its replicas serve elsewhere first), stop, forget.

    Each state is recorded before the next step, so this can run again from
    any point.
    """
    name: str = node["?"]["name"]
    if node["state"] not in ("cordoned", "removing"):
        await rt.edit_object(node["?"]["id"], state="cordoned")
        await rt.ctx.log(f"{name} cordoned")
    if node["role"] == "minion" and node["state"] != "removing":
        require(rt.engine, Capability.DRAIN, "drain a node")
        await rt.engine.drain(rt.key(cluster), name, progress=rt.ctx.log)
        await rt.ctx.log(f"{name} drained")
    await rt.edit_object(node["?"]["id"], state="removing")
    await rt.provider.remove_node(cluster["key"], node)
    await rt.engine.forget_node(rt.key(cluster), name)
    await forget_node(rt, cluster["?"]["id"], node["?"]["id"])
    await rt.ctx.log(f"{name} removed")
    return name


async def forget_node(rt: Runtime, cluster_id: str, node_id: str) -> None:
    def forget(doc: EnvironmentDocument) -> None:
        doc["objects"].pop(ObjectId(node_id), None)
        doc["order"] = [i for i in doc["order"] if i != node_id]
        cluster = doc["objects"].get(ObjectId(cluster_id))
        if cluster and is_cluster(cluster):
            cluster["nodes"] = [n for n in cluster["nodes"] if n != node_id]

    await envs.change(rt.store, rt.ctx.environment, forget)
