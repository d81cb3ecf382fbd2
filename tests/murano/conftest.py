"""One `marina up` for the module, and python-muranoclient clients of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.marina import Marina, running

client_module = pytest.importorskip("muranoclient.v1.client")


@pytest.fixture(scope="module")
def marina(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Marina]:
    yield from running(tmp_path_factory.mktemp("marina") / "state")


@pytest.fixture(scope="module")
def murano_for(marina: Marina) -> Callable[[str], Any]:
    """A muranoclient v1 client with that token (it sends X-Auth-Token)."""

    def make(token: str) -> Any:
        return client_module.Client(marina.api, token=token, timeout=60)

    return make


@pytest.fixture(scope="module")
def mc(marina: Marina, murano_for: Callable[[str], Any]) -> Any:
    return murano_for(marina.token)
