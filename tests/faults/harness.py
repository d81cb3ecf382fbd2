"""What the fault tests share: a deployment, a kill at a named step, and the
invariants that must hold once the dust settles.

The invariants, checked against the processes that really run:
- every task of the environment ended (succeeded or failed);
- each pod's desired count == its replica records == running replica
  processes == ready replicas the controller counted from the reports;
- each live node runs exactly one agent, each gateway node one HAProxy,
  and no process under the state directory belongs to nothing in the model
  (no duplicate, no orphan);
- no object of the model went missing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.marina import Marina
from tests.support import Etcd, wait_for

# A replica: a tiny HTTP server on its pod IP that answers with its name. The
# marker argument lets the test count replica processes by pod.
SERVER = (
    "import http.server, os, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = os.environ['HOSTNAME'].encode()\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *args):\n"
    "        pass\n"
    "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)
SETTLE = 90.0


RUN = uuid.uuid4().hex[:8]


def marker(pod: str) -> str:
    """Names this test run's replicas of `pod` (another run's are not ours)."""
    return f"marina-fault-pod-{pod}-{RUN}"


def pod_properties(name: str, port: int, replicas: int) -> dict[str, Any]:
    return {
        "name": name,
        "replicas": replicas,
        "containers": [
            {
                "name": "http",
                "image": "python:3.11-slim",
                "command": ["python3", "-c", SERVER, marker(name)],
                "ports": [{"containerPort": 8080}],
                "cores": 0.1,
                "memory": 32,
            }
        ],
        "services": [{"name": name, "port": port, "targetPort": 8080, "scope": "public"}],
    }


@dataclass
class Deployment:
    marina: Marina
    etcd: Etcd
    env: str
    cluster: str
    pods: list[str]

    def objects(self) -> dict[str, dict[str, Any]]:
        return self.marina.objects(self.env)

    def nodes(self, role: str, *, states: tuple[str, ...] = ("ready",)) -> list[str]:
        kind = {"minion": "MinionNode", "gateway": "GatewayNode", "master": "MasterNode"}[role]
        return sorted(
            n for n, o in self.objects().items() if o["?"]["type"] == kind and o["state"] in states
        )

    def start(self, action: str, args: dict[str, Any] | None = None) -> str:
        action_id = self.marina.action_id(self.env, action)
        reply = self.marina.ok(
            "POST", f"/v1/environments/{self.env}/actions/{action_id}", args or {}
        )
        return str(reply["task_id"])

    def run(self, action: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.marina.wait_task(self.start(action, args), timeout=180)

    def wait_log(self, task_id: str, text: str, *, timeout: float = 90) -> None:
        """Until the task's log has a line containing `text` (a step is done);
        fails at once if the task ends without it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, lines = self.marina.call("GET", f"/v1/tasks/{task_id}/log")
            if status == 200 and text in (
                lines.decode() if isinstance(lines, bytes) else str(lines)
            ):
                return
            task = self.marina.ok("GET", f"/v1/tasks/{task_id}")
            assert task["state"] in ("queued", "running"), f"it ended before {text!r}: {task}"
            time.sleep(0.005)
        raise AssertionError(f"{text!r} not in the task's log after {timeout}s")


def deploy(marina: Marina, etcd: Etcd, name: str, pods: dict[str, int]) -> Deployment:
    """A cluster of two workers and one gateway, and `pods` (name: replicas)."""
    env = marina.ok("POST", "/v1/environments", {"name": name})["id"]
    cluster = {
        "name": "k",
        "nodeCount": 2,
        "gatewayCount": 1,
        "maxNodes": 4,
        "maxGateways": 3,
        "nodeCores": 2,
    }
    marina.ok(
        "POST",
        f"/v1/environments/{env}/services",
        {"package": "kubernetes-cluster", "properties": cluster},
    )
    task = marina.run(env, "k:deploy", timeout=180)
    assert task["state"] == "succeeded", task
    for port, (pod, replicas) in enumerate(pods.items(), start=31500):
        marina.ok(
            "POST",
            f"/v1/environments/{env}/services",
            {"package": "kubernetes-pod", "properties": pod_properties(pod, port, replicas)},
        )
        task = marina.run(env, f"{pod}:scalePod", {"replicas": replicas}, timeout=180)
        assert task["state"] == "succeeded", task
    deployment = Deployment(marina, etcd, str(env), "k", list(pods))
    settle(deployment)
    return deployment


