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
from typing import TYPE_CHECKING, TypeVar, cast

from catalog.documents import ActionInfo, EnvironmentObject, Json, JsonObject, TaskDoc, is_pod
from catalog.errors import ActionNotFound, NotFound
from catalog.ids import ObjectId
from catalog.packages import validate_against

if TYPE_CHECKING:
    from catalog.classes.runtime import Runtime
    from catalog.tasks import Outcome

__all__ = ["ActionInfo", "action", "classes", "find_action", "shown_task", "with_actions"]

NO_ARGUMENTS: JsonObject = {"type": "object", "additionalProperties": False, "properties": {}}
MASKED = "******"
"""What users see of a secret value."""

Runner = Callable[["Runtime", EnvironmentObject], Awaitable["Outcome"]]
Object = TypeVar("Object")


@dataclass(frozen=True)
class Action:
    method: str
    title: str
    description: str
    run: Runner
    schema: JsonObject = field(default_factory=lambda: dict(NO_ARGUMENTS))
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
    schema: JsonObject | None = None,
    destructive: bool = False,
) -> Callable[
    [Callable[[Runtime, Object], Awaitable[Outcome]]],
    Callable[[Runtime, Object], Awaitable[Outcome]],
]:
    """Declare `method` of `class_name`, run by the decorated function (which
    takes objects of that class: the runner looks the action up by their type)."""

    def register(
        run: Callable[[Runtime, Object], Awaitable[Outcome]],
    ) -> Callable[[Runtime, Object], Awaitable[Outcome]]:
        REGISTRY.setdefault(class_name, {})[method] = Action(
            method, title, description, cast(Runner, run), schema or dict(NO_ARGUMENTS), destructive
        )
        return run

    return register


def classes() -> dict[str, dict[str, Action]]:
    """Every class and its actions (the modules of `catalog.classes` register
    themselves when the package is imported, as the API and server do)."""
    return REGISTRY


def actions_of(obj: EnvironmentObject) -> list[Action]:
    return list(classes().get(obj["?"]["type"], {}).values())


def find_action(objects: dict[ObjectId, EnvironmentObject], action_id: str) -> tuple[str, Action]:
    """The object id and action that `<objectId>_<method>` names."""
    object_id, sep, method = action_id.rpartition("_")
    if not sep or not object_id:
        raise NotFound("action", action_id)
    obj = objects.get(ObjectId(object_id))
    if obj is None:
        raise NotFound("object", object_id)
    found = classes().get(obj["?"]["type"], {}).get(method)
    if found is None:
        raise ActionNotFound(object_id, method)
    return object_id, found


def check_arguments(spec: Action, args: Json) -> JsonObject:
    validate_against(spec.schema, args, what=f"arguments of {spec.method}")
    assert isinstance(args, dict)
    return args


def count_schema(title: str, maximum: int) -> JsonObject:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["count"],
        "properties": {
            "count": {"type": "integer", "minimum": 1, "maximum": maximum, "title": title}
        },
    }


def with_actions(obj: EnvironmentObject) -> EnvironmentObject:
    """The object as shown to users: `_actions` in its header, Murano style,
    and secret values hidden (they leave Marina only in an export's Secrets)."""
    shown = obj.copy()
    if is_pod(shown):
        spec = shown["spec"]
        shown["spec"] = {
            **spec,
            "containers": [
                {**c, "secrets": dict.fromkeys(c["secrets"], MASKED)} if c.get("secrets") else c
                for c in spec.get("containers", [])
            ],
        }
    described = [spec.describe(obj["?"]["id"]) for spec in actions_of(obj)]
    shown["?"] = {**obj["?"], "_actions": {info["id"]: info for info in described}}
    return shown


def shown_task(task: TaskDoc) -> TaskDoc:
    """A task as users see it: the arguments its action declares `writeOnly`
    (secret values) hidden, an object's keys kept."""
    hidden = set()
    for actions in classes().values():
        declared = (
            actions[task["method"]].schema.get("properties") if task["method"] in actions else None
        )
        if isinstance(declared, dict):
            hidden |= {n for n, p in declared.items() if isinstance(p, dict) and p.get("writeOnly")}
    if not hidden & task["args"].keys():
        return task
    args: JsonObject = {
        k: (dict.fromkeys(v, MASKED) if isinstance(v, dict) else MASKED) if k in hidden else v
        for k, v in task["args"].items()
    }
    return {**task, "args": args}
