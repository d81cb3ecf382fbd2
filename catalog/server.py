"""`marina up`: the embedded stack in one process tree.

Starts etcd as a child (unless given one with --etcd), loads the shipped
packages, makes sure an admin token exists, and serves the API with a task
worker, the engine's background work and the observer. Node agents run in
their own sessions: they keep their pods running if this process dies, and a
restarted `marina up` finds them again. On Ctrl-C everything this process started is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from catalog import sandbox
from catalog.api import make_app
from catalog.api.serving import serve
from catalog.auth import authenticate, issue_token
from catalog.classes import ActionRunner
from catalog.engines import make_engine
from catalog.errors import MarinaError, StoreUnavailable
from catalog.observing import Observer
from catalog.packages import Downgrade, Package, get_package, load_folder, save_package
from catalog.pki import EtcdPKI, TLSFiles, ensure_etcd_pki
from catalog.processes import die_with_parent
from catalog.providers import make_provider
from catalog.providers.local import Workers, stop_all_agents
from catalog.statedir import default_state_dir
from catalog.store import Store
from catalog.tasks import Worker

log = logging.getLogger(__name__)

PACKAGES_DIR = Path(__file__).resolve().parent.parent / "packages"
ETCD_RESTART_BACKOFF = (0.5, 10.0)
STOP_GRACE = 0.3
"""Seconds the embedded etcd gets to stop on SIGTERM before SIGKILL. Its graceful
stop waits out Go's HTTP shutdown (about a second with TLS) for nothing: every
write it acknowledged is already in its fsynced log, so a kill loses none."""
TASKS_GRACE = 5.0
"""Seconds Marina's background loops get to finish after the stop event."""


