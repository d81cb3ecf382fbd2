"""kubectl 1.32, unmodified, against the test API server: it works, and fails, as on a cluster."""

from __future__ import annotations

import json
import shutil
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kubeapi.fixtures import Kubectl, fresh_name, fresh_node_address
from tests.kubeapi.harness import KubeApi
from tests.support import wait_for

needs_sandbox = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="pods run in Marina's sandbox (bubblewrap)"
)
MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {namespace}
  labels: {{app: web}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: python:3-slim
        command: ["python3", "-m", "http.server", "--bind", "$(POD_IP)", "8080"]
        env:
        - name: POD_IP
          valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
        ports:
        - containerPort: 8080
"""


@pytest.fixture(scope="module")
def node(kube_api: KubeApi) -> Iterator[str]:
    name = fresh_name("kubectl-node")
    kube_api.add_node(name, fresh_node_address())
    yield name
    kube_api.remove_node(name)


@pytest.fixture
def namespace(kubectl: Kubectl, node: str, tmp_path: Path) -> Iterator[str]:
    name = fresh_name("kubectl")
    path = tmp_path / "ns.yaml"
    path.write_text(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
    assert "created" in kubectl("apply", "-f", str(path)).stdout
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def kubectl_binary() -> str:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not on PATH (install kubectl 1.32 to run the kubectl tests)")
    return str(binary)


def manifest(tmp_path: Path, namespace: str, *, replicas: int = 2, extra: str = "") -> Path:
    path = tmp_path / "web.yaml"
    text = MANIFEST.format(namespace=namespace, replicas=replicas)
    if extra:
        text = text.replace("  replicas:", f"{extra}\n  replicas:")
    path.write_text(text)
    return path


def deployment(kubectl: Kubectl, namespace: str) -> dict:  # type: ignore[type-arg]
    return json.loads(kubectl("get", "deployment", "web", "-n", namespace, "-o", "json").stdout)  # type: ignore[no-any-return]


def test_apply_twice_reports_unchanged(kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    path = manifest(tmp_path, namespace)
    assert kubectl("apply", "-f", str(path)).stdout.strip() == "deployment.apps/web created"
    assert kubectl("apply", "-f", str(path)).stdout.strip() == "deployment.apps/web unchanged"
    path.write_text(path.read_text().replace("replicas: 2", "replicas: 1"))
    assert kubectl("apply", "-f", str(path)).stdout.strip() == "deployment.apps/web configured"
    got = deployment(kubectl, namespace)
    assert got["spec"]["replicas"] == 1 and got["metadata"]["generation"] == 2
    listed = kubectl("get", "deployments", "-n", namespace, "-l", "app=web", "-o", "name").stdout
    assert listed.split() == ["deployment.apps/web"]
    kubectl("delete", "-f", str(path))
    missing = kubectl("get", "deployment", "web", "-n", namespace, check=False)
    assert missing.returncode != 0
    assert 'deployments.apps "web" not found' in missing.stderr


def test_apply_of_an_invalid_manifest_fails_with_the_servers_reasons(
    kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    path = manifest(tmp_path, namespace, extra="  replicaCount: 2")
    result = kubectl("apply", "-f", str(path), check=False)
    assert result.returncode == 1
    assert 'The Deployment "web" is invalid' in result.stderr
    assert "spec.replicaCount" in result.stderr
    path = manifest(tmp_path, namespace, replicas="three")  # type: ignore[arg-type]
    result = kubectl("apply", "-f", str(path), check=False)
    assert result.returncode == 1 and "spec.replicas" in result.stderr
    assert "No resources found" in kubectl("get", "deployments", "-n", namespace).stderr


def test_server_side_apply_conflicts_and_force(
    kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    path = manifest(tmp_path, namespace, replicas=1)
    kubectl("apply", "--server-side", "--field-manager=marina", "-f", str(path))
    kubectl("scale", "deployment/web", "-n", namespace, "--replicas=2")
    path = manifest(tmp_path, namespace, replicas=3)
    result = kubectl(
        "apply", "--server-side", "--field-manager=marina", "-f", str(path), check=False
    )
    assert result.returncode != 0
    assert "conflict" in result.stderr and ".spec.replicas" in result.stderr
    assert deployment(kubectl, namespace)["spec"]["replicas"] == 2
    forced = kubectl(
        "apply", "--server-side", "--field-manager=marina", "--force-conflicts", "-f", str(path)
    )
    assert "serverside-applied" in forced.stdout
    assert deployment(kubectl, namespace)["spec"]["replicas"] == 3


@needs_sandbox
def test_rollout_restart_scale_and_logs(kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    kubectl("apply", "-f", str(manifest(tmp_path, namespace)))
    kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s", timeout=90)
    before = deployment(kubectl, namespace)
    assert before["status"]["readyReplicas"] == 2
    old_pods = set(kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.split())
    assert "restarted" in kubectl("rollout", "restart", "deployment/web", "-n", namespace).stdout
    status = kubectl(
        "rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s", timeout=90
    )
    assert 'deployment "web" successfully rolled out' in status.stdout
    after = deployment(kubectl, namespace)
    annotations = after["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    assert after["status"]["observedGeneration"] == after["metadata"]["generation"] == 2
    new_pods = set(kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.split())
    wait_for(
        lambda: len(set(kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.split())) == 2,
        what="old pods gone",
    )
    assert not (
        old_pods & set(kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.split())
    )
    assert new_pods
    assert "scaled" in kubectl("scale", "deployment/web", "-n", namespace, "--replicas=3").stdout
    kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s", timeout=90)
    assert deployment(kubectl, namespace)["status"]["readyReplicas"] == 3
    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    pod = next(p for p in pods if p["status"].get("podIP"))
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/", timeout=3) as response:
        assert response.status == 200
    logs = wait_for(
        lambda: (
            "GET / HTTP"
            in (out := kubectl("logs", "-n", namespace, pod["metadata"]["name"]).stdout)
            and out
        ),
        what="request in the log",
    )
    assert '"GET / HTTP/1.1" 200' in logs
    tail = kubectl("logs", "-n", namespace, pod["metadata"]["name"], "--tail=1").stdout
    assert tail.count("\n") == 1


def test_cordon_and_delete_namespace(kubectl: Kubectl, kube_api: KubeApi, tmp_path: Path) -> None:
    name = fresh_name("cordoned")
    kube_api.add_node(name, fresh_node_address())
    try:
        assert "cordoned" in kubectl("cordon", name).stdout
        node = json.loads(kubectl("get", "node", name, "-o", "json").stdout)
        assert node["spec"]["unschedulable"] is True
        kubectl("uncordon", name)
        node = json.loads(kubectl("get", "node", name, "-o", "json").stdout)
        assert not node["spec"].get("unschedulable")
    finally:
        kube_api.remove_node(name)
    ns = fresh_name("doomed")
    config = tmp_path / "doomed.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: v1
            kind: Namespace
            metadata: {{name: {ns}}}
            ---
            apiVersion: v1
            kind: ConfigMap
            metadata: {{name: settings, namespace: {ns}}}
            data: {{a: "1"}}
            """
        )
    )
    kubectl("apply", "-f", str(config))
    kubectl("delete", "namespace", ns, "--timeout=30s")
    gone = kubectl("get", "configmap", "settings", "-n", ns, check=False)
    assert gone.returncode != 0 and "not found" in gone.stderr


