"""Deleting an environment: everything it runs stops, nothing it held stays."""

from __future__ import annotations

from catalog import environments as envs
from catalog import keys
from catalog.classes.runtime import Runtime
from catalog.documents import EnvironmentDocument
from catalog.errors import NotFound
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
    await rt.store.delete(f"{keys.ENVIRONMENTS_BY_PROJECT}{doc['project']}/{doc['id']}")
    await rt.store.delete(keys.environment(rt.ctx.environment))
    return Outcome.done("environment deleted")
