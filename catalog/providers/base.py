"""The provider protocol: how a node comes into being and goes away.

Node deployment is a sequence of idempotent steps, each recorded on the node
object once done, so a run that was cut off and started again skips what is
done: `deploy_instance` -> `setup_etcd` -> `setup_node`; `remove_node` undoes
them all.
"""

from __future__ import annotations

import enum
from typing import Protocol

from catalog.documents import NodeObject


class ProviderCapability(enum.Enum):
    CREATE_NODE = "create node"
    REMOVE_NODE = "remove node"
    SEVERAL_MASTERS = "run several masters"
    """Masters beyond the first join the first one's etcd and control plane."""


NEEDED = frozenset({ProviderCapability.CREATE_NODE, ProviderCapability.REMOVE_NODE})
"""What every provider must do; the others are asked for where they are used."""


class Provider(Protocol):
    name: str
    capabilities: frozenset[ProviderCapability]
    """What this driver can do; the catalog refuses the rest before it starts."""

    async def deploy_instance(self, cluster: str, node: NodeObject) -> str:
        """Create the machine (or reuse the one already made); its address."""

    async def setup_etcd(self, cluster: str, node: NodeObject) -> None:
        """Make the cluster's etcd reachable from the node."""

    async def setup_node(self, cluster: str, node: NodeObject) -> None:
        """Start the node's agent; return once it has registered."""

    async def remove_node(self, cluster: str, node: NodeObject) -> None:
        """Stop the node's agent and free the machine and its address."""

    async def node_running(self, cluster: str, node: NodeObject) -> bool:
        """Whether the node's agent process (or server) still exists."""


def single_master(provider: Provider) -> str | None:
    """The provider's name if it runs one master only (a cluster of more is
    refused when it is added), else None."""
    if ProviderCapability.SEVERAL_MASTERS in provider.capabilities:
        return None
    return provider.name
