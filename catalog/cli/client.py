"""The HTTP client every command but `import --dry-run` talks to the API with.

Also where the API address and token are found (--api/--token, then
MARINA_API and MARINA_TOKEN, then what `marina up` saved in its state
directory) and the little the commands share: following a task, naming an
action by `objectName:method`, JSON output, KEY=VALUE arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class CliError(Exception):
    """A message for the user; the command exits 1."""


class Client:
    def __init__(self, api: str, token: str) -> None:
        self.api = api.rstrip("/")
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> Any:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(
            self.api + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                payload = reply.read()
                if reply.headers.get_content_type() == "application/json":
                    return json.loads(payload)
                return payload
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())
            except ValueError:
                raise CliError(f"{method} {path}: HTTP {exc.code}") from None
            message = error.get("message", f"HTTP {exc.code}")
            for problem in error.get("problems", []):
                message += f"\n  - {problem['field']}: {problem['rule']}"
            raise CliError(message) from None
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(f"cannot reach the Marina API at {self.api}: {exc}") from None

    def stream(self, path: str) -> Any:
        request = urllib.request.Request(
            self.api + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=660) as reply:
                for line in reply:
                    if line.strip():
                        yield json.loads(line)
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(f"log stream broke: {exc}") from None


def connect(args: argparse.Namespace) -> Client:
    state = Path(args.state_dir)
    api = args.api or os.environ.get("MARINA_API")
    token = args.token or os.environ.get("MARINA_TOKEN")
    if not api and (state / "api-url").exists():
        api = (state / "api-url").read_text().strip()
    if not token and (state / "admin-token").exists():
        token = (state / "admin-token").read_text().strip()
    if not api or not token:
        raise CliError("no API address or token: run `marina up`, or pass --api and --token")
    return Client(api, token)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def key_values(pairs: list[str], what: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{what} {pair!r} must be KEY=VALUE")
        try:
            values[key] = json.loads(value)
        except ValueError:
            values[key] = value
    return values


def resolve_action(client: Client, env: str, action: str) -> str:
    """An action id, or `objectName:method` looked up in the environment."""
    if ":" not in action:
        return action
    name, _, method = action.partition(":")
    actions = client.call("GET", f"/v1/environments/{env}/actions")["actions"]
    found = [a for a in actions if a["objectName"] == name and a["name"] == method]
    if not found:
        raise CliError(f"no object named {name!r} with action {method!r} in {env}")
    return str(found[0]["id"])


def wait_for_task(client: Client, task_id: str, *, quiet: bool = False) -> dict[str, Any]:
    """Follow the task's log until it finishes; its final state."""
    spinner = "|/-\\"
    started = time.monotonic()
    for i, entry in enumerate(client.stream(f"/v1/tasks/{task_id}/log?follow=1")):
        if "state" in entry:
            break
        if not quiet:
            stamp = time.strftime("%H:%M:%S", time.localtime(entry["time"]))
            print(f"\r{spinner[i % 4]} {stamp} {entry['level']:<7} {entry['message']}", flush=True)
    task: dict[str, Any] = client.call("GET", f"/v1/tasks/{task_id}")
    if not quiet:
        print(f"task {task_id} {task['state']} after {time.monotonic() - started:.1f}s")
    return task
