"""Keystone tokens, for Murano's clients where a cloud has Keystone.

With `marina up --keystone-url URL`, a token that is not Marina's is asked
about at Keystone (`GET /v3/auth/tokens`, the token as its own subject), and
the answer is kept for `ttl` seconds (at most `size` tokens), never past the
token's expiry. The token's project becomes the Marina project: its name when
it lies in the Default domain and fits Marina's rule for project names, else
its id; the `admin` role makes an admin.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import aiohttp

from catalog.auth import Identity
from catalog.errors import MarinaError, Unauthorized
from catalog.ids import ProjectId
from catalog.validation import PROJECT

KeystoneObject: TypeAlias = dict[str, Any]
"""JSON from Keystone's identity API (v3), read field by field."""


class KeystoneUnavailable(MarinaError):
    status = 503
    code = "keystone_unavailable"

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"keystone at {url} is unavailable: {reason}")


@dataclass(frozen=True)
class KeystoneSettings:
    url: str
    """Keystone's v3 endpoint (`http://HOST:5000/v3`)."""
    ttl: float = 30.0
    """Seconds an answer is kept."""
    size: int = 1024
    """Tokens whose answers are kept."""
    timeout: float = 10.0
    """Seconds a question to Keystone may take."""


def project_of(project: KeystoneObject) -> ProjectId:
    """The Marina project a Keystone project maps to."""
    name = project.get("name")
    domain = (project.get("domain") or {}).get("id")
    if domain == "default" and isinstance(name, str) and PROJECT.fullmatch(name):
        return ProjectId(name)
    return ProjectId(str(project.get("id", "")).lower())


def _expiry(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class Keystone:
    """Asks Keystone who a token names, keeping answers briefly."""

    def __init__(self, settings: KeystoneSettings) -> None:
        self.settings = settings
        self.url = settings.url.rstrip("/")
        self._kept: OrderedDict[str, tuple[float, Identity]] = OrderedDict()

    async def identify(self, token: str) -> Identity:
        key = hashlib.sha256(token.encode()).hexdigest()
        kept = self._kept.get(key)
        now = time.time()
        if kept is not None and kept[0] > now:
            self._kept.move_to_end(key)
            return kept[1]
        self._kept.pop(key, None)
        body = await self._ask(token)
        scope = body.get("token", {})
        project = scope.get("project")
        if not isinstance(project, dict):
            raise Unauthorized("the Keystone token is not scoped to a project")
        roles = {r.get("name") for r in scope.get("roles", []) if isinstance(r, dict)}
        who = Identity(project_of(project), "admin" in roles)
        if not PROJECT.fullmatch(who.project):
            raise Unauthorized("the Keystone token's project cannot be named in Marina")
        until = min(now + self.settings.ttl, _expiry(scope.get("expires_at")))
        if until > now:
            self._kept[key] = (until, who)
            if len(self._kept) > self.settings.size:
                self._kept.popitem(last=False)
        return who

    async def _ask(self, token: str) -> KeystoneObject:
        headers = {"X-Auth-Token": token, "X-Subject-Token": token}
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(f"{self.url}/auth/tokens", headers=headers) as reply,
            ):
                if reply.status in (401, 403, 404):
                    raise Unauthorized("Keystone does not know the token")
                if reply.status != 200:
                    raise KeystoneUnavailable(self.url, f"it answered {reply.status}")
                body = await reply.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise KeystoneUnavailable(self.url, str(exc) or type(exc).__name__) from exc
        except asyncio.CancelledError:
            raise
        if not isinstance(body, dict):
            raise KeystoneUnavailable(self.url, "its answer is not a JSON object")
        return body