# -- processes -------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    argv: tuple[str, ...]


def processes() -> dict[int, Proc]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if not raw or fields[0] == "Z":
            continue
        argv = tuple(raw.decode(errors="replace").rstrip("\0").split("\0"))
        found[int(entry.name)] = Proc(int(entry.name), int(fields[1]), argv)
    return found


def standbys(state_dir: Path) -> set[int]:
    """HAProxy processes the gateways keep waiting for their next configuration
    (`standby-<part>.pid`): they serve nothing until one is written."""
    found = set()
    for path in (state_dir / "nodes").glob("**/standby-*.pid"):
        with contextlib.suppress(OSError, ValueError):
            found.add(int(path.read_text()))
    return found


def census(state_dir: Path, pods: list[str]) -> Counter[tuple[str, str]]:
    """What runs for this Marina, by kind and owner; ("unknown", argv) for a
    process under its state directory that is none of the known kinds.
    Gateways' standby HAProxy processes are not counted."""
    procs = processes()
    waiting = standbys(state_dir)
    counted: Counter[tuple[str, str]] = Counter()
    nodes_dir = f"{state_dir}/nodes/"
    markers = {marker(p): p for p in pods}

    def is_replica(proc: Proc) -> str | None:
        return next((markers[a] for a in proc.argv if a in markers), None)

    for proc in procs.values():
        pod = is_replica(proc)
        if pod is not None:
            parent = procs.get(proc.ppid)
            # Count a sandboxed replica once: the outermost process naming it.
            if parent is None or is_replica(parent) != pod:
                counted[("replica", pod)] += 1
            continue
        text = " ".join(proc.argv)
        if nodes_dir not in text:
            continue
        node = text.split(nodes_dir, 1)[1].split("/")[1].split()[0]
        if "nodeagent" in text:
            counted[("agent", node)] += 1
        elif "gateway.cli" in text:
            counted[("gateway", node)] += 1
        elif "haproxy" in Path(proc.argv[0]).name:
            if proc.pid not in waiting:
                counted[("haproxy", node)] += 1
        elif "bwrap" not in Path(proc.argv[0]).name:
            counted[("unknown", text[:200])] += 1
    return counted


def expected_census(deployment: Deployment) -> Counter[tuple[str, str]]:
    objects = deployment.objects()
    want: Counter[tuple[str, str]] = Counter()
    for name, obj in objects.items():
        kind = obj["?"]["type"]
        if kind.endswith("Node") and obj["state"] in ("ready", "cordoned"):
            want[("agent", name)] = 1
            if kind in ("MasterNode", "GatewayNode"):
                want[("gateway", name)] = 1
                want[("haproxy", name)] = 1
        elif kind == "KubernetesPod" and obj["replicas"]["desired"]:
            want[("replica", name)] = obj["replicas"]["desired"]
    return want


