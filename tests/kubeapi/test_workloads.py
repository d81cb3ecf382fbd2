"""Behind the test API server, pods really run: they serve, crash, log and move as on a cluster."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from catalog import sandbox
from tests.kubeapi.fixtures import fresh_name, fresh_node_address
from tests.kubeapi.harness import KubeApi
from tests.support import wait_for

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client, config  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

try:
    sandbox.tools()
except sandbox.SandboxUnavailable as missing:
    pytest.skip(f"pods run in Marina's sandbox: {missing}", allow_module_level=True)

SERVE_ENV = """
import http.server, json, os, pathlib
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        files = {p.name: p.read_text() for p in pathlib.Path('/srv/app').glob('*')}
        body = json.dumps({'env': dict(os.environ), 'files': files, 'cwd': os.getcwd()}).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        print('served', self.path, flush=True)
print('listening on', os.environ['POD_IP'], flush=True)
http.server.HTTPServer((os.environ['POD_IP'], 8080), Handler).serve_forever()
"""


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=3) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def node(kube_api: KubeApi) -> Iterator[str]:
    name = fresh_name("node")
    kube_api.add_node(name, fresh_node_address())
    yield name
    kube_api.remove_node(name)


@pytest.fixture
def api(kube_api: KubeApi, node: str) -> Iterator[Any]:
    api_client = config.new_client_from_config(config_file=str(kube_api.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def namespace(api: Any) -> Iterator[str]:
    core = client.CoreV1Api(api)
    name = fresh_name("work")
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def app(name: str, *, replicas: int = 1, command: list[str], ports: bool = True) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": "python:3-slim",
        "command": command,
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    }
    if ports:
        container["ports"] = [{"containerPort": 8080, "name": "http"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    }


def ready_pods(core: Any, namespace: str, app_name: str, count: int) -> list[Any]:
    def found() -> list[Any]:
        pods = core.list_namespaced_pod(namespace, label_selector=f"app={app_name}").items
        ready = [
            p
            for p in pods
            if p.status.container_statuses
            and all(c.ready for c in p.status.container_statuses)
            and not p.metadata.deletion_timestamp
        ]
        return ready if len(ready) == count and len(pods) == count else []

    return wait_for(found, timeout=30, what=f"{count} ready pods of {app_name}")  # type: ignore[no-any-return]


def test_a_deployment_serves_on_its_pod_ips_and_node_port(
    kube_api: KubeApi, api: Any, namespace: str, node: str
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespaced_config_map(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "files"},
            "data": {"index.html": "hello from a ConfigMap", "mode": "blue"},
        },
    )
    core.create_namespaced_secret(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"password": "s3cret"},
        },
    )
    body = app("web", replicas=2, command=["python3", "-c", SERVE_ENV])
    pod_spec = body["spec"]["template"]["spec"]
    main = pod_spec["containers"][0]
    main["env"] += [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "files", "key": "mode"}}},
        {"name": "GREETING", "value": "hi $(POD_NAME)"},
    ]
    main["volumeMounts"] = [{"name": "files", "mountPath": "/srv/app"}]
    main["workingDir"] = "/srv/app"
    pod_spec["volumes"] = [{"name": "files", "configMap": {"name": "files"}}]
    apps.patch_namespaced_deployment(
        "web", namespace, body, field_manager="marina", _content_type="application/apply-patch+yaml"
    )
    pods = ready_pods(core, namespace, "web", 2)
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2 and all(ip.startswith("127.") for ip in ips)
    for pod in pods:
        seen = get_json(f"http://{pod.status.pod_ip}:8080/")
        assert seen["env"]["POD_IP"] == pod.status.pod_ip
        assert seen["env"]["POD_NAME"] == pod.metadata.name
        assert seen["env"]["PASSWORD"] == "s3cret"
        assert seen["env"]["MODE"] == "blue"
        assert seen["env"]["GREETING"] == f"hi {pod.metadata.name}"
        assert seen["files"]["index.html"] == "hello from a ConfigMap"
        assert seen["cwd"] == "/srv/app"
        assert pod.spec.node_name == node or pod.spec.node_name
    wait_for(
        lambda: (apps.read_namespaced_deployment("web", namespace).status.ready_replicas or 0) == 2,
        what="readyReplicas 2",
    )
    status = apps.read_namespaced_deployment("web", namespace).status
    assert status.available_replicas == 2 and status.observed_generation == 1
    service = core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {
                "type": "NodePort",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": "http"}],
            },
        },
    )
    node_ip = next(
        a.address
        for a in core.read_node(pods[0].spec.node_name).status.addresses
        if a.type == "InternalIP"
    )
    port = service.spec.ports[0].node_port
    names = set()
    for _ in range(6):
        seen = wait_for(lambda: get_json(f"http://{node_ip}:{port}/"), what="NodePort serving")
        names.add(seen["env"]["POD_NAME"])
    assert names == {p.metadata.name for p in pods}
    seen = get_json(f"http://{service.spec.cluster_ip}:80/")
    assert seen["env"]["POD_NAME"] in names
    endpoints = core.read_namespaced_endpoints("web", namespace)
    assert {a.ip for a in endpoints.subsets[0].addresses} == ips
    assert endpoints.subsets[0].ports[0].port == 8080
    lines = core.read_namespaced_pod_log(pods[0].metadata.name, namespace, tail_lines=1)
    assert lines.startswith("served /")


def test_a_crashing_container_is_reported_with_its_exit_code_and_logs(
    api: Any, namespace: str
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    apps.create_namespaced_deployment(
        namespace, app("crash", command=["sh", "-c", "echo boom; exit 3"], ports=False)
    )

    def crash_looping() -> Any:
        for pod in core.list_namespaced_pod(namespace, label_selector="app=crash").items:
            for status in pod.status.container_statuses or []:
                waiting = status.state.waiting
                if status.restart_count >= 1 and waiting and waiting.reason == "CrashLoopBackOff":
                    return pod, status
        return None

    pod, status = wait_for(crash_looping, timeout=30, what="CrashLoopBackOff")
    assert status.last_state.terminated.exit_code == 3
    assert status.last_state.terminated.reason == "Error"
    assert not status.ready
    previous = core.read_namespaced_pod_log(pod.metadata.name, namespace, previous=True)
    assert previous == "boom\n"
    deployment = apps.read_namespaced_deployment("crash", namespace)
    assert not deployment.status.ready_replicas


def test_a_command_that_does_not_exist_is_a_start_error_in_a_crash_loop(
    api: Any, namespace: str
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    apps.create_namespaced_deployment(
        namespace, app("missing", command=["no-such-program"], ports=False)
    )

    def start_error() -> Any:
        for pod in core.list_namespaced_pod(namespace, label_selector="app=missing").items:
            for status in pod.status.container_statuses or []:
                last = status.last_state.terminated if status.last_state else None
                waiting = status.state.waiting
                if last and waiting and waiting.reason == "CrashLoopBackOff":
                    return status
        return None

    status = wait_for(start_error, timeout=30, what="StartError, then CrashLoopBackOff")
    # containerd's words for an entrypoint that is not in the image
    assert status.last_state.terminated.reason == "StartError"
    assert status.last_state.terminated.exit_code == 128
    assert 'exec: "no-such-program": executable file not found in $PATH' in (
        status.last_state.terminated.message
    )
    assert status.restart_count >= 1 and not status.ready


def test_a_missing_secret_is_a_config_error(api: Any, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "busybox",
                        "command": ["sleep", "60"],
                        "env": [
                            {
                                "name": "X",
                                "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}},
                            }
                        ],
                    }
                ]
            },
        },
    )

    def reason() -> str | None:
        statuses = core.read_namespaced_pod("p", namespace).status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return f"{waiting.reason}: {waiting.message}" if waiting else None

    found = wait_for(lambda: "Config" in (reason() or "") and reason(), what="config error")
    assert found == 'CreateContainerConfigError: secret "absent" not found'


def test_log_follow_streams_new_lines(api: Any, namespace: str) -> None:
    core = client.CoreV1Api(api)
    script = "for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done; sleep 60"
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "talker"},
            "spec": {
                "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}]
            },
        },
    )
    wait_for(
        lambda: core.read_namespaced_pod("talker", namespace).status.phase == "Running",
        what="running",
    )
    stream = core.read_namespaced_pod_log("talker", namespace, follow=True, _preload_content=False)
    seen: list[str] = []
    try:
        for raw in stream.stream(amt=64):
            seen += [line for line in raw.decode().splitlines() if line]
            if "line 5" in seen:
                break
    finally:
        stream.release_conn()
    assert seen == [f"line {i}" for i in range(1, 6)]
    tail = core.read_namespaced_pod_log("talker", namespace, tail_lines=2)
    assert tail == "line 4\nline 5\n"


@pytest.fixture
def private_api(new_kube_api: Callable[[], KubeApi]) -> Iterator[tuple[KubeApi, Any]]:
    server = new_kube_api()
    api_client = config.new_client_from_config(config_file=str(server.kubeconfig))
    yield server, api_client
    api_client.close()


def test_the_scheduler_skips_cordoned_nodes(private_api: tuple[KubeApi, Any]) -> None:
    server, api_client = private_api
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    server.add_node("a", fresh_node_address())
    server.add_node("b", fresh_node_address())
    core.patch_node("b", {"spec": {"unschedulable": True}})
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "s"}})
    apps.create_namespaced_deployment("s", app("sleepy", replicas=3, command=["sleep", "600"]))
    pods = wait_for(
        lambda: (
            [
                p
                for p in core.list_namespaced_pod("s").items
                if p.status.phase == "Running" and p.spec.node_name
            ]
            if len(core.list_namespaced_pod("s").items) == 3
            else []
        ),
        what="3 pods placed",
    )
    assert {p.spec.node_name for p in pods} == {"a"}
    core.patch_node("a", {"spec": {"unschedulable": True}})
    apps.patch_namespaced_deployment_scale("sleepy", "s", {"spec": {"replicas": 4}})

    def pending_message() -> str | None:
        for pod in core.list_namespaced_pod("s").items:
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.status == "False":
                    return str(condition.message)
        return None

    assert wait_for(pending_message, what="Unschedulable") == (
        "0/2 nodes are available: 2 node(s) were unschedulable."
    )
    server.set_node_ready("a", False)
    core.patch_node("a", {"spec": {"unschedulable": False}})
    assert wait_for(lambda: "taint" in (pending_message() or "") and pending_message()) == (
        "0/2 nodes are available: 1 node(s) had untolerated taint "
        "{node.kubernetes.io/unreachable: }, 1 node(s) were unschedulable."
    )
    assert core.read_node("a").status.conditions[0].status == "Unknown"
    server.set_node_ready("a", True)
    wait_for(lambda: pending_message() is None, what="the fourth pod placed on a")


def test_eviction_honours_disruption_budgets(private_api: tuple[KubeApi, Any]) -> None:
    server, api_client = private_api
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    policy = client.PolicyV1Api(api_client)
    server.add_node("a", fresh_node_address())
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "e"}})
    apps.create_namespaced_deployment(
        "e", app("web", replicas=2, command=["python3", "-c", SERVE_ENV])
    )
    policy.create_namespaced_pod_disruption_budget(
        "e",
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
        },
    )
    pods = ready_pods(core, "e", "web", 2)
    victim = pods[0].metadata.name
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": victim, "namespace": "e"},
    }
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod_eviction(victim, "e", eviction)
    assert caught.value.status == 429
    body = json.loads(caught.value.body)
    assert body["reason"] == "TooManyRequests"
    assert body["details"]["causes"][0]["reason"] == "DisruptionBudget"
    budget = policy.read_namespaced_pod_disruption_budget("web", "e")
    assert budget.status.disruptions_allowed == 0 and budget.status.current_healthy == 2
    policy.patch_namespaced_pod_disruption_budget("web", "e", {"spec": {"minAvailable": 1}})
    core.create_namespaced_pod_eviction(victim, "e", eviction)
    wait_for(
        lambda: victim not in {p.metadata.name for p in core.list_namespaced_pod("e").items},
        what="evicted pod gone",
    )
    replacements = ready_pods(core, "e", "web", 2)
    assert victim not in {p.metadata.name for p in replacements}
