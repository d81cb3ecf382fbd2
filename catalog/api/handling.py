"""What every handler shares: the store, who is calling, JSON replies, request
bodies read within their limits, and Murano's paging.

The route modules import these so that each rule (the body limit, the token
in an event stream's query) lives in one place.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections import OrderedDict
from typing import Any

from aiohttp import web

from catalog import environments as envs
from catalog import sessions
from catalog.api.serving import LIMITS
from catalog.auth import Identity, authenticate, identity_of, token_key
from catalog.classes.registry import with_actions
from catalog.documents import (
    EnvironmentDocument,
    EnvironmentObject,
    MuranoDocument,
    PresentedEnvironment,
)
from catalog.errors import (
    NotFound,
    Problem,
    RequestTimeout,
    TooLarge,
    Unauthorized,
    ValidationFailed,
)
from catalog.ids import ProjectId
from catalog.keystone import Keystone
from catalog.providers.base import Provider, single_master
from catalog.routing import environment_urls
from catalog.store import Store
from catalog.validation import parse_json

MAX_BODY = 2 * 1024 * 1024
PAGE_DEFAULT = 100
PAGE_MAX = 1000
STORE: web.AppKey[Store] = web.AppKey("store", Store)
KEYSTONE: web.AppKey[Keystone] = web.AppKey("keystone", Keystone)
PROVIDER: web.AppKey[Provider] = web.AppKey("provider", Provider)


def reply_json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def store_of(request: web.Request) -> Store:
    return request.app[STORE]


def single_master_of(request: web.Request) -> str | None:
    """The provider's name when it runs one master only (none known: no limit
    here; the cluster's deploy refuses what its provider cannot do)."""
    provider = request.app.get(PROVIDER)
    return single_master(provider) if provider is not None else None


def present_environment(doc: EnvironmentDocument) -> PresentedEnvironment:
    """An environment as users see it: each object with its actions, secrets hidden."""
    shown = envs.show(doc)
    return {
        **shown,
        "objects": [with_actions(o) for o in shown["objects"]],
        "urls": environment_urls(shown["objects"]),  # host names, TLS, gateways
    }


def present_with_murano(doc: EnvironmentDocument) -> MuranoDocument:
    """The environment as users see it, with Murano's fields too, so that Murano's
    clients read it: `services`, `tenant_id`, `version`, `acquired_by`."""
    return {
        **present_environment(doc),
        "services": [murano_service(with_actions(o)) for o in sessions.services(doc)],
        "tenant_id": doc["project"],
        "version": doc.get("version", 0),
        "acquired_by": None,
    }


def murano_service(obj: EnvironmentObject) -> MuranoDocument:
    """A top-level object as a Murano service: its settings at the top, its
    header (with actions, and its state as `status`) under `?`."""
    return {
        **sessions.settings_of(obj),
        "name": obj["?"]["name"],
        "?": {**obj["?"], "status": obj.get("state")},
    }


class ShownEnvironments:
    """Replies to GET of an environment, made once per revision of its document.

    Clients and dashboards read an environment far more often than it changes,
    and making the reply (objects in order, actions described, secrets masked,
    JSON encoded) costs more than reading the document. A document's
    `mod_revision` names one content of its key, so a reply kept under it
    stays right; the document is still read each time, so none is stale.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._replies: OrderedDict[str, tuple[int, ProjectId, bytes]] = OrderedDict()

    async def reply(self, store: Store, env_id: str, authorization: str | None) -> bytes:
        """The environment shown to the caller whose Marina token `authorization`
        presents; the token and the document are read in one round trip."""
        key = envs.env_key(env_id)
        token, found = await store.get_encoded([token_key(authorization), key])
        project = identity_of(None if token is None else store.decode(token[0])).project
        return self._made(store, env_id, found, project)

    async def reply_to(self, store: Store, env_id: str, project: ProjectId) -> bytes:
        """The environment shown to a caller identified otherwise (Keystone)."""
        (found,) = await store.get_encoded([envs.env_key(env_id)])
        return self._made(store, env_id, found, project)

    def _made(
        self, store: Store, env_id: str, found: tuple[bytes, int] | None, project: ProjectId
    ) -> bytes:
        key = envs.env_key(env_id)
        if found is None:
            raise NotFound("environment", env_id)
        raw, revision = found
        kept = self._replies.get(key)
        if kept is None or kept[0] != revision:
            doc = store.decode(raw)
            body = json.dumps(present_with_murano(doc), default=str).encode()
            kept = (revision, ProjectId(doc["project"]), body)
            self._replies[key] = kept
            if len(self._replies) > self.size:
                self._replies.popitem(last=False)
        else:
            self._replies.move_to_end(key)
        if kept[1] != project:
            raise NotFound("environment", env_id)
        return kept[2]


_SHOWN: weakref.WeakKeyDictionary[Store, ShownEnvironments] = weakref.WeakKeyDictionary()


def shown_environments(store: Store) -> ShownEnvironments:
    """The replies kept for this store's environments (one store per app)."""
    found = _SHOWN.get(store)
    if found is None:
        found = _SHOWN[store] = ShownEnvironments()
    return found


def authorization(request: web.Request) -> str | None:
    """The request's `Authorization`; Murano's clients send `X-Auth-Token` instead."""
    header = request.headers.get("Authorization")
    murano = request.headers.get("X-Auth-Token")
    return f"Bearer {murano}" if header is None and murano else header


async def identify(request: web.Request) -> Identity:
    header = authorization(request)
    # EventSource cannot send headers: event streams also take ?access_token=.
    if header is None and request.path.endswith("/events"):
        token = request.query.get("access_token")
        header = f"Bearer {token}" if token else None
    try:
        return await authenticate(store_of(request), header)
    except Unauthorized:
        # Not Marina's token: Keystone's, when `marina up --keystone-url` names one.
        keystone = request.app.get(KEYSTONE)
        token = request.headers.get("X-Auth-Token")
        if keystone is None or not token or "Authorization" in request.headers:
            raise
        return await keystone.identify(token)


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
