"""Per-project quotas, so one tenant cannot crowd the others out.

Defaults suit one machine; each can be changed with `MARINA_QUOTA_<NAME>` in
the environment of `marina up` (read once, at start).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from catalog.errors import QuotaExceeded


@dataclass(frozen=True)
class Quotas:
    environments: int = 100
    """Environments of one project."""
    nodes: int = 100
    """Nodes (masters, workers, gateways) over all of a project's clusters."""
    pods: int = 200
    """Pods over all of a project's environments."""
    packages: int = 200
    """Packages in the catalog (shared by every project; uploaded by admins)."""
    tasks: int = 1000
    """Stored tasks of one project; the oldest finished ones make room for new ones."""

    @classmethod
    def from_environment(cls) -> Quotas:
        given = {}
        for item in dataclasses.fields(cls):
            raw = os.environ.get(f"MARINA_QUOTA_{item.name.upper()}")
            if raw is not None and raw.isdigit():
                given[item.name] = int(raw)
        return cls(**given)


QUOTAS = Quotas.from_environment()


def check(quota: str, limit: int, *, used: int, wanted: int = 1) -> None:
    """Refuse when `wanted` more would take `used` past `limit`."""
    if wanted > 0 and used + wanted > limit:
        raise QuotaExceeded(quota, limit, used=used, wanted=wanted)
