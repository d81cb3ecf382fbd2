"""Routes of the package catalog: listing, uploading a package, importing a
foreign description (docker-compose, Panamax, ZApp) as one. Changing the
catalog needs an admin token."""

from __future__ import annotations

from aiohttp import web

from catalog import quotas
from catalog.api.handling import identify, read_body, read_paging, reply_json, store_of
from catalog.errors import Problem, Unauthorized, ValidationFailed
from catalog.packages import list_packages, load_zip, save_package
from catalog.quotas import QUOTAS
from catalog.translators import import_package as translate_package


async def list_catalog_packages(request: web.Request) -> web.Response:
    await identify(request)
    limit, marker = read_paging(request)
    found = sorted(await list_packages(store_of(request)), key=lambda p: str(p["name"]))
    after = [p for p in found if marker is None or str(p["name"]) > marker]
    following = str(after[limit - 1]["name"]) if len(after) > limit else None
    return reply_json({"packages": after[:limit], "next_marker": following})


async def upload_package(request: web.Request) -> web.Response:
    who = await identify(request)
    if not who.admin:
        raise Unauthorized("uploading packages needs an admin token")
    allow = request.query.get("allow_downgrade", "false")
    if allow not in ("true", "false", "1", "0"):
        raise ValidationFailed(
            "query", [Problem("allow_downgrade", "must be true or false", allow)]
        )
    data = await read_body(request, what="package")
    package = load_zip(data, source=request.query.get("filename", "upload"))
    stored = {p["name"] for p in await list_packages(store_of(request))}
    if package.name not in stored:
        quotas.check("packages", QUOTAS.packages, used=len(stored))
    change = await save_package(store_of(request), package, allow_downgrade=allow in ("true", "1"))
    return reply_json({**package.summary(), **change}, 201)


async def import_package(request: web.Request) -> web.Response:
    who = await identify(request)
    if not who.admin:
        raise Unauthorized("importing packages needs an admin token")
    data = await read_body(request, what="file")
    flag = {"true", "1"}
    dry_run = request.query.get("dry_run", "") in flag
    result = await translate_package(
        store_of(request),
        data,
        filename=request.query.get("filename", "upload"),
        fmt=request.query.get("format"),
        name=request.query.get("name"),
        dry_run=dry_run,
        replace=request.query.get("replace", "") in flag,
    )
    return reply_json(result, 200 if dry_run else 201)
