"""The catalog's store: JSON documents in etcd, through aetcd.

Every write that depends on what was read compares `mod_revision` in one
transaction, so two writers never overwrite each other silently: `replace`
raises `Conflict` and `update` reads again and retries. aetcd is imported
here only and its errors become `StoreUnavailable`, with the cause chained.

An `https://` endpoint is spoken to over TLS with a client certificate: the
embedded etcd accepts nobody else (see `catalog.pki`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

# Processes that hold an etcd channel fork to start replicas and tools. With
# fork support on, gRPC restarts its poller in the child between fork and exec,
# where it can abort (epoll1 "Check failed"); the children never use gRPC.
# gRPC reads the variable once, when first imported: it is set before that.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import aetcd
import aetcd.exceptions
import aetcd.watcher
import grpc

from catalog.errors import Conflict, MarinaError, StoreUnavailable
from catalog.pki import TLSFiles

T = TypeVar("T")
UPDATE_RETRIES = 50
WATCH_CANCEL_GRACE = 1.0
"""Seconds a stopped watch waits for etcd to confirm its cancellation."""
CHANNEL_OPTIONS = {
    # gRPC's default backoff grows to two minutes: a restarted etcd would go
    # unnoticed for that long. Retry every second at most instead.
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 1000,
}


@dataclass(frozen=True)
class Versioned:
    key: str
    value: Any
    mod_revision: int
    create_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Change:
    key: str
    value: Any | None  # None: deleted
    revision: int


def _decode(raw: bytes) -> Any:
    return json.loads(raw) if raw else None


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


class _TLSClient(aetcd.Client):  # type: ignore[misc]
    """aetcd's client on a TLS channel: aetcd itself only opens plain ones."""

    def __init__(self, *, credentials: grpc.ChannelCredentials, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:  # type: ignore[has-type]
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        self._is_connecting = True
        try:
            self.channel = grpc.aio.secure_channel(
                f"{self._host}:{self._port}", self._credentials, options=self._options.items()
            )
            self.kvstub = aetcd.rpc.KVStub(self.channel)
            self.clusterstub = aetcd.rpc.ClusterStub(self.channel)
            self.leasestub = aetcd.rpc.LeaseStub(self.channel)
            self.maintenancestub = aetcd.rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.watcher.Watcher(
                aetcd.rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        finally:
            self._is_connecting = False


def parse_endpoint(endpoint: str) -> tuple[str, int, bool]:
    """Host, port and whether TLS is spoken, from `http(s)://HOST:PORT`."""
    parsed = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname or not parsed.port:
        raise StoreUnavailable(endpoint, "expected http://HOST:PORT or https://HOST:PORT")
    return parsed.hostname, parsed.port, parsed.scheme == "https"


class Store:
    """JSON documents under string keys in one etcd cluster."""

    def __init__(self, endpoint: str, *, tls: TLSFiles | None = None, timeout: int = 5) -> None:
        host, port, secure = parse_endpoint(endpoint)
        self.endpoint = endpoint
        self.tls = tls
        if secure:
            try:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=tls.ca.read_bytes() if tls else None,
                    private_key=tls.key.read_bytes() if tls else None,
                    certificate_chain=tls.cert.read_bytes() if tls else None,
                )
            except OSError as exc:
                raise StoreUnavailable(endpoint, f"cannot read its TLS files: {exc}") from exc
            self._client: aetcd.Client = _TLSClient(
                credentials=credentials,
                host=host,
                port=port,
                timeout=timeout,
                options=CHANNEL_OPTIONS,
            )
        else:
            self._client = aetcd.Client(
                host=host, port=port, timeout=timeout, options=CHANNEL_OPTIONS
            )

    async def close(self) -> None:
        await self._call(self._client.close())

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except aetcd.exceptions.ClientError as exc:
            raise StoreUnavailable(self.endpoint, f"{type(exc).__name__}: {exc}") from exc
        except (TimeoutError, OSError) as exc:
            raise StoreUnavailable(self.endpoint, repr(exc)) from exc

    # -- reads -------------------------------------------------------------

    async def get(self, key: str) -> Versioned | None:
        got = await self._call(self._client.get(key.encode()))
        if got is None:
            return None
        return Versioned(key, _decode(got.value), got.mod_revision, got.create_revision, got.lease)

    async def get_encoded(self, keys: Sequence[str]) -> list[tuple[bytes, int] | None]:
        """Each key's value as stored and its `mod_revision` (None: no such key),
        not decoded, in one round trip: for a caller that keeps what it made of
        a value by revision and decodes only what is new."""
        t = self._client.transactions
        _, replies = await self._call(
            self._client.transaction(
                compare=[], success=[t.get(k.encode()) for k in keys], failure=[]
            )
        )
        return [(bytes(r[0][0]), int(r[0][1].mod_revision)) if r else None for r in replies]

    @staticmethod
    def decode(raw: bytes) -> Any:
        """A value from `get_encoded`, as `get` would have read it."""
        return _decode(raw)

    async def list(self, prefix: str) -> list[Versioned]:
        got = await self._call(self._client.get_prefix(prefix.encode()))
        return [
            Versioned(
                kv.key.decode(), _decode(kv.value), kv.mod_revision, kv.create_revision, kv.lease
            )
            for kv in got
        ]

    async def revision(self) -> int:
        """The store's current revision."""
        got = await self._call(self._client.get_prefix(b"\0marina-no-such-key"))
        return int(got.header.revision)

    # -- writes ------------------------------------------------------------

    async def put(self, key: str, value: Any, *, lease: int | None = None) -> int:
        reply = await self._call(self._client.put(key.encode(), _encode(value), lease=lease))
        return int(reply.header.revision)

    async def create(self, key: str, value: Any, *, lease: int | None = None) -> int:
        """Write `key` only if it does not exist; `Conflict` otherwise."""
        t = self._client.transactions
        ok, replies = await self._call(
            self._client.transaction(
                compare=[t.create(key.encode()) == 0],
                success=[t.put(key.encode(), _encode(value), lease=lease)],
                failure=[],
            )
        )
        if not ok:
            raise Conflict(key, "already exists")
        return int(replies[0].response_put.header.revision)

    async def replace(self, key: str, value: Any, *, mod_revision: int) -> int:
        """Write `key` only if nobody wrote it since `mod_revision`."""
        t = self._client.transactions
        ok, replies = await self._call(
            self._client.transaction(
                compare=[t.mod(key.encode()) == mod_revision],
                success=[t.put(key.encode(), _encode(value))],
                failure=[],
            )
        )
        if not ok:
            raise Conflict(key, f"changed since revision {mod_revision}")
        return int(replies[0].response_put.header.revision)

    async def delete(self, key: str, *, mod_revision: int | None = None) -> bool:
        if mod_revision is None:
            return bool(await self._call(self._client.delete(key.encode())))
        t = self._client.transactions
        ok, _ = await self._call(
            self._client.transaction(
                compare=[t.mod(key.encode()) == mod_revision],
                success=[t.delete(key.encode())],
                failure=[],
            )
        )
        if not ok:
            raise Conflict(key, f"changed since revision {mod_revision}")
        return True

    async def delete_prefix(self, prefix: str) -> None:
        await self._call(self._client.delete_prefix(prefix.encode()))

    async def update(self, key: str, change: Callable[[Any], Any]) -> Versioned:
        """Read, apply `change` to the value (None when absent), write back.

        A concurrent write makes the transaction fail and the change is applied
        again to the new value; `change` must therefore be a pure function of
        its argument. Raising inside `change` leaves the key untouched.
        """
        for _ in range(UPDATE_RETRIES):
            current = await self.get(key)
            new = change(current.value if current else None)
            try:
                if current is None:
                    revision = await self.create(key, new)
                    return Versioned(key, new, revision, revision)
                revision = await self.replace(key, new, mod_revision=current.mod_revision)
                return Versioned(key, new, revision, current.create_revision)
            except Conflict:
                await asyncio.sleep(0)
        raise Conflict(key, f"still contended after {UPDATE_RETRIES} attempts")

    # -- leases ------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> int:
        lease = await self._call(self._client.lease(ttl))
        return int(lease.id)

    async def refresh_lease(self, lease: int) -> bool:
        """Keep `lease` alive once; False when it already expired."""
        reply = await self._call(self._client.refresh_lease(lease))
        return int(reply.TTL) > 0

    async def revoke_lease(self, lease: int) -> None:
        try:
            await self._call(self._client.revoke_lease(lease))
        except StoreUnavailable as exc:
            if "not found" not in str(exc).lower():
                raise

    # -- watching ----------------------------------------------------------

    async def watch(
        self, prefix: str, *, start_revision: int | None = None
    ) -> AsyncIterator[Change]:
        """Every change under `prefix` (from `start_revision` if given)."""
        watch = await self._call(
            self._client.watch_prefix(prefix.encode(), start_revision=start_revision)
        )
        events = watch.__aiter__()
        try:
            while True:
                try:
                    event = await events.__anext__()
                except StopAsyncIteration:
                    return
                except aetcd.exceptions.ClientError as exc:
                    raise StoreUnavailable(self.endpoint, repr(exc)) from exc
                deleted = str(event.kind).endswith("DELETE")
                yield Change(
                    event.kv.key.decode(),
                    None if deleted else _decode(event.kv.value),
                    int(event.kv.mod_revision),
                )
        finally:
            # The stream may be gone with the connection already, and the
            # client's lock may be held by a watch being created: never wait long.
            with contextlib.suppress(
                MarinaError, aetcd.exceptions.ClientError, OSError, TimeoutError
            ):
                async with asyncio.timeout(WATCH_CANCEL_GRACE):
                    await watch.cancel()

    async def watch_many(self, prefixes: Sequence[str]) -> AsyncIterator[str]:
        """The keys that change under any of `prefixes`, as one stream.

        A broken watch is started again after a second; each restart yields once,
        since changes may have been missed meanwhile.
        """
        queue: asyncio.Queue[str] = asyncio.Queue()

        async def follow(prefix: str) -> None:
            while True:
                try:
                    async for change in self.watch(prefix):
                        queue.put_nowait(change.key)
                except StoreUnavailable:
                    await asyncio.sleep(1)
                    queue.put_nowait(prefix)

        tasks = [asyncio.create_task(follow(p)) for p in prefixes]
        try:
            while True:
                yield await queue.get()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
