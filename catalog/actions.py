"""Which actions each class offers, with their titles and argument schemas.

Action ids are `<objectId>_<method>`, as in Murano. The schemas are checked
before a task is queued, so bad arguments are a 400 naming the field, never
a failed task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from catalog.errors import ActionNotFound, NotFound
from catalog.packages import validate_against


@dataclass(frozen=True)
class ActionSpec:
    method: str
    title: str
    description: str
    schema: dict[str, Any] = field(
        default_factory=lambda: {"type": "object", "additionalProperties": False, "properties": {}}
    )

    def describe(self, object_id: str) -> dict[str, Any]:
        return {
            "id": f"{object_id}_{self.method}",
            "name": self.method,
            "title": self.title,
            "description": self.description,
            "schema": self.schema,
            "enabled": True,
        }


def _count(title: str, maximum: int) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["count"],
        "properties": {
            "count": {"type": "integer", "minimum": 1, "maximum": maximum, "title": title}
        },
    }


CLUSTER = [
    ActionSpec("deploy", "Deploy", "Create the nodes and bring the cluster up."),
    ActionSpec("scaleNodesUp", "Add a node", "Add one worker node, up to the maximum."),
    ActionSpec(
        "scaleNodesDown",
        "Remove a node",
        "Move the pods of the emptiest worker elsewhere, then remove it.",
    ),
    ActionSpec("scaleGatewaysUp", "Add a gateway", "Add one gateway node, up to the maximum."),
    ActionSpec(
        "scaleGatewaysDown", "Remove a gateway", "Remove one gateway node; at least one remains."
    ),
    ActionSpec(
        "scaleNodes",
        "Set worker nodes",
        "Scale worker nodes to a count.",
        _count("Worker nodes", 20),
    ),
    ActionSpec(
        "scaleGateways",
        "Set gateway nodes",
        "Scale gateway nodes to a count.",
        _count("Gateway nodes", 5),
    ),
    ActionSpec(
        "exportConfig",
        "Export configuration",
        "A .tar.gz of Kubernetes manifests and an apply.sh that recreates the "
        "environment on another cluster with kubectl alone.",
    ),
]

POD = [
    ActionSpec("scalePodUp", "Add a replica", "Run one more replica of the pod."),
    ActionSpec("scalePodDown", "Remove a replica", "Run one replica fewer; zero is allowed."),
    ActionSpec(
        "scalePod",
        "Set replicas",
        "Run this many replicas.",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["replicas"],
            "properties": {
                "replicas": {"type": "integer", "minimum": 0, "maximum": 50, "title": "Replicas"}
            },
        },
    ),
    ActionSpec("recreatePod", "Recreate", "Start new replicas, then stop the old ones."),
    ActionSpec(
        "restartContainers",
        "Restart containers",
        "Restart every replica's processes in place, one replica at a time.",
    ),
]

APPLICATION = [
    ActionSpec("deploy", "Deploy", "Start the application's pods on its cluster."),
]

ACTIONS: dict[str, list[ActionSpec]] = {
    "KubernetesCluster": CLUSTER,
    "KubernetesPod": POD,
    "KubernetesApplication": APPLICATION,
}


def actions_of(obj: dict[str, Any]) -> list[ActionSpec]:
    return ACTIONS.get(obj["?"]["type"], [])


def find_action(objects: dict[str, Any], action_id: str) -> tuple[str, ActionSpec]:
    """The object id and action that `<objectId>_<method>` names."""
    object_id, sep, method = action_id.rpartition("_")
    if not sep or not object_id:
        raise NotFound("action", action_id)
    obj = objects.get(object_id)
    if obj is None:
        raise NotFound("object", object_id)
    for spec in actions_of(obj):
        if spec.method == method:
            return object_id, spec
    raise ActionNotFound(object_id, method)


def check_arguments(spec: ActionSpec, args: Any) -> dict[str, Any]:
    validate_against(spec.schema, args, what=f"arguments of {spec.method}")
    assert isinstance(args, dict)
    return args
