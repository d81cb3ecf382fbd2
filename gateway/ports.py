"""Who listens on a gateway's ports, read from /proc.

HAProxy binds with SO_REUSEPORT unless told otherwise, and a second HAProxy
on the same ports takes half the connections without a word; an agent checks
before it starts that no other process holds the ports it will serve.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass

LISTEN = "0A"


@dataclass(frozen=True)
class Holder:
    port: int
    address: str
    pid: int | None
    command: str

    def describe(self) -> str:
        who = f"pid {self.pid} ({self.command})" if self.pid else "a process this user cannot see"
        return f"port {self.port} on {self.address} is held by {who}"


def _decode(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # /proc prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words)), int(port, 16)


def listening_sockets(address: str, ports: Iterable[int]) -> dict[int, tuple[str, int]]:
    """Inode -> (address, port) of TCP listeners that overlap `address`:`ports`."""
    wanted = set(ports)
    found: dict[int, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            host, port = _decode(fields[1])
            if port not in wanted:
                continue
            if host == address or ipaddress.ip_address(host).is_unspecified:
                found[int(fields[9])] = (host, port)
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _owners(inodes: set[int]) -> dict[int, tuple[int, str]]:
    owners: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        for inode in socket_inodes(pid) & inodes:
            owners[inode] = (pid, _command(pid))
        if len(owners) == len(inodes):
            break
    return owners


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            text = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"
    return text[:120]


def foreign_holders(address: str, ports: Iterable[int], *, ours: Iterable[int]) -> list[Holder]:
    """Listeners on `address`:`ports` that none of the `ours` processes holds."""
    sockets = listening_sockets(address, ports)
    for pid in ours:
        for inode in socket_inodes(pid):
            sockets.pop(inode, None)
    if not sockets:
        return []
    owners = _owners(set(sockets))
    holders = []
    for inode, (host, port) in sorted(sockets.items(), key=lambda item: item[1][1]):
        owner = owners.get(inode)
        holders.append(Holder(port, host, owner[0] if owner else None, owner[1] if owner else ""))
    return holders
