"""`marina package` and `marina import`: the package catalog, and packages
translated here from docker-compose files, Panamax templates or ZApps."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from pathlib import Path

import yaml

from catalog.cli.client import CliError, connect, emit, print_json


def cmd_package(args: argparse.Namespace) -> int:
    if args.package_command in ("init", "lint"):
        return _package_offline(args)
    client = connect(args)
    if args.package_command == "list":
        found = client.call("GET", "/v1/catalog/packages?limit=1000")["packages"]
        emit(
            found,
            args.output,
            lambda: (
                [["NAME", "VERSION", "DESCRIPTION"]]
                + [[p["name"], p["version"], p["description"][:60]] for p in found]
            ),
        )
        return 0
    path = Path(args.file)
    try:
        data = _zipped(path) if path.is_dir() else path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    query = urllib.parse.urlencode(
        {"filename": path.name, "allow_downgrade": "true" if args.allow_downgrade else "false"}
    )
    print_json(
        client.call(
            "POST", f"/v1/catalog/packages?{query}", raw=data, content_type="application/zip"
        )
    )
    return 0


def _package_offline(args: argparse.Namespace) -> int:
    """`init` and `lint`: no server; lint runs the upload's own checks."""
    from catalog.errors import ValidationFailed
    from catalog.scaffold import init_package, lint

    if args.package_command == "init":
        folder = Path(args.dir or args.name)
        try:
            written = init_package(args.name, folder)
        except ValidationFailed as exc:
            raise CliError("\n".join(str(p) for p in exc.problems)) from None
        print(f"wrote {', '.join(str(p) for p in written)}")
        print(f"next: marina package lint {folder}, then marina package upload {folder}")
        return 0
    path = Path(args.path)
    problems = lint(path)
    for problem in problems:
        shown = f" (given: {problem.value!r})" if problem.value is not None else ""
        print(f"{path}: {problem}{shown}")
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) > 1 else ''}", file=sys.stderr)
        return 1
    print(f"{path}: no problems")
    return 0


def _zipped(folder: Path) -> bytes:
    """A folder as the zip an upload takes (links are left for the server to refuse)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def cmd_import(args: argparse.Namespace) -> int:
    """Translate locally (env_file and bind mounts are read beside the file),
    then upload the package; --dry-run and --strict need no server."""
    # The translators bring the package store (and the etcd client) with them:
    # loaded for this command only, so the others start without them.
    from catalog.translators import Source, SourceRejected, translate
    from catalog.translators.building import package_zip

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
    client = connect(args)
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
