"""The local provider: each node is a node-agent process on this machine.

Agents are started in their own session, so they outlive the process that
started them (an API restart does not take the cluster down); their pid files
live under the state directory, and a node whose agent is already running is
not started twice.

When the engine keeps worker nodes of its own (the `kubernetes` engine: its
workers are the API server's Nodes), a worker joins the engine instead of
running an agent here: the provider registers it there, as a kubelet joining
a cluster registers its Node, and removes it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from catalog import keys
from catalog.addresses import allocate, release
from catalog.documents import NodeObject
from catalog.errors import ActionFailed
from catalog.pki import TLSFiles
from catalog.processes import kill_all, processes_naming
from catalog.providers.base import ProviderCapability
from catalog.store import Store


@runtime_checkable
class Workers(Protocol):
    """An engine whose worker nodes are its own: a worker joins it, no agent runs here."""

    async def join_node(
        self, cluster: Any, node: str, address: str, capacity: Mapping[str, Any]
    ) -> None:
        """Register the worker `node` at `address`, ready for pods."""

    async def leave_node(self, cluster: Any, node: str) -> None:
        """Remove the worker (its pods are gone or go elsewhere)."""

    async def node_joined(self, cluster: Any, node: str) -> bool:
        """Whether the worker is registered."""


class LocalProvider:
    name = "local"
    # One master: every master's agent would serve the cluster's internal
    # service addresses on this machine, and two cannot bind the same one.
    capabilities = frozenset({ProviderCapability.CREATE_NODE, ProviderCapability.REMOVE_NODE})

    def __init__(
        self,
        store: Store,
        *,
        etcd_url: str,
        state_dir: Path,
        etcd_tls: TLSFiles | None = None,
        start_timeout: float = 30.0,
        workers: Workers | None = None,
    ) -> None:
        self.store = store
        self.workers = workers
        """Where worker nodes join, when the engine keeps them (else: agents here)."""
        self.etcd_url = etcd_url
        self.etcd_tls = etcd_tls
        self.state_dir = state_dir
        self.start_timeout = start_timeout
        # Agents live in their own sessions and are found by pid; holding their
        # handles lets whoever reaps them find them (no warning of a lost child).
        self.spawned: list[subprocess.Popen[bytes]] = []

    def _dir(self, cluster: str, node: NodeObject) -> Path:
        name: str = node["?"]["name"]
        return self.state_dir / "nodes" / cluster / name

    async def deploy_instance(self, cluster: str, node: NodeObject) -> str:
        if node.get("address"):
            return str(node["address"])
        # A run cut off after allocating finds the address it took.
        return await allocate(self.store, "node", f"{cluster}/{node['?']['name']}", reuse=True)

    async def setup_etcd(self, cluster: str, node: NodeObject) -> None:
        # Local nodes share Marina's own etcd; record where it is for the agents.
        await self.store.put(f"{keys.CLUSTERS}{cluster}/etcd", {"endpoints": [self.etcd_url]})

    def _joins(self, node: NodeObject) -> bool:
        return self.workers is not None and node["role"] == "minion"

    async def node_running(self, cluster: str, node: NodeObject) -> bool:
        if self.workers is not None and self._joins(node):
            return await self.workers.node_joined(cluster, node["?"]["name"])
        return bool(_agent_pids(self._dir(cluster, node)))

    async def setup_node(self, cluster: str, node: NodeObject) -> None:
        address = node["address"]
        if address is None:
            raise ActionFailed("setupNode", f"{node['?']['name']} has no address yet")
        if self.workers is not None and self._joins(node):
            capacity = node.get("capacity", {})
            await self.workers.join_node(cluster, node["?"]["name"], address, capacity)
            return
        key = f"{keys.NODES}{cluster}/{node['?']['name']}"
        directory = self._dir(cluster, node)
        directory.mkdir(parents=True, exist_ok=True)
        if not await self.node_running(cluster, node):
            props = node.get("capacity", {})
            with open(directory / "agent.log", "ab") as logfile:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "catalog.engines.local.nodeagent",
                        "--etcd",
                        self.etcd_url,
                        "--cluster",
                        cluster,
                        "--node",
                        node["?"]["name"],
                        "--address",
                        address,
                        "--role",
                        node["role"],
                        "--cores",
                        str(props.get("cores", 2)),
                        "--memory",
                        str(props.get("memory", 2048)),
                        "--state-dir",
                        str(directory),
                        *(self.etcd_tls.args() if self.etcd_tls else []),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=logfile,
                    start_new_session=True,
                )
            self.spawned.append(proc)
            (directory / "agent.pid").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + self.start_timeout
        while await self.store.get(key) is None:
            if time.monotonic() > deadline:
                raise ActionFailed(
                    "setupNode",
                    f"the agent of {node['?']['name']} did not "
                    f"register within {self.start_timeout:.0f}s (see "
                    f"{directory / 'agent.log'})",
                    retryable=True,
                )
            if not await self.node_running(cluster, node):
                raise ActionFailed(
                    "setupNode",
                    f"the agent of {node['?']['name']} exited (see {directory / 'agent.log'})",
                    retryable=True,
                )
            await asyncio.sleep(0.05)

    async def remove_node(self, cluster: str, node: NodeObject) -> None:
        if self.workers is not None and self._joins(node):
            await self.workers.leave_node(cluster, node["?"]["name"])
        directory = self._dir(cluster, node)
        await stop_processes(_agent_pids(directory))
        kill_all(processes_naming(str(directory / "replicas")))  # what the agent left behind
        self.spawned = [p for p in self.spawned if p.poll() is None]  # reap what ended
        with contextlib.suppress(FileNotFoundError):
            (directory / "agent.pid").unlink()
        # An agent killed earlier left its gateway's HAProxy (own session) serving.
        await stop_processes(_haproxy_pids(directory / "gateway" / "haproxy.pid"), grace=5)
        await self.store.delete(f"{keys.NODES}{cluster}/{node['?']['name']}")
        await release(self.store, node.get("address"))


async def stop_processes(pids: list[int], *, grace: float = 20.0) -> None:
    """SIGTERM, then SIGKILL whatever is still running after `grace` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while any(_alive(pid) for pid in pids):  # SIGKILL cannot be refused: briefly
        await asyncio.sleep(0.01)


