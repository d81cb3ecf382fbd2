"""`marina env` and `marina app`: environments, and the applications added to them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TypedDict

from catalog.cli.client import (
    Client,
    CliError,
    connect,
    emit,
    environments,
    key_values,
    merge,
    not_found,
    objects_of,
    pick,
    print_json,
    read_values,
    resolve_env,
    wait_for_task,
)
from catalog.documents import JsonObject, JsonSchema, PackageSummary


def cmd_env(args: argparse.Namespace) -> int:
    client = connect(args)
    if args.env_command == "create":
        print_json(client.call("POST", "/v1/environments", {"name": args.name}))
    elif args.env_command == "list":
        found = environments(client)
        emit(
            found,
            args.output,
            lambda: [["ID", "STATUS", "NAME"]] + [[e["id"], e["status"], e["name"]] for e in found],
        )
    elif args.env_command == "import":
        snapshot = _read_snapshot(Path(args.file))
        body = {"snapshot": snapshot, "name": args.name} if args.name else snapshot
        env = client.call("POST", "/v1/environments/import", body)
        print(
            f"{env['id']}  {env['name']}  ({len(env['objects'])} objects; deploy its "
            "cluster and applications to run them)"
        )
    elif args.env_command == "show":
        shown = client.call("GET", f"/v1/environments/{resolve_env(client, args.env)}")
        emit(shown, "yaml" if args.output == "yaml" else "json", lambda: [])
    elif args.env_command == "delete":
        env_id = resolve_env(client, args.env)
        task = client.call("DELETE", f"/v1/environments/{env_id}")["task_id"]
        if args.wait:
            final = wait_for_task(client, task)
            if final["state"] == "failed":
                print(f"failed: {final['error']}", file=sys.stderr)
                return 1
            return 0
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


def package_of(client: Client, name: str) -> PackageSummary:
    listed: list[PackageSummary] = client.call("GET", "/v1/catalog/packages?limit=1000")["packages"]
    for package in listed:
        if package["name"] == name:
            return package
    raise not_found("package", name, [p["name"] for p in listed])


def cmd_app(args: argparse.Namespace) -> int:
    client = connect(args)
    env_id = resolve_env(client, args.env)
    if args.app_command == "list":
        return _list_apps(client, env_id, args.output)
    if args.app_command == "remove":
        return _remove(client, env_id, args)
    properties = json.loads(args.properties) if args.properties else {}
    if not isinstance(properties, dict):
        raise CliError("--properties must be a JSON object")
    package = package_of(client, args.package)
    schema = package.get("properties") or {}
    properties = merge(properties, read_values(args.values))
    properties = merge(properties, key_values(args.set or [], "--set", schema))
    if args.cluster:
        properties["cluster"] = args.cluster
    body: JsonObject = {"package": args.package, "properties": properties}
    if args.name:
        body["name"] = args.name
    if args.dry_run:
        # The server runs every check of a real add and answers what it would add.
        adds = client.call("POST", f"/v1/environments/{env_id}/services?dry_run=1", body)
        print_json(
            {
                "dry_run": True,
                "environment": env_id,
                **body,
                "adds": [
                    {
                        "type": o["?"]["type"],
                        "name": o["?"]["name"],
                        **{k: o[k] for k in ("cluster", "properties", "spec") if k in o},
                    }
                    for o in adds
                ],
            }
        )
        return 0
    objects = client.call("POST", f"/v1/environments/{env_id}/services", body)
    for obj in objects:
        print(f"{obj['?']['id']}  {obj['?']['type']:<22} {obj['?']['name']}")
    return 0


def schema_problems(schema: JsonSchema, value: Any) -> list[str]:
    """Every way `value` breaks the JSON schema, each naming the field."""
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    ]


class ObjectRow(TypedDict):
    """An object as `marina app list` shows it."""

    id: str
    name: str
    type: str
    package: str | None
    state: str


def _list_apps(client: Client, env_id: str, fmt: str) -> int:
    env = client.call("GET", f"/v1/environments/{env_id}")
    listed: list[ObjectRow] = [
        {
            "id": o["id"],
            "name": o["name"],
            "type": o["type"],
            "package": o["object"]["?"].get("package"),
            "state": o["object"]["state"],
        }
        for o in objects_of(env)
        if o["type"] not in ("MasterNode", "MinionNode", "GatewayNode")
    ]
    emit(
        listed,
        fmt,
        lambda: (
            [["ID", "TYPE", "STATE", "NAME"]]
            + [[a["id"], a["type"], str(a["state"]), a["name"]] for a in listed]
        ),
    )
    return 0


def _remove(client: Client, env_id: str, args: argparse.Namespace) -> int:
    env = client.call("GET", f"/v1/environments/{env_id}")
    removable = [
        o for o in objects_of(env) if o["type"] not in ("MasterNode", "MinionNode", "GatewayNode")
    ]
    target = pick(removable, args.app, "application", where=f" in {env['name']}")
    if args.dry_run:
        shown = {"id": target["id"], "name": target["name"], "type": target["type"]}
        print_json({"dry_run": True, "remove": shown})
        return 0
    task = client.call("DELETE", f"/v1/environments/{env_id}/objects/{target['id']}")["task_id"]
    if not args.wait:
        print(task)
        return 0
    final = wait_for_task(client, task)
    if final["state"] == "failed":
        print(f"failed: {final['error']}", file=sys.stderr)
        return 1
    return 0
