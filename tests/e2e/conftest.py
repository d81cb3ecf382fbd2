"""A `marina up` per test module, and a check that stopping it leaves nothing."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.marina import Marina


@pytest.fixture(scope="module")
def marina(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Marina]:
    server = Marina(tmp_path_factory.mktemp("marina") / "state").start()
    yield server
    server.stop()
    # Ctrl-C of `marina up` stops every node agent, replica and gateway it started.
    leftovers = subprocess.run(
        ["pgrep", "-f", str(server.state_dir)], capture_output=True, text=True
    ).stdout.split()
    assert not leftovers, f"processes left behind: {leftovers}"
