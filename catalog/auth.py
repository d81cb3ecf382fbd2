"""Bearer tokens, each bound to a project; only their hashes are stored."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import TypedDict

from catalog import keys
from catalog.errors import Problem, Unauthorized, ValidationFailed
from catalog.ids import ProjectId
from catalog.store import Store
from catalog.validation import PROJECT, encodable

TOKENS = keys.TOKENS
PROJECT_RE = PROJECT


class TokenRecord(TypedDict):
    """A token in etcd, under the hash of its text."""

    project: str
    admin: bool
    created: float


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
    record: TokenRecord = {"project": project, "admin": admin, "created": time.time()}
    await store.create(f"{TOKENS}{_digest(token)}", record)
    return token


async def authenticate(store: Store, header: str | None) -> Identity:
    found = await store.get(token_key(header))
    return identity_of(None if found is None else found.value)


def token_key(header: str | None) -> str:
    """The key of the token an `Authorization` header presents."""
    # Authentication schemes are case-insensitive (RFC 9110, section 11.1).
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not encodable(token):
        raise Unauthorized("send 'Authorization: Bearer <token>'")
    return f"{TOKENS}{_digest(token)}"


def identity_of(token: TokenRecord | None) -> Identity:
    """Who a stored token (None: none under its key) names."""
    if token is None:
        raise Unauthorized("the token is not known")
    return Identity(ProjectId(token["project"]), bool(token["admin"]))
