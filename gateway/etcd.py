"""The gateway's etcd client: etcd's v3 JSON gateway spoken over aiohttp.

The gateway needs only a handful of calls (range, put, leases, one prefix
watch) and must resume a watch from an exact revision and notice compaction,
so it speaks the wire protocol itself instead of depending on a client library
whose watch hides both. aiohttp is imported here only; its errors become
`EtcdUnavailable` at this edge.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import aiohttp

from gateway.errors import EtcdCompacted, EtcdUnavailable

Request: TypeAlias = dict[str, str]
Reply: TypeAlias = dict[str, Any]
"""A JSON reply of etcd's v3 gateway (protobuf messages as JSON: int64 as strings)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with `prefix`."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class Event:
    """One change under a watched prefix; `value` is None for a delete."""

    key: bytes
    value: bytes | None
    revision: int


class EtcdClient:
    """A small asyncio client for one etcd endpoint (or a list, tried in turn)."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        timeout: float = 5.0,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        """`tls` is (CA bundle, client certificate, client key) for `https://` endpoints."""
        self._endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None
        if tls is not None:
            ca, cert, key = tls
            try:
                self._ssl = ssl.create_default_context(cafile=str(ca))
                self._ssl.load_cert_chain(str(cert), str(key))
            except (OSError, ssl.SSLError) as exc:
                raise EtcdUnavailable(",".join(endpoints), f"bad TLS files: {exc}") from exc

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout),
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl else True),
            )
        return self._session

    async def _call(self, path: str, body: Request) -> Reply:
        last: Exception | None = None
        for _ in range(len(self._endpoints)):
            url = self._endpoints[self._current] + path
            try:
                async with self._http().post(
                    url, json=body, timeout=aiohttp.ClientTimeout(total=self._timeout)
                ) as resp:
                    payload: Reply = await resp.json(content_type=None)
                    if resp.status != 200:
                        raise EtcdUnavailable(url, str(payload.get("error", resp.status)))
                    return payload
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                last = exc
                self._current = (self._current + 1) % len(self._endpoints)
        raise EtcdUnavailable(",".join(self._endpoints), repr(last)) from last

    async def get_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` and the store revision they were read at."""
        reply = await self._call(
            "/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        )
        revision = int(reply["header"]["revision"])
        kvs = [
            KeyValue(_unb64(kv["key"]), _unb64(kv.get("value", "")), int(kv.get("mod_revision", 0)))
            for kv in reply.get("kvs", [])
        ]
        return kvs, revision

    async def put(self, key: bytes, value: bytes, *, lease: int | None = None) -> int:
        body: Request = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        reply = await self._call("/v3/kv/put", body)
        return int(reply["header"]["revision"])

    async def delete(self, key: bytes) -> int:
        reply = await self._call("/v3/kv/deleterange", {"key": _b64(key)})
        return int(reply["header"]["revision"])

    async def grant_lease(self, ttl: int) -> int:
        reply = await self._call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(reply["ID"])

    async def keep_alive(self, lease: int) -> bool:
        """Refresh `lease` once; False when etcd no longer knows it."""
        reply = await self._call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(reply.get("result", {}).get("TTL", 0)) > 0

    async def revoke_lease(self, lease: int) -> None:
        await self._call("/v3/lease/revoke", {"ID": str(lease)})

    async def watch_prefix(
        self, prefix: bytes, *, start_revision: int
    ) -> AsyncIterator[list[Event]]:
        """Yield every change under `prefix` from `start_revision` on, as etcd
        sends them: a burst of thousands comes in a few messages, and each
        costs one step of the loops that follow, not one per change.

        Raises `EtcdCompacted` when that revision is gone and `EtcdUnavailable`
        when the stream breaks; the caller decides whether to re-list.
        """
        url = self._endpoints[self._current] + "/v3/watch"
        body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _b64(prefix_end(prefix)),
                "start_revision": str(start_revision),
            }
        }
        try:
            async with self._http().post(url, json=body) as resp:
                if resp.status != 200:
                    raise EtcdUnavailable(url, f"watch answered {resp.status}")
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if line.strip():
                            events = _parse_watch_message(url, line)
                            if events:
                                yield events
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._current = (self._current + 1) % len(self._endpoints)
            raise EtcdUnavailable(url, repr(exc)) from exc
        self._current = (self._current + 1) % len(self._endpoints)
        raise EtcdUnavailable(url, "watch stream ended")


def _parse_watch_message(url: str, line: bytes) -> list[Event]:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise EtcdUnavailable(url, f"unreadable watch message: {line[:80]!r}") from exc
    if "error" in message:
        raise EtcdUnavailable(url, str(message["error"]))
    result = message.get("result", {})
    compact = int(result.get("compact_revision", 0))
    if compact:
        raise EtcdCompacted(compact)
    if result.get("canceled"):
        raise EtcdUnavailable(url, "watch canceled: " + str(result.get("cancel_reason", "")))
    events = []
    for raw in result.get("events", []):
        kv = raw["kv"]
        deleted = raw.get("type") == "DELETE"
        events.append(
            Event(
                key=_unb64(kv["key"]),
                value=None if deleted else _unb64(kv.get("value", "")),
                revision=int(kv.get("mod_revision", 0)),
            )
        )
    return events
