"""Which process holds a TCP port, from /proc (Linux), so that `marina up`
can say what is in its way instead of failing to bind."""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path

LISTEN = "0A"


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net/tcp's address: host-order 32-bit words, hex."""
    raw = bytes.fromhex(hex_address)
    words = struct.unpack(f"<{len(raw) // 4}I", raw)
    packed = struct.pack(f">{len(words)}I", *words)
    return ipaddress.ip_address(packed)


def _listeners(host: str, port: int) -> set[str]:
    """Socket inodes listening on `port` where a bind to `host` would collide."""
    try:
        wanted = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        wanted = None
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) != port:
                continue
            bound = _address(address)
            mapped = getattr(bound, "ipv4_mapped", None) or bound
            if wanted is None or mapped.is_unspecified or mapped == wanted:
                inodes.add(fields[9])
    return inodes


def holder(inodes: set[str]) -> str | None:
    """`pid 123 (etcd --name ...)` for the process owning one of the sockets,
    when this user may see it."""
    wanted = {f"socket:[{i}]" for i in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if fd.readlink().as_posix() in wanted:
                    argv = (proc / "cmdline").read_bytes().split(b"\0")
                    command = " ".join(b" ".join(argv).decode(errors="replace").split())
                    return f"pid {proc.name} ({command[:120]})"
        except OSError:
            continue
    return None


def port_problem(host: str, port: int, option: str) -> str | None:
    """Why `port` cannot be listened on, naming the holder and the option that
    changes it; None when it is free (only a listener is in the way: servers
    here bind with SO_REUSEADDR)."""
    inodes = _listeners(host, port)
    if not inodes:
        return None
    who = holder(inodes)
    held = f"held by {who}" if who else "in use by another user's process"
    return f"port {port} on {host} is {held}; choose another with {option}"
