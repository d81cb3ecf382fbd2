"""`marina actions`, `marina action`, `marina tasks` and `marina task`:
what can be run, running it, and the tasks runs become."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from pathlib import Path
from typing import TypedDict

from catalog.cli.client import (
    Client,
    CliError,
    connect,
    emit,
    environments,
    find_action,
    key_values,
    list_actions,
    merge,
    print_json,
    read_values,
    resolve_env,
    wait_for_task,
)
from catalog.documents import Json, JsonObject, JsonSchema, ListedAction, TaskDoc


class Argument(TypedDict):
    """An action's argument, from its schema."""

    name: str
    type: str | list[str]
    default: Json
    required: bool
    description: str


class ActionRow(TypedDict):
    """An action as `marina actions` lists it."""

    id: str
    action: str
    object: str
    objectName: str
    objectType: str
    method: str
    title: str
    destructive: bool
    arguments: list[Argument]


class TaskRow(TypedDict):
    """A task as `marina tasks` lists it."""

    id: str
    environment: str
    action: str
    method: str | None
    state: str
    outcome: str | None
    reason: str | None
    error: str | None
    created: float | None


def describe_arguments(schema: JsonSchema) -> list[Argument]:
    """Each argument of an action's schema: name, type, default, required."""
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "type": prop.get("type", "any") if isinstance(prop, dict) else "any",
            "default": prop.get("default") if isinstance(prop, dict) else None,
            "required": name in required,
            "description": prop.get("description", "") if isinstance(prop, dict) else "",
        }
        for name, prop in (schema.get("properties") or {}).items()
    ]


def _argument_text(arg: Argument) -> str:
    kind = arg["type"] if isinstance(arg["type"], str) else "|".join(arg["type"])
    if arg["required"]:
        return f"{arg['name']}:{kind} (required)"
    if arg["default"] is not None:
        return f"{arg['name']}:{kind}={json.dumps(arg['default'])}"
    return f"{arg['name']}:{kind}"


def cmd_actions(args: argparse.Namespace) -> int:
    """`marina actions ENV` (and `marina action list ENV`)."""
    client = connect(args)
    env_id = resolve_env(client, args.env)
    found: list[ActionRow] = [
        {
            "id": a["id"],
            "action": f"{a['objectName']}:{a['name']}",
            "object": a["object"],
            "objectName": a["objectName"],
            "objectType": a["objectType"],
            "method": a["name"],
            "title": a["title"],
            "destructive": a.get("destructive", False),
            "arguments": describe_arguments(a.get("schema") or {}),
        }
        for a in list_actions(client, env_id)
    ]
    emit(
        found,
        args.output,
        lambda: (
            [["ACTION", "ARGUMENTS", "DESTRUCTIVE", "TITLE", "ID"]]
            + [
                [
                    a["action"],
                    ", ".join(_argument_text(x) for x in a["arguments"]) or "-",
                    "yes" if a["destructive"] else "no",
                    a["title"],
                    a["id"],
                ]
                for a in found
            ]
        ),
    )
    return 0


def cmd_action(args: argparse.Namespace) -> int:
    if args.action_command == "list":
        return cmd_actions(args)
    client = connect(args)
    env_id = resolve_env(client, args.env)
    action = find_action(client, env_id, args.action)
    schema = action.get("schema") or {}
    arguments = json.loads(args.args) if args.args else {}
    if not isinstance(arguments, dict):
        raise CliError("--args must be a JSON object")
    arguments = merge(arguments, read_values(args.values))
    arguments = merge(
        arguments, key_values([*(args.arg or []), *(args.set or [])], "--set", schema)
    )
    if args.dry_run:
        return _dry_run(client, env_id, action, schema, arguments)
    task = client.call("POST", f"/v1/environments/{env_id}/actions/{action['id']}", arguments)
    task_id = task["task_id"]
    if not args.wait:
        print(task_id)
        return 0
    return _report(client, wait_for_task(client, task_id))


