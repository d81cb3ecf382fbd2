"""`marina up --engine kubernetes` end to end, against the Kubernetes API test server.

A real `marina up` (its own etcd, a gateway node's agent with HAProxy) runs
the guestbook on the session's API test server: its workers are Nodes that
Marina registers there (the local provider joins them as a kubelet would),
its pods Deployments the test server's kubelet runs. The public URL serves
through Marina's gateway while pods and nodes scale, and the exported
archive, applied with kubectl to a second, empty API server, serves the same
pages. The tests run in order on one deployment, as a user would.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalog.quotas import Quotas
from tests.e2e.marina import Marina, running
from tests.e2e.test_scenario import get, sign
from tests.kubeapi.fixtures import Kubectl, fresh_node_address
from tests.kubeapi.harness import KubeApi
from tests.support import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
PUBLIC_PORT = 31480
"""The guestbook's public port: a NodePort no other test of the session's server takes."""


@pytest.fixture(scope="module")
def marina(kube_api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Marina]:
    state = tmp_path_factory.mktemp("kube-marina") / "state"
    yield from running(state, "--engine", "kubernetes", "--kubeconfig", str(kube_api.kubeconfig))


@pytest.fixture(scope="module")
def deployed(marina: Marina, kube_api: KubeApi) -> Iterator[dict[str, str]]:
    env, url = marina.deploy_guestbook(
        "kube",
        {"name": "kb", "nodeCount": 2, "gatewayCount": 1, "nodeCores": 1},
        {"publicPort": PUBLIC_PORT},
    )
    yield {"env": env, "url": url}
    # Deleting the environment gives the session's API server back its Nodes and NodePort.
    task = marina.ok("DELETE", f"/v1/environments/{env}")["task_id"]
    assert marina.wait_task(task, timeout=180)["state"] == "succeeded"
    assert workers(kube_api) == []


def kubectl_for(kubeconfig: Path) -> Kubectl:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not on PATH (install kubectl 1.32 to run this test)")
    return Kubectl(binary, kubeconfig)


def workers(kube_api: KubeApi) -> list[str]:
    """The Nodes Marina registered for the environment's workers, by Marina name."""
    listed = yaml.safe_load(
        kubectl_for(kube_api.kubeconfig)(
            "get", "nodes", "-l", "marina.io/node", "-o", "yaml"
        ).stdout
    )
    return sorted(n["metadata"]["labels"]["marina.io/node"] for n in listed["items"])


def test_the_guestbook_serves_through_the_gateway(
    marina: Marina, deployed: dict[str, str], kube_api: KubeApi
) -> None:
    # the gateway's HAProxy may still be taking its port range when the deploy returns
    wait_for(lambda: sign(deployed["url"], "hello from kubernetes") == 303, timeout=30)
    status, body = get(deployed["url"])
    assert status == 200 and "hello from kubernetes" in body  # the web pod reached the store
    assert workers(kube_api) == ["minion-1", "minion-2"]
    quotas = yaml.safe_load(
        kubectl_for(kube_api.kubeconfig)("get", "resourcequotas", "-A", "-o", "yaml").stdout
    )["items"]
    project = next(q for q in quotas if q["metadata"]["namespace"].endswith("-kb"))
    # the project's pod quota, held by the API server
    assert project["spec"]["hard"] == {
        "count/deployments.apps": str(Quotas.from_environment().pods)
    }
    nodes = {
        n["?"]["name"]: n["state"]
        for n in marina.ok("GET", f"/v1/environments/{deployed['env']}")["objects"]
        if n["?"]["type"] == "MinionNode"
    }
    assert nodes == {"minion-1": "ready", "minion-2": "ready"}