EXPORT = """
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-files, namespace: shop}
data: {index.html: "hello"}
---
apiVersion: v1
kind: Secret
metadata: {name: web-secrets, namespace: shop}
data: {password: czNjcmV0}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30081}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: python:3-slim
        command: ["python3", "-m", "http.server", "--bind", "$(POD_IP)", "8080"]
        workingDir: /srv/www
        env:
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: PASSWORD, valueFrom: {secretKeyRef: {name: web-secrets, key: password}}}
        ports: [{containerPort: 8080}]
        volumeMounts: [{name: files, mountPath: /srv/www}]
      volumes: [{name: files, configMap: {name: web-files}}]
"""


@needs_sandbox
def test_an_export_applied_to_an_empty_server_serves_and_applies_unchanged(
    new_kube_api: Any, tmp_path: Path
) -> None:
    server = new_kube_api()
    node_ip = fresh_node_address()
    server.add_node("only", node_ip)
    other = Kubectl(kubectl_binary(), server.kubeconfig)
    path = tmp_path / "export.yaml"
    path.write_text(EXPORT)
    first = other("apply", "-f", str(path)).stdout.splitlines()
    assert [line.split()[-1] for line in first] == ["created"] * 5
    second = other("apply", "-f", str(path)).stdout.splitlines()
    assert [line.split()[-1] for line in second] == ["unchanged"] * 5
    # as on a real cluster (kubernetes/kubernetes#87736), stringData is never "unchanged"
    path.write_text(EXPORT.replace("data: {password: czNjcmV0}", "stringData: {password: s3cret}"))
    third = other("apply", "-f", str(path)).stdout.splitlines()
    assert [line.split()[-1] for line in third][2] == "configured"
    assert [line.split()[-1] for line in other("apply", "-f", str(path)).stdout.splitlines()][
        2
    ] == "configured"
    other("rollout", "status", "deployment/web", "-n", "shop", "--timeout=60s", timeout=90)
    body = wait_for(
        lambda: urllib.request.urlopen(f"http://{node_ip}:30081/index.html", timeout=3).read(),
        what="NodePort 30081 serving the ConfigMap's file",
    )
    assert body == b"hello"
    table = other("get", "pods", "-n", "shop", "-o", "wide").stdout.splitlines()
    assert table[0].split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert all(row.split()[1:3] == ["1/1", "Running"] for row in table[1:]) and len(table) == 3


