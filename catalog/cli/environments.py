"""`marina env` and `marina app`: environments, and the applications added to them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from catalog.cli.client import CliError, connect, key_values, print_json, wait_for_task


def cmd_env(args: argparse.Namespace) -> int:
    client = connect(args)
    if args.env_command == "create":
        print_json(client.call("POST", "/v1/environments", {"name": args.name}))
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
        print_json(client.call("GET", f"/v1/environments/{args.env}"))
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
    client = connect(args)
    properties = json.loads(args.properties) if args.properties else {}
    if not isinstance(properties, dict):
        raise CliError("--properties must be a JSON object")
    properties.update(key_values(args.set or [], "--set"))
    body: dict[str, Any] = {"package": args.package, "properties": properties}
    if args.name:
        body["name"] = args.name
    objects = client.call("POST", f"/v1/environments/{args.env}/services", body)
    for obj in objects:
        print(f"{obj['?']['id']}  {obj['?']['type']:<22} {obj['?']['name']}")
    return 0
