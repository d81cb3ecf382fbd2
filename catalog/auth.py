"""Bearer tokens, each bound to a project; only their hashes are stored."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from catalog import keys
from catalog.errors import Problem, Unauthorized, ValidationFailed
from catalog.ids import ProjectId
from catalog.store import Store
from catalog.validation import PROJECT, encodable

TOKENS = keys.TOKENS
PROJECT_RE = PROJECT


@dataclass(frozen=True)
class Identity:
    project: ProjectId
    admin: bool


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_token(store: Store, *, project: str, admin: bool = False) -> str:
    if not isinstance(project, str) or not PROJECT_RE.fullmatch(project):
        raise ValidationFailed(
            "project",
            [Problem("project", "must be 1-63 lower-case letters, digits, '_' or '-'", project)],
        )
    token = "mar_" + secrets.token_urlsafe(32)
    await store.create(
        f"{TOKENS}{_digest(token)}", {"project": project, "admin": admin, "created": time.time()}
    )
    return token


async def authenticate(store: Store, header: str | None) -> Identity:
    # Authentication schemes are case-insensitive (RFC 9110, section 11.1).
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not encodable(token):
        raise Unauthorized("send 'Authorization: Bearer <token>'")
    found = await store.get(f"{TOKENS}{_digest(token)}")
    if found is None:
        raise Unauthorized("the token is not known")
    return Identity(ProjectId(found.value["project"]), bool(found.value["admin"]))
