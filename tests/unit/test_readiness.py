"""Containers' readiness checks: the pod spec's rules, compose durations, the
exec readinessProbe that Kubernetes gets (checked against the official schemas
and honoured by the API test server's kubelet), and the local engine's checks
inside a running replica's sandbox (real bubblewrap)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_validate
import pytest

from catalog import sandbox
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


# The local engine's checks join the running replica's sandbox (real bubblewrap).
# This script plays the node agent: it starts a replica through `sandbox.confine`,
# runs a check in it through `sandbox.joining`, prints the check's exit code and
# output as JSON and ends the replica.
AGENT = r"""
import json, subprocess, sys, time
from pathlib import Path
from catalog import sandbox

work, uid, check = Path(sys.argv[1]), (int(sys.argv[2]) or None), sys.argv[3]
confinement = sandbox.Confinement(work_dir=work, package_dir=None, uid=uid)
sandbox.prepare_work_dir(work, uid)
replica = subprocess.Popen(sandbox.confine(
    ["sh", "-c", "echo written-by-the-replica > /tmp/mark; exec sleep 3600.125"], confinement))
try:
    for _ in range(600):
        try:
            env = {"PATH": sandbox.SANDBOX_PATH, "HOST_FILE": sys.argv[4]}
            with sandbox.joining(
                ["sh", "-c", check], confinement, sandbox_pid=replica.pid, env=env
            ) as joined:
                ran = subprocess.run(
                    joined.command, pass_fds=joined.fds, env=joined.env,
                    capture_output=True, text=True,
                )
            break
        except sandbox.SandboxStarting:
            time.sleep(0.1)
    print(json.dumps({"code": ran.returncode, "out": ran.stdout + ran.stderr}))
finally:
    replica.kill()
    replica.wait()
"""

CHECK = """
cat /tmp/mark
pgrep -a sleep
echo "uid=$(id -u) groups=$(id -G)"
grep -E '^(CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs)' /proc/self/status
setpriv --reuid 0 true 2>/dev/null && echo BECAME-ROOT
cat "$HOST_FILE" 2>/dev/null && echo READ-HOST-FILE
cat /etc/shadow 2>/dev/null && echo READ-SHADOW
ls /root 2>/dev/null && echo SAW-ROOT
touch /usr/x 2>/dev/null && echo WROTE-USR
ls /
"""
CHECK_UID = 1_250_000
"""Outside the range Marina hands to environments."""
ROOT = Path(__file__).resolve().parents[2]


def _as_agent(work: Path, check: str, *, user: str, host_file: Path) -> dict[str, Any]:
    """Run AGENT as root (the uid switch) or as nobody (a user namespace)."""
    uid = CHECK_UID if user == "root" else 0
    prefix = (
        [] if user == "root" else ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    )
    ran = subprocess.run(
        [*prefix, sys.executable, "-c", AGENT, str(work), str(uid), check, str(host_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert ran.returncode == 0, ran.stderr
    return dict(json.loads(ran.stdout))


@pytest.fixture()
def shared_tmp() -> Iterator[Path]:
    """A folder that the nobody user can reach too (pytest's are closed to others)."""
    folder = Path(tempfile.mkdtemp(prefix="marina-check-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
@pytest.mark.parametrize("user", ["root", "nobody"])
def test_a_check_sees_the_replicas_tmp_and_processes_and_nothing_more(
    shared_tmp: Path, user: str
) -> None:
    host_file = shared_tmp / "host-file"
    host_file.write_text("the host's")
    host_file.chmod(0o644)  # readable by anyone who can see it: the check cannot
    work = shared_tmp / "work"
    if user == "nobody":
        work.mkdir()
        os.chown(work, 65534, 65534)
    found = _as_agent(work, CHECK, user=user, host_file=host_file)
    out = found["out"].splitlines()
    assert found["code"] == 0, found
    # The replica's /tmp and its process, which a sandbox of the check's own would not see.
    assert out[0] == "written-by-the-replica"
    assert "2 sleep 3600.125" in out
    uid = CHECK_UID if user == "root" else 65534
    assert f"uid={uid} groups={uid}" in out
    for line in out:
        if line.startswith("Cap"):
            assert line.split()[1] == "0000000000000000", line
    assert "NoNewPrivs:\t1" in out
    for escape in ("BECAME-ROOT", "READ-HOST-FILE", "READ-SHADOW", "SAW-ROOT", "WROTE-USR"):
        assert escape not in out
    system = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "pod", "proc", "sbin"}
    assert set(out[out.index("bin") :]) <= system | {"tmp", "usr"}


@pytest.fixture()
def replica(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], sandbox.Confinement]]:
    uid = CHECK_UID if os.geteuid() == 0 else None
    confinement = sandbox.Confinement(work_dir=tmp_path / "work", package_dir=None, uid=uid)
    sandbox.prepare_work_dir(confinement.work_dir, uid)
    proc = subprocess.Popen(sandbox.confine(["sleep", "3600.25"], confinement))
    try:
        wait_for(lambda: _joinable(proc, confinement), timeout=30, what="the sandbox set up")
        yield proc, confinement
    finally:
        proc.kill()
        proc.wait()


