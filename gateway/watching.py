"""Following the route keys in etcd from one consistent revision.

`follow_routes` lists the prefix, yields a `Listed` snapshot with the revision
it was read at, then yields every later change. A broken stream resumes from
the revision after the last one seen; a compacted revision means changes were
lost, so it lists again and yields a fresh `Listed`. etcd being away is retried
with backoff for as long as it takes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from gateway.errors import EtcdCompacted, EtcdUnavailable
from gateway.etcd import EtcdClient, Event

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listed:
    """The whole prefix as of `revision`; replaces whatever was known."""

    values: dict[bytes, bytes]
    revision: int


@dataclass(frozen=True)
class Changed:
    """Changes in the order etcd made them (one watch message's)."""

    events: tuple[Event, ...]


@dataclass(frozen=True)
class Unreachable:
    """etcd could not be reached; the caller keeps serving what it has."""

    error: str


Item = Listed | Changed | Unreachable


async def follow_routes(
    client: EtcdClient,
    prefix: bytes,
    *,
    limit: int | None = None,
    backoff: tuple[float, float] = (0.05, 5.0),
    sleep: Callable[[float], object] = asyncio.sleep,
) -> AsyncIterator[Item]:
    """Yield a `Listed`, then `Changed` items; at most `limit` items if given."""
    yielded = 0
    revision: int | None = None
    delay = backoff[0]
    while limit is None or yielded < limit:
        try:
            if revision is None:
                kvs, revision = await client.get_prefix(prefix)
                yield Listed({kv.key: kv.value for kv in kvs}, revision)
                yielded += 1
                delay = backoff[0]
                continue
            async for events in client.watch_prefix(prefix, start_revision=revision + 1):
                delay = backoff[0]
                revision = max(revision, *(event.revision for event in events))
                yield Changed(tuple(events))
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
        except EtcdCompacted as exc:
            log.warning("%s; listing again", exc)
            revision = None
        except EtcdUnavailable as exc:
            yield Unreachable(str(exc))
            yielded += 1
            await sleep(delay)  # type: ignore[misc]
            delay = min(delay * 2, backoff[1])
