"""Fixtures that start real servers on loopback."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.agent import SELF_CHECK
from tests.kubeapi.fixtures import kube_api, kubectl, new_kube_api  # noqa: F401  (for every suite)
from tests.openstack.fixtures import openstack_cloud, os_admin, os_conn  # noqa: F401  (one per session)
from tests.support import Backend, Etcd, Gateway, fresh_address

_clusters = itertools.count(1)

# Every gateway the tests start, in this process or another, checks what it
# plans a change at a time against the whole table.
os.environ[SELF_CHECK] = "1"


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    """One etcd for the session; tests keep apart by cluster name."""
    server = Etcd(tmp_path_factory.mktemp("etcd") / "data").start()
    yield server
    server.stop()


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[Etcd]:
    """An etcd of this test's own, for tests that stop or compact it."""
    server = Etcd(tmp_path / "etcd-data").start()
    yield server
    server.stop()


@pytest.fixture
def cluster() -> str:
    return f"c{next(_clusters)}"


@pytest.fixture
def backends() -> Iterator[Callable[[str], Backend]]:
    started: list[Backend] = []

    def make(name: str) -> Backend:
        backend = Backend(name)
        started.append(backend)
        return backend

    yield make
    for backend in started:
        backend.stop()


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def make(etcd_url: str, cluster: str, *extra: str, address: str | None = None) -> Gateway:
        address = address or fresh_address()
        gw = Gateway(
            etcd_url,
            cluster,
            address,
            tmp_path / f"gw-{address}",
            "--port-range",
            "30000-30063",
            *extra,
        )
        started.append(gw)
        return gw.start()

    yield make
    for gw in started:
        gw.stop()