def _joinable(proc: subprocess.Popen[bytes], confinement: sandbox.Confinement) -> bool:
    try:
        with sandbox.joining(["true"], confinement, sandbox_pid=proc.pid, env={}):
            return True
    except sandbox.SandboxStarting:
        return False


def _running(command: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"^{command}$"], capture_output=True, text=True)
    return found.stdout.split()


def _start_check(
    replica: tuple[subprocess.Popen[bytes], sandbox.Confinement],
    script: str,
    env: dict[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen[Any]:
    proc, confinement = replica
    env = {"PATH": sandbox.SANDBOX_PATH, **(env or {})}
    argv = ["sh", "-c", script]
    with sandbox.joining(argv, confinement, sandbox_pid=proc.pid, env=env) as joined:
        return subprocess.Popen(joined.command, pass_fds=joined.fds, env=joined.env, **popen)


def test_an_ended_check_takes_everything_it_started_and_leaves_the_replica(replica) -> None:
    tag = f"{os.getpid()}{time.monotonic_ns() % 10**6}"
    daemon, child = f"sleep 3601.{tag}", f"sleep 3602.{tag}"
    # One escapes into a session of its own (its parent gone), one waits in the foreground.
    check = _start_check(replica, f"(setsid {daemon} &); {child} & wait")
    try:
        wait_for(lambda: _running(daemon) and _running(child), timeout=30, what="both sleeps")
        assert sandbox.end_joined(check.pid)
        check.wait(timeout=30)
    finally:
        if check.poll() is None:
            os.killpg(check.pid, signal.SIGKILL)
            check.wait()
    assert not _running(daemon) and not _running(child)
    assert replica[0].poll() is None and _running("sleep 3600.25")


def test_a_passing_check_leaves_nothing_behind_and_a_killed_one_says_so(replica) -> None:
    daemon = f"sleep 3603.{os.getpid()}"
    passed = _start_check(replica, f"(setsid {daemon} &); sleep 0.5; pgrep -f '^{daemon}$'")
    assert passed.wait(timeout=60) == 0  # pgrep found it while the check ran
    assert not _running(daemon)
    assert _start_check(replica, "kill -KILL $$").wait(timeout=60) == -signal.SIGKILL
    assert _start_check(replica, "exit 3").wait(timeout=60) == 3


def test_a_check_of_a_gone_sandbox_fails_with_its_reason(replica) -> None:
    proc, confinement = replica
    proc.kill()
    proc.wait()
    with (
        pytest.raises(sandbox.SandboxGone, match="the container's sandbox is gone"),
        sandbox.joining(["true"], confinement, sandbox_pid=proc.pid, env={}),
    ):
        pass


def test_the_containers_variables_reach_the_check_and_not_the_root_run_tools(replica) -> None:
    """nsenter and prlimit run as root: a tenant's LD_PRELOAD must not reach them."""
    library = f"/nonexistent-{os.getpid()}.so"
    check = _start_check(
        replica,
        'echo "$GREETING"',
        {"GREETING": "hello from the container", "LD_PRELOAD": library},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = check.communicate(timeout=60)
    assert check.returncode == 0 and "hello from the container" in out.splitlines()
    # The loader complains once for each program that got the variable: the check's sh only.
    assert sum(library in line for line in out.splitlines()) == 1, out
