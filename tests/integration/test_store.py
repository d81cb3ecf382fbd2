"""The catalog store against a real etcd: transactions never lose a write."""

from __future__ import annotations

import asyncio

import pytest

from catalog.errors import Conflict, StoreUnavailable
from catalog.store import Store
from tests.support import free_port


def run(coro):
    return asyncio.run(coro)


def test_create_refuses_an_existing_key(etcd, cluster):
    async def scenario() -> None:
        async with Store(etcd.url) as store:
            await store.create(f"/t/{cluster}/a", {"n": 1})
            with pytest.raises(Conflict, match="already exists"):
                await store.create(f"/t/{cluster}/a", {"n": 2})
            assert (await store.get(f"/t/{cluster}/a")).value == {"n": 1}

    run(scenario())


def test_replace_compares_the_revision_it_read(etcd, cluster):
    async def scenario() -> None:
        async with Store(etcd.url) as store:
            key = f"/t/{cluster}/b"
            await store.put(key, {"n": 1})
            seen = await store.get(key)
            await store.put(key, {"n": 2})  # someone else writes in between
            with pytest.raises(Conflict, match="changed since revision"):
                await store.replace(key, {"n": 3}, mod_revision=seen.mod_revision)
            assert (await store.get(key)).value == {"n": 2}

    run(scenario())


def test_concurrent_updates_are_all_kept(etcd, cluster):
    async def scenario() -> int:
        key = f"/t/{cluster}/counter"
        stores = [Store(etcd.url) for _ in range(4)]
        try:

            async def bump(store: Store) -> None:
                for _ in range(15):
                    await store.update(key, lambda v: {"n": (v or {"n": 0})["n"] + 1})

            await asyncio.gather(*(bump(s) for s in stores))
            return int((await stores[0].get(key)).value["n"])
        finally:
            for s in stores:
                await s.close()

    assert run(scenario()) == 60


def test_watch_sees_puts_and_deletes(etcd, cluster):
    async def scenario() -> list[object]:
        async with Store(etcd.url) as store:
            start = await store.revision()
            await store.put(f"/t/{cluster}/w/x", 1)
            await store.delete(f"/t/{cluster}/w/x")
            seen = []
            async for change in store.watch(f"/t/{cluster}/w/", start_revision=start + 1):
                seen.append((change.key, change.value))
                if len(seen) == 2:
                    break
            return seen

    assert run(scenario()) == [(f"/t/{cluster}/w/x", 1), (f"/t/{cluster}/w/x", None)]


def test_unreachable_etcd_raises_marinas_own_error():
    async def scenario() -> None:
        async with Store(f"http://127.0.0.1:{free_port()}", timeout=1) as store:
            await store.get("/x")

    with pytest.raises(StoreUnavailable) as info:
        run(scenario())
    assert info.value.__cause__ is not None
