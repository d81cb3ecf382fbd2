"""One loop for the work that one Marina process at a time does.

Several `marina up` processes may share an etcd; each singleton (the
observer, the local engine's reconciler) takes a lock key bound to its lease,
does a pass whenever something changed (and every so often regardless), and
lets another process take over when it dies: its lease expires with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from catalog.errors import Conflict, MarinaError, StoreUnavailable
from catalog.store import Store

log = logging.getLogger(__name__)

WATCHER_GRACE = 2.0
"""Seconds a stopping loop waits for its watches to close."""


@dataclass
class Leadership:
    """A pass function run under a lock, woken by a stream of changes."""

    store: Store
    lock: str
    """The lock's key."""
    name: str
    """What to call it in the log."""
    lease_ttl: int
    """Seconds the lock outlives a holder that died."""
    resync: float
    """Seconds between passes when nothing changes."""

    async def run(
        self,
        stop: asyncio.Event,
        *,
        work: Callable[[], Awaitable[float | None]],
        changes: Callable[[], AsyncIterator[object]],
        demoted: Callable[[], None] = lambda: None,
    ) -> None:
        """Until `stop`: pass whenever `changes` yields while holding the lock.

        `work` may ask for the next pass sooner by returning a pause in
        seconds; `demoted` runs whenever the lock is not (or no longer) held,
        for clocks that must start again under a new leader.
        """
        wake = asyncio.Event()

        async def follow() -> None:
            async for _ in changes():
                wake.set()

        watcher = asyncio.create_task(follow())
        lease: int | None = None
        leader = False
        try:
            while not stop.is_set():
                pause: float | None = None
                try:
                    if lease is None or not await self.store.refresh_lease(lease):
                        lease, leader = await self.store.grant_lease(self.lease_ttl), False
                    if not leader:
                        try:
                            await self.store.create(self.lock, {"lease": lease}, lease=lease)
                            leader = True
                        except Conflict:
                            leader = False
                    if leader:
                        pause = await work()
                    else:
                        demoted()
                except StoreUnavailable as exc:
                    log.warning("%s paused: %s", self.name, exc)
                    lease, leader = None, False
                    demoted()  # nothing could be seen meanwhile
                except MarinaError as exc:
                    log.warning("%s pass failed: %s", self.name, exc)
                wake.clear()
                # Ctrl-C (stop) must not wait out the pause.
                waits = [asyncio.ensure_future(e.wait()) for e in (wake, stop)]
                await asyncio.wait(
                    waits,
                    timeout=min(pause or self.resync, self.lease_ttl / 3),
                    return_when="FIRST_COMPLETED",
                )
                for waiting in waits:
                    waiting.cancel()
                await asyncio.sleep(0.01)  # gather a burst of changes into one pass
        finally:
            watcher.cancel()
            # Its watches' cleanup talks to etcd; a stop does not wait on it for long.
            await asyncio.wait([watcher], timeout=WATCHER_GRACE)
            if lease is not None:
                with contextlib.suppress(MarinaError):
                    await self.store.revoke_lease(lease)
