"""pytest fixtures for the test API server (imported by tests/conftest.py).

`kube_api` is one server for the whole session: tests keep apart by
namespace and node names. `new_kube_api` starts further, empty servers
(an export applied to a second cluster) that stop when the test ends.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.kubeapi.harness import KubeApi

_names = itertools.count(1)


def fresh_name(prefix: str) -> str:
    """A namespace or node name no other test of this process uses."""
    return f"{prefix}-{os.getpid() % 10000}-{next(_names)}"


def fresh_node_address() -> str:
    """A loopback address for a node's InternalIP (127.72.x.y), unique in this process."""
    n = next(_names) + (os.getpid() % 50) * 1000
    return f"127.72.{(n // 250) % 250 + 1}.{n % 250 + 2}"


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    """The session's API server (`.url`, `.kubeconfig`, `.add_node(name, address)`)."""
    server = KubeApi(tmp_path_factory.mktemp("kubeapi")).start()
    yield server
    server.stop()


@pytest.fixture
def new_kube_api(tmp_path: Path) -> Iterator[Callable[[], KubeApi]]:
    """Starts another, empty API server; each stops when the test ends."""
    started: list[KubeApi] = []

    def start() -> KubeApi:
        server = KubeApi(tmp_path / f"kubeapi-{len(started)}", context=f"kubeapi{len(started)}")
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


class Kubectl:
    """kubectl pointed at one server; returns the completed process."""

    def __init__(self, binary: str, kubeconfig: Path) -> None:
        self.binary, self.kubeconfig = binary, kubeconfig

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "KUBECTL_KUBERC": "false", "HOME": str(self.kubeconfig.parent)},
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result


@pytest.fixture
def kubectl(kube_api: KubeApi) -> Kubectl:
    """kubectl against the session's server; skips when kubectl is not installed."""
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not on PATH (install kubectl 1.32 to run the kubectl tests)")
    return Kubectl(binary, kube_api.kubeconfig)
