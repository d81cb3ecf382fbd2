"""Choosing a node for a replica: cores and memory must fit.

The node with the most free cores (then memory) wins, so replicas spread.
When nothing fits the refusal says what was asked and the most that is free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from catalog.errors import SchedulingFailed


@dataclass(frozen=True)
class NodeCapacity:
    name: str
    cores: float
    memory: int
    used_cores: float = 0.0
    used_memory: int = 0

    @property
    def free_cores(self) -> float:
        return self.cores - self.used_cores

    @property
    def free_memory(self) -> int:
        return self.memory - self.used_memory


def requests_of(containers: Sequence[Mapping[str, Any]]) -> tuple[float, int]:
    return (
        round(sum(float(c.get("cores", 0.1)) for c in containers), 3),
        sum(int(c.get("memory", 64)) for c in containers),
    )


def usage(nodes: list[NodeCapacity], replicas: Sequence[Mapping[str, Any]]) -> list[NodeCapacity]:
    """Capacities with what the given replicas already take."""
    taken: dict[str, tuple[float, int]] = {}
    for replica in replicas:
        cores, memory = requests_of(replica["containers"])
        c, m = taken.get(replica["node"], (0.0, 0))
        taken[replica["node"]] = (c + cores, m + memory)
    return [NodeCapacity(n.name, n.cores, n.memory, *taken.get(n.name, (0.0, 0))) for n in nodes]


def choose_node(
    nodes: list[NodeCapacity],
    containers: Sequence[Mapping[str, Any]],
    *,
    pod: str,
    avoid: frozenset[str] = frozenset(),
) -> str:
    cores, memory = requests_of(containers)
    fitting = [
        n
        for n in nodes
        if n.name not in avoid and n.free_cores + 1e-9 >= cores and n.free_memory >= memory
    ]
    if not fitting:
        candidates = [n for n in nodes if n.name not in avoid]
        if not candidates:
            raise SchedulingFailed(pod, "no schedulable node (all are cordoned, lost or excluded)")
        best = max(candidates, key=lambda n: (n.free_cores, n.free_memory))
        raise SchedulingFailed(
            pod,
            f"needs {cores} cores and {memory} MiB; the most free on "
            f"any node is {round(best.free_cores, 3)} cores and "
            f"{best.free_memory} MiB ({best.name})",
        )
    return max(fitting, key=lambda n: (n.free_cores, n.free_memory, n.name)).name