@dataclass(frozen=True)
class ServerSettings:
    state_dir: Path = field(default_factory=default_state_dir)
    """Where etcd's data, node agents and the admin token live."""
    etcd: str | None = None
    """An external etcd endpoint; when unset, etcd runs as a child process."""
    etcd_tls: TLSFiles | None = None
    """CA, client certificate and key for an external `https://` etcd."""
    etcd_port: int = 23790
    """Client port of the embedded etcd (its peer port is the next one)."""
    host: str = "127.0.0.1"
    """Address the API listens on."""
    port: int = 8787
    """Port the API listens on."""
    packages_dir: Path = PACKAGES_DIR
    """Packages loaded into the catalog at start."""
    engine: str = "local"
    """Where pods run: `local` (node agents here) or `kubernetes` (an API server)."""
    kubeconfig: Path | None = None
    """The kubeconfig of the `kubernetes` engine's cluster (default: ~/.kube/config)."""
    context: str | None = None
    """The kubeconfig context to use (default: its current context)."""
    keystone_url: str | None = None
    """Keystone's v3 endpoint: its tokens are taken too (Murano's clients)."""
    provider: str = "local"
    """Where nodes come from: `local` (this machine) or `openstack` (servers of `cloud`)."""
    cloud: str | None = None
    """The clouds.yaml entry of the `openstack` provider."""
    openstack: dict[str, Any] = field(default_factory=dict)
    """The `openstack` provider's image, flavors (per role), network and keypair, when given."""

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class EmbeddedEtcd:
    """etcd as a child process on loopback, with its log beside its data.

    Given a `pki`, both its ports speak TLS and accept only clients with a
    certificate of Marina's CA: `marina up` always runs it so.
    """

    def __init__(
        self, data_dir: Path, port: int, *, peer_port: int | None = None, pki: EtcdPKI | None = None
    ) -> None:
        self.data_dir = data_dir
        self.pki = pki
        scheme = "https" if pki else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.peer = f"{scheme}://127.0.0.1:{peer_port or port + 1}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def client_tls(self) -> TLSFiles | None:
        return self.pki.client if self.pki else None

    def _tls_args(self) -> list[str]:
        if self.pki is None:
            return []
        server, peer = self.pki.server, self.pki.peer
        return [
            "--client-cert-auth",
            "--trusted-ca-file", str(server.ca),
            "--cert-file", str(server.cert),
            "--key-file", str(server.key),
            "--peer-client-cert-auth",
            "--peer-trusted-ca-file", str(peer.ca),
            "--peer-cert-file", str(peer.cert),
            "--peer-key-file", str(peer.key),
        ]  # fmt: skip

    def spawn(self) -> None:
        """Start etcd; from the main thread, since it dies with the thread that made it."""
        binary = shutil.which("etcd")
        if binary is None:
            raise StoreUnavailable(
                self.url, "etcd is not installed (Debian package etcd-server); or pass --etcd URL"
            )
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", int(self.url.rsplit(":", 1)[1]))) == 0:
                raise StoreUnavailable(
                    self.url,
                    "the port is taken; is another marina up running? (or pass --etcd-port)",
                )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir.parent / "etcd.log", "ab") as logfile:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--name",
                    "marina",
                    "--data-dir",
                    str(self.data_dir),
                    "--listen-client-urls",
                    self.url,
                    "--advertise-client-urls",
                    self.url,
                    "--listen-peer-urls",
                    self.peer,
                    "--initial-advertise-peer-urls",
                    self.peer,
                    "--initial-cluster",
                    f"marina={self.peer}",
                    "--auto-compaction-retention",
                    "1h",
                    "--log-level",
                    "error",
                    *self._tls_args(),
                ],
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                preexec_fn=die_with_parent,
            )

    def _health_context(self) -> ssl.SSLContext | None:
        if self.pki is None:
            return None
        context = ssl.create_default_context(cafile=str(self.pki.client.ca))
        context.load_cert_chain(str(self.pki.client.cert), str(self.pki.client.key))
        return context

    def wait_healthy(self) -> None:
        assert self.proc is not None
        context = self._health_context()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StoreUnavailable(
                    self.url, f"etcd exited; see {self.data_dir.parent}/etcd.log"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/health", timeout=1, context=context) as reply,
            ):
                if b"true" in reply.read():
                    return
            time.sleep(0.1)
        raise StoreUnavailable(self.url, "etcd did not become healthy in 30s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def load_shipped_packages(store: Store, folder: Path) -> list[str]:
    """Store each shipped package unless the same version is there already."""
    loaded = []
    for path in sorted(p for p in folder.iterdir() if (p / "manifest.yaml").exists()):
        package = load_folder(path)
        try:
            current: Package | None = await get_package(store, package.name)
        except MarinaError:
            current = None
        if (
            current is None
            or current.version != package.version
            or current.files != (package.files)
        ):
            try:
                await save_package(store, package)
            except Downgrade as exc:  # an admin uploaded a newer one: keep it
                log.warning("shipped package not loaded: %s", exc)
                continue
            loaded.append(package.name)
    return loaded


async def admin_token(store: Store, state_dir: Path) -> str:
    """The admin token saved under the state directory, issued on first start."""
    path = state_dir / "admin-token"
    if path.exists():
        token = path.read_text().strip()
        with contextlib.suppress(MarinaError):
            who = await authenticate(store, f"Bearer {token}")
            if who.admin:
                return token
    token = await issue_token(store, project="admin", admin=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


class Server:
    """Everything `marina up` runs, started and stopped as one."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.etcd: EmbeddedEtcd | None = None
        self.store: Store | None = None
        self.runner: web.AppRunner | None = None
        self.stop_event = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.token = ""
        self.etcd_url = settings.etcd or ""
        self.etcd_tls = settings.etcd_tls

    async def start(self) -> None:
        settings = self.settings
        sandbox.tools()  # refuse to start at all rather than run pods unconfined
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.state_dir, 0o700)
        if settings.etcd is None:
            pki = ensure_etcd_pki(settings.state_dir / "pki")
            self.etcd = EmbeddedEtcd(settings.state_dir / "etcd", settings.etcd_port, pki=pki)
            self.etcd.spawn()
            await asyncio.to_thread(self.etcd.wait_healthy)
            self.etcd_url = self.etcd.url
            self.etcd_tls = self.etcd.client_tls
        self.store = Store(self.etcd_url, tls=self.etcd_tls)
        loaded = await load_shipped_packages(self.store, settings.packages_dir)
        if loaded:
            log.info("packages loaded: %s", ", ".join(loaded))
        self.token = await admin_token(self.store, settings.state_dir)
        engine = make_engine(
            settings.engine,
            self.store,
            state_dir=settings.state_dir,
            kubeconfig=settings.kubeconfig,
            context=settings.context,
        )
        provider = make_provider(
            settings.provider,
            self.store,
            etcd_url=self.etcd_url,
            etcd_tls=self.etcd_tls,
            state_dir=settings.state_dir,
            # Workers of an engine that keeps its own (Kubernetes Nodes) join it.
            workers=engine if isinstance(engine, Workers) else None,
            cloud=settings.cloud,
            options=settings.openstack,
        )
        worker = Worker(self.store, ActionRunner(self.store, provider, engine))
        self.tasks = [
            asyncio.create_task(worker.run(self.stop_event), name="task worker"),
            asyncio.create_task(engine.run(self.stop_event), name="engine"),
            asyncio.create_task(Observer(self.store, engine).run(self.stop_event), name="observer"),
        ]
        follow = getattr(provider, "run", None)  # a provider's own background work
        if follow is not None:
            self.tasks.append(asyncio.create_task(follow(self.stop_event), name="provider"))
        if self.etcd is not None:
            self.tasks.append(
                asyncio.create_task(self._supervise_etcd(self.etcd), name="etcd supervisor")
            )
        self.runner = await serve(
            make_app(self.store, engine=engine, provider=provider, keystone=settings.keystone_url),
            host=settings.host,
            port=settings.port,
        )
        (settings.state_dir / "api-url").write_text(settings.api_url + "\n")

    async def _supervise_etcd(self, etcd: EmbeddedEtcd) -> None:
        """Start the embedded etcd again whenever it dies; the API answers 503 meanwhile."""
        delay = ETCD_RESTART_BACKOFF[0]
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), 0.2)
            if self.stop_event.is_set() or etcd.proc is None or etcd.proc.poll() is None:
                continue
            log.warning("embedded etcd exited with %s; starting it again", etcd.proc.returncode)
            try:
                etcd.spawn()
                await asyncio.to_thread(etcd.wait_healthy)
                delay = ETCD_RESTART_BACKOFF[0]
            except MarinaError as exc:
                log.error("embedded etcd did not come back: %s; next try in %.1fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), delay)
                delay = min(delay * 2, ETCD_RESTART_BACKOFF[1])

    async def stop(self, *, stop_nodes: bool) -> None:
        self.stop_event.set()
        if self.tasks:
            # A stop never hangs on one loop that missed the event: it is
            # cancelled (what it was doing is resumable, as after kill -9) and
            # named, with where it was, so that the miss can be found.
            _, late = await asyncio.wait(self.tasks, timeout=TASKS_GRACE)
            for task in late:
                where = io.StringIO()
                try:
                    task.print_stack(limit=3, file=where)
                except Exception:  # a suspended generator's frame may have no line
                    where.write(repr(task))
                log.warning(
                    "%s did not stop within %.0f s; cancelled\n%s",
                    task.get_name(),
                    TASKS_GRACE,
                    where.getvalue(),
                )
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.runner is not None:
            await self.runner.cleanup()
        if stop_nodes:
            await stop_all_agents(self.settings.state_dir)
        if self.store is not None:
            with contextlib.suppress(MarinaError):
                await self.store.close()
        if self.etcd is not None:
            await asyncio.to_thread(self.etcd.stop)


def stop_on_signals() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM; install it before starting anything."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def serve_until_stopped(server: Server, stop: asyncio.Event, *, stop_nodes: bool) -> None:
    try:
        await stop.wait()
    finally:
        await server.stop(stop_nodes=stop_nodes)
