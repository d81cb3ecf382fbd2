"""Typed identifiers, so an environment id is never passed as a task id."""

from __future__ import annotations

import secrets
from typing import NewType

EnvironmentId = NewType("EnvironmentId", str)
TaskId = NewType("TaskId", str)
ObjectId = NewType("ObjectId", str)
ProjectId = NewType("ProjectId", str)


def new_id() -> str:
    """32 hex characters, as Murano's ids."""
    return secrets.token_hex(16)
