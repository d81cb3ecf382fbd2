"""`marina`: the command line. Everything but `up` and `demo` talks to the API.

The API address and token come from --api/--token, then MARINA_API and
MARINA_TOKEN, then what `marina up` saved in its state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from catalog.pki import TLSFiles
from catalog.server import (
    Server,
    ServerSettings,
    default_state_dir,
    serve_until_stopped,
    stop_on_signals,
)
from catalog.translators import Source, SourceRejected, translate
from catalog.translators.building import package_zip


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


def _client(args: argparse.Namespace) -> Client:
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


def _print(data: Any, args: argparse.Namespace) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def _key_values(pairs: list[str], what: str) -> dict[str, Any]:
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


def _resolve_action(client: Client, env: str, action: str) -> str:
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


def cmd_env(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.env_command == "create":
        _print(client.call("POST", "/v1/environments", {"name": args.name}), args)
    elif args.env_command == "list":
        for env in client.call("GET", "/v1/environments")["environments"]:
            print(f"{env['id']}  {env['status']:<9} {env['name']}")
    elif args.env_command == "import":
        snapshot = _read_snapshot(Path(args.file))
        body = {"snapshot": snapshot, "name": args.name} if args.name else snapshot
        env = client.call("POST", "/v1/environments/import", body)
        print(
            f"{env['id']}  {env['name']}  ({len(env['objects'])} objects; deploy its "
            "cluster and applications to run them)"
        )
    elif args.env_command == "show":
        _print(client.call("GET", f"/v1/environments/{args.env}"), args)
    elif args.env_command == "delete":
        task = client.call("DELETE", f"/v1/environments/{args.env}")["task_id"]
        if args.wait:
            return 0 if wait_for_task(client, task)["state"] == "succeeded" else 1
        print(task)
    return 0


def _read_snapshot(path: Path) -> Any:
    """marina.json, alone or inside an exportConfig archive."""
    import tarfile

    try:
        if path.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(path) as archive:
                member = archive.extractfile("marina.json")
                if member is None:
                    raise CliError(f"{path} has no marina.json")
                return json.loads(member.read())
        return json.loads(path.read_bytes())
    except (OSError, KeyError, tarfile.TarError) as exc:
        raise CliError(f"cannot read a snapshot from {path}: {exc}") from None
    except ValueError as exc:
        raise CliError(f"{path}: marina.json is not JSON: {exc}") from None


def cmd_app(args: argparse.Namespace) -> int:
    client = _client(args)
    properties = json.loads(args.properties) if args.properties else {}
    if not isinstance(properties, dict):
        raise CliError("--properties must be a JSON object")
    properties.update(_key_values(args.set or [], "--set"))
    body: dict[str, Any] = {"package": args.package, "properties": properties}
    if args.name:
        body["name"] = args.name
    objects = client.call("POST", f"/v1/environments/{args.env}/services", body)
    for obj in objects:
        print(f"{obj['?']['id']}  {obj['?']['type']:<22} {obj['?']['name']}")
    return 0


def cmd_action(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.action_command == "list":
        for action in client.call("GET", f"/v1/environments/{args.env}/actions")["actions"]:
            print(f"{action['id']}  {action['objectName']}:{action['name']}  - {action['title']}")
        return 0
    arguments = json.loads(args.args) if args.args else {}
    arguments.update(_key_values(args.arg or [], "--arg"))
    action_id = _resolve_action(client, args.env, args.action)
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
    client = _client(args)
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
    _print(task, args)
    for line in client.call("GET", f"/v1/tasks/{args.task}/log")["log"]:
        stamp = time.strftime("%H:%M:%S", time.localtime(line["time"]))
        print(f"{stamp} {line['level']:<7} {line['message']}")
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.package_command == "list":
        for package in client.call("GET", "/v1/catalog/packages")["packages"]:
            print(f"{package['name']:<24} {package['version']:<8} {package['description'][:60]}")
        return 0
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    query = urllib.parse.urlencode(
        {"filename": path.name, "allow_downgrade": "true" if args.allow_downgrade else "false"}
    )
    _print(
        client.call(
            "POST", f"/v1/catalog/packages?{query}", raw=data, content_type="application/zip"
        ),
        args,
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Translate locally (env_file and bind mounts are read beside the file),
    then upload the package; --dry-run and --strict need no server."""
    path = Path(args.path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    source = Source(path.name, data, path.resolve().parent)
    try:
        translation = translate(source, fmt=args.format, name=args.name)
    except SourceRejected as exc:
        raise CliError(
            f"{path} cannot be imported:\n" + "\n".join(f"  - {p}" for p in exc.problems)
        ) from None
    package, warnings = translation.package, translation.warnings
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    summary = (
        f"{package.name}: {translation.format}, {translation.services} services, "
        f"{len(warnings)} warnings"
    )
    if args.dry_run:
        print(yaml.safe_dump(package.manifest, sort_keys=False), end="")
        print(summary, file=sys.stderr)
        return 1 if args.strict and warnings else 0
    if args.strict and warnings:
        raise CliError(f"{summary}; --strict: nothing saved")
    client = _client(args)
    if not args.replace:
        listed = client.call("GET", "/v1/catalog/packages?limit=1000")["packages"]
        if any(p["name"] == package.name for p in listed):
            raise CliError(f"package {package.name!r} exists; use --name or --replace")
    query = urllib.parse.urlencode({"filename": f"{package.name}.zip", "allow_downgrade": "true"})
    client.call(
        "POST",
        f"/v1/catalog/packages?{query}",
        raw=package_zip(package),
        content_type="application/zip",
    )
    print(f"imported {summary}")
    return 0


def _settings(args: argparse.Namespace) -> ServerSettings:
    files = (args.etcd_cacert, args.etcd_cert, args.etcd_key)
    if any(files) and not all(files):
        raise CliError("--etcd-cacert, --etcd-cert and --etcd-key go together")
    if any(files) and not args.etcd:
        raise CliError("--etcd-cacert, --etcd-cert and --etcd-key are for an external --etcd")
    for option, path in zip(("--etcd-cacert", "--etcd-cert", "--etcd-key"), files, strict=True):
        if path and not Path(path).is_file():
            raise CliError(f"{option} {path}: no such file")
    return ServerSettings(
        state_dir=Path(args.state_dir),
        etcd=args.etcd,
        etcd_tls=TLSFiles(*(Path(f) for f in files)) if all(files) else None,
        host=args.host,
        port=args.port,
        etcd_port=args.etcd_port,
    )


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def run() -> None:
        stop = stop_on_signals()
        server = Server(settings)
        try:
            await server.start()
        except BaseException:
            await server.stop(stop_nodes=False)
            raise
        print(f"dashboard:    {settings.api_url}/")
        print(f"Marina API:   {settings.api_url}/v1  (OpenAPI: {settings.api_url}/v1/openapi.json)")
        print(f"admin token:  {server.token}")
        print(f"etcd:         {server.etcd_url}")
        print(
            "Ctrl-C stops Marina" + (" and the nodes it started." if server.etcd else "."),
            flush=True,
        )
        await serve_until_stopped(server, stop, stop_nodes=server.etcd is not None)

    asyncio.run(run())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the stack, deploy a cluster and the guestbook, print where they are."""
    settings = _settings(args)

    async def run() -> None:
        stop = stop_on_signals()
        server = Server(settings)
        created: list[str] = []
        try:
            await server.start()
            client = Client(settings.api_url, server.token)
            ready = threading.Event()
            failure: list[BaseException] = []

            def deploy() -> None:
                try:
                    deploy_demo(client, settings, server.token, created)
                except BaseException as exc:  # reported by the main thread
                    failure.append(exc)
                finally:
                    ready.set()

            threading.Thread(target=deploy, daemon=True).start()
            while not ready.is_set() and not stop.is_set():
                await asyncio.sleep(0.1)
            if failure and not stop.is_set():
                raise failure[0]
            await stop.wait()
            if created:
                print("removing the demo environment...", flush=True)
                with contextlib.suppress(CliError):
                    task = await asyncio.to_thread(
                        client.call, "DELETE", f"/v1/environments/{created[0]}"
                    )
                    await asyncio.to_thread(wait_for_task, client, task["task_id"], quiet=True)
        finally:
            await server.stop(stop_nodes=True)

    asyncio.run(run())
    return 0


def deploy_demo(client: Client, settings: ServerSettings, token: str, created: list[str]) -> None:
    env = client.call("POST", "/v1/environments", {"name": f"demo-{int(time.time())}"})
    env_id = env["id"]
    created.append(env_id)
    print(f"environment {env_id} created", flush=True)
    client.call(
        "POST",
        f"/v1/environments/{env_id}/services",
        {
            "package": "kubernetes-cluster",
            "properties": {"name": "demo", "nodeCount": 2, "gatewayCount": 1},
        },
    )
    client.call("POST", f"/v1/environments/{env_id}/services", {"package": "guestbook"})
    for action in ("demo:deploy", "Guestbook:deploy"):
        action_id = _resolve_action(client, env_id, action)
        task = client.call("POST", f"/v1/environments/{env_id}/actions/{action_id}", {})
        final = wait_for_task(client, task["task_id"])
        if final["state"] != "succeeded":
            raise CliError(f"{action} failed: {final['error']}")
    shown = client.call("GET", f"/v1/environments/{env_id}")
    urls = sorted({e for o in shown["objects"] for e in o.get("endpoints", []) or []})
    print()
    print(f"dashboard:       {settings.api_url}/")
    print(f"Marina API:      {settings.api_url}/v1")
    print(f"admin token:     {token}")
    print(f"environment:     {env_id}")
    for url in urls:
        print(f"application URL: {url}")
    print("Ctrl-C stops everything.", flush=True)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="marina", description="Marina application catalog")
    top.add_argument("--api", help="API URL (default: MARINA_API or the one `up` saved)")
    top.add_argument("--token", help="bearer token (default: MARINA_TOKEN or the admin token)")
    top.add_argument(
        "--state-dir", default=str(default_state_dir()), help="state directory of `marina up`"
    )
    top.add_argument("--verbose", action="store_true")
    sub = top.add_subparsers(dest="command", required=True)

    for name, helptext in (
        ("up", "run etcd, the API, the worker and the controller"),
        ("demo", "`up`, then deploy a cluster and the guestbook"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--etcd", help="use this etcd instead of starting one")
        p.add_argument("--etcd-cacert", help="CA bundle of an https:// --etcd")
        p.add_argument("--etcd-cert", help="client certificate for an https:// --etcd")
        p.add_argument("--etcd-key", help="client certificate's key for an https:// --etcd")
        p.add_argument("--etcd-port", type=int, default=23790)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8787)
        p.set_defaults(func=cmd_up if name == "up" else cmd_demo)

    env = sub.add_parser("env", help="environments")
    env_sub = env.add_subparsers(dest="env_command", required=True)
    env_sub.add_parser("list")
    env_sub.add_parser("create").add_argument("name")
    env_sub.add_parser("show").add_argument("env")
    imported = env_sub.add_parser("import", help="a new environment from an export archive")
    imported.add_argument("file", help="the exportConfig .tar.gz, or its marina.json")
    imported.add_argument("--name", help="name of the new environment")
    delete = env_sub.add_parser("delete")
    delete.add_argument("env")
    delete.add_argument("--wait", action="store_true")
    env.set_defaults(func=cmd_env)

    app = sub.add_parser("app", help="applications").add_subparsers(
        dest="app_command", required=True
    )
    add = app.add_parser("add", help="add an application from a package")
    add.add_argument("env")
    add.add_argument("package")
    add.add_argument("--name")
    add.add_argument("--properties", help="JSON object")
    add.add_argument("--set", action="append", metavar="KEY=VALUE")
    add.set_defaults(func=cmd_app)

    action = sub.add_parser("action", help="actions")
    action_sub = action.add_subparsers(dest="action_command", required=True)
    action_sub.add_parser("list").add_argument("env")
    run = action_sub.add_parser("run", help="run ACTION (an id or objectName:method)")
    run.add_argument("env")
    run.add_argument("action")
    run.add_argument("--arg", action="append", metavar="KEY=VALUE")
    run.add_argument("--args", help="JSON object")
    run.add_argument("--wait", action="store_true", help="follow the log until it finishes")
    action.set_defaults(func=cmd_action)

    task = sub.add_parser("task", help="tasks").add_subparsers(dest="task_command", required=True)
    task.add_parser("show").add_argument("task")
    task.choices["show"].set_defaults(func=cmd_task)
    fetch = task.add_parser("download", help="save a file a task attached")
    fetch.add_argument("task")
    fetch.add_argument("name", nargs="?", help="the file (needed when there are several)")
    fetch.add_argument("-o", "--output", help="where to save it")
    fetch.set_defaults(func=cmd_task)

    package = sub.add_parser("package", help="packages")
    package_sub = package.add_subparsers(dest="package_command", required=True)
    package_sub.add_parser("list")
    upload = package_sub.add_parser("upload")
    upload.add_argument("file")
    upload.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="replace a stored package even with an older version",
    )
    package.set_defaults(func=cmd_package)

    imports = sub.add_parser(
        "import", help="a package from a docker-compose file, Panamax template or ZApp"
    )
    imports.add_argument("path")
    imports.add_argument("--format", choices=("compose", "pmx", "zapp"))
    imports.add_argument("--name", help="the package name (default: from the file)")
    imports.add_argument(
        "--dry-run", action="store_true", help="print the manifest and warnings; save nothing"
    )
    imports.add_argument(
        "--strict", action="store_true", help="exit 1 (saving nothing) when there are warnings"
    )
    imports.add_argument("--replace", action="store_true", help="replace a package of that name")
    imports.set_defaults(func=cmd_import)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
        return code
    except CliError as exc:
        print(f"marina: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from catalog.errors import MarinaError

        if isinstance(exc, MarinaError):
            print(f"marina: {exc}", file=sys.stderr)
            return 1
        logging.getLogger("marina").debug("unexpected error", exc_info=True)
        print(
            f"marina: internal error ({type(exc).__name__}: {exc}); rerun with --verbose",
            file=sys.stderr,
        )
        return 2