def kill_processes(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def pids_of(state_dir: Path, kind: str, owner: str, pods: list[str]) -> list[int]:
    """Pids of one kind of process (as `census` names them) for `owner`."""
    procs = processes()
    waiting = standbys(state_dir)
    nodes_dir = f"{state_dir}/nodes/"
    found = []
    for proc in procs.values():
        text = " ".join(proc.argv)
        if kind == "replica":
            parent = procs.get(proc.ppid)
            mine = marker(owner) in proc.argv
            if mine and (parent is None or marker(owner) not in parent.argv):
                found.append(proc.pid)
            continue
        if nodes_dir not in text or text.split(nodes_dir, 1)[1].split("/")[1] != owner:
            continue
        if (
            (kind == "agent" and "nodeagent" in text)
            or (kind == "gateway" and "gateway.cli" in text)
            or (
                kind == "haproxy"
                and "haproxy" in Path(proc.argv[0]).name
                and proc.pid not in waiting
            )
        ):
            found.append(proc.pid)
    return found


# -- invariants ------------------------------------------------------------------


def settle(deployment: Deployment) -> None:
    """Wait until the invariants hold, then check them once more."""
    last: list[str] = []

    def holds() -> bool:
        last[:] = violations(deployment)
        return not last

    try:
        wait_for(holds, timeout=SETTLE, interval=0.25, what="the invariants")
    except AssertionError:
        raise AssertionError("invariants broken: " + "; ".join(last)) from None


def violations(deployment: Deployment) -> list[str]:
    marina, etcd = deployment.marina, deployment.etcd
    found: list[str] = []
    tasks = marina.ok("GET", f"/v1/environments/{deployment.env}/tasks")["tasks"]
    found += [
        f"task {t['action']} still {t['state']}"
        for t in tasks
        if t["state"] in ("queued", "running")
    ]
    objects = deployment.objects()
    records = etcd_replicas(etcd)
    statuses = etcd_statuses(etcd)
    for pod in deployment.pods:
        obj = objects.get(pod)
        if obj is None:
            found.append(f"pod {pod} is gone from the model")
            continue
        desired, ready = obj["replicas"]["desired"], obj["replicas"]["ready"]
        mine = {
            i: r
            for i, r in records.items()
            if r["podName"] == pod and r["environment"] == deployment.env
        }
        reported = [i for i in mine if (statuses.get(i) or {}).get("ready")]
        draining = [i for i, r in mine.items() if r.get("draining")]
        if not (desired == len(mine) == len(reported) == ready) or draining:
            found.append(
                f"pod {pod}: desired {desired}, records {len(mine)}, reported ready "
                f"{len(reported)}, counted ready {ready}, draining {len(draining)}"
            )
    have = census(marina.state_dir, deployment.pods)
    want = expected_census(deployment)
    if have != want:
        extra = have - want
        missing = want - have
        found.append(f"processes: extra {dict(extra)}, missing {dict(missing)}")
        if extra:
            procs = processes()
            found += [
                f"pid {p.pid} of parent {p.ppid}"
                for p in procs.values()
                if any(marker(pod) in p.argv for pod in deployment.pods)
            ]
    return found


def etcd_replicas(etcd: Etcd) -> dict[str, dict[str, Any]]:
    return _prefix(etcd, "/marina/replicas/")


def etcd_statuses(etcd: Etcd) -> dict[str, dict[str, Any]]:
    return _prefix(etcd, "/marina/replica-status/")


def _prefix(etcd: Etcd, prefix: str) -> dict[str, dict[str, Any]]:
    import base64
    import json

    from gateway.etcd import prefix_end

    reply = etcd.call(
        "/v3/kv/range",
        {
            "key": base64.b64encode(prefix.encode()).decode(),
            "range_end": base64.b64encode(prefix_end(prefix.encode())).decode(),
        },
    )
    return {
        base64.b64decode(kv["key"]).decode().rsplit("/", 1)[1]: json.loads(
            base64.b64decode(kv["value"])
        )
        for kv in reply.get("kvs", [])
    }


def snapshot(deployment: Deployment) -> dict[str, str]:
    """The model's objects (id: type), to prove none is lost."""
    return {o["?"]["id"]: o["?"]["type"] for o in deployment.objects().values()}


def lost_objects(before: dict[str, str], after: dict[str, str], *, removed: int) -> list[str]:
    """Objects gone from the model beyond the `removed` nodes an action took away."""
    gone = [f"{kind} {ident}" for ident, kind in before.items() if ident not in after]
    nodes = [g for g in gone if g.split()[0].endswith("Node")]
    return gone if len(gone) != len(nodes) or len(nodes) > removed else []
