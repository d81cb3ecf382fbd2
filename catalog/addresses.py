"""Loopback addresses for nodes, pod replicas and services, leased in etcd.

Each kind has its own /16 under 127.0.0.0/8; an address is taken by creating
its key, so two allocators never hand out the same one.
"""

from __future__ import annotations

import random

from catalog.errors import Conflict, MarinaError
from catalog.store import Store

ADDRESSES = "/marina/addresses/"
RANGES = {"node": 66, "pod": 67, "service": 68}


async def allocate(store: Store, kind: str, owner: str) -> str:
    second = RANGES[kind]
    for _ in range(200):
        ip = f"127.{second}.{random.randint(0, 254)}.{random.randint(2, 254)}"
        try:
            await store.create(f"{ADDRESSES}{ip}", {"kind": kind, "owner": owner})
        except Conflict:
            continue
        return ip
    raise MarinaError(f"no free {kind} address after 200 tries")


async def release(store: Store, ip: str | None) -> None:
    if ip:
        await store.delete(f"{ADDRESSES}{ip}")
