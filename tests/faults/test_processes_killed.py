"""kill -9 of each process Marina runs besides the API (a replica, a
gateway's HAProxy, etcd, a node agent) while a scale action runs, and a node
agent that stalls past the grace period: every task ends at its target and
what runs matches the model again, with no duplicate and no orphan.
"""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

import pytest

from tests.e2e.marina import Marina
from tests.faults.harness import (
    Deployment,
    deploy,
    etcd_replicas,
    kill_processes,
    lost_objects,
    pids_of,
    settle,
    snapshot,
)
from tests.support import Etcd, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def deployment(marina: Marina, etcd: Etcd) -> Deployment:
    return deploy(marina, etcd, "processes-killed", {"web": 2})


def desired(deployment: Deployment) -> int:
    return int(deployment.objects()["web"]["replicas"]["desired"])


def placed_on(deployment: Deployment, task_id: str) -> str:
    _, log = deployment.marina.call("GET", f"/v1/tasks/{task_id}/log")
    text = log.decode() if isinstance(log, bytes) else str(log)
    found = re.findall(r"placed on ([\w-]+)", text)
    assert found, text
    return str(found[-1])


def finish(deployment: Deployment, task_id: str, want: int, before: dict[str, str]) -> None:
    task = deployment.marina.wait_task(task_id, timeout=180)
    assert task["state"] == "succeeded", task
    assert desired(deployment) == want
    settle(deployment)
    assert not lost_objects(before, snapshot(deployment), removed=0)


def test_replicas_killed_while_scaling_up(deployment: Deployment) -> None:
    want, before = desired(deployment) + 1, snapshot(deployment)
    task_id = deployment.start("web:scalePodUp")
    deployment.wait_log(task_id, "placed on")
    # Every replica of the pod at once, the new one included: their agents
    # restart them, and the action waits for the new one.
    pids = pids_of(deployment.marina.state_dir, "replica", "web", deployment.pods)
    assert pids
    kill_processes(pids)
    finish(deployment, task_id, want, before)


def test_haproxy_killed_while_scaling_down(deployment: Deployment) -> None:
    want, before = desired(deployment) - 1, snapshot(deployment)
    task_id = deployment.start("web:scalePodDown")
    deployment.wait_log(task_id, "draining")
    gateway = deployment.nodes("gateway")[0]
    pids = pids_of(deployment.marina.state_dir, "haproxy", gateway, deployment.pods)
    assert pids
    kill_processes(pids)
    finish(deployment, task_id, want, before)


def test_etcd_killed_while_scaling_up(deployment: Deployment) -> None:
    want, before = desired(deployment) + 1, snapshot(deployment)
    task_id = deployment.start("web:scalePodUp")
    deployment.wait_log(task_id, "placed on")
    etcd = deployment.etcd._etcd.proc
    assert etcd is not None
    etcd.send_signal(signal.SIGKILL)
    etcd.wait()
    time.sleep(1)  # long enough for every client to notice
    deployment.etcd.start()
    finish(deployment, task_id, want, before)
    # The nodes' leases lapsed with etcd: their agents registered again
    # within the grace period, so no node was declared lost.
    states = {n: o["state"] for n, o in deployment.objects().items() if "Node" in o["?"]["type"]}
    assert set(states.values()) == {"ready"}, states


def test_node_agent_stalled_past_the_grace_period(deployment: Deployment) -> None:
    """SIGSTOP then SIGCONT: the node is lost, its replicas move to fresh
    addresses while the old processes still hold theirs, and when the agent
    wakes the node is ready again and stops what moved away."""
    marina = deployment.marina
    minions = deployment.nodes("minion")
    records = etcd_replicas(deployment.etcd)
    node = next(r["node"] for r in records.values() if r["podName"] == "web")
    moved = {i: r["ip"] for i, r in records.items() if r["node"] == node}
    (agent,) = pids_of(marina.state_dir, "agent", node, deployment.pods)
    started = time.monotonic()
    os.kill(agent, signal.SIGSTOP)
    try:
        wait_for(
            lambda: deployment.objects()[node]["state"] == "lost",
            timeout=60,
            interval=0.2,
            what=f"{node} to be declared lost",
        )
        lost_after = time.monotonic() - started
        wait_for(
            lambda: all(r["node"] != node for r in etcd_replicas(deployment.etcd).values()),
            timeout=30,
            interval=0.2,
            what="its replicas to move",
        )
    finally:
        os.kill(agent, signal.SIGCONT)
    # The old processes still held their addresses when the replicas moved.
    now = {r["ip"] for r in etcd_replicas(deployment.etcd).values()}
    assert not now & set(moved.values()), "a moved replica got an address still in use"
    wait_for(
        lambda: deployment.objects()[node]["state"] == "ready",
        timeout=30,
        interval=0.2,
        what=f"{node} to come back",
    )
    settle(deployment)
    assert deployment.nodes("minion") == minions
    print(f"\nstalled node declared lost after {lost_after:.1f}s")


def test_node_agent_killed_while_scaling_up(deployment: Deployment) -> None:
    want, before = desired(deployment) + 1, snapshot(deployment)
    task_id = deployment.start("web:scalePodUp")
    deployment.wait_log(task_id, "placed on")
    node = placed_on(deployment, task_id)
    # As soon as the new replica's first process runs, while its sandbox is
    # being set up: nothing of it may outlive the agent killed then
    # (tests/faults/test_replica_start_killed.py tries every moment of a start).
    wait_for(
        lambda: (
            len(pids_of(deployment.marina.state_dir, "replica", "web", deployment.pods)) == want
        ),
        timeout=30,
        what="the new replica's process",
    )
    killed = time.monotonic()
    kill_processes(pids_of(deployment.marina.state_dir, "agent", node, deployment.pods))
    task: dict[str, Any] = deployment.marina.wait_task(task_id, timeout=180)
    assert task["state"] == "succeeded", task
    recovered = time.monotonic() - killed
    assert deployment.objects()[node]["state"] == "lost"
    assert desired(deployment) == want
    assert all(r["node"] != node for r in etcd_replicas(deployment.etcd).values())
    settle(deployment)
    assert not lost_objects(before, snapshot(deployment), removed=0)
    print(f"\nnew replica serving again {recovered:.1f}s after its node's agent was killed")
