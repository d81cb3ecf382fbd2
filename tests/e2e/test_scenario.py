"""The end-to-end scenario: a real `marina up` with its own etcd, node agents,
gateways (HAProxy) and the guestbook, driven through the REST API.

The tests run in order on one deployment, as a user would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.marina import Marina
from tests.support import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployed(marina: Marina) -> dict[str, str]:
    env, url = marina.deploy_guestbook(
        "scenario", {"name": "k1", "nodeCount": 2, "gatewayCount": 1, "nodeCores": 1}
    )
    web = marina.objects(env)["web"]
    return {"env": env, "url": url, "web": web["?"]["id"]}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def sign(url: str, message: str) -> int:
    data = urllib.parse.urlencode({"message": message}).encode()
    request = urllib.request.Request(url, data=data, method="POST")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def footer(body: str) -> str:
    return body.rsplit("<footer>", 1)[1].split("</footer>", 1)[0]


def test_public_endpoint_serves_the_two_tier_application(marina, deployed):
    url = deployed["url"]
    assert sign(url, "first <script>alert(1)</script>") == 303
    status, body = get(url)
    assert status == 200
    assert "first &lt;script&gt;alert(1)&lt;/script&gt;" in body  # stored by the back end


def test_scale_pod_up_gives_two_serving_replicas(marina, deployed):
    task = marina.run(deployed["env"], "web:scalePodUp")
    assert task["state"] == "succeeded" and task["outcome"] == "changed"
    served = {footer(get(deployed["url"])[1]) for _ in range(12)}
    assert len(served) == 2
    assert marina.objects(deployed["env"])["web"]["replicas"] == {"desired": 2, "ready": 2}


def test_scale_nodes_down_under_load_fails_no_request(marina, deployed):
    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline and len(results) < 3000:
            try:
                results.append(get(deployed["url"])[0])
            except OSError:
                results.append(0)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        time.sleep(0.5)
        task = marina.run(deployed["env"], "k1:scaleNodesDown")
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    assert task["state"] == "succeeded" and task["outcome"] == "changed", task
    assert len(results) > 20
    assert results.count(200) == len(results), {c: results.count(c) for c in set(results)}
    again = marina.run(deployed["env"], "k1:scaleNodesDown")
    assert again["outcome"] == "noop" and again["reason"] == "at least one node must remain"


def replica_pids(state_dir: Path, script: str) -> list[int]:
    """The sandboxes running `script`: their outer process, the one its node agent started."""
    found = {
        int(p)
        for p in subprocess.run(
            ["pgrep", "-f", f"{state_dir}.*{script}"], capture_output=True, text=True
        ).stdout.split()
    }
    parents = {}
    for pid in found:
        with contextlib.suppress(OSError):
            parents[pid] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return sorted(p for p in found if parents.get(p) not in found)


def test_killed_replica_is_restarted(marina, deployed):
    before = replica_pids(marina.state_dir, "store.py")
    assert len(before) == 1
    os.kill(before[0], signal.SIGKILL)
    wait_for(
        lambda: replica_pids(marina.state_dir, "store.py") not in ([], before),
        timeout=30,
        what="the store replica to restart",
    )
    wait_for(lambda: get(deployed["url"])[0] == 200, timeout=30, what="the page again")


def test_killed_node_agent_moves_its_pods(marina, deployed):
    marina.run(deployed["env"], "k1:scaleNodesUp")  # somewhere for the pods to go
    replicas_node = _node_of_store(marina, deployed["env"])
    agent = _agent_pid(marina.state_dir, replicas_node)
    os.kill(agent, signal.SIGKILL)
    wait_for(
        lambda: marina.objects(deployed["env"])[replicas_node]["state"] == "lost",
        timeout=30,
        what="the node to be declared lost",
    )
    wait_for(
        lambda: _node_of_store(marina, deployed["env"]) != replicas_node,
        timeout=30,
        what="the store to move",
    )
    wait_for(
        lambda: get(deployed["url"])[0] == 200 and sign(deployed["url"], "after") == 303,
        timeout=60,
        what="the application to serve again",
    )


def _node_of_store(marina: Marina, env: str) -> str:
    status, _ = marina.call("GET", f"/v1/environments/{env}")
    assert status == 200
    out = subprocess.run(
        ["pgrep", "-af", f"{marina.state_dir}.*store.py"], capture_output=True, text=True
    ).stdout
    # The replica runs from its node's package folder: .../nodes/<cluster>/<node>/packages
    for line in out.splitlines():
        parts = line.split("/nodes/", 1)
        if len(parts) == 2:
            return parts[1].split("/")[1]
    raise AssertionError(f"no store replica running: {out!r}")


def _agent_pid(state_dir: Path, node: str) -> int:
    for pid_file in (state_dir / "nodes").glob(f"*/{node}/agent.pid"):
        return int(pid_file.read_text())
    raise AssertionError(f"no agent for {node}")


def test_killed_marina_mid_task_leaves_no_orphan(marina, deployed):
    env = deployed["env"]
    action_id = marina.action_id(env, "k1:scaleNodesUp")
    task_id = marina.ok("POST", f"/v1/environments/{env}/actions/{action_id}", {})["task_id"]
    wait_for(
        lambda: marina.ok("GET", f"/v1/tasks/{task_id}")["state"] == "running",
        timeout=30,
        interval=0.005,
        what="the task to start",
    )
    marina.kill()
    marina.start()
    task = marina.wait_task(task_id, timeout=120)
    assert task["state"] in ("succeeded", "failed")
    objects = marina.objects(env)
    known = {name for name, o in objects.items() if o["?"]["type"].endswith("Node")}
    running = {
        p.parent.name
        for p in (marina.state_dir / "nodes").glob("*/*/agent.pid")
        if _alive(int(p.read_text()))
    }
    assert running <= known, f"agents the model does not know: {running - known}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
