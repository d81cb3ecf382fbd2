"""Containers' readiness checks: the pod spec's rules, compose durations, and the
exec readinessProbe that Kubernetes gets (checked against the official schemas
and honoured by the API test server's kubelet)."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from typing import Any

import kubernetes
import kubernetes_validate
import pytest

from catalog.engines.base import PodId, PodSpec
from catalog.engines.rendering import manifests_for_specs
from catalog.export import pod_spec
from catalog.model import readiness_of, validate_pod_spec
from catalog.translators.base import Warnings
from catalog.translators.compose import duration_seconds, to_own_address
from tests.kubeapi.fixtures import fresh_name, fresh_node_address
from tests.kubeapi.harness import KubeApi
from tests.kubeapi.validation import SCHEMA_VERSIONS
from tests.support import wait_for


def pod(**readiness: Any) -> dict[str, Any]:
    return {
        "name": "web",
        "containers": [
            {"name": "main", "image": "x:1", "command": ["web"], "readiness": readiness}
        ],
    }


def test_a_readiness_check_in_list_or_shell_form_is_valid() -> None:
    assert validate_pod_spec(pod(command=["test", "-f", "/pod/work/up"])) == []
    assert (
        validate_pod_spec(
            pod(
                command="curl -f http://$POD_IP:8080/",
                interval_s=1,
                timeout_s=3600,
                failure_threshold=100,
                start_period_s=0,
            )
        )
        == []
    )


def test_every_broken_readiness_rule_is_named_with_its_field() -> None:
    problems = validate_pod_spec(
        pod(
            command=[],
            interval_s=0,
            timeout_s=1.5,
            failure_threshold=True,
            start_period_s=3601,
            period=3,
        )
    )
    where = "pod.containers[0].readiness"
    assert [(p.field, p.rule, p.value) for p in problems] == [
        (
            f"{where}.command",
            "must be a list of 1-256 strings (the first a program), or a string that sh -c runs",
            [],
        ),
        (f"{where}.interval_s", "must be a whole number of seconds, 1-3600", 0),
        (f"{where}.timeout_s", "must be a whole number of seconds, 1-3600", 1.5),
        (f"{where}.failure_threshold", "must be a whole number of failures, 1-100", True),
        (f"{where}.start_period_s", "must be a whole number of seconds, 0-3600", 3601),
        (f"{where}.period", "is not a known readiness field", None),
    ]


@pytest.mark.parametrize(
    ("readiness", "rule"),
    [
        ("not an object", "must be an object with a command"),
        ({"interval_s": 5}, "must be a list of 1-256 strings"),
        ({"command": "   "}, "must be a shell command of 1-4096 characters"),
        ({"command": ["", "x"]}, "must be a list of 1-256 strings"),
        ({"command": ["sh", 3]}, "must be a list of 1-256 strings"),
    ],
)
def test_a_readiness_check_without_a_usable_command_is_refused(readiness: Any, rule: str) -> None:
    spec = pod()
    spec["containers"][0]["readiness"] = readiness
    problems = validate_pod_spec(spec)
    assert len(problems) == 1 and problems[0].rule.startswith(rule)


def test_engines_get_the_check_in_full_and_a_string_through_sh() -> None:
    assert readiness_of({"readiness": {"command": "test -f up", "timeout_s": 2}}) == {
        "command": ["sh", "-c", "test -f up"],
        "interval_s": 10,
        "timeout_s": 2,
        "failure_threshold": 3,
        "start_period_s": 0,
    }
    assert readiness_of({"name": "main"}) is None
    doc = {"id": "e1"}
    obj = {"?": {"id": "p1"}, "spec": pod(command=["true"]), "replicas": {"desired": 1}}
    assert pod_spec(doc, obj)["containers"][0]["readiness"]["command"] == ["true"]
    obj["spec"]["containers"][0].pop("readiness")
    assert "readiness" not in pod_spec(doc, obj)["containers"][0]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10),
        ("1m30s", 90),
        ("500ms", 0.5),
        ("1h", 3600),
        ("2h30m", 9000),
        ("1.5s", 1.5),
        (".5m", 30),
        ("0", 0),
        ("250us", 0.00025),
        (" 5s ", 5),
    ],
)
def test_compose_durations_are_read_as_compose_reads_them(text: str, seconds: float) -> None:
    assert duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10", "s", "1d", "1m30", "-5s", "5 s", "", 10, None])
def test_what_is_not_a_compose_duration_is_refused(text: Any) -> None:
    assert duration_seconds(text) is None


# Serves how many times its probe ran, and writes the file the probe looks for
# once a connection reaches READY_PORT: the test decides when it passes.
GATED = """
import http.server, os, socket, threading, time
home = os.environ["HOME"]
class Count(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            runs = len(open(os.path.join(home, "runs")).read().splitlines())
        except OSError:
            runs = 0
        self.send_response(200)
        self.end_headers()
        self.wfile.write(str(runs).encode())
    def log_message(self, *args):
        pass
server = http.server.HTTPServer((os.environ["POD_IP"], 8080), Count)
threading.Thread(target=server.serve_forever, daemon=True).start()
while True:
    try:
        socket.create_connection(("127.0.0.1", int(os.environ["READY_PORT"])), 1).close()
        break
    except OSError:
        time.sleep(0.2)
open(os.path.join(home, "ready"), "w").close()
threading.Event().wait()
"""


def gated(name: str, ready_port: int) -> PodSpec:
    return {
        "id": PodId(name),
        "name": name,
        "environment": "unit",
        "package": None,
        "containers": [
            {
                "name": "main",
                "image": "python:3.11-slim",
                "command": ["python3", "-c", GATED],
                "env": {"READY_PORT": str(ready_port)},
                "ports": [{"containerPort": 8080}],
                "readiness": {
                    "command": ["sh", "-c", 'echo run >> "$HOME/runs"; test -f "$HOME/ready"'],
                    "interval_s": 1,
                    "timeout_s": 10,
                    "failure_threshold": 2,
                    "start_period_s": 0,
                },
            }
        ],
        "labels": {},
        "links": {},
        "env": {},
        "services": [],
        "replicas": 1,
    }


def test_the_check_renders_as_an_exec_probe_valid_for_every_kubernetes_version() -> None:
    objects = manifests_for_specs([gated("web", 1)], namespace="n1")
    deployment = next(o for _, o in objects if o["kind"] == "Deployment")
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe == {
        "exec": {"command": ["sh", "-c", 'echo run >> "$HOME/runs"; test -f "$HOME/ready"']},
        "initialDelaySeconds": 0,
        "periodSeconds": 1,
        "timeoutSeconds": 10,
        "failureThreshold": 2,
        "successThreshold": 1,
    }
    for version in SCHEMA_VERSIONS:
        for _, manifest in objects:
            kubernetes_validate.validate(manifest, version, strict=True)


def test_a_pod_on_kubernetes_is_ready_only_once_its_probe_passes(kube_api: KubeApi) -> None:
    namespace, node = fresh_name("readiness"), fresh_name("readiness-node")
    kube_api.add_node(node, fresh_node_address())
    client = kubernetes.config.new_client_from_config(config_file=str(kube_api.kubeconfig))
    core = kubernetes.client.CoreV1Api(client)
    gate = socket.socket()
    try:
        gate.bind(("127.0.0.1", 0))  # refused until it listens
        for _, manifest in manifests_for_specs(
            [gated("gated", gate.getsockname()[1])], namespace=namespace
        ):
            kubernetes.utils.create_from_dict(client, manifest)

        def running() -> dict[str, Any] | None:
            pods = core.list_namespaced_pod(namespace).to_dict()["items"]
            return pods[0] if pods and pods[0]["status"].get("pod_ip") else None

        def ready(found: dict[str, Any]) -> bool:
            conditions = found["status"].get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        address = wait_for(running, timeout=60, what="the pod")["status"]["pod_ip"]

        def runs() -> int:
            with urllib.request.urlopen(f"http://{address}:8080/", timeout=5) as reply:
                return int(reply.read())

        # Its port answers, yet it is not ready: the probe ran and failed, twice.
        wait_for(lambda: runs() >= 2, timeout=60, what="two probe runs")
        assert not ready(running() or {})
        gate.listen()
        wait_for(lambda: ready(running() or {}), timeout=60, what="the pod ready")
    finally:
        gate.close()
        core.delete_namespace(namespace)
        # Gone only once the kubelet stopped its containers and probes.
        wait_for(lambda: not core.list_namespaced_pod(namespace).items, timeout=60, what="pods")
        kube_api.remove_node(node)


def test_a_compose_check_of_localhost_asks_the_replicas_own_address() -> None:
    warnings = Warnings("docker-compose.yml")
    words = ["printf", "%s|", "http://localhost:8080/a b", "127.0.0.1", "localhost.example"]
    command = to_own_address(words, "/services/web/healthcheck/test", words, warnings)
    assert isinstance(command, str)
    ran = subprocess.run(
        ["sh", "-c", command], env={"POD_IP": "127.67.0.9"}, capture_output=True, text=True
    )
    assert ran.stdout == "http://127.67.0.9:8080/a b|127.67.0.9|localhost.example|"
    assert [w.code for w in warnings.items] == ["approximated"]
