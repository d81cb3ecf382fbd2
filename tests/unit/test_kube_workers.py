"""Workers on the Kubernetes engine: Nodes the local provider joins, and the
pairings of engine and provider that cannot scale workers, refused up front."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from catalog.classes import refuse_unjoined_workers
from catalog.engines import make_engine
from catalog.engines.base import ClusterKey
from catalog.engines.kubernetes import KubernetesEngine
from catalog.errors import NotSupported
from catalog.providers.local import LocalProvider
from catalog.store import Store
from tests.kubeapi.fixtures import fresh_name, fresh_node_address
from tests.kubeapi.harness import KubeApi
from tests.support import Etcd


def test_a_joined_worker_is_a_node_of_its_cluster_by_marina_name(
    kube_api: KubeApi, etcd: Etcd, tmp_path: Path
) -> None:
    cluster, other = ClusterKey(fresh_name("workers")), ClusterKey(fresh_name("others"))
    address = fresh_node_address()

    async def main() -> dict[str, Any]:
        store = Store(etcd.url)
        engine = make_engine(
            "kubernetes", store, state_dir=tmp_path, kubeconfig=kube_api.kubeconfig
        )
        assert isinstance(engine, KubernetesEngine)
        provider = LocalProvider(store, etcd_url=etcd.url, state_dir=tmp_path, workers=engine)
        node = {"?": {"name": "minion-1"}, "role": "minion", "address": address,
                "capacity": {"cores": 2, "memory": 1024}}  # fmt: skip
        seen: dict[str, Any] = {}
        try:
            await provider.setup_node(cluster, node)
            await provider.setup_node(cluster, node)  # a resumed run: no second Node
            seen["mine"] = await engine.node_states(cluster)
            seen["theirs"] = await engine.node_states(other)
            seen["running"] = await provider.node_running(cluster, node)
            await engine.cordon(cluster, "minion-1")
            seen["cordoned"] = (await engine.node_states(cluster)).get("minion-1")
            await provider.remove_node(cluster, node)
            seen["after"] = (await engine.node_states(cluster)).get("minion-1")
            seen["running_after"] = await provider.node_running(cluster, node)
        finally:
            engine.close()
            await store.close()
        return seen

    seen = asyncio.run(main())
    assert seen["mine"].get("minion-1") == "ready" and seen["running"]
    assert "minion-1" not in seen["theirs"]  # a Node registered for another cluster
    assert seen["cordoned"] == "cordoned"
    assert seen["after"] is None and not seen["running_after"]


def test_scaling_workers_the_engine_cannot_get_is_refused_naming_both(
    kube_api: KubeApi, etcd: Etcd, tmp_path: Path
) -> None:
    async def main() -> None:
        store = Store(etcd.url)
        engine = make_engine(
            "kubernetes", store, state_dir=tmp_path, kubeconfig=kube_api.kubeconfig
        )
        local_engine = make_engine("local", store, state_dir=tmp_path)
        agents = LocalProvider(store, etcd_url=etcd.url, state_dir=tmp_path)
        joining = LocalProvider(store, etcd_url=etcd.url, state_dir=tmp_path, workers=engine)
        try:
            with pytest.raises(NotSupported, match=r"kubernetes.*scaleNodesUp.*local provider"):
                refuse_unjoined_workers(engine, agents, "scaleNodesUp")
            refuse_unjoined_workers(engine, joining, "scaleNodesDown")
            refuse_unjoined_workers(engine, agents, "scalePodUp")
            refuse_unjoined_workers(local_engine, agents, "scaleNodes")
        finally:
            assert isinstance(engine, KubernetesEngine)
            engine.close()
            await store.close()

    asyncio.run(main())
