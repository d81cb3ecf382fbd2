"""The test API server in a thread of its own, with a kubeconfig, for synchronous tests.

Tests drive it as they would drive a cluster: over HTTP with the official
client or kubectl. The few things a test needs that a cluster's API does
not offer (registering a node with an address, compacting the history)
are methods here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web

from tests.kubeapi.controllers import Controllers
from tests.kubeapi.kubelet import Kubelet
from tests.kubeapi.proxy import Proxy
from tests.kubeapi.resources import BY_PATH
from tests.kubeapi.server import ApiServer

T = TypeVar("T")


class KubeApi:
    """One API server on 127.0.0.1 with its controllers and kubelet."""

    def __init__(
        self,
        workdir: Path,
        *,
        bookmark_interval: float = 1.0,
        run_pods: bool = True,
        context: str = "kubeapi",
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bookmark_interval = bookmark_interval
        self.run_pods = run_pods
        self.context = context
        self.url = ""
        self.kubeconfig = workdir / "kubeconfig"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="kubeapi")
        self._runner: web.AppRunner | None = None
        self.api: ApiServer | None = None
        self.controllers: Controllers | None = None
        self.kubelet: Kubelet | None = None
        self.proxy: Proxy | None = None

    # lifecycle

    def start(self) -> KubeApi:
        self._thread.start()
        self.call(self._start)
        self.kubeconfig.write_text(yaml.safe_dump(self.kubeconfig_document()))
        return self

    async def _start(self) -> None:
        self.api = ApiServer(bookmark_interval=self.bookmark_interval)
        self.controllers = Controllers(self.api)
        self.controllers.start()
        if self.run_pods:
            self.kubelet = Kubelet(self.api, self.workdir / "kubelet")
            self.kubelet.start()
            self.proxy = Proxy(self.api)
            self.proxy.start()
        self._runner = web.AppRunner(self.api.app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.call(self._stop, timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()

    async def _stop(self) -> None:
        assert self.api is not None
        await self.api.close()
        if self.proxy is not None:
            await self.proxy.stop()
        if self.kubelet is not None:
            await self.kubelet.stop()
        if self.controllers is not None:
            await self.controllers.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        # log followers and proxied connections end with the loop, not after it
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        if rest:
            await asyncio.wait(rest, timeout=5)

    def __enter__(self) -> KubeApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # helpers for tests

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
        """Run `fn()` on the server's loop and wait for its result."""
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            _await(fn), self._loop
        )
        return future.result(timeout)

    def kubeconfig_document(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": self.context, "cluster": {"server": self.url}}],
            "users": [{"name": self.context, "user": {"token": "kubeapi-test"}}],
            "contexts": [
                {"name": self.context, "context": {"cluster": self.context, "user": self.context}}
            ],
            "current-context": self.context,
        }

    def add_node(self, name: str, address: str, *, unschedulable: bool = False) -> dict[str, Any]:
        """Register a Ready node whose InternalIP is `address` (on this machine's loopback)."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"unschedulable": unschedulable} if unschedulable else {},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": address},
                    {"type": "Hostname", "address": name},
                ],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                    }
                ],
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            },
        }

        async def create() -> dict[str, Any]:
            assert self.api is not None
            return self.api.create(BY_PATH[("", "v1", "nodes")], "", node, None, manager="kubelet")

        return self.call(create)

    def set_node_ready(self, name: str, ready: bool) -> dict[str, Any]:
        """Flip a node's Ready condition, as a kubelet that stops posting status would."""

        async def flip() -> dict[str, Any]:
            assert self.api is not None
            nodes = BY_PATH[("", "v1", "nodes")]
            node = self.api.store.get(nodes, "", name)
            if node is None:
                raise KeyError(name)
            updated = copy.deepcopy(node)
            updated["status"]["conditions"] = [
                {
                    "type": "Ready",
                    "status": "True" if ready else "Unknown",
                    "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                    "message": "kubelet is posting ready status"
                    if ready
                    else "Kubelet stopped posting node status.",
                }
            ]
            return self.api.replace(nodes, node, updated, None, "status", manager="kubelet")

        return self.call(flip)

    def remove_node(self, name: str) -> None:
        async def delete() -> None:
            assert self.api is not None
            self.api.delete(None, BY_PATH[("", "v1", "nodes")], "", name)

        self.call(delete)

    def compact(self) -> int:
        """Forget the watch history (as an etcd compaction); returns the revision it stopped at."""

        async def compact() -> int:
            assert self.api is not None
            return self.api.store.compact()

        return self.call(compact)


async def _await(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()