def _dry_run(
    client: Client, env_id: str, action: ListedAction, schema: JsonSchema, given: JsonObject
) -> int:
    """What the action would do: the checked arguments (defaults filled in) and its target."""
    from catalog.cli.environments import schema_problems

    defaults = {
        a["name"]: a["default"] for a in describe_arguments(schema) if a["default"] is not None
    }
    arguments = {**defaults, **given}
    problems = schema_problems(schema, arguments)
    env = client.call("GET", f"/v1/environments/{env_id}")
    target: JsonObject = next((o for o in env["objects"] if o["?"]["id"] == action["object"]), {})
    shown = {k: target[k] for k in ("state", "replicas", "properties") if k in target}
    print_json(
        {
            "dry_run": True,
            "action": f"{action['objectName']}:{action['name']}",
            "title": action["title"],
            "destructive": action.get("destructive", False),
            "target": {
                "id": action["object"],
                "name": action["objectName"],
                "type": action["objectType"],
                **shown,
            },
            "arguments": _hidden(schema, arguments),
            "problems": problems,
        }
    )
    if problems:
        raise CliError(f"{len(problems)} problems; the action would be refused")
    return 0


def _hidden(schema: JsonSchema, arguments: JsonObject) -> JsonObject:
    """The arguments with those the schema marks `writeOnly` (secret values)
    masked, as the server shows them in a task."""
    props = schema.get("properties", {})
    return {
        k: (dict.fromkeys(v, "******") if isinstance(v, dict) else "******")
        if isinstance(props.get(k), dict) and props[k].get("writeOnly")
        else v
        for k, v in arguments.items()
    }


def _report(client: Client, final: TaskDoc) -> int:
    if final["state"] == "failed":
        print(f"failed: {final['error']}", file=sys.stderr)
        return 1
    print(f"{final['outcome']}: {final['reason']}" if final["reason"] else final["outcome"])
    for name in final.get("files", []):
        print(f"file: {name}  (marina task download {final['id']} {name})")
    return 0


TASK_FIELDS = ("id", "environment", "action", "state", "outcome", "reason", "error", "created")


def cmd_tasks(args: argparse.Namespace) -> int:
    """`marina tasks [ENV]`: the latest tasks of one environment, or of each."""
    client = connect(args)
    envs = environments(client)
    if args.env:
        env_id = resolve_env(client, args.env)
        envs = [e for e in envs if e["id"] == env_id]
    found: list[TaskRow] = []
    for env in envs:
        for task in client.call("GET", f"/v1/environments/{env['id']}/tasks")["tasks"]:
            found.append(
                {
                    "id": task["id"],
                    "environment": env["name"],
                    "action": f"{task.get('object')}_{task.get('method')}",
                    "method": task.get("method"),
                    "state": task["state"],
                    "outcome": task.get("outcome"),
                    "reason": task.get("reason"),
                    "error": task.get("error"),
                    "created": task.get("created"),
                }
            )
    found.sort(key=lambda t: t["created"] or 0, reverse=True)
    emit(
        found,
        args.output,
        lambda: (
            [["ID", "ENVIRONMENT", "METHOD", "STATE", "CREATED", "RESULT"]]
            + [
                [
                    t["id"],
                    t["environment"],
                    str(t["method"]),
                    t["state"],
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t["created"] or 0)),
                    (t["error"] or t["reason"] or t["outcome"] or "")[:60],
                ]
                for t in found
            ]
        ),
    )
    return 0


def cmd_task(args: argparse.Namespace) -> int:
    client = connect(args)
    if args.task_command == "download":
        task = client.call("GET", f"/v1/tasks/{args.task}")
        names = task.get("files", [])
        name = args.name or (names[0] if len(names) == 1 else None)
        if name is None:
            raise CliError(
                f"task {args.task} has files {names}; name one"
                if names
                else f"task {args.task} has no files"
            )
        data = client.call("GET", f"/v1/tasks/{args.task}/files/{urllib.parse.quote(name)}")
        target = Path(args.output or Path(name).name)
        try:
            target.write_bytes(data)
        except OSError as exc:
            raise CliError(f"cannot write {target}: {exc.strerror}") from None
        print(f"{target} ({len(data)} bytes)")
        return 0
    task = client.call("GET", f"/v1/tasks/{urllib.parse.quote(args.task)}")
    if getattr(args, "wait", False) and task["state"] in ("queued", "running"):
        return _report(client, wait_for_task(client, task["id"]))
    if args.output in ("json", "yaml"):
        task["log"] = client.call("GET", f"/v1/tasks/{task['id']}/log")["log"]
        emit(task, args.output, lambda: [])
        return 0
    print_json(task)
    for line in client.call("GET", f"/v1/tasks/{task['id']}/log")["log"]:
        stamp = time.strftime("%H:%M:%S", time.localtime(line["time"]))
        print(f"{stamp} {line['level']:<7} {line['message']}")
    return 0
