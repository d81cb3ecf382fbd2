"""kube-proxy for the test API server: Service addresses and NodePorts really forward.

Each Service's clusterIP:port and, for NodePort Services, every node's
InternalIP:nodePort accept TCP connections and pass them to a ready pod
selected by the Service (round robin), as kube-proxy's rules would. A
Service with no ready pod refuses nothing but closes at once, which a
client sees as a failed request, as on a real cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from typing import Any

from tests.kubeapi.resources import BY_PATH
from tests.kubeapi.server import ApiServer
from tests.kubeapi.validation import selector_matches

Obj = dict[str, Any]
log = logging.getLogger(__name__)

SERVICES = BY_PATH[("", "v1", "services")]
PODS = BY_PATH[("", "v1", "pods")]
NODES = BY_PATH[("", "v1", "nodes")]
Listen = tuple[str, int]
Target = tuple[str, str, str]
"""(namespace, service name, service port name or number)."""


class Proxy:
    def __init__(self, api: ApiServer) -> None:
        self.api = api
        self.listeners: dict[Listen, tuple[asyncio.Server, Target]] = {}
        self.turns: dict[Target, itertools.count[int]] = {}
        """Round robin per Service port: one shared count, stepped by other
        Services' connections too (a web pod's call to its store), could send
        every connection of one Service to the same pod."""
        self.task: asyncio.Task[None] | None = None
        self.connections: set[asyncio.Task[Any]] = set()
        """Forwarded connections: held here, so an idle one is not collected mid-way."""

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for server, _ in self.listeners.values():
            server.close()
        self.listeners.clear()
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(self.connections, timeout=5)

    async def run(self) -> None:
        sub = self.api.store.subscribe(lambda e: e.resource in (SERVICES, NODES))
        try:
            while not self.api.closing.is_set():
                await self.sync()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await sub.queue.get()
                while not sub.queue.empty():
                    sub.queue.get_nowait()
        finally:
            self.api.store.unsubscribe(sub)

    def wanted(self) -> dict[Listen, Target]:
        nodes = [
            a["address"]
            for n in self.api.store.select(NODES)
            for a in (n.get("status") or {}).get("addresses") or []
            if a.get("type") == "InternalIP"
        ]
        out: dict[Listen, Target] = {}
        for svc in self.api.store.select(SERVICES):
            spec, meta = svc["spec"], svc["metadata"]
            for port in spec.get("ports") or []:
                target = (meta["namespace"], meta["name"], str(port.get("name") or port["port"]))
                if spec.get("clusterIP") not in (None, "", "None"):
                    out[(spec["clusterIP"], port["port"])] = target
                if port.get("nodePort"):
                    for address in nodes:
                        out[(address, port["nodePort"])] = target
        return out

    async def sync(self) -> None:
        wanted = self.wanted()
        for listen in [k for k in self.listeners if wanted.get(k) != self.listeners[k][1]]:
            server, _ = self.listeners.pop(listen)
            server.close()
        for listen, target in wanted.items():
            if listen in self.listeners:
                continue
            try:
                server = await asyncio.start_server(
                    functools.partial(self.forward, target=target), listen[0], listen[1]
                )
            except OSError as exc:
                log.warning("kube-proxy cannot listen on %s:%s: %s", *listen, exc)
                continue
            self.listeners[listen] = (server, target)

    def endpoints(self, target: Target) -> list[tuple[str, int]]:
        namespace, name, port_key = target
        svc = self.api.store.get(SERVICES, namespace, name)
        if svc is None:
            return []
        port = next(p for p in svc["spec"]["ports"] if str(p.get("name") or p["port"]) == port_key)
        found = []
        for pod in self.api.store.select(PODS, namespace):
            labels = pod["metadata"].get("labels") or {}
            selector = svc["spec"].get("selector")
            if not selector or not selector_matches({"matchLabels": selector}, labels):
                continue
            if pod["metadata"].get("deletionTimestamp") or not ApiServer.pod_ready(pod):
                continue
            ip = (pod.get("status") or {}).get("podIP")
            target_port = port.get("targetPort", port["port"])
            if isinstance(target_port, str):
                target_port = next(
                    (
                        p["containerPort"]
                        for c in pod["spec"]["containers"]
                        for p in c.get("ports") or []
                        if p.get("name") == target_port
                    ),
                    None,
                )
            if ip and isinstance(target_port, int):
                found.append((ip, target_port))
        return found

    async def forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Target
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            await self.pass_on(reader, writer, target)
        finally:
            self.connections.discard(task)

    async def pass_on(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Target
    ) -> None:
        endpoints = self.endpoints(target)
        if not endpoints:
            writer.close()
            return
        start = next(self.turns.setdefault(target, itertools.count()))
        for attempt in range(len(endpoints)):
            host, port = endpoints[(start + attempt) % len(endpoints)]
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
                break
            except OSError:
                continue
        else:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(OSError, RuntimeError):
                    dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
            for w in (writer, up_writer):
                with contextlib.suppress(OSError):
                    await w.wait_closed()
