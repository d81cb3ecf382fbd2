"""The HTTP server's own limits, so no client can hold it.

aiohttp closes a connection that has not sent a whole request head within
its keep-alive timeout, which makes that timeout the header read timeout.
What aiohttp does not have is a limit of connections per client: a guard
wraps each connection's protocol and refuses a client's connections beyond
`connections_per_client` at once, so 2,000 half-open connections from one
address cannot take every descriptor of the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerLimits:
    header_timeout: float = 10.0
    """Seconds a connection may take to send a whole request head (and may stay idle)."""
    body_timeout: float = 30.0
    """Seconds a request body may take to arrive in full."""
    connections_per_client: int = 64
    """Open connections one client address may hold at once."""
    max_line_size: int = 8190
    """Longest request line or header line, in bytes."""
    max_field_size: int = 8190
    """Longest header value, in bytes."""


LIMITS = ServerLimits()


class ConnectionGuard:
    """A protocol factory that counts each client's open connections."""

    def __init__(self, factory: Any, limits: ServerLimits) -> None:
        self.factory = factory
        self.limits = limits
        self.open: Counter[str] = Counter()
        self.refused = 0

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self, self.factory())

    def admit(self, client: str) -> bool:
        if self.open[client] >= self.limits.connections_per_client:
            self.refused += 1
            if self.refused % 1000 == 1:
                log.warning(
                    "client %s holds %d connections; refusing more (%d refused so far)",
                    client,
                    self.open[client],
                    self.refused,
                )
            return False
        self.open[client] += 1
        return True

    def release(self, client: str) -> None:
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]


class _Guarded(asyncio.Protocol):
    """Passes everything to aiohttp's protocol once the guard admits the client."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.client: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self.guard.admit(client):
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            return
        self.client = client
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client is None:
            return
        self.guard.release(self.client)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.client is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.client is not None else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class _GuardedSite(web.TCPSite):
    def __init__(self, runner: web.AppRunner, host: str, port: int, limits: ServerLimits) -> None:
        super().__init__(runner, host, port)
        self.limits = limits

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            ConnectionGuard(server, self.limits),
            self._host,
            self._port,
            reuse_address=self._reuse_address,
            backlog=self._backlog,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


async def serve(
    app: web.Application, *, host: str, port: int, limits: ServerLimits = LIMITS
) -> web.AppRunner:
    """Start `app` on host:port within `limits`; the runner stops it."""
    runner = web.AppRunner(
        app,
        access_log=None,
        # Streams (events, followed logs) never end on their own: Ctrl-C must
        # not wait 60 s for them.
        shutdown_timeout=0.5,
        keepalive_timeout=limits.header_timeout,
        max_line_size=limits.max_line_size,
        max_field_size=limits.max_field_size,
    )
    await runner.setup()
    await _GuardedSite(runner, host, port, limits).start()
    return runner
