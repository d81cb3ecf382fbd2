"""What every handler shares: the store, who is calling, JSON replies, request
bodies read within their limits, and Murano's paging.

The route modules import these so that each rule (the body limit, the token
in an event stream's query) lives in one place.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from catalog import environments as envs
from catalog.api.serving import LIMITS
from catalog.auth import Identity, authenticate
from catalog.classes.registry import with_actions
from catalog.errors import Problem, RequestTimeout, TooLarge, ValidationFailed
from catalog.store import Store
from catalog.validation import parse_json

MAX_BODY = 2 * 1024 * 1024
PAGE_DEFAULT = 100
PAGE_MAX = 1000
STORE: web.AppKey[Store] = web.AppKey("store", Store)


def reply_json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def store_of(request: web.Request) -> Store:
    return request.app[STORE]


def present_environment(doc: dict[str, Any]) -> dict[str, Any]:
    """An environment as users see it: each object with its actions, secrets hidden."""
    shown = envs.show(doc)
    return {**shown, "objects": [with_actions(o) for o in shown["objects"]]}


async def identify(request: web.Request) -> Identity:
    header = request.headers.get("Authorization")
    # EventSource cannot send headers: event streams also take ?access_token=.
    if header is None and request.path.endswith("/events"):
        token = request.query.get("access_token")
        header = f"Bearer {token}" if token else None
    return await authenticate(store_of(request), header)


async def read_body(request: web.Request, *, what: str, limit: int = MAX_BODY) -> bytes:
    """The whole body, refused once over `limit` or when it trickles in too slowly."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(what, limit)
    try:
        async with asyncio.timeout(LIMITS.body_timeout):
            data = await request.content.read(limit + 1)
            while len(data) <= limit and not request.content.at_eof():
                more = await request.content.read(limit + 1 - len(data))
                if not more:
                    break
                data += more
    except TimeoutError:
        raise RequestTimeout(what, LIMITS.body_timeout) from None
    if len(data) > limit:
        raise TooLarge(what, limit)
    return data


async def read_json(request: web.Request) -> Any:
    raw = await read_body(request, what="body")
    if not raw:
        return {}
    return parse_json(raw, what="body")


def read_paging(request: web.Request) -> tuple[int, str | None]:
    """Murano's paging: at most `limit` items, those after `marker` in the list's order."""
    raw = request.query.get("limit", str(PAGE_DEFAULT))
    limit = int(raw) if raw.isdigit() and len(raw) <= 6 else 0
    if not 1 <= limit <= PAGE_MAX:
        raise ValidationFailed(
            "query", [Problem("limit", f"must be an integer from 1 to {PAGE_MAX}", raw)]
        )
    return limit, request.query.get("marker")
