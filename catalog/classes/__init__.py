"""The catalog's classes, one module each, and the runner that tasks go through.

Importing this package registers every class's actions (see `registry`).
"""

from __future__ import annotations

from catalog import environments as envs
from catalog.classes import application, cluster, nodes, pod  # noqa: F401  (they register)
from catalog.classes.environment import destroy, remove
from catalog.classes.registry import REGISTRY
from catalog.classes.runtime import Runtime
from catalog.engines.base import Capability, Engine, require
from catalog.errors import ActionFailed, NotSupported
from catalog.providers.base import NEEDED as PROVIDER_NEEDS
from catalog.providers.base import Provider
from catalog.providers.local import Workers
from catalog.store import Store
from catalog.tasks import Outcome, TaskContext

NEEDED = (Capability.APPLY, Capability.SCALE)
WORKER_SCALING = ("scaleNodesUp", "scaleNodesDown", "scaleNodes")


def refuse_unjoined_workers(engine: Engine, provider: Provider, method: str) -> None:
    """An engine that keeps its own workers (Kubernetes Nodes) gains one only
    from a provider that joins it there; any other would add a node no pod
    runs on, so worker scaling is refused before it starts."""
    if method not in WORKER_SCALING or not isinstance(engine, Workers):
        return
    if getattr(provider, "workers", None) is not engine:
        raise NotSupported(
            engine.name,
            f"{method} with nodes of the {provider.name} provider, which do not join its cluster",
        )


class ActionRunner:
    """Runs a task: the action its object's class registered for its method."""

    def __init__(self, store: Store, provider: Provider, engine: Engine) -> None:
        # What no class can do without, refused when Marina starts, not mid-action.
        for capability in NEEDED:
            require(engine, capability, capability.value + " pods")
        for needed in sorted(PROVIDER_NEEDS, key=lambda c: c.value):
            if needed not in provider.capabilities:
                raise NotSupported(provider.name, needed.value)
        self.store = store
        self.provider = provider
        self.engine = engine

    async def __call__(self, ctx: TaskContext) -> Outcome:
        rt = Runtime(ctx, self.store, self.provider, self.engine)
        method = ctx.task["method"]
        if method == "destroy":
            return await destroy(rt)
        if method == "remove":
            return await remove(rt)
        doc = (await envs.load(self.store, ctx.environment)).value
        obj = doc["objects"].get(ctx.object_id)
        if obj is None:
            raise ActionFailed(method, f"object {ctx.object_id} is no longer in the environment")
        kind = obj["?"]["type"]
        found = REGISTRY.get(kind, {}).get(method)
        if found is None:
            raise ActionFailed(method, f"{kind} has no action {method}")
        refuse_unjoined_workers(self.engine, self.provider, method)
        return await found.run(rt, obj)
