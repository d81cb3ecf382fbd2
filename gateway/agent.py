"""The gateway agent: keeps HAProxy in step with the routes in etcd.

Changes are applied on the leading edge: the first change after a quiet
period goes out at once, and changes that arrive while one is being applied
are gathered until `quiet` passes without another one or `max_delay` since
the first, so a burst of thousands of routes is applied in a few steps as it
arrives, each costing what it changes.

A static part's reload is a flight: its new HAProxy starts in the background
while the agent goes on taking changes, planning and starting other parts,
so a burst that fills part after part has them parse side by side instead of
one after the other. A part in flight is left alone (no runtime command, no
other reload) until its new process is confirmed or refused; then the agent
looks again, and what changed meanwhile follows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.certificates import (
    BadCertificate,
    Certificate,
    certs_prefix,
    ensure_default,
    file_name,
    find_certificate,
    parse_certificate,
)
from gateway.errors import AlreadyRunning, EtcdUnavailable, GatewayError, HAProxyError, PortsHeld
from gateway.etcd import EtcdClient
from gateway.haproxy import HAProxy, bound_ports_failing
from gateway.metrics import Metrics, serve_metrics
from gateway.planning import (
    POOL,
    Key,
    Layout,
    build_layout,
    differences,
    key_of,
    plan_changes,
    routes_by_part,
)
from gateway.ports import foreign_holders
from gateway.rendering import (
    Budget,
    RenderContext,
    fd_limit,
    plan_budget,
    render_config,
    render_map,
    routes_blamed,
    shared_frontends,
)
from gateway.routes import (
    Route,
    RouteSelection,
    Skipped,
    StatusDoc,
    routes_prefix,
    status_key,
)
from gateway.settings import Settings
from gateway.watching import Item, Listed, Unreachable, follow_routes

log = logging.getLogger(__name__)

_STATIC_FILE = re.compile(r"(?:standby-)?(static-\d+)\.(?:pid|cfg)")
_BIND_LINE = re.compile(r"^\s+bind (\[[^\]]+\]|[^\s:]+):(\d+)(?:\s|$)", re.MULTILINE)
BIND_RETRIES = 5
BUSY_RETRY = 30.0
# This many changes within the window make a burst, which puts reloads off.
BURST_EVENTS = 20
BURST_WINDOW = 1.0
# Set in tests: every plan also compares the whole table, and a service left
# out of `Agent.unsettled` stops the agent.
SELF_CHECK = "MARINA_GATEWAY_SELF_CHECK"
# How often the agent looks whether its HAProxy still runs.
WATCHDOG_INTERVAL = 0.1
# Stopping never waits longer than this for etcd to take the status down.
WITHDRAW_TIMEOUT = 0.3


@dataclass
class Flight:
    """A static part's new HAProxy being started in the background."""

    task: asyncio.Task[float]
    layout: Layout
    """What the part serves once the new process is confirmed."""
    routes: dict[str, Route]
    config: str
    budget: Budget
    revision: int
    render_ms: float


