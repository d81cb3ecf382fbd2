"""The HTTP client every command but `import --dry-run` talks to the API with.

Also where the API address and token are found (--api/--token, then
MARINA_API and MARINA_TOKEN, then what `marina up` saved in its state
directory) and the little the commands share: following a task, naming an
action by `objectName:method`, JSON output, KEY=VALUE arguments.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict, TypeVar

from catalog.documents import (
    EnvironmentObject,
    EnvironmentSummary,
    Json,
    JsonObject,
    JsonSchema,
    ListedAction,
    ShownEnvironment,
    TaskDoc,
)
from catalog.ids import ObjectId


class CliError(Exception):
    """A message for the user; the command exits with `code` (1)."""

    def __init__(self, message: str, *, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Client:
    def __init__(self, api: str, token: str) -> None:
        # `marina up` prints the API as .../v1; every path here starts with /v1.
        self.api = api.rstrip("/").removesuffix("/v1").rstrip("/")
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
            raise CliError(_http_message(exc, method, path)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(f"cannot reach the Marina API at {self.api}: {exc}") from None

    def stream(self, path: str) -> Any:
        for line in self.raw_stream(path):
            if line.strip():
                yield json.loads(line)

    def raw_stream(self, path: str) -> Iterator[bytes]:
        """The response's lines as they come (an error answer becomes a CliError)."""
        request = urllib.request.Request(
            self.api + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=3660) as reply:
                yield from reply
        except urllib.error.HTTPError as exc:
            raise CliError(_http_message(exc, "GET", path)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(f"the stream from {self.api} broke: {exc}") from None


def _http_message(exc: urllib.error.HTTPError, method: str, path: str) -> str:
    try:
        error = json.loads(exc.read())
    except ValueError:
        return f"{method} {path}: HTTP {exc.code}"
    if not isinstance(error, dict):
        return f"{method} {path}: HTTP {exc.code}"
    message = str(error.get("message", f"HTTP {exc.code}"))
    problems = [f"{p['field']}: {p['rule']}" for p in error.get("problems", [])]
    if problems and problems[0] in message:
        # The message lists the problems too: one line each, said once.
        message = message[: message.index(problems[0])].rstrip(": ") + ":"
    return "\n  - ".join([message, *problems])


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


def emit(data: Any, fmt: str, table: Callable[[], list[list[str]]]) -> None:
    """A listing as JSON or YAML (the API's own fields, for scripts) or a table."""
    if fmt == "json":
        print_json(data)
    elif fmt == "yaml":
        import yaml

        print(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False), end="")
    else:
        print_table(table())


