"""The watch loop and the etcd edge, against a real etcd."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import EtcdUnavailable
from gateway.etcd import EtcdClient
from gateway.watching import Changed, Listed, Unreachable, follow_routes
from tests.support import free_port


async def collect(url: str, prefix: bytes, limit: int) -> list[object]:
    async with EtcdClient([url]) as client:
        return [item async for item in follow_routes(client, prefix, limit=limit)]


def test_lists_once_then_yields_changes(etcd, cluster):
    prefix = f"/w/{cluster}/"
    etcd.put(prefix + "a", "1")

    async def scenario() -> list[object]:
        task = asyncio.create_task(collect(etcd.url, prefix.encode(), 3))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(etcd.put, prefix + "b", "2")
        await asyncio.to_thread(etcd.delete, prefix + "a")
        await asyncio.to_thread(etcd.put, "/w/elsewhere", "x")
        return await asyncio.wait_for(task, 10)

    listed, put, deleted = asyncio.run(scenario())
    assert isinstance(listed, Listed) and listed.values == {prefix.encode() + b"a": b"1"}
    assert isinstance(put, Changed) and [e.value for e in put.events] == [b"2"]
    assert isinstance(deleted, Changed) and [e.value for e in deleted.events] == [None]
    assert deleted.events[0].revision > put.events[0].revision > listed.revision


def test_changes_made_together_come_together(etcd, cluster):
    """A transaction's changes come in one item, in the order they were made."""
    prefix = f"/w/{cluster}/"

    async def scenario() -> list[object]:
        task = asyncio.create_task(collect(etcd.url, prefix.encode(), 2))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(etcd.put_many, [(f"{prefix}k{i}", str(i)) for i in range(100)])
        return await asyncio.wait_for(task, 10)

    listed, changed = asyncio.run(scenario())
    assert isinstance(listed, Listed) and listed.values == {}
    assert isinstance(changed, Changed)
    assert [e.value for e in changed.events] == [str(i).encode() for i in range(100)]
    assert len({e.revision for e in changed.events}) == 1


def test_unreachable_etcd_is_reported_not_raised():
    url = f"http://127.0.0.1:{free_port()}"
    items = asyncio.run(collect(url, b"/x/", 2))
    assert all(isinstance(i, Unreachable) for i in items)
    assert "unavailable" in items[0].error  # type: ignore[union-attr]


def test_client_errors_are_marinas_own():
    async def call() -> None:
        async with EtcdClient([f"http://127.0.0.1:{free_port()}"], timeout=1) as client:
            await client.put(b"k", b"v")

    with pytest.raises(EtcdUnavailable) as info:
        asyncio.run(call())
    assert info.value.__cause__ is not None
