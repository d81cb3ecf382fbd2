"""The engine protocol: where and how pod replicas run.

A replica is the engine's unit: one copy of a pod's containers on one node,
with its own IP. The catalog decides how many replicas a pod has and on which
node; the engine starts, stops, restarts and reports them.
"""

from __future__ import annotations

from typing import Any, Protocol


class Engine(Protocol):
    name: str
    capabilities: frozenset[str]
    """Operations this driver supports, e.g. {"replicas", "restart", "export"}."""

    async def start_replica(self, cluster: str, replica: dict[str, Any]) -> str:
        """Run a replica (`node`, `ip`, `containers`, `env`, ...); its id."""

    async def stop_replica(self, cluster: str, replica_id: str) -> None:
        """Stop a replica and forget it."""

    async def restart_replica(self, cluster: str, replica_id: str) -> None:
        """Restart a replica's processes in place (capability "restart")."""

    async def update_replica(self, cluster: str, replica_id: str, **fields: Any) -> None:
        """Change a running replica's record: `node` moves it, `draining` takes
        it out of its services' routes before it stops."""

    async def replicas(self, cluster: str) -> dict[str, dict[str, Any]]:
        """Every replica of the cluster by id, with its `status` (or None)."""
