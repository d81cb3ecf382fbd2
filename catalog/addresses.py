"""Loopback addresses for nodes, pod replicas and services, leased in etcd.

Each kind has its own /16 under 127.0.0.0/8; an address is taken by creating
its key, so two allocators never hand out the same one. An address that some
process on this machine still listens on is never handed out, even when its
key is free: a replica moved off a lost node may still be running there, and
its successor must not crash-loop on a port it cannot bind.
"""

from __future__ import annotations

import random
from pathlib import Path

from catalog import keys
from catalog.errors import Conflict, MarinaError
from catalog.store import Store

ADDRESSES = keys.ADDRESSES
RANGES = {"node": 66, "pod": 67, "service": 68}
TCP_TABLES = (Path("/proc/net/tcp"),)
LISTEN = "0A"


async def allocate(store: Store, kind: str, owner: str, *, reuse: bool = False) -> str:
    """A free address of `kind` for `owner`; with `reuse`, the one `owner`
    already holds if any (a step that died after allocating runs again)."""
    if reuse:
        for held in await store.list(ADDRESSES):
            if held.value.get("owner") == owner and held.value.get("kind") == kind:
                return held.key[len(ADDRESSES) :]
    second = RANGES[kind]
    for _ in range(200):
        ip = f"127.{second}.{random.randint(0, 254)}.{random.randint(2, 254)}"
        if ip in listening_addresses():
            continue
        try:
            await store.create(f"{ADDRESSES}{ip}", {"kind": kind, "owner": owner})
        except Conflict:
            continue
        return ip
    raise MarinaError(f"no free {kind} address after 200 tries")


async def release(store: Store, ip: str | None) -> None:
    if ip:
        await store.delete(f"{ADDRESSES}{ip}")


def listening_addresses() -> set[str]:
    """IPv4 addresses with a listening TCP socket on this machine."""
    found = set()
    for table in TCP_TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == LISTEN:
                hex_ip = fields[1].split(":", 1)[0]
                # /proc shows the address as a little-endian 32-bit hex number.
                found.add(".".join(str(int(hex_ip[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found