@needs_sandbox
def test_drain_evicts_within_the_disruption_budget(new_kube_api: Any, tmp_path: Path) -> None:
    server = new_kube_api()
    server.add_node("a", fresh_node_address())
    server.add_node("b", fresh_node_address())
    other = Kubectl(kubectl_binary(), server.kubeconfig)
    assert "created" in other("create", "namespace", "shop").stdout
    path = tmp_path / "web.yaml"
    path.write_text(MANIFEST.format(namespace="shop", replicas=2))
    other("apply", "-f", str(path))
    pdb = tmp_path / "pdb.yaml"
    pdb.write_text(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web, namespace: shop}\n"
        "spec: {minAvailable: 1, selector: {matchLabels: {app: web}}}\n"
    )
    other("apply", "-f", str(pdb))
    other("rollout", "status", "deployment/web", "-n", "shop", "--timeout=60s", timeout=90)

    def nodes() -> list[str]:
        out = other("get", "pods", "-n", "shop", "-o", "jsonpath={.items[*].spec.nodeName}")
        return sorted(out.stdout.split())

    assert nodes() == ["a", "b"]
    drained = other("drain", "a", "--ignore-daemonsets", "--timeout=60s", timeout=90)
    assert "node/a drained" in drained.stdout
    other("rollout", "status", "deployment/web", "-n", "shop", "--timeout=60s", timeout=90)
    assert nodes() == ["b", "b"]
    pdb.write_text(pdb.read_text().replace("minAvailable: 1", "minAvailable: 2"))
    other("apply", "-f", str(pdb))
    blocked = other("drain", "b", "--ignore-daemonsets", "--timeout=3s", check=False, timeout=30)
    assert blocked.returncode != 0
    assert "disruption budget" in blocked.stderr
    assert nodes() == ["b", "b"]


def test_apply_removes_what_the_manifest_no_longer_has(
    kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    path = manifest(tmp_path, namespace, replicas=0)
    text = path.read_text().replace(
        "        - name: POD_IP\n",
        "        - name: EXTRA\n          value: one\n        - name: POD_IP\n",
    )
    path.write_text(text.replace("labels: {app: web}\nspec:", "labels: {app: web, tier: a}\nspec:"))
    kubectl("apply", "-f", str(path))
    got = deployment(kubectl, namespace)
    assert [e["name"] for e in got["spec"]["template"]["spec"]["containers"][0]["env"]] == [
        "EXTRA",
        "POD_IP",
    ]
    path.write_text(
        manifest(tmp_path, namespace, replicas=0)
        .read_text()
        .replace("python:3-slim", "python:3.12-slim")
    )
    assert "configured" in kubectl("apply", "-f", str(path)).stdout
    got = deployment(kubectl, namespace)
    container = got["spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in container["env"]] == ["POD_IP"]
    assert container["image"] == "python:3.12-slim"
    assert got["metadata"]["labels"] == {"app": "web"}
    assert "unchanged" in kubectl("apply", "-f", str(path)).stdout