def test_scale_pod_up_serves_from_two_replicas(
    marina: Marina, deployed: dict[str, str], kube_api: KubeApi
) -> None:
    task = marina.run(deployed["env"], "web:scalePodUp")
    assert task["state"] == "succeeded" and task["outcome"] == "changed", task
    assert marina.objects(deployed["env"])["web"]["replicas"] == {"desired": 2, "ready": 2}
    # The scale subresource moved the Deployment, and both of its pods run on Marina's workers.
    pods = yaml.safe_load(
        kubectl_for(kube_api.kubeconfig)(
            "get", "pods", "-A", "-l", "marina.pod=web", "-o", "yaml"
        ).stdout
    )["items"]
    ready = [p for p in pods if all(c["ready"] for c in p["status"]["containerStatuses"])]
    assert len(ready) == 2 and all("-kb-minion-" in p["spec"]["nodeName"] for p in ready)
    assert get(deployed["url"])[0] == 200


def load(url: str, stop: threading.Event, results: list[int]) -> None:
    """Requests one after another until told to stop (at most five minutes)."""
    deadline = time.monotonic() + 300
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            results.append(get(url)[0])
        except OSError:
            results.append(0)


def under_load(url: str, work: Callable[[], Any]) -> tuple[Any, list[int]]:
    results: list[int] = []
    stop = threading.Event()
    thread = threading.Thread(target=load, args=(url, stop, results))
    thread.start()
    try:
        outcome = work()
    finally:
        stop.set()
        thread.join()
    return outcome, results


def gateway_agents(marina: Marina) -> list[int]:
    """The pids of the gateway nodes' agents (marina-gateway) of Marina's environments."""
    pids = subprocess.run(
        ["pgrep", "-f", "gateway.cli"], capture_output=True, text=True
    ).stdout.split()
    agents = []
    for pid in pids:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        directory = args[args.index(b"--state-dir") + 1].decode() if b"--state-dir" in args else ""
        if directory.startswith(str(marina.state_dir)) and "/gateway-" in directory:
            agents.append(int(pid))
    return agents


def with_gateways_held(marina: Marina, seconds: float, work: Callable[[], Any]) -> Any:
    """`work()` while the gateway agents stand still for their first `seconds` (SIGSTOP),
    as on a loaded machine: HAProxy serves on, and applies route changes only later."""
    agents = gateway_agents(marina)
    assert agents, "no gateway agent found"
    for pid in agents:
        os.kill(pid, signal.SIGSTOP)
    resume = threading.Timer(seconds, lambda: [os.kill(pid, signal.SIGCONT) for pid in agents])
    resume.start()
    try:
        return work()
    finally:
        resume.join()


def test_scaling_nodes_up_and_down_fails_no_request(
    marina: Marina, deployed: dict[str, str], kube_api: KubeApi
) -> None:
    env, url = deployed["env"], deployed["url"]
    up, during_up = under_load(url, lambda: marina.run(env, "kb:scaleNodesUp", timeout=300))
    assert up["state"] == "succeeded" and up["outcome"] == "changed", up
    assert workers(kube_api) == ["minion-1", "minion-2", "minion-3"]
    # A node leaves only once every gateway applied routes without it, however late that is.
    down, during_down = under_load(
        url,
        lambda: with_gateways_held(
            marina, 2.0, lambda: marina.run(env, "kb:scaleNodesDown", timeout=300)
        ),
    )
    assert down["state"] == "succeeded" and down["outcome"] == "changed", down
    removed = down["result"]["removed"]
    assert len(removed) == 1 and removed[0] not in workers(kube_api)
    assert len(workers(kube_api)) == 2
    results = during_up + during_down
    assert len(results) > 10 and set(results) == {200}, {c: results.count(c) for c in set(results)}
    # the drained node's replicas run elsewhere, and still serve
    wait_for(
        lambda: marina.objects(env)["web"]["replicas"] == {"desired": 2, "ready": 2},
        timeout=60,
        what="two web replicas serving after the drain",
    )
    assert get(url)[0] == 200


def export(marina: Marina, env: str, into: Path) -> Path:
    task = marina.run(env, "kb:exportConfig")
    assert task["state"] == "succeeded", task
    name = task["result"]["file"]
    status, archive = marina.call("GET", f"/v1/tasks/{task['id']}/files/{name}")
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(into, filter="data")
    return into


