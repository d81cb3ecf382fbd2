"""What an action runs with: its task, the store, the provider and the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from catalog import environments as envs
from catalog.engines.base import ClusterKey, Engine
from catalog.errors import ActionFailed
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

    async def doc(self) -> dict[str, Any]:
        return dict((await envs.load(self.store, self.ctx.environment)).value)

    async def edit_object(self, obj_id: str, **fields: Any) -> None:
        def edit(doc: dict[str, Any]) -> None:
            if obj_id in doc["objects"]:
                doc["objects"][obj_id].update(fields)

        await envs.change(self.store, self.ctx.environment, edit)

    @staticmethod
    def cluster_of(doc: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
        cluster = doc["objects"].get(obj.get("cluster", ""))
        if cluster is None:
            raise ActionFailed("deploy", "its cluster is no longer in the environment")
        return dict(cluster)

    @staticmethod
    def nodes(
        doc: dict[str, Any], cluster: dict[str, Any], role: str | None = None
    ) -> list[dict[str, Any]]:
        nodes = [doc["objects"][n] for n in cluster["nodes"] if n in doc["objects"]]
        return [n for n in nodes if role is None or n["role"] == role]

    @staticmethod
    def require_ready(cluster: dict[str, Any], action: str) -> None:
        if cluster.get("state") != "ready":
            raise ActionFailed(action, "the cluster is not deployed; run its deploy action first")

    @staticmethod
    def key(cluster: dict[str, Any]) -> ClusterKey:
        return ClusterKey(cluster["key"])