def print_table(rows: list[list[str]]) -> None:
    if len(rows) <= 1:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def not_found(kind: str, ref: str, names: list[str], where: str = "") -> CliError:
    """`kind 'ref' not found`, with the closest name when one is close."""
    close = difflib.get_close_matches(ref, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return CliError(f"{kind} {ref!r} not found{where}{hint}")


Item = TypeVar("Item", bound=Mapping[str, Any])


def pick(items: Sequence[Item], ref: str, kind: str, *, where: str = "") -> Item:
    """The item whose id or name is `ref` (items have `id` and `name`)."""
    for item in items:
        if item["id"] == ref:
            return item
    named = [item for item in items if item["name"] == ref]
    if len(named) > 1:
        ids = ", ".join(item["id"] for item in named)
        raise CliError(f"several {kind}s are named {ref!r}{where} ({ids}): use an id")
    if not named:
        raise not_found(kind, ref, sorted({str(i["name"]) for i in items}), where)
    return named[0]


def environments(client: Client) -> list[EnvironmentSummary]:
    found: list[EnvironmentSummary] = []
    marker = ""
    while True:
        page = client.call("GET", "/v1/environments?limit=1000" + marker)
        found += page["environments"]
        if not page.get("next_marker"):
            return found
        marker = "&marker=" + urllib.parse.quote(page["next_marker"])


def resolve_env(client: Client, ref: str) -> str:
    """An environment's id from its id or its name."""
    return str(pick(environments(client), ref, "environment")["id"])


class ObjectRef(TypedDict):
    """An object of an environment, by the names the CLI takes."""

    id: ObjectId
    name: str
    type: str
    object: EnvironmentObject


def objects_of(env_doc: ShownEnvironment, kinds: tuple[str, ...] | None = None) -> list[ObjectRef]:
    """The environment's objects as {id, name, type, object}."""
    return [
        {"id": o["?"]["id"], "name": o["?"]["name"], "type": o["?"]["type"], "object": o}
        for o in env_doc["objects"]
        if kinds is None or o["?"]["type"] in kinds
    ]


SCALAR = {"string", "integer", "number", "boolean", "array", "object", "null"}


def typed_value(key: str, text: str, schema: JsonSchema | None) -> Json:
    """`text` as the type the schema gives `key` (a string when it says none)."""
    kinds = (schema or {}).get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    if not kinds:
        return text if schema is not None else _guess(text)
    for kind in kinds:
        try:
            if kind == "string":
                return text
            if kind == "integer":
                return int(text)
            if kind == "number":
                value = float(text)
                return int(value) if value.is_integer() and "." not in text else value
            if kind == "boolean" and text.lower() in ("true", "false", "yes", "no", "1", "0"):
                return text.lower() in ("true", "yes", "1")
            if kind == "null" and text in ("null", ""):
                return None
            if kind in ("array", "object"):
                value = json.loads(text)
                if isinstance(value, list if kind == "array" else dict):
                    return value
        except ValueError:
            continue
    raise CliError(f"--set {key}={text}: {key} must be {' or '.join(kinds)}")


def _guess(text: str) -> Json:
    """A key the schema does not describe: JSON when it parses, else the text
    (the server refuses unknown keys, naming them)."""
    try:
        value: Json = json.loads(text)
    except ValueError:
        return text
    return value


def key_values(pairs: list[str], what: str, schema: JsonSchema | None = None) -> JsonObject:
    """KEY=VALUE pairs typed from the JSON schema's properties; dotted keys
    (`a.b=1`) set nested objects, as Helm's --set does."""
    values: JsonObject = {}
    props = (schema or {}).get("properties", {}) if schema is not None else None
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{what} {pair!r} must be KEY=VALUE")
        path = key.split(".")
        target, node = values, props
        for part in path[:-1]:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                raise CliError(f"{what} {pair!r}: {part} is not an object")
            target = child
            node = ((node or {}).get(part) or {}).get("properties") if node is not None else None
        leaf_schema = (node or {}).get(path[-1]) if node is not None else None
        if node is not None and leaf_schema is None:
            leaf_schema = {}  # unknown to the schema: kept as text, the server names it
        target[path[-1]] = typed_value(key, value, leaf_schema)
    return values


def read_values(path: str | None) -> JsonObject:
    """--values FILE.yaml: a mapping of arguments or properties."""
    if not path:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CliError(f"{path} must hold a mapping of names to values")
    values: JsonObject = data
    return values


def merge(base: JsonObject, extra: JsonObject) -> JsonObject:
    """Helm's order: later values win, mappings merge key by key."""
    out = dict(base)
    for key, value in extra.items():
        current = out.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            out[key] = merge(current, value)
        else:
            out[key] = value
    return out


def list_actions(client: Client, env: str) -> list[ListedAction]:
    found: list[ListedAction] = client.call("GET", f"/v1/environments/{env}/actions")["actions"]
    return found


def find_action(client: Client, env: str, action: str) -> ListedAction:
    """An action by id, or by `objectName:method` (the object by name or id)."""
    actions = list_actions(client, env)
    for found in actions:
        if found["id"] == action:
            return found
    if ":" not in action:
        raise not_found(
            "action",
            action,
            [f"{a['objectName']}:{a['name']}" for a in actions],
            " (id or object:method)",
        )
    name, _, method = action.partition(":")
    matches = [a for a in actions if name in (a["objectName"], a["object"]) and a["name"] == method]
    if len(matches) > 1:
        raise CliError(f"several objects are named {name!r}: name the action by its id")
    if not matches:
        raise not_found("action", action, [f"{a['objectName']}:{a['name']}" for a in actions])
    return matches[0]


def resolve_action(client: Client, env: str, action: str) -> str:
    """An action id, or `objectName:method` looked up in the environment."""
    return str(find_action(client, env, action)["id"])


def wait_for_task(client: Client, task_id: str, *, quiet: bool = False) -> TaskDoc:
    """Follow the task's log until it finishes; its final state. Ctrl-C stops
    following only: the task goes on, and the message says how to follow it.

    On a terminal a progress bar stays under the log lines, with the current
    step and the time taken, redrawn every quarter second."""
    started = time.monotonic()
    bar = ProgressBar(started) if not quiet and sys.stderr.isatty() else None
    steps = 0
    # An error line is held back until the end: when it is the task's error,
    # the caller says it once ("failed: ...").
    held: tuple[str, str] | None = None

    def show(line: str) -> None:
        if bar is not None:
            bar.above(line)
        else:
            print(line, flush=True)

    try:
        if bar is not None:
            bar.start()
        for entry in client.stream(f"/v1/tasks/{task_id}/log?follow=1"):
            if "state" in entry:
                break
            steps += 1
            if quiet:
                continue
            if held is not None:
                show(held[1])
                held = None
            stamp = time.strftime("%H:%M:%S", time.localtime(entry["time"]))
            line = f"[{steps:>3}] {stamp} {entry['level']:<7} {entry['message']}"
            if entry["level"] == "error":
                held = (entry["message"], line)
            else:
                show(line)
            if bar is not None:
                bar.step(steps, entry["message"])
    except KeyboardInterrupt:
        raise CliError(
            f"stopped following; task {task_id} goes on. Follow it again with "
            f"`marina task {task_id} --wait`",
            code=130,
        ) from None
    finally:
        if bar is not None:
            bar.stop()
    task: TaskDoc = client.call("GET", f"/v1/tasks/{task_id}")
    if held is not None and not (task["state"] == "failed" and held[0] in (task["error"] or "")):
        print(held[1], flush=True)
    if not quiet:
        print(f"task {task_id} {task['state']} after {time.monotonic() - started:.1f}s")
    return task


class ProgressBar:
    """A one-line progress display on standard error: a bar that moves with
    each step (a task does not know its number of steps ahead), the current
    step and the time taken. Log lines are printed above it."""

    WIDTH = 20

    def __init__(self, started: float) -> None:
        self.started = started
        self.steps = 0
        self.current = "waiting for the first step"
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.ticker = threading.Thread(target=self._tick, daemon=True)

    def start(self) -> None:
        self.ticker.start()

    def step(self, steps: int, message: str) -> None:
        with self.lock:
            self.steps, self.current = steps, message
        self.draw()

    def above(self, line: str) -> None:
        """Print a log line, the bar redrawn under it."""
        with self.lock:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            print(line, flush=True)
        self.draw()

    def draw(self) -> None:
        with self.lock:
            if self.done.is_set():
                return
            filled = self.steps % (self.WIDTH + 1)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            elapsed = time.monotonic() - self.started
            columns = shutil.get_terminal_size((80, 24)).columns
            text = f"[{bar}] step {self.steps}, {elapsed:.0f}s: {self.current}"
            sys.stderr.write("\r\x1b[K" + text[: max(columns - 1, 10)])
            sys.stderr.flush()

    def _tick(self) -> None:
        while not self.done.wait(0.25):
            self.draw()

    def stop(self) -> None:
        self.done.set()
        if self.ticker.is_alive():
            self.ticker.join()
        with self.lock:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