def test_the_export_applied_with_kubectl_to_another_cluster_serves_the_same_pages(
    marina: Marina,
    deployed: dict[str, str],
    new_kube_api: Callable[[], KubeApi],
    tmp_path: Path,
) -> None:
    folder = export(marina, deployed["env"], tmp_path / "export")
    other = new_kube_api()
    node_ip = fresh_node_address()
    other.add_node("elsewhere-1", node_ip)
    kubectl = kubectl_for(other.kubeconfig)
    manifests = sorted((folder / "manifests").glob("*.yaml"))
    kinds = [yaml.safe_load(m.read_text())["kind"] for m in manifests]
    assert kinds[0] == "Namespace" and "ConfigMap" in kinds  # the package files travel along
    for manifest in manifests:
        kubectl("apply", "-f", str(manifest))
    port = next(
        yaml.safe_load(m.read_text())["spec"]["ports"][0]["nodePort"]
        for m in manifests
        if m.name.endswith("-web.yaml") and "Service" in m.read_text()
    )
    url = f"http://{node_ip}:{port}/"
    assert wait_for(lambda: get(url)[0] == 200, timeout=120, what="the export serving")
    assert sign(url, "on the second cluster") == 303
    body = get(url)[1]
    assert "on the second cluster" in body and "<title>Marina guestbook</title>" in body
    # Applying again changes nothing.
    again = [kubectl("apply", "-f", str(m)).stdout.strip() for m in manifests]
    assert all(line.endswith("unchanged") for line in again), again


def test_link_variables_name_the_store_service_as_a_kubelet_gives_them(
    deployed: dict[str, str], kube_api: KubeApi
) -> None:
    kubectl = kubectl_for(kube_api.kubeconfig)
    services = yaml.safe_load(kubectl("get", "services", "-A", "-o", "yaml").stdout)["items"]
    store = next(
        s
        for s in services
        if s["metadata"]["name"] == "store" and s["metadata"]["namespace"].endswith("-kb")
    )
    ip = store["spec"]["clusterIP"]

    async def web_environment() -> list[dict[str, str]]:
        assert kube_api.kubelet is not None
        return [
            dict(container.env)
            for runner in kube_api.kubelet.pods.values()
            if runner.namespace == store["metadata"]["namespace"] and runner.name.startswith("web-")
            for container in runner.containers
        ]

    environments = kube_api.call(web_environment)
    assert environments
    for env in environments:
        # the Docker-link family, as the Panamax adapter spelled it, from the Service
        assert env["STORE_PORT_6379_TCP_ADDR"] == ip
        assert env["STORE_PORT_6379_TCP_PORT"] == "6379"
        assert env["STORE_PORT_6379_TCP_PROTO"] == "tcp"
        assert env["STORE_PORT"] == env["STORE_PORT_6379_TCP"] == f"tcp://{ip}:6379"
        assert env["STORE_SERVICE_HOST"] == ip
    # and the rendered Deployment carries no cluster address: an export runs anywhere
    deployment = kubectl(
        "get", "deployment", "web", "-n", store["metadata"]["namespace"], "-o", "yaml"
    ).stdout
    assert ip not in deployment


def test_an_export_after_marina_restarts_still_ships_the_package_files(
    marina: Marina, deployed: dict[str, str], tmp_path: Path
) -> None:
    refused = marina.run(deployed["env"], "web:restartContainers")
    assert refused["state"] == "failed" and "kubernetes" in refused["error"], refused
    marina.stop()
    marina.start()
    folder = export(marina, deployed["env"], tmp_path / "export")
    configmaps = [
        yaml.safe_load(m.read_text())
        for m in sorted((folder / "manifests").glob("*.yaml"))
        if yaml.safe_load(m.read_text())["kind"] == "ConfigMap"
    ]
    volumes = [
        yaml.safe_load(m.read_text())["spec"]["template"]["spec"].get("volumes", [])
        for m in sorted((folder / "manifests").glob("*.yaml"))
        if yaml.safe_load(m.read_text())["kind"] == "Deployment"
    ]
    paths = {i["path"] for v in volumes for volume in v for i in volume["configMap"]["items"]}
    assert {"web.py", "store.py"} <= paths, paths
    texts = "".join(text for c in configmaps for text in c.get("data", {}).values())
    assert "STORE_PORT_6379_TCP_ADDR" in texts  # web.py itself