class Agent:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prefix = routes_prefix(settings.cluster).encode()
        self.etcd = EtcdClient(settings.etcd, tls=settings.etcd_tls)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        # Several processes: the port range with its pool backends, and
        # static parts of a few hundred routes on ports of their own, so that
        # a reload for a new port hands over neither the range's listeners
        # nor most others. haproxy.pid lists every process, as it did when
        # there was one. Parts an earlier agent ran are found by their files.
        self.proxies: dict[str, HAProxy] = {}
        if settings.port_range is not None:
            self._proxy(POOL)
        for path in settings.state_dir.glob("*static-*.*"):
            match = _STATIC_FILE.fullmatch(path.name)
            if match:
                self._proxy(match.group(1))
        # Ports the static parts of an earlier agent's processes hold, read
        # from their configurations at the first reload: they stay put.
        self.recovered: dict[Key, str] | None = None
        self.metrics = Metrics()
        self.raw: dict[str, bytes] = {}
        self.selection = RouteSelection(reserved_ports=settings.blocked_ports)
        # Services whose value changed since routes were last selected
        # (None: after a listing, any may have).
        self.changed: set[str] | None = None
        self.revision = 0
        self.known = False
        self.layout: Layout | None = None
        # Services whose desired route may not be the one served (None: any
        # may differ): a change to a table of thousands looks at these alone.
        self.unsettled: set[str] | None = None
        self.self_check = os.environ.get(SELF_CHECK) == "1"
        self.skipped: list[Skipped] = []
        # Ports another process holds: port -> (service, reason, when found).
        self.busy_ports: dict[int, tuple[str, str, float]] = {}
        self.held: dict[str, Route] = {}
        self.held_since: float | None = None
        self.last_error: str | None = None
        self.last_apply = 0.0
        self.status_changed = asyncio.Event()
        self.last_event = 0.0
        self.recent_events: collections.deque[float] = collections.deque(maxlen=BURST_EVENTS)
        self.reload_wanted: float | None = None
        self.looked_at = 0.0  # when the agent last stopped taking changes
        # A standby put off until a burst ends (see `reconcile`).
        self.standby_after_burst = False
        self.reload_quiet = settings.reload_quiet  # the quiet the reload put off waits for
        # Routes HAProxy refused: service -> (the value refused, HAProxy's words).
        self.refused: dict[str, tuple[bytes, str]] = {}
        self.incident: str | None = None
        self.applying = asyncio.Lock()
        self._lock_file: int | None = None
        self.candidate = ""  # the configuration last rendered for a reload
        self.certs_dir = settings.state_dir / "certs"
        self.cert_raw: dict[str, bytes] = {}
        self.cert_cache: dict[str, tuple[bytes, Certificate | BadCertificate]] = {}
        self.cert_problems: dict[str, str] = {}
        self.tls_missing: set[str] = set()
        # What each process holds: certificate file -> PEM, crt-list -> files.
        self.tls_loaded: dict[str, dict[str, str]] = {}
        self.tls_lists: dict[str, dict[str, set[str]]] = {}
        self.unchecked_parts: dict[str, int] = {}
        self._tls_seen: tuple[Layout | None, bool] = (None, False)
        self.flights: dict[str, Flight] = {}
        # Revisions applied once the flights named beside them land (flights
        # launched later do not hold them back).
        self.awaiting: list[tuple[int, set[str]]] = []
        self._queue: asyncio.Queue[Item | None] | None = None

    # -- the main loop ---------------------------------------------------

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        runner = None
        try:
            self._claim()
            runner = await self._start_up()
            queue: asyncio.Queue[Item | None] = asyncio.Queue()
            self._queue = queue
            tasks = [
                asyncio.create_task(self._watch(queue)),
                asyncio.create_task(self._report()),
                asyncio.create_task(self._consume(queue)),
                asyncio.create_task(self._watchdog()),
                asyncio.create_task(self._watch_certs(queue)),
            ]
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    if task.done() and task.exception():
                        raise task.exception()  # type: ignore[misc]
            finally:
                stopper.cancel()
                for task in tasks:
                    task.cancel()
                flying = [flight.task for flight in self.flights.values()]
                for flight_task in flying:
                    flight_task.cancel()
                await asyncio.gather(*tasks, *flying, return_exceptions=True)
                # HAProxy first: whatever etcd does, the ports are free at once.
                await asyncio.gather(*(proxy.stop() for proxy in list(self.proxies.values())))
                await self._withdraw_status()
        finally:
            await self.etcd.close()
            if runner is not None:
                await runner.cleanup()
            self._release()

    def _claim(self) -> None:
        """One agent per state directory: a second would fight over its HAProxy."""
        path = self.settings.state_dir / "agent.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyRunning(str(self.settings.state_dir), holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_file = fd

    def _release(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    async def _start_up(self) -> Any:
        """Adopt what an earlier agent left running, then make sure no other
        process holds the ports this gateway serves."""
        for proxy in list(self.proxies.values()):
            proxy.adopt()
        # An agent of an earlier version ran everything in one process.
        legacy = HAProxy(self.settings.state_dir, binary=self.settings.haproxy)
        if legacy.adopt() is not None:
            await legacy.retire()
        ports: set[int] = set()
        if self.settings.port_range is not None:
            low, high = self.settings.port_range
            ports.update(range(low, high + 1))
        ours = {pid for proxy in list(self.proxies.values()) for pid in proxy.pids()}
        holders = foreign_holders(self.settings.address, ports, ours=ours)
        if self.settings.metrics_port:
            holders += foreign_holders(
                self.settings.metrics_address, {self.settings.metrics_port}, ours=ours
            )
        if holders:
            raise PortsHeld([h.describe() for h in holders])
        if self.settings.metrics_port:
            return await serve_metrics(
                self.metrics,
                host=self.settings.metrics_address,
                port=self.settings.metrics_port,
                haproxy=self._scrape_haproxy,
            )
        return None

    async def _watch(self, queue: asyncio.Queue[Item | None]) -> None:
        async for item in follow_routes(self.etcd, self.prefix):
            queue.put_nowait(item)

    async def _watch_certs(self, queue: asyncio.Queue[Item | None]) -> None:
        """Follow the certificates; `None` on the queue says they changed
        (or that a flight landed: either way, look again)."""
        prefix = certs_prefix(self.settings.cluster).encode()
        async for item in follow_routes(self.etcd, prefix):
            if isinstance(item, Unreachable):
                continue  # the route watch reports it
            if isinstance(item, Listed):
                self.cert_raw = {
                    k[len(prefix) :].decode(errors="replace"): v for k, v in item.values.items()
                }
            else:
                for event in item.events:
                    host = event.key[len(prefix) :].decode(errors="replace")
                    if event.value is None:
                        self.cert_raw.pop(host, None)
                    else:
                        self.cert_raw[host] = event.value
            queue.put_nowait(None)

    def _take(self, item: Item | None) -> bool:
        """Fold one watch item into the known routes; True if routes may change."""
        if item is None:
            return True  # certificates changed, or a flight landed
        if isinstance(item, Unreachable):
            self.metrics.etcd_errors += 1
            if self.last_error != item.error:
                self.last_error = item.error
                log.warning("%s; serving the last applied configuration", item.error)
            return False
        if isinstance(item, Listed):
            self.raw = {
                k[len(self.prefix) :].decode(errors="replace"): v for k, v in item.values.items()
            }
            self.revision = item.revision
            self.known = True
            self.changed = None
            return True
        self.last_event = time.monotonic()
        self.recent_events.extend([self.last_event] * min(len(item.events), BURST_EVENTS))
        cut = len(self.prefix)
        for event in item.events:
            service = event.key[cut:].decode(errors="replace")
            if event.value is None:
                self.raw.pop(service, None)
            else:
                self.raw[service] = event.value
            if self.changed is not None:
                self.changed.add(service)
            self.revision = max(self.revision, event.revision)
        return True

    async def _consume(self, queue: asyncio.Queue[Item | None]) -> None:
        for proxy in list(self.proxies.values()):
            if not proxy.running():
                with contextlib.suppress(HAProxyError):
                    if await proxy.start_last_good():
                        log.info("%s: serving the last good configuration", proxy.config_path)
        while True:
            timeout = self._next_wakeup()
            try:
                # What is queued first: with a wakeup already due, waiting
                # on the queue would time out before taking it.
                item = (
                    queue.get_nowait()
                    if not queue.empty()
                    else await asyncio.wait_for(queue.get(), timeout)
                )
            except TimeoutError:
                await self.reconcile()
                continue
            dirty = self._take(item)
            first = time.monotonic()
            # Leading edge: a change after a quiet spell goes out at once;
            # otherwise wait for the burst to settle, up to max_delay. In a
            # burst, what is taken goes out at once too: a part that new
            # ports filled starts now, and one with room waits for the
            # burst's end anyway (`_defer_reload`).
            if first - self.last_apply < self.settings.quiet and not self._in_burst():
                while True:
                    remaining = first + self.settings.max_delay - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(
                            queue.get(), min(self.settings.quiet, remaining)
                        )
                    except TimeoutError:
                        break
                    dirty = self._take(item) or dirty
            while not queue.empty():
                dirty = self._take(queue.get_nowait()) or dirty
            if dirty and self.known:
                await self.reconcile()
            self.status_changed.set()

    async def _watchdog(self) -> None:
        """Notice a dead HAProxy within WATCHDOG_INTERVAL and serve again."""
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            for part, proxy in list(self.proxies.items()):
                pid = proxy.pid
                if pid is None or proxy.running() or self.applying.locked():
                    continue
                if part in self.flights:
                    continue  # its old process ends as the new one takes over
                async with self.applying:
                    if proxy.pid != pid or proxy.running():
                        continue  # a reload replaced it meanwhile
                    await self._restart(part, proxy, pid)

    async def _restart(self, part: str, proxy: HAProxy, pid: int) -> None:
        how = await proxy.exit_reason(pid)
        proxy.forget(pid)
        what = "no good configuration to restart from"
        try:
            if self.layout is not None:
                # The layout it served, runtime changes included, which the
                # files of the last reload lack.
                config, port_map, _ = self._render(self.layout, part)
                await proxy.apply(config, port_map)
                what = "restarted from the last good configuration"
            elif await proxy.start_last_good():
                what = "restarted from the last good configuration file"
        except HAProxyError as exc:
            what = f"could not restart it: {exc}"
            with contextlib.suppress(HAProxyError):
                if await proxy.start_last_good():
                    what += "; restarted from the last good configuration file"
        # Together, so that no status shows the count without the story.
        self.metrics.haproxy_restarts += 1
        self.incident = f"haproxy pid {pid} {how}; {what} ({part})"
        log.error("%s", self.incident)
        self.status_changed.set()

    def _proxy(self, part: str) -> HAProxy:
        """The process of `part`, made known on first use."""
        proxy = self.proxies.get(part)
        if proxy is None:
            proxy = self.proxies[part] = HAProxy(
                self.settings.state_dir,
                name="range" if part == POOL else part,
                binary=self.settings.haproxy,
                every_pid=self.settings.state_dir / "haproxy.pid",
            )
        return proxy

    def _part_layout(self, layout: Layout, part: str) -> Layout:
        """What one process serves: the pool, or one part of the static routes."""
        if part == POOL:
            return Layout(layout.port_range, {}, layout.pool)
        return Layout(None, layout.part_static(part), [])

    def _running_as_planned(self, layout: Layout) -> bool:
        """Every part that should run a process has one: the pool always (it
        holds the range), a static part when it has routes. Called once the
        processes recorded were found alive or restarted."""
        if POOL in self.proxies and self.proxies[POOL].pid is None:
            return False
        return all(
            part in self.flights or (part in self.proxies and self.proxies[part].pid is not None)
            for part in layout.served_parts()
        )

    def _recover_placement(self) -> dict[Key, str]:
        """The static part of each port that a running process of an earlier
        agent (or of the last good configuration) binds: a port moved to
        another process would be refused while the first one holds it."""
        placement: dict[Key, str] = {}
        own = self.settings.address
        for part, proxy in self.proxies.items():
            if part == POOL or not proxy.running():
                continue
            try:
                text = proxy.config_path.read_text()
            except OSError:
                continue
            for host, port in _BIND_LINE.findall(text):
                host = host.strip("[]")
                placement[(None if host == own else host, int(port))] = part
        return placement

    def _next_wakeup(self) -> float | None:
        """Seconds until a put-off reload, a held wipe, a busy port or the
        end of a burst (with a standby to start then) is due."""
        due = [t + BUSY_RETRY for _, _, t in self.busy_ports.values()]
        if self.standby_after_burst and self.recent_events:
            due.append(self.recent_events[0] + BURST_WINDOW)
        if self.reload_wanted is not None:
            due.append(self.last_event + self.reload_quiet)
        if self.held_since is not None:
            due.append(self.held_since + self.settings.wipe_hold)
        return max(0.0, min(due) - time.monotonic()) if due else None

    # -- applying ---------------------------------------------------------

    def _desired(self) -> Mapping[str, Route]:
        """The routes to serve: when nothing is filtered, the selection's own
        table, valid until the next call."""
        selected, skipped = self.selection.select(self.raw, self.changed)
        self.changed = set()
        # Services left out or held back before this selection: whether
        # they still are is decided below.
        aside = {e[0] for e in self.busy_ports.values()} | self.refused.keys() | self.held.keys()
        now = time.monotonic()
        self.busy_ports = {
            port: entry
            for port, entry in self.busy_ports.items()
            if now - entry[2] < BUSY_RETRY
            and entry[0] in selected
            and selected[entry[0]].port == port
        }
        self.refused = {s: v for s, v in self.refused.items() if self.raw.get(s) == v[0]}
        routes: Mapping[str, Route] = selected
        # Most changes leave nothing to filter: then no copy of the table.
        if self.busy_ports or self.refused or self.selection.with_hosts:
            routes = self._filtered(selected, skipped)
        self.skipped = skipped
        self._note_unsettled(aside)
        return self._hold_wipe(routes, now)

    def _filtered(self, selected: Mapping[str, Route], skipped: list[Skipped]) -> dict[str, Route]:
        """`selected` without the routes whose port another process holds,
        those HAProxy refused, and those with host names on a port of the
        range; each is added to `skipped` with the reason."""
        routes = dict(selected)
        for service, reason, _ in self.busy_ports.values():
            del routes[service]
            skipped.append(Skipped(service, reason))
        if self.settings.port_range is not None and self.selection.with_hosts:
            low, high = self.settings.port_range
            for service, route in list(routes.items()):
                if route.hosts and route.address is None and low <= route.port <= high:
                    del routes[service]
                    skipped.append(
                        Skipped(
                            service,
                            f"port {route.port} lies in the port range, which is "
                            "routed by port alone; host names need a port outside it",
                        )
                    )
        # A refused route stays out until its value changes.
        for service, (_, reason) in self.refused.items():
            if routes.pop(service, None) is not None:
                skipped.append(Skipped(service, reason))
        return routes

    def _note_unsettled(self, aside: set[str]) -> None:
        """Add what the last selection touched, and what was or is set
        aside, to the services a plan must look at."""
        touched = self.selection.touched
        if touched is None or self.selection.with_hosts or self.unsettled is None:
            self.unsettled = None  # routes with host names: any may have moved
        else:
            self.unsettled |= touched | aside | {e[0] for e in self.busy_ports.values()}

    def _hold_wipe(self, routes: Mapping[str, Route], now: float) -> Mapping[str, Route]:
        """`routes`, or with the served routes it removes held back when it
        removes most of them (`--wipe-share`), for `--wipe-hold` seconds."""
        served = self.layout.served() if self.layout else {}
        _, removed = differences(served, routes, self.unsettled)
        wipe = (
            bool(served)
            and bool(removed)
            and (not routes or len(removed) / len(served) > self.settings.wipe_share)
        )
        if wipe:
            self.held_since = self.held_since or now
            if now - self.held_since < self.settings.wipe_hold:
                self.held = {s: served[s] for s in removed}
                kept = dict(routes)
                ports = {r.port for r in routes.values()}
                for service, route in self.held.items():
                    if route.port not in ports:
                        kept[service] = route
                        ports.add(route.port)
                return kept
        self.held_since = None
        self.held = {}
        return routes

    async def reconcile(self) -> None:
        """Bring HAProxy to the known routes; never raises for a bad change."""
        async with self.applying:
            await self._reconcile_locked()
            await self._apply_certificates()
            # After the change, not before it: ready for the next one. The
            # pool and the part a new port would go to wait with a standby;
            # other parts change rarely, and each standby is a process.
            wanted = {POOL} & self.proxies.keys()
            if self.layout is not None:
                wanted.add(self.layout.open_part())
                # The part a port alone would go to differs from the one a
                # burst fills: its standby waits for the burst to end, as
                # starting a process takes from what the burst needs.
                alone = self.layout.open_part(self._quiet_shard_routes())
                self.standby_after_burst = alone not in wanted and self._in_burst()
                if not self.standby_after_burst:
                    wanted.add(alone)
            for part in sorted(wanted | self.proxies.keys()):
                if part in self.flights:
                    continue  # its standby is the process being started
                proxy = self._proxy(part)
                if part not in wanted:
                    proxy.drop_standby()
                    continue
                try:
                    await proxy.prepare_standby()
                except (OSError, HAProxyError) as exc:
                    log.warning("no standby haproxy for %s: %s", proxy.name, exc)

    async def _reconcile_locked(self) -> None:
        applied = False
        try:
            applied = await self._reconcile()
            self.last_error = None
        except GatewayError as exc:
            self.last_error = str(exc)
            log.error("could not apply revision %d: %s", self.revision, exc)
        finally:
            self.last_apply = time.monotonic()
            if applied:
                self.metrics.applied_revision = self.revision
                self.awaiting = []
            self.metrics.skipped_routes = len(self.skipped)
            self.metrics.held_routes = len(self.held)
            self.metrics.routes = self.layout.route_count() if self.layout else 0
            self.status_changed.set()

    def _defer_reload(self, quiet: float) -> bool:
        """Whether a reload should wait for a burst of changes to end: until
        `quiet` passes without a change.

        A reload of thousands of routes takes seconds; one started in the
        middle of a burst delays the one that the burst's end needs anyway.
        """
        now = time.monotonic()
        in_burst = self._in_burst()
        self.reload_quiet = quiet
        # Quiet is counted up to when the agent last listened (this look
        # began): changes sent while it plans are not read yet. Changes
        # waiting to be taken mean the burst goes on, however long taking
        # the last ones took.
        pending = self._queue is not None and not self._queue.empty()
        if not in_burst or (self.looked_at - self.last_event >= quiet and not pending):
            self.reload_wanted = None
            return False
        self.reload_wanted = self.reload_wanted or now
        if now - self.reload_wanted >= self.settings.max_reload_delay:
            self.reload_wanted = None
            return False
        return True

    def _in_burst(self) -> bool:
        """Whether changes come in a burst: many within `BURST_WINDOW`."""
        now = time.monotonic()
        while self.recent_events and self.recent_events[0] < now - BURST_WINDOW:
            self.recent_events.popleft()
        return len(self.recent_events) >= BURST_EVENTS

    def _shard_routes(self) -> int:
        """How full new ports fill a static part now: big during a burst
        (fewer processes to start), small for a port alone (a small process
        to restart, whatever the table holds)."""
        return self.settings.shard_routes if self._in_burst() else self._quiet_shard_routes()

    def _quiet_shard_routes(self) -> int:
        return min(self.settings.quiet_shard_routes, self.settings.shard_routes)

    async def _reconcile(self) -> bool:
        """Apply what is known; False when a reload was put off for now or
        is still in flight."""
        started = time.perf_counter()
        self.looked_at = time.monotonic()
        await self._land()
        desired = self._desired()
        if self.layout is not None:
            # A process found dead here rather than by the watchdog is
            # restarted and reported the same way.
            for part, proxy in list(self.proxies.items()):
                if part in self.flights:
                    continue
                if proxy.pid is not None and not proxy.running():
                    await self._restart(part, proxy, proxy.pid)
        if self.layout is None or not self._running_as_planned(self.layout):
            self.reload_wanted = None  # everything reloads now
            await self._land(wait=True)
            desired = self._desired()
            return await self.reload_isolating(desired, None)
        pool = self.proxies.get(POOL)
        self.layout.shard_routes = self._shard_routes()
        view = self._frozen(desired)
        hint = self._hint()
        if self.self_check and hint is not None:
            missed = set().union(*differences(self.layout.served(), view)) - hint
            assert not missed, f"revision {self.revision}: services left unsettled {missed}"
        plan = plan_changes(
            self.layout, view, map_path=str(pool.map_path) if pool else "", hint=hint
        )
        planned = time.perf_counter()
        parts: set[str] = set()
        deferred = False
        # During a burst, a static part that new ports have filled reloads
        # at once: it takes no more of them, so it is parsed once. One with
        # room waits for the burst to end (or to fill it), and so does the
        # pool, whose reload hands over every listener of the range.
        full = plan.layout.shard_routes
        waiting = [p for p in plan.reloads if p == POOL or plan.layout.sizes.get(p, 0) < full]
        # A static part only gains listeners: it waits for the quiet that
        # ends a burst of changes, not for the longer one of the pool.
        quiet = self.settings.reload_quiet if POOL in waiting else self.settings.quiet
        hold = self._defer_reload(quiet) if waiting else False
        if not waiting:
            self.reload_wanted = None  # nothing left to put off
        for part, reason in plan.reloads.items():
            # A part in flight is looked at again once it lands.
            if part in self.flights or (hold and part in waiting):
                deferred = True
                continue
            parts.add(part)
            log.info("reload of %s: %s", part, reason)
        # Commands for a part about to be reloaded would be lost anyway.
        sends = [
            (self.proxies[part], commands)
            for part, commands in plan.commands_by_part.items()
            if commands and part not in parts
        ]
        try:
            for proxy, commands in sends:
                await proxy.run_commands(commands)
        except HAProxyError as exc:
            log.warning("runtime update failed, reloading instead: %s", exc)
            return await self.reload_isolating(desired, None)
        self.layout = plan.layout
        # What the plan left differing (reloads put off or in flight) is
        # looked at again next time.
        self.unsettled = set().union(*differences(self.layout.served(), desired, hint))
        if sends:
            self.metrics.runtime_updates += 1
            log.info(
                "revision %d: %d runtime commands (plan %.0f ms, apply %.0f ms)",
                self.revision,
                sum(len(c) for _, c in sends),
                (planned - started) * 1000,
                (time.perf_counter() - planned) * 1000,
            )
        if parts - {POOL}:
            await self._launch(parts - {POOL}, desired, plan.placed)
        if POOL in parts and not await self.reload_isolating(desired, {POOL}):
            return False
        if not deferred and self.flights:
            self.awaiting.append((self.revision, set(self.flights)))
        return not deferred and not self.flights

    def _hint(self) -> set[str] | None:
        """The services a plan must look at: the unsettled ones, and those
        of the parts in flight (seen as they are served)."""
        if self.unsettled is None or self.layout is None:
            return None
        hint = set(self.unsettled)
        for flight in self.flights.values():
            hint |= flight.routes.keys()
        members = self.layout.members()
        for part in self.flights:
            hint |= members.get(part, frozenset())
        return hint

    def _frozen(self, desired: Mapping[str, Route]) -> Mapping[str, Route]:
        """`desired` with the routes of each part in flight as the running
        layout has them, so that a plan leaves those parts alone."""
        if not self.flights or self.layout is None:
            return desired
        view = dict(desired)
        for part, flight in self.flights.items():
            running = self.layout.part_static(part)
            for service in flight.routes.keys() | running.keys():
                slot = running.get(service)
                if slot is not None and slot.route is not None:
                    view[service] = slot.route
                else:
                    view.pop(service, None)
        return view

    async def _launch(
        self,
        parts: set[str],
        desired: Mapping[str, Route],
        placed: dict[str, set[str]] | None = None,
    ) -> None:
        """Start a new process for each static part in `parts`, in the
        background; `_land` takes in how each went. `placed` names the routes
        a plan sent to each part beyond those it serves (None: look at all)."""
        assert self.layout is not None
        started = time.perf_counter()
        own = self.layout
        routes = routes_by_part(own, parts, desired, placed)
        for part in sorted(parts):
            fresh = self._build(routes[part], spares=False, placement=own.placement)
            config, _, budget = self._render(fresh, part)
            render_ms = (time.perf_counter() - started) * 1000
            task = asyncio.create_task(self._fly(part, config))
            self.flights[part] = Flight(
                task, fresh, routes[part], config, budget, self.revision, render_ms
            )
            # Its process starts reading while the next part renders (and
            # before the agent prepares standbys): HAProxy parses on the
            # other core.
            await asyncio.sleep(0)
            started = time.perf_counter()
        self.metrics.render_count += 1

    async def _fly(self, part: str, config: str) -> float:
        """Swap in `config` for `part`, then wake the agent to land it."""
        try:
            if not self.flights[part].layout.members().get(part):
                await self._proxy(part).retire()  # no route of its own, so no process
                return 0.0
            return await self._proxy(part).apply(config, None)
        finally:
            if self._queue is not None:
                self._queue.put_nowait(None)

    async def _land(self, *, wait: bool = False) -> None:
        """Take in the flights that ended (all of them, if `wait`): the parts
        confirmed join the layout; a refused one keeps its running process,
        and the routes to blame are left out of the next try."""
        if wait and self.flights:
            await asyncio.gather(*(f.task for f in self.flights.values()), return_exceptions=True)
        failure: HAProxyError | None = None
        for part, flight in list(self.flights.items()):
            if not flight.task.done():
                continue
            del self.flights[part]
            if flight.task.cancelled():
                continue
            exc = flight.task.exception()
            if exc is None:
                self._take_flight(part, flight)
                continue
            if not isinstance(exc, HAProxyError):
                raise exc
            # What waited for it is applied only by a later try.
            self.awaiting = [(r, p) for r, p in self.awaiting if part not in p]
            self.metrics.reload_failures += 1
            self.candidate = flight.config
            if not await self._isolate(dict(flight.routes), exc):
                failure = failure or exc
        if failure is not None:
            raise failure

    def _take_flight(self, part: str, flight: Flight) -> None:
        current = self.layout or Layout(
            self.settings.port_range, placement=dict(self.recovered or {})
        )
        self.layout = self._merge(current, flight.layout, {part})
        for _, waiting in self.awaiting:
            waiting.discard(part)
        done = [revision for revision, waiting in self.awaiting if not waiting]
        if done:
            self.metrics.applied_revision = max(self.metrics.applied_revision, *done)
            self.awaiting = [(r, p) for r, p in self.awaiting if p]
            self.status_changed.set()
        seconds = flight.task.result()
        self.metrics.render_seconds_sum += flight.render_ms / 1000
        if flight.layout.members().get(part):
            self.metrics.reloads += 1
            self.metrics.reload_seconds_sum += seconds
            self.unchecked_parts[part] = flight.budget.unchecked_servers
        else:
            self.unchecked_parts.pop(part, None)
        log.info(
            "revision %d: reloaded %s (render %.0f ms, swap %.0f ms)",
            flight.revision,
            part,
            flight.render_ms,
            seconds * 1000,
        )

    async def reload_isolating(self, desired: Mapping[str, Route], parts: set[str] | None) -> bool:
        """Reload `parts` (None: every part) with `desired`, leaving out each
        route that HAProxy refuses or whose port another process holds, and
        reporting why."""
        desired = dict(desired)  # what is left out goes from this copy
        for _ in range(BIND_RETRIES):
            try:
                await self._reload(desired, parts)
                return True
            except HAProxyError as exc:
                self.metrics.reload_failures += 1
                if not await self._isolate(desired, exc):
                    raise
        return False

    async def _isolate(self, desired: dict[str, Route], exc: HAProxyError) -> bool:
        """Take out of `desired` the routes a refused reload blames (a port
        another process holds, a route HAProxy refuses), recording why;
        False when none is to blame."""
        busy = bound_ports_failing(exc.detail)
        here = self.settings.address
        owners = {r.port: s for s, r in desired.items() if (r.address or here, r.port) in busy}
        if not owners:
            refused = await self._find_refused(desired, exc.detail)
            for service, reason in refused.items():
                self.refused[service] = (self.raw.get(service, b""), reason)
                del desired[service]
                self.skipped.append(Skipped(service, reason))
                log.error("route %s refused: %s", service, reason)
            return bool(refused)
        ours = {pid for proxy in list(self.proxies.values()) for pid in proxy.pids()}
        for port, service in owners.items():
            address = desired[service].address or self.settings.address
            reason = f"port {port} could not be bound on {address}"
            holders = foreign_holders(address, {port}, ours=ours)
            if holders:
                reason += f": {holders[0].describe()}"
            self.busy_ports[port] = (service, reason, time.monotonic())
            del desired[service]
            self.skipped.append(Skipped(service, reason))
        return True

    async def _find_refused(self, desired: dict[str, Route], detail: str) -> dict[str, str]:
        """Routes that make HAProxy refuse the configuration on their own.

        HAProxy's message names a line or a proxy, which the rendered file
        ties to a route; when it names neither, the routes changed since the
        running layout are checked in halves with `haproxy -c`.
        """
        blamed = routes_blamed(self.candidate, detail) & desired.keys()
        if blamed:
            return {s: f"haproxy refused this route: {detail}" for s in sorted(blamed)}
        served = self.layout.served() if self.layout else {}
        changed = sorted(s for s in desired if served.get(s) != desired[s])
        base = {s: r for s, r in desired.items() if s not in changed}
        found: dict[str, str] = {}

        async def refusal(routes: dict[str, Route]) -> str | None:
            layout = self._build(routes, spares=True)
            # A part without routes is not run: HAProxy refuses a
            # configuration without listeners.
            parts = [POOL] if POOL in self.proxies else []
            for part in parts + sorted(p for p, size in layout.sizes.items() if size):
                config, port_map, _ = self._render(layout, part)
                try:
                    await self._proxy(part).check(config, port_map)
                except HAProxyError as exc:
                    return exc.detail
            return None

        async def search(group: list[str]) -> None:
            reason = await refusal({**base, **{s: desired[s] for s in group}})
            if reason is None:
                return
            if len(group) == 1:
                found[group[0]] = f"haproxy refused this route: {reason}"
                return
            middle = len(group) // 2
            await search(group[:middle])
            await search(group[middle:])

        if changed and await refusal(base) is None:
            await search(changed)
        return found

    def _build(
        self, routes: dict[str, Route], *, spares: bool, placement: dict[Key, str] | None = None
    ) -> Layout:
        """A fresh layout; ports keep the parts they run in."""
        if placement is None:
            if self.layout is not None:
                placement = self.layout.placement
            else:
                if self.recovered is None:
                    self.recovered = self._recover_placement()
                placement = self.recovered
        return build_layout(
            routes,
            port_range=self.settings.port_range,
            spares=spares,
            placement=placement,
            shard_routes=self._shard_routes(),
        )

    def _render(self, layout: Layout, part: str) -> tuple[str, str | None, Budget]:
        proxy = self._proxy(part)
        context = RenderContext(
            gateway_id=self.settings.ident,
            address=self.settings.address,
            socket=str(proxy.socket_path),
            map_path=str(proxy.map_path),
            revision=self.revision,
            certs=str(self.certs_dir),
            metrics_socket=str(proxy.metrics_socket),
        )
        # Each part is a process of its own, with its own open-file limit.
        own = self._part_layout(layout, part)
        if part != POOL:
            self._write_tls_files(part, own)
        budget = plan_budget(own, limit=fd_limit())
        config = render_config(own, context, budget, part="pool" if part == POOL else "static")
        port_map = render_map(layout) if part == POOL else None
        return config, port_map, budget

    async def _reload(self, desired: dict[str, Route], parts: set[str] | None) -> None:
        """Rebuild `parts` (None: every part) from `desired` (the others keep
        their running layout) and start a new process for each, all at once."""
        started = time.perf_counter()
        if parts is None or self.layout is None:
            self.unsettled = None  # the next plan looks at every route once
            fresh = self._build(desired, spares=True)
            parts = {p for p, size in fresh.sizes.items() if size} | set(self.proxies)
        else:
            # Only the routes of the parts rebuilt; spares only for a pool
            # that is rebuilt: thousands of them.
            own = self.layout
            desired = {
                s: r
                for s, r in desired.items()
                if (POOL if own.in_pool(r) else own.placement.get((r.address, r.port))) in parts
            }
            fresh = self._build(desired, spares=POOL in parts, placement=own.placement)
        jobs: dict[str, tuple[str, str | None, Budget]] = {}
        applying: list[asyncio.Task[float]] = []
        done: set[str] = set()
        for part in sorted(parts):
            if part != POOL and not fresh.sizes.get(part):
                await self._proxy(part).retire()  # no route of its own, so no process
                done.add(part)
                continue
            jobs[part] = config, port_map, _ = self._render(fresh, part)
            # Each process starts reading its configuration while the next
            # part renders: HAProxy parses on the other core.
            applying.append(asyncio.create_task(self._proxy(part).apply(config, port_map)))
            await asyncio.sleep(0)
        self.metrics.render_seconds_sum += time.perf_counter() - started
        self.metrics.render_count += 1
        rendered = time.perf_counter()
        results = await asyncio.gather(*applying, return_exceptions=True)
        failure: HAProxyError | None = None
        for (part, (config, _, budget)), result in zip(jobs.items(), results, strict=True):
            if isinstance(result, HAProxyError):
                if failure is None:
                    failure, self.candidate = result, config
                continue
            if isinstance(result, BaseException):
                raise result
            done.add(part)
            self.metrics.reloads += 1
            self.metrics.reload_seconds_sum += result
            self.unchecked_parts[part] = budget.unchecked_servers
        # Before the first layout, the ports of processes that were not
        # replaced stay where an earlier agent put them.
        current = self.layout or Layout(
            self.settings.port_range, placement=dict(self.recovered or {})
        )
        self.layout = self._merge(current, fresh, done)
        log.info(
            "revision %d: reloaded %s (render %.0f ms, swap %.0f ms)",
            self.revision,
            ", ".join(sorted(done)) or "nothing",
            (rendered - started) * 1000,
            (time.perf_counter() - rendered) * 1000,
        )
        if failure is not None:
            raise failure

    def _merge(self, current: Layout, fresh: Layout, parts: set[str]) -> Layout:
        """`current` with the parts in `parts` taken from `fresh`. It is
        changed in place (the running layout, which nothing else holds), so
        a merge costs the parts replaced, not the table."""
        static, placement, sizes = current.static, current.placement, current.sizes
        served = current._served_index()
        # A plan's layout shares the parts' member sets with the one it came
        # from: replaced, never changed.
        members = dict(current.members())
        fresh_members = fresh.members()
        for part in parts - {POOL}:
            for service in members.pop(part, frozenset()):
                slot = static[service]
                if slot.part != part:
                    continue  # it moved to a part merged before
                del static[service]
                assert slot.route is not None
                if placement.get(key_of(slot.route)) == part:
                    del placement[key_of(slot.route)]
                if served.get(service) is slot.route:  # else the pool serves it now
                    del served[service]
            own = fresh_members.get(part)
            sizes.pop(part, None)
            if not own:
                continue
            members[part] = own
            sizes[part] = len(own)
            for service in own:
                moved = static.get(service)
                if moved is not None and moved.part != part:
                    members[moved.part] = members.get(moved.part, frozenset()) - {service}
                slot = static[service] = fresh.static[service]
                assert slot.route is not None
                served[service] = slot.route
                # Ports placed for routes still to come keep their place.
                placement[key_of(slot.route)] = part
        if POOL in parts:
            for service in current.pool_index():
                kept = static.get(service)
                if kept is not None and kept.route is not None:
                    served[service] = kept.route  # on its way out of a static part
                else:
                    del served[service]
            current.pool = fresh.pool
            served.update((b.route.service, b.route) for b in current.pool if b.route is not None)
            current._pool_index = current._spares = None
        current._members = {part: own for part, own in members.items() if own}
        current._full_below = {}  # parts rebuilt may have room again
        self._tls_seen = (None, False)  # the same layout, other routes
        return current

    async def _scrape_haproxy(self) -> dict[str, str]:
        """Each running HAProxy process's own metrics, by part."""
        texts = {}
        for part, proxy in list(self.proxies.items()):
            if proxy.running():
                try:
                    texts[part] = await proxy.scrape()
                except HAProxyError as exc:
                    log.warning("no metrics from %s: %s", part, exc)
        return texts

    # -- certificates -------------------------------------------------------

    def _wanted_tls(self, own: Layout) -> dict[str, dict[str, Certificate]]:
        """crt-list -> certificate file -> certificate, for one process's
        TLS frontends; hosts without a certificate are reported."""
        certs: dict[str, Certificate] = {}
        for host, raw in self.cert_raw.items():
            cached = self.cert_cache.get(host)
            if cached is None or cached[0] != raw:
                cached = (raw, parse_certificate(host, raw))
                self.cert_cache[host] = cached
            if isinstance(cached[1], Certificate):
                certs[host] = cached[1]
        wanted: dict[str, dict[str, Certificate]] = {}
        for fe in shared_frontends(own, self.settings.address):
            if not fe.tls:
                continue
            files = wanted.setdefault(str(self.certs_dir / f"{fe.name}.crtlist"), {})
            hosts = {r.host if r.match == "str" else "*" + r.host for r in fe.rules}
            for host in hosts:
                cert = find_certificate(host, certs)
                if cert is None:
                    self.tls_missing.add(host)
                else:
                    files[str(self.certs_dir / file_name(cert.host))] = cert
        return wanted

    def _write_tls_files(self, part: str, own: Layout) -> None:
        """Certificate files and crt-lists a process about to start reads."""
        wanted = self._wanted_tls(own)
        if not wanted:
            self.tls_loaded.pop(part, None)
            self.tls_lists.pop(part, None)
            return
        ensure_default(self.certs_dir / "default.pem")
        loaded: dict[str, str] = {}
        for crt_list, files in wanted.items():
            for path, cert in files.items():
                _write_private(Path(path), cert.pem)
                loaded[path] = cert.pem
            _write_private(Path(crt_list), "".join(f"{path}\n" for path in sorted(files)))
        self.tls_loaded[part] = loaded
        self.tls_lists[part] = {crt_list: set(files) for crt_list, files in wanted.items()}

    def _tls_routes(self) -> bool:
        """Whether any route served uses TLS (looked at once per layout)."""
        layout = self.layout
        if layout is None:
            return False
        if not self.selection.with_hosts and not self.held:
            return False  # TLS needs host names, and no route selected has any
        if self._tls_seen[0] is not layout:
            self._tls_seen = (
                layout,
                any(b.route is not None and b.route.tls for b in layout.static.values()),
            )
        return self._tls_seen[1]

    async def _apply_certificates(self) -> None:
        """Load new and replaced certificates at runtime, without a reload;
        a certificate that fails is reported and the others are served."""
        tls_routes = self._tls_routes()
        if not (tls_routes or self.cert_raw or self.cert_problems or any(self.tls_loaded.values())):
            return  # no TLS anywhere: nothing to look at
        self.tls_missing = set()
        problems: dict[str, str] = {}
        if self.layout is not None:
            for part, proxy in list(self.proxies.items()):
                if part == POOL or part in self.flights or not proxy.running():
                    continue
                await self._apply_part_certificates(part, proxy, problems)
        for host, cached in self.cert_cache.items():
            if host in self.cert_raw and isinstance(cached[1], BadCertificate):
                problems[host] = cached[1].reason
        for host in self.tls_missing - problems.keys():
            problems[host] = "no certificate: clients get the gateway's default one"
        self.cert_cache = {h: c for h, c in self.cert_cache.items() if h in self.cert_raw}
        if problems != self.cert_problems:
            self.cert_problems = problems
            self.status_changed.set()

    async def _apply_part_certificates(
        self, part: str, proxy: HAProxy, problems: dict[str, str]
    ) -> None:
        assert self.layout is not None
        wanted = self._wanted_tls(self._part_layout(self.layout, part))
        loaded = self.tls_loaded.setdefault(part, {})
        lists = self.tls_lists.setdefault(part, {})
        for crt_list, files in wanted.items():
            listed = lists.setdefault(crt_list, set())
            for path, cert in files.items():
                if loaded.get(path) == cert.pem and path in listed:
                    continue
                try:
                    await proxy.load_certificate(
                        path, cert.pem, crt_lists=[] if path in listed else [crt_list]
                    )
                except HAProxyError as exc:
                    problems[cert.host] = f"haproxy refused it: {exc.detail}"
                    continue
                _write_private(Path(path), cert.pem)
                loaded[path] = cert.pem
                listed.add(path)
            for path in listed - set(files):
                with contextlib.suppress(HAProxyError):
                    await proxy.drop_certificate(path, crt_lists=[crt_list])
                listed.discard(path)
            _write_private(Path(crt_list), "".join(f"{path}\n" for path in sorted(listed)))

    # -- status -----------------------------------------------------------

    def status(self) -> StatusDoc:
        return {
            "address": self.settings.address,
            "applied_revision": self.metrics.applied_revision,
            "routes": self.metrics.routes,
            "last_error": self.last_error,
            "skipped": [{"service": s.service, "reason": s.reason} for s in self.skipped],
            "held": sorted(self.held),
            "unchecked_backends": sum(self.unchecked_parts.values()),
            "reloads": self.metrics.reloads,
            "runtime_updates": self.metrics.runtime_updates,
            "haproxy_restarts": self.metrics.haproxy_restarts,
            "last_incident": self.incident,
            "certificates": [
                {"host": host, "problem": problem}
                for host, problem in sorted(self.cert_problems.items())
            ],
        }

    async def _report(self) -> None:
        """Keep the status key current and alive under its lease."""
        lease: int | None = None
        key = status_key(self.settings.ident).encode()
        ttl = self.settings.status_ttl
        written: StatusDoc | None = None
        refreshed = 0.0
        while True:
            try:
                if lease is None:
                    lease = await self.etcd.grant_lease(ttl)
                    written, refreshed = None, time.monotonic()
                status = self.status()
                if status != written:
                    await self.etcd.put(key, json.dumps(status).encode(), lease=lease)
                    written = status
                if time.monotonic() - refreshed >= ttl / 3:
                    refreshed = time.monotonic()
                    if not await self.etcd.keep_alive(lease):
                        lease = None
                        continue
            except EtcdUnavailable as exc:
                log.debug("status not reported: %s", exc)
                lease = None
            self.status_changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.status_changed.wait(), ttl / 3)
            if lease is not None and self.status_changed.is_set():
                # Several changes in a row cost one write, not one each.
                await asyncio.sleep(0.05)

    async def _withdraw_status(self) -> None:
        # The status lease expires anyway; stopping does not wait on etcd.
        with contextlib.suppress(EtcdUnavailable, TimeoutError):
            await asyncio.wait_for(
                self.etcd.delete(status_key(self.settings.ident).encode()), WITHDRAW_TIMEOUT
            )


def _write_private(path: Path, text: str) -> None:
    """Write a file only this user reads (keys), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
