"""Every engine driver against the one engine contract (`engine_contract.py`)."""

from __future__ import annotations

import asyncio
import itertools
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
from tests.support import Etcd

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


@pytest.fixture(scope="module", params=["local"])
def engine(request: pytest.FixtureRequest, etcd: Etcd, tmp_path_factory: Any) -> Iterator[Harness]:
    if request.param == "local":
        yield from _local(etcd, tmp_path_factory.mktemp("local-engine"))


@pytest.fixture(autouse=True)
def _own_nodes(engine: Harness) -> Iterator[None]:
    yield
    engine.clean()
