"""A task worker in a process of its own, for tests that kill it.

    python -m tests.worker_process ETCD_URL IDENT
Its runner logs a line and then hangs, so the task is `running` when the
process is killed.
"""

from __future__ import annotations

import asyncio
import sys

from catalog.store import Store
from catalog.tasks import Outcome, TaskContext, Worker


async def hang(context: TaskContext) -> Outcome:
    await context.log("started; hanging")
    await asyncio.sleep(3600)
    return Outcome.noop("never")


async def main(url: str, ident: str) -> None:
    async with Store(url) as store:
        await Worker(store, hang, ident=ident, lease_ttl=2).run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
