"""The local engine: replicas are process groups run by node agents.

The desired replicas are documents under /marina/replicas/<cluster>/; the
node agent named in each runs it and reports under
/marina/replica-status/<cluster>/ while it lives.
"""

from __future__ import annotations

from typing import Any

from catalog.addresses import allocate, release
from catalog.errors import NotFound
from catalog.ids import new_id
from catalog.nodeagent import REPLICAS, STATUS
from catalog.store import Store


class LocalEngine:
    name = "local"
    capabilities = frozenset({"replicas", "restart"})

    def __init__(self, store: Store) -> None:
        self.store = store

    async def start_replica(self, cluster: str, replica: dict[str, Any]) -> str:
        ident = new_id()[:12]
        doc = dict(replica)
        doc.setdefault("name", f"{doc['podName']}-{ident[:5]}")
        if not doc.get("ip"):
            doc["ip"] = await allocate(self.store, "pod", f"{cluster}/{ident}")
        doc.setdefault("generation", 0)
        await self.store.create(f"{REPLICAS}{cluster}/{ident}", doc)
        return ident

    async def stop_replica(self, cluster: str, replica_id: str) -> None:
        found = await self.store.get(f"{REPLICAS}{cluster}/{replica_id}")
        await self.store.delete(f"{REPLICAS}{cluster}/{replica_id}")
        if found is not None:
            await release(self.store, found.value.get("ip"))

    async def restart_replica(self, cluster: str, replica_id: str) -> None:
        def bump(doc: Any) -> Any:
            doc["generation"] = int(doc.get("generation", 0)) + 1
            return doc

        await self.store.update(f"{REPLICAS}{cluster}/{replica_id}", bump)

    async def update_replica(self, cluster: str, replica_id: str, **fields: Any) -> None:
        key = f"{REPLICAS}{cluster}/{replica_id}"
        old_ip = None
        if "node" in fields:
            found = await self.store.get(key)
            if found is not None and found.value.get("node") != fields["node"]:
                # A moved replica gets a fresh address: the old node may still
                # run the old process, bound to the old one.
                old_ip = found.value.get("ip")
                fields = {
                    **fields,
                    "ip": await allocate(self.store, "pod", f"{cluster}/{replica_id}"),
                }

        def edit(doc: Any) -> Any:
            if doc is None:
                raise NotFound("replica", replica_id)
            doc.update(fields)
            return doc

        try:
            await self.store.update(key, edit)
        except NotFound:
            if old_ip is not None:
                await release(self.store, fields["ip"])
            raise
        await release(self.store, old_ip)

    async def replicas(self, cluster: str) -> dict[str, dict[str, Any]]:
        prefix = f"{REPLICAS}{cluster}/"
        statuses = {
            v.key.rsplit("/", 1)[1]: v.value for v in await self.store.list(f"{STATUS}{cluster}/")
        }
        return {
            v.key[len(prefix) :]: {
                **v.value,
                "id": v.key[len(prefix) :],
                "status": statuses.get(v.key[len(prefix) :]),
            }
            for v in await self.store.list(prefix)
        }
