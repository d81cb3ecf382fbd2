"""Every engine driver against the one engine contract (`engine_contract.py`).

`local` runs node agents on this machine; `kubernetes` runs on the
Kubernetes API test server (`tests/kubeapi/`), or on the cluster that
`MARINA_TEST_KUBECONFIG` names, with a Marina gateway agent in front of
its nodes as `marina up --engine kubernetes` has.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from catalog.engines import make_engine
from catalog.engines.base import ClusterKey
from catalog.providers.local import LocalProvider
from catalog.store import Store
from tests.conformance.engine_contract import *  # noqa: F403  (the suite's tests)
from tests.conformance.engine_contract import Harness
from tests.kubeapi.fixtures import fresh_name, fresh_node_address
from tests.kubeapi.harness import KubeApi
from tests.support import Etcd, Gateway, fresh_address, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
_clusters = itertools.count(1)
NODES = [("master", "master-0"), ("minion", "minion-1"), ("minion", "minion-2"),
         ("gateway", "gateway-1")]  # fmt: skip


def _local(etcd: Etcd, state_dir: Path) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    cluster = ClusterKey(f"conformance{next(_clusters)}")
    stop = asyncio.Event()

    async def start() -> tuple[Any, Any, list[dict[str, Any]], Any]:
        store = Store(etcd.url)
        provider = LocalProvider(store, etcd_url=etcd.url, state_dir=state_dir)
        engine = make_engine("local", store, state_dir=state_dir)
        nodes = []
        for role, name in NODES:
            node: dict[str, Any] = {
                "?": {"name": name},
                "role": role,
                "capacity": {"cores": 2, "memory": 2048},
            }
            node["address"] = await provider.deploy_instance(cluster, node)
            await provider.setup_etcd(cluster, node)
            await provider.setup_node(cluster, node)
            nodes.append(node)
        task = asyncio.ensure_future(engine.run(stop))
        return store, provider, nodes, (engine, task)

    store, provider, nodes, (engine, task) = run(start())
    gateway = next(n["address"] for n in nodes if n["role"] == "gateway")
    workers = [n["?"]["name"] for n in nodes if n["role"] == "minion"]
    try:
        yield Harness(engine, cluster, loop, gateway, workers, stop.set)
    finally:

        async def finish() -> None:
            await engine.delete_cluster(cluster)
            stop.set()
            await asyncio.wait_for(task, 30)
            for node in nodes:
                await provider.remove_node(cluster, node)
            await store.close()

        run(finish())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _kubernetes(etcd: Etcd, state_dir: Path, kube_api: KubeApi | None) -> Iterator[Harness]:
    """The engine on an API server; the test server gets two worker nodes of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    cluster = ClusterKey(f"kconformance{next(_clusters)}")
    real = os.environ.get("MARINA_TEST_KUBECONFIG")
    workers: list[str] = []
    if kube_api is not None:
        for _ in range(2):
            workers.append(fresh_name("worker"))
            kube_api.add_node(workers[-1], fresh_node_address())
    kubeconfig = Path(real) if real else kube_api.kubeconfig if kube_api else None
    # Public ports of the suite's pods (30601 on) are bound up front.
    gateway = Gateway(
        etcd.url, cluster, fresh_address(), state_dir / "gateway", "--port-range", "30600-30663"
    ).start()
    # Running means reporting: until then the engine cannot know it applies routes.
    wait_for(
        lambda: etcd.get(f"/marina/gateway/status/{gateway.ident}"), timeout=60, what="the gateway"
    )
    stop = asyncio.Event()

    async def start() -> tuple[Any, Any, Any]:
        store = Store(etcd.url)
        engine = make_engine("kubernetes", store, state_dir=state_dir, kubeconfig=kubeconfig)
        task = asyncio.ensure_future(engine.run(stop))
        return store, engine, task

    store, engine, task = run(start())
    if real:
        workers = [n for n, s in run(engine.node_states(cluster)).items() if s == "ready"]
    try:
        yield Harness(engine, cluster, loop, gateway.address, workers, stop.set)
    finally:

        async def finish() -> None:
            await engine.delete_cluster(cluster)
            stop.set()
            await asyncio.wait_for(task, 30)
            engine.close()
            await store.close()

        try:
            run(finish())
        finally:
            gateway.stop()
            for name in workers if kube_api is not None else []:
                kube_api.remove_node(name)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


@pytest.fixture(scope="module", params=["local", "kubernetes"])
def engine(request: pytest.FixtureRequest, etcd: Etcd, tmp_path_factory: Any) -> Iterator[Harness]:
    if request.param == "local":
        yield from _local(etcd, tmp_path_factory.mktemp("local-engine"))
    else:
        server = (
            None
            if os.environ.get("MARINA_TEST_KUBECONFIG")
            else request.getfixturevalue("kube_api")
        )
        yield from _kubernetes(etcd, tmp_path_factory.mktemp("kubernetes-engine"), server)


@pytest.fixture(autouse=True)
def _own_nodes(engine: Harness) -> Iterator[None]:
    yield
    engine.clean()
