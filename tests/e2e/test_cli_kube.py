"""`marina status` and `marina logs` with `marina up --engine kubernetes`,
against the Kubernetes API test server: the same commands, through the same
engine protocol, as on the local engine."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.e2e.marina import Marina, running
from tests.kubeapi.harness import KubeApi
from tests.support import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TALKER = {
    "name": "talker",
    "containers": [
        {
            "name": "talker",
            "image": "python:3.11",
            "cores": 0.1,
            "command": ["sh", "-c", "echo hello from talker; echo second line; exec sleep 600"],
        }
    ],
}


@pytest.fixture(scope="module")
def marina(kube_api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Marina]:
    state = tmp_path_factory.mktemp("kube-cli") / "state"
    yield from running(state, "--engine", "kubernetes", "--kubeconfig", str(kube_api.kubeconfig))


def cli(marina: Marina, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "catalog.cli", "--state-dir", str(marina.state_dir), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def test_status_and_logs_on_the_kubernetes_engine(marina: Marina) -> None:
    cli(marina, "env", "create", "kube-cli")
    cli(marina, "app", "add", "kube-cli", "kubernetes-cluster", "--set", "name=kc",
        "--set", "nodeCount=1", "--set", "nodeCores=1")  # fmt: skip
    cli(marina, "app", "add", "kube-cli", "kubernetes-pod", "--properties", json.dumps(TALKER))
    cli(marina, "action", "run", "kube-cli", "kc:deploy", "--wait")
    cli(marina, "action", "run", "kube-cli", "talker:scalePod", "--set", "replicas=1", "--wait")

    def ready() -> dict | None:
        status = json.loads(cli(marina, "status", "kube-cli", "-o", "json"))
        pod = status["pods"][0]
        return status if pod["replicas"] and pod["replicas"][0]["ready"] else None

    status = wait_for(ready, timeout=120, what="the replica on the Kubernetes engine")
    assert status["status"] == "ready" and status["pods"][0]["ready"] == 1
    logs = wait_for(
        lambda: cli(marina, "logs", "kube-cli", "talker"), timeout=60, what="the replica's output"
    )
    assert "hello from talker" in logs
    assert cli(marina, "logs", "kube-cli", "talker", "--tail", "1") == "second line\n"
    task = marina.ok("DELETE", f"/v1/environments/{status['id']}")["task_id"]
    assert marina.wait_task(task, timeout=180)["state"] == "succeeded"
