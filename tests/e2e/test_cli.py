"""The `marina` CLI against a running `marina up`, and `marina demo` itself."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.marina import Marina
from tests.support import free_port, http_get, wait_for


def cli(marina: Marina, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "catalog.cli", "--state-dir", str(marina.state_dir), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_cli_drives_an_environment_end_to_end(marina, tmp_path):
    created = cli(marina, "env", "create", "from-cli")
    assert created.returncode == 0, created.stderr
    env = json.loads(created.stdout)["id"]
    assert env in cli(marina, "env", "list").stdout
    added = cli(
        marina,
        "app",
        "add",
        env,
        "kubernetes-cluster",
        "--set",
        "name=c",
        "--set",
        "nodeCount=1",
        "--set",
        "nodeCores=0.5",
    )
    assert added.returncode == 0 and "KubernetesCluster" in added.stdout
    pod = cli(
        marina,
        "app",
        "add",
        env,
        "kubernetes-pod",
        "--properties",
        json.dumps(
            {
                "name": "echo",
                "containers": [
                    {
                        "name": "echo",
                        "image": "python:3.11",
                        "cores": 0.2,
                        # On the local engine every replica shares the host: listen on POD_IP.
                        "command": ["sh", "-c", "exec python3 -m http.server 8000 --bind $POD_IP"],
                        "ports": [{"containerPort": 8000}],
                    }
                ],
                "services": [{"name": "echo", "port": 8000, "scope": "internal"}],
            }
        ),
    )
    assert pod.returncode == 0, pod.stderr
    listed = cli(marina, "action", "list", env)
    assert "c:scaleNodesUp" in listed.stdout and "echo:scalePodUp" in listed.stdout
    deploy = cli(marina, "action", "run", env, "c:deploy", "--wait")
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert "setupNode done" in deploy.stdout and "succeeded" in deploy.stdout
    scaled = cli(marina, "action", "run", env, "echo:scalePod", "--arg", "replicas=2", "--wait")
    assert scaled.returncode == 0 and "changed: 2 replicas" in scaled.stdout
    # 3 x 0.2 cores do not fit on one node of 0.5: the task fails and says why.
    refused = cli(marina, "action", "run", env, "echo:scalePodUp", "--wait")
    assert refused.returncode == 1
    assert "needs 0.2 cores" in refused.stderr and "Traceback" not in refused.stderr
    assert (refused.stdout + refused.stderr).count("needs 0.2 cores") == 1, "said once"
    assert marina.objects(env)["echo"]["replicas"]["desired"] == 2
    same = cli(marina, "action", "run", env, "echo:scalePod", "--arg", "replicas=2", "--wait")
    assert same.returncode == 0 and "noop: the pod already runs 2 replicas" in same.stdout
    restarted = cli(marina, "action", "run", env, "echo:restartContainers", "--wait")
    assert restarted.returncode == 0 and "2 replicas restarted" in restarted.stdout
    recreated = cli(marina, "action", "run", env, "echo:recreatePod", "--wait")
    assert recreated.returncode == 0 and "2 replicas recreated" in recreated.stdout
    assert "replacing it in place" in recreated.stdout  # the node is full
    service = next(s for s in marina.objects(env)["echo"]["services"])
    assert http_get(f"http://{service['ip']}:8000/")[0] == 200
    gateways = cli(marina, "action", "run", env, "c:scaleGateways", "--arg", "count=2", "--wait")
    assert gateways.returncode == 0, gateways.stdout + gateways.stderr
    nodes = marina.objects(env)
    assert {"gateway-1", "gateway-2"} <= set(nodes)
    task_id = scaled.stdout.split("task ")[1].split()[0]
    shown = cli(marina, "task", "show", task_id)
    assert '"state": "succeeded"' in shown.stdout and "placed on" in shown.stdout
    exported = cli(marina, "action", "run", env, "c:exportConfig", "--wait")
    assert exported.returncode == 0 and "file: " in exported.stdout, exported.stderr
    export_task = exported.stdout.split("task ")[1].split()[0]
    archive = tmp_path / "export.tar.gz"
    saved = cli(marina, "task", "download", export_task, "-o", str(archive))
    assert saved.returncode == 0 and archive.stat().st_size > 0, saved.stderr
    imported = cli(marina, "env", "import", str(archive), "--name", "copy-of-cli")
    assert imported.returncode == 0 and "copy-of-cli" in imported.stdout, imported.stderr
    copy_env = imported.stdout.split()[0]
    assert "echo" in marina.objects(copy_env)
    assert cli(marina, "env", "delete", copy_env, "--wait").returncode == 0
    deleted = cli(marina, "env", "delete", env, "--wait")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert env not in cli(marina, "env", "list").stdout
    agents = list((marina.state_dir / "nodes").glob("*/*/agent.pid"))
    assert not agents, "deleting the environment stops its nodes"


def test_cli_errors_are_messages_not_tracebacks(marina):
    bad = cli(marina, "app", "add", "nope", "guestbook")
    assert bad.returncode == 1 and "environment 'nope' not found" in bad.stderr
    env = json.loads(cli(marina, "env", "create", "errors").stdout)["id"]
    invalid = cli(marina, "app", "add", env, "kubernetes-cluster", "--set", "nodeCount=99")
    assert invalid.returncode == 1
    assert "nodeCount" in invalid.stderr and "Traceback" not in invalid.stderr
    missing = cli(marina, "package", "upload", "/nonexistent.zip")
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    away = subprocess.run(
        [
            sys.executable,
            "-m",
            "catalog.cli",
            "--api",
            f"http://127.0.0.1:{free_port()}",
            "--token",
            "x",
            "env",
            "list",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert away.returncode == 1 and "cannot reach the Marina API" in away.stderr


def test_marina_demo_deploys_the_guestbook_and_stops_cleanly(tmp_path: Path):
    state = tmp_path / "demo"
    etcd_port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "catalog.cli",
            "--state-dir",
            str(state),
            "demo",
            "--port",
            str(free_port()),
            "--etcd-port",
            str(etcd_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if not line or line.startswith("Ctrl-C"):
                break
        text = "".join(lines)
        assert "admin token:" in text and "Marina API:" in text, text
        url = next(ln.split()[2] for ln in lines if ln.startswith("application URL:"))
        wait_for(lambda: http_get(url)[0] == 200, timeout=30, what="the guestbook")
        assert "Marina guestbook" in http_get(url)[1]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(90)
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == 0
    leftovers = subprocess.run(
        ["pgrep", "-f", str(state)], capture_output=True, text=True
    ).stdout.split()
    assert not leftovers, f"processes left behind: {leftovers}"
