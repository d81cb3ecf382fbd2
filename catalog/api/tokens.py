"""The route that issues API tokens: an admin gives a project (or another
admin) its own bearer token."""

from __future__ import annotations

from aiohttp import web

from catalog.api.handling import identify, read_json, reply_json, store_of
from catalog.auth import issue_token
from catalog.errors import Unauthorized


async def create_token(request: web.Request) -> web.Response:
    who = await identify(request)
    if not who.admin:
        raise Unauthorized("issuing tokens needs an admin token")
    body = await read_json(request)
    project = body.get("project") if isinstance(body, dict) else None
    token = await issue_token(
        store_of(request),
        project=project,  # type: ignore[arg-type]
        admin=bool(isinstance(body, dict) and body.get("admin")),
    )
    return reply_json({"token": token, "project": project}, 201)
