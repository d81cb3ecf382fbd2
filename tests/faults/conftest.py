"""One external etcd and one `marina up` per fault module, so etcd and
Marina can each be killed on their own; nothing may be left running after."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.marina import Marina
from tests.support import Etcd


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    server = Etcd(tmp_path_factory.mktemp("etcd") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def marina(tmp_path_factory: pytest.TempPathFactory, etcd: Etcd) -> Iterator[Marina]:
    server = Marina(tmp_path_factory.mktemp("marina") / "state", etcd=etcd.url).start()
    yield server
    try:
        # With an external etcd, stopping Marina leaves the nodes running: delete them.
        if server.proc is not None and server.proc.poll() is None:
            for listed in server.ok("GET", "/v1/environments")["environments"]:
                status, payload = server.call("DELETE", f"/v1/environments/{listed['id']}")
                if status == 202:
                    server.wait_task(payload["task_id"], timeout=120)
    finally:
        server.stop()
    leftovers = subprocess.run(
        ["pgrep", "-f", str(server.state_dir)], capture_output=True, text=True
    ).stdout.split()
    assert not leftovers, f"processes left behind: {leftovers}"
