"""Deleting an environment, or one object of it (an application, a pod, a
cluster): everything it runs stops, nothing it held stays."""

from __future__ import annotations

from catalog import environments as envs
from catalog import keys
from catalog.classes.runtime import Runtime
from catalog.documents import EnvironmentDocument, is_application, is_cluster, is_pod
from catalog.engines.base import PodId
from catalog.errors import ActionFailed, NotFound
from catalog.ids import ObjectId
from catalog.tasks import Outcome


async def destroy(rt: Runtime) -> Outcome:
    try:
        doc = await rt.doc()
    except NotFound:
        return Outcome.noop("the environment is already gone")

    def deleting(doc: EnvironmentDocument) -> None:
        doc["status"] = "deleting"

    await envs.change(rt.store, rt.ctx.environment, deleting)
    for cluster in envs.clusters(doc):
        await rt.engine.delete_cluster(rt.key(cluster))
        for node in rt.nodes(doc, cluster):
            await rt.provider.remove_node(cluster["key"], node)
            await rt.ctx.log(f"{node['?']['name']} removed")
        await rt.store.delete_prefix(f"{keys.ROUTES}{cluster['key']}/")
        await rt.store.delete_prefix(f"{keys.ROUTES}{cluster['key']}.internal/")
        await rt.store.delete_prefix(f"{keys.CLUSTERS}{cluster['key']}/")
    await rt.store.delete_prefix(f"{keys.TASKS_BY_ENVIRONMENT}{rt.ctx.environment}/")
    await rt.store.delete_prefix(keys.sessions_of(rt.ctx.environment))
    await rt.store.delete(keys.environment_version(rt.ctx.environment))
    await rt.store.delete(f"{keys.ENVIRONMENTS_BY_PROJECT}{doc['project']}/{doc['id']}")
    await rt.store.delete(keys.environment(rt.ctx.environment))
    return Outcome.done("environment deleted")


async def remove(rt: Runtime) -> Outcome:
    """Remove one object: an application with its pods, a pod, or a cluster
    with its nodes (once nothing runs on it). Each step can run again."""
    doc = await rt.doc()
    obj = doc["objects"].get(rt.ctx.object_id)
    if obj is None:
        return Outcome.noop("already removed")
    kind, name = obj["?"]["type"], obj["?"]["name"]
    gone: set[ObjectId]
    if is_cluster(obj):
        on_it = [
            o["?"]["name"]
            for o in doc["objects"].values()
            if (is_pod(o) or is_application(o)) and o["cluster"] == obj["?"]["id"]
        ]
        if on_it:
            raise ActionFailed(
                "remove", f"cluster {name!r} still has {', '.join(on_it)}: remove them first"
            )
        await rt.engine.delete_cluster(rt.key(obj))
        for node in rt.nodes(doc, obj):
            await rt.provider.remove_node(obj["key"], node)
            await rt.ctx.log(f"{node['?']['name']} removed")
        for prefix in (f"{keys.ROUTES}{obj['key']}/", f"{keys.ROUTES}{obj['key']}.internal/"):
            await rt.store.delete_prefix(prefix)
        await rt.store.delete_prefix(f"{keys.CLUSTERS}{obj['key']}/")
        gone = {obj["?"]["id"], *obj["nodes"]}
    else:
        found = [doc["objects"].get(p) for p in obj["pods"]] if is_application(obj) else [obj]
        pods = [p for p in found if p is not None and is_pod(p)]
        for pod in pods:
            cluster = doc["objects"].get(pod["cluster"])
            if cluster is not None and is_cluster(cluster) and pod["state"] != "new":
                await rt.engine.delete_pod(rt.key(cluster), PodId(pod["?"]["id"]))
            await rt.ctx.log(f"pod {pod['?']['name']} removed")
        gone = {obj["?"]["id"], *(p["?"]["id"] for p in pods)}

    def forget(doc: EnvironmentDocument) -> None:
        for obj_id in gone:
            doc["objects"].pop(obj_id, None)
        doc["order"] = [i for i in doc["order"] if i not in gone]
        for other in doc["objects"].values():
            if is_application(other):
                other["pods"] = [p for p in other["pods"] if p not in gone]

    await envs.change(rt.store, rt.ctx.environment, forget)
    return Outcome.done(f"{kind} {name} removed")
