"""The registry of catalog classes and their actions.

Each class module in this package declares its actions with `@action(...)`:
a title, a description, a JSON-Schema of the arguments and whether it
destroys something. The API, the CLI and the dashboard read this registry; a
task runs the function registered for its object's class and method. Action
ids are `<objectId>_<method>`, as in Murano.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from catalog.errors import ActionNotFound, NotFound
from catalog.packages import validate_against

if TYPE_CHECKING:
    from catalog.classes.runtime import Runtime
    from catalog.tasks import Outcome

NO_ARGUMENTS: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {}}


class ActionInfo(TypedDict):
    id: str
    name: str
    title: str
    description: str
    schema: dict[str, Any]
    destructive: bool
    enabled: bool


Runner = Callable[["Runtime", dict[str, Any]], Awaitable["Outcome"]]


@dataclass(frozen=True)
class Action:
    method: str
    title: str
    description: str
    run: Runner
    schema: dict[str, Any] = field(default_factory=lambda: dict(NO_ARGUMENTS))
    destructive: bool = False

    def describe(self, object_id: str) -> ActionInfo:
        return {
            "id": f"{object_id}_{self.method}",
            "name": self.method,
            "title": self.title,
            "description": self.description,
            "schema": self.schema,
            "destructive": self.destructive,
            "enabled": True,
        }


REGISTRY: dict[str, dict[str, Action]] = {}
"""Class name -> method -> action, in declaration order."""


def action(
    class_name: str,
    method: str,
    title: str,
    description: str,
    *,
    schema: dict[str, Any] | None = None,
    destructive: bool = False,
) -> Callable[[Runner], Runner]:
    """Declare `method` of `class_name`, run by the decorated function."""

    def register(run: Runner) -> Runner:
        REGISTRY.setdefault(class_name, {})[method] = Action(
            method, title, description, run, schema or dict(NO_ARGUMENTS), destructive
        )
        return run

    return register


def classes() -> dict[str, dict[str, Action]]:
    """Every class and its actions (the modules of `catalog.classes` register
    themselves when the package is imported, as the API and server do)."""
    return REGISTRY


def actions_of(obj: dict[str, Any]) -> list[Action]:
    return list(classes().get(obj["?"]["type"], {}).values())


def find_action(objects: dict[str, Any], action_id: str) -> tuple[str, Action]:
    """The object id and action that `<objectId>_<method>` names."""
    object_id, sep, method = action_id.rpartition("_")
    if not sep or not object_id:
        raise NotFound("action", action_id)
    obj = objects.get(object_id)
    if obj is None:
        raise NotFound("object", object_id)
    found = classes().get(obj["?"]["type"], {}).get(method)
    if found is None:
        raise ActionNotFound(object_id, method)
    return object_id, found


def check_arguments(spec: Action, args: Any) -> dict[str, Any]:
    validate_against(spec.schema, args, what=f"arguments of {spec.method}")
    assert isinstance(args, dict)
    return args


def count_schema(title: str, maximum: int) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["count"],
        "properties": {
            "count": {"type": "integer", "minimum": 1, "maximum": maximum, "title": title}
        },
    }


def with_actions(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as shown to users: `_actions` in its header, Murano style,
    and secret values hidden (they leave Marina only in an export's Secrets)."""
    shown = dict(obj)
    if "spec" in obj:
        shown["spec"] = {
            **obj["spec"],
            "containers": [
                {**c, "secrets": dict.fromkeys(c["secrets"], "******")} if c.get("secrets") else c
                for c in obj["spec"].get("containers", [])
            ],
        }
    shown["?"] = {
        **obj["?"],
        "_actions": {
            spec.describe(obj["?"]["id"])["id"]: spec.describe(obj["?"]["id"])
            for spec in actions_of(obj)
        },
    }
    return shown