async def stop_all_agents(state_dir: Path) -> None:
    """Stop every node agent under `state_dir` (their replicas die with them)."""
    directories = [d for d in (state_dir / "nodes").glob("*/*") if d.is_dir()]
    await stop_processes([pid for d in directories for pid in _agent_pids(d)])
    kill_all([p for d in directories for p in processes_naming(str(d / "replicas"))])
    for directory in directories:
        (directory / "agent.pid").unlink(missing_ok=True)
    # Gateways' HAProxy runs in its own session; end what the agents left.
    haproxies = []
    for pid_file in (state_dir / "nodes").glob("*/*/gateway/haproxy.pid"):
        haproxies += _haproxy_pids(pid_file)
    await stop_processes(haproxies, grace=5)


def _haproxy_pids(pid_file: Path) -> list[int]:
    # A gateway's pid file may list several (one per line) mid-reload.
    with contextlib.suppress(OSError, ValueError):
        return [int(p) for p in pid_file.read_text().split()]
    return []


def _agent_pids(directory: Path) -> list[int]:
    """The live agents of the node whose state is in `directory`.

    The pid file first; then any process whose command line names this
    directory, for a start that was cut off before it wrote its pid file
    (the agent runs in its own session and outlives whoever started it).
    """
    pid = _read_pid(directory / "agent.pid")
    found = {pid} if pid is not None and _alive(pid) else set()
    wanted = ["-m", "catalog.engines.local.nodeagent"]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv[1:3] == wanted and "--state-dir" in argv:
            at = argv.index("--state-dir")
            if at + 1 < len(argv) and argv[at + 1] == str(directory) and _alive(int(proc.name)):
                found.add(int(proc.name))
    return sorted(found)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    # gateway/haproxy.py has the same check: the gateway shares no code with the catalog.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
