"""kill -9 of `marina up` (the API, task runner and controller) at a step of
each scale action: the restarted Marina resumes the task, which reaches
exactly the target recorded when it started, and nothing is duplicated or
orphaned.

The steps are chosen where a repeated step used to do harm: after a replica
was placed (a rerun placed one more), after one was marked draining (it was
left running), after a node's address was allocated or its etcd set up
(a rerun added another node, or started a second agent), after a node was
cordoned (a rerun cordoned a second one).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.marina import Marina
from tests.faults.harness import Deployment, deploy, lost_objects, settle, snapshot
from tests.support import Etcd

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def deployment(marina: Marina, etcd: Etcd) -> Deployment:
    # The case: a pod scaled up from 3 replicas.
    return deploy(marina, etcd, "marina-killed", {"web": 3})


def count(deployment: Deployment, action: str) -> int:
    target, _, method = action.partition(":")
    objects = deployment.objects()
    if "Pod" in method:
        return int(objects[target]["replicas"]["desired"])
    role = "gateway" if "Gateways" in method else "minion"
    return len(deployment.nodes(role))


# In order, on one deployment: each case starts where the one before ended.
CASES = [
    ("web:scalePodUp", None, "placed on", +1),  # 3 -> 4 replicas
    ("web:scalePodDown", None, "draining", -1),
    ("k:scaleNodesUp", None, "deployInstance done", +1),
    ("k:scaleNodesDown", None, "cordoned", -1),  # the new, empty node goes
    ("k:scaleNodesUp", None, "setupEtcd done", +1),
    ("web:scalePod", {"replicas": 4}, "placed on", +1),  # lands on the new node
    ("k:scaleNodesDown", None, "draining", -1),  # its replica moves
    ("k:scaleGatewaysUp", None, "deployInstance done", +1),
    ("k:scaleGatewaysDown", None, "cordoned", -1),
]


@pytest.mark.parametrize(
    ("action", "args", "step", "change"),
    CASES,
    ids=[f"{i}-{a.split(':')[1]}-{s.replace(' ', '-')}" for i, (a, _, s, _) in enumerate(CASES)],
)
def test_resumed_action_reaches_its_target(
    deployment: Deployment, action: str, args: dict[str, Any] | None, step: str, change: int
) -> None:
    marina = deployment.marina
    before = count(deployment, action)
    objects_before = snapshot(deployment)
    task_id = deployment.start(action, args)
    deployment.wait_log(task_id, step)
    marina.kill()
    marina.start()
    task: dict[str, Any] = marina.wait_task(task_id, timeout=180)
    assert task["state"] == "succeeded", task
    assert task["attempts"] == 2, task
    assert count(deployment, action) == before + change
    settle(deployment)
    assert not lost_objects(objects_before, snapshot(deployment), removed=max(0, -change))
    lost = [n for n, o in deployment.objects().items() if o.get("state") == "lost"]
    assert not lost, f"nodes declared lost: {lost}"
