"""`marina action` and `marina task`: running actions, and the tasks they become."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from pathlib import Path

from catalog.cli.client import (
    CliError,
    connect,
    key_values,
    print_json,
    resolve_action,
    wait_for_task,
)


def cmd_action(args: argparse.Namespace) -> int:
    client = connect(args)
    if args.action_command == "list":
        for action in client.call("GET", f"/v1/environments/{args.env}/actions")["actions"]:
            print(f"{action['id']}  {action['objectName']}:{action['name']}  - {action['title']}")
        return 0
    arguments = json.loads(args.args) if args.args else {}
    arguments.update(key_values(args.arg or [], "--arg"))
    action_id = resolve_action(client, args.env, args.action)
    task = client.call("POST", f"/v1/environments/{args.env}/actions/{action_id}", arguments)
    task_id = task["task_id"]
    if not args.wait:
        print(task_id)
        return 0
    final = wait_for_task(client, task_id)
    if final["state"] == "failed":
        print(f"failed: {final['error']}", file=sys.stderr)
        return 1
    print(f"{final['outcome']}: {final['reason']}" if final["reason"] else final["outcome"])
    for name in final.get("files", []):
        print(f"file: {name}  (marina task download {task_id} {name})")
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
    task = client.call("GET", f"/v1/tasks/{args.task}")
    print_json(task)
    for line in client.call("GET", f"/v1/tasks/{args.task}/log")["log"]:
        stamp = time.strftime("%H:%M:%S", time.localtime(line["time"]))
        print(f"{stamp} {line['level']:<7} {line['message']}")
    return 0
