"""What an action runs with: its task, the store, the provider and the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from catalog import environments as envs
from catalog.documents import (
    ApplicationObject,
    ClusterObject,
    EnvironmentDocument,
    JsonObject,
    NodeObject,
    PodObject,
    is_cluster,
)
from catalog.engines.base import ClusterKey, Engine
from catalog.errors import ActionFailed
from catalog.ids import ObjectId
from catalog.providers.base import Provider
from catalog.store import Store
from catalog.tasks import TaskContext


@dataclass
class Runtime:
    """What an action runs with: its task, the store, the provider and the engine."""

    ctx: TaskContext
    store: Store
    provider: Provider
    engine: Engine

    async def doc(self) -> EnvironmentDocument:
        found: EnvironmentDocument = (await envs.load(self.store, self.ctx.environment)).value
        return found

    async def edit_object(self, obj_id: str, **fields: Any) -> None:
        def edit(doc: EnvironmentDocument) -> None:
            found = doc["objects"].get(ObjectId(obj_id))
            if found is not None:
                # The callers name fields of the object's own kind.
                cast(JsonObject, found).update(fields)

        await envs.change(self.store, self.ctx.environment, edit)

    @staticmethod
    def cluster_of(
        doc: EnvironmentDocument, obj: PodObject | ApplicationObject | NodeObject
    ) -> ClusterObject:
        cluster = doc["objects"].get(obj["cluster"])
        if cluster is None or not is_cluster(cluster):
            raise ActionFailed("deploy", "its cluster is no longer in the environment")
        return cluster.copy()

    @staticmethod
    def nodes(
        doc: EnvironmentDocument, cluster: ClusterObject, role: str | None = None
    ) -> list[NodeObject]:
        return [n for n in envs.nodes_of(doc, cluster) if role is None or n["role"] == role]

    @staticmethod
    def require_ready(cluster: ClusterObject, action: str) -> None:
        if cluster.get("state") != "ready":
            raise ActionFailed(action, "the cluster is not deployed; run its deploy action first")

    @staticmethod
    def key(cluster: ClusterObject) -> ClusterKey:
        return ClusterKey(cluster["key"])
