"""A `marina up` per test module, and a check that stopping it leaves nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.marina import Marina, running


@pytest.fixture(scope="module")
def marina(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Marina]:
    yield from running(tmp_path_factory.mktemp("marina") / "state")
