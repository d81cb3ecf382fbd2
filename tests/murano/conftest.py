"""One `marina up` for the module, and python-muranoclient clients of it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.marina import Marina

client_module = pytest.importorskip("muranoclient.v1.client")


@pytest.fixture(scope="module")
def marina(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Marina]:
    server = Marina(tmp_path_factory.mktemp("marina") / "state").start()
    yield server
    server.stop()
    leftovers = subprocess.run(
        ["pgrep", "-f", str(server.state_dir)], capture_output=True, text=True
    ).stdout.split()
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture(scope="module")
def murano_for(marina: Marina) -> Callable[[str], Any]:
    """A muranoclient v1 client with that token (it sends X-Auth-Token)."""

    def make(token: str) -> Any:
        return client_module.Client(marina.api, token=token, timeout=60)

    return make


@pytest.fixture(scope="module")
def mc(marina: Marina, murano_for: Callable[[str], Any]) -> Any:
    return murano_for(marina.token)
