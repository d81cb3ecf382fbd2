"""Planning what HAProxy must change: a runtime update or a reload.

A layout is what one HAProxy process serves: a frontend per route port
outside the pre-bound port range, and for ports inside the range one shared
frontend that picks a backend by destination port from a runtime map. Every
backend has a fixed number of server slots, the unused ones in maintenance.
A change that fits the running layout (backends moved, added or removed
within the slots; a range route appearing or going away while a spare pool
backend of its kind is left) becomes runtime API commands. Anything else, a
port outside the range, a changed balance, too few slots, a host name, is
applied by rendering a new layout and reloading.

Routes on ports of their own run in static parts. A port keeps its part for
as long as a route uses it (a port moved between processes would be refused
by the one still holding it), and a new port goes to the first part with
room. Room depends on the moment: a burst fills parts to `SHARD_ROUTES`, so
few processes start and each reload parses only the routes that arrived
since the last one; a port that comes alone fills parts to
`QUIET_SHARD_ROUTES`, so a single new port, on a table of 10,000 as on one
of ten, restarts a process of at most a few dozen routes.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.routes import Backend, Route

POOL = "pool"
# Routes on ports of their own run in HAProxy processes of at most this many
# routes: a reload starts one of them (about 46 us per route, and 7 ms for
# the process). A burst fills parts to the first figure (fewer processes to
# start), a port that comes alone to the second (a small process to restart).
SHARD_ROUTES = 256
QUIET_SHARD_ROUTES = 64
MIN_SLOTS = 4
# A pool route that outgrows its slots moves to a spare at runtime, so its
# own backend can be small; with 10,000 routes the server lines dominate
# HAProxy's start-up time.
MIN_POOL_SLOTS = 2
# Spare pool backends wait for new routes in the range, so that a burst of
# thousands (a cluster coming up) is served at runtime, without a reload: a
# reload of the pool part hands over every range listener. Each costs about
# 20 KB in HAProxy; there are never more than free ports in the range.
MIN_SPARES = {"http": 2048, "tcp": 256}
MAX_SPARES = 4096
SPARE_SHARE = 1.0
# Most routes have one or two replicas: most spares have two slots.
LARGE_SPARE_EVERY = 4


def slots_for(count: int, *, minimum: int = MIN_SLOTS) -> int:
    """Room to double the replicas without a reload."""
    slots = minimum
    while slots < 2 * count:
        slots *= 2
    return slots


@functools.lru_cache(maxsize=4096)
def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass
class BackendSlot:
    """One HAProxy backend and the route it serves, if any."""

    name: str
    mode: str
    balance: str
    check: bool
    slots: int
    servers: tuple[Backend, ...] = ()
    route: Route | None = None
    proxy_protocol: bool = False
    check_interval_ms: int | None = None
    part: str = ""
    """The HAProxy process that serves it: `pool`, or a static part."""

    @property
    def signature(self) -> Signature:
        return (self.mode, self.balance, self.check, self.proxy_protocol, self.check_interval_ms)


Signature = tuple[str, str, bool, bool, int | None]


def signature_of(route: Route) -> Signature:
    """What a backend must be rendered with to serve `route`."""
    return (route.mode, route.balance, route.check, route.proxy_protocol, route.check_interval_ms)


Key = tuple[str | None, int]
"""Where a static route listens: its own address (None: the gateway's) and port."""


def key_of(route: Route) -> Key:
    return (route.address, route.port)


@dataclass
class Layout:
    port_range: tuple[int, int] | None
    static: dict[str, BackendSlot] = field(default_factory=dict)
    pool: list[BackendSlot] = field(default_factory=list)
    placement: dict[Key, str] = field(default_factory=dict)
    """The static part of every port outside the range, routes to come included."""
    sizes: dict[str, int] = field(default_factory=dict)
    """Routes per static part (ports placed for routes to come count as one)."""
    shard_routes: int = SHARD_ROUTES
    """A new port goes to the first static part with fewer routes than this
    (the agent sets it by the moment: a burst or a port alone)."""
    # Derived indexes, built on first use. A plan's layout inherits them
    # updated, and a merge rebuilds only the parts it replaces, so a change
    # to a table of thousands costs what it changes.
    _served: dict[str, Route] | None = field(default=None, init=False, repr=False, compare=False)
    _members: dict[str, frozenset[str]] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _pool_index: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)
    _spares: dict[Signature, list[BackendSlot]] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _full_below: dict[int, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def in_range(self, port: int) -> bool:
        return self.port_range is not None and self.port_range[0] <= port <= self.port_range[1]

    def in_pool(self, route: Route) -> bool:
        return self.in_range(route.port) and route.address is None

    def place(self, route: Route) -> str:
        """The static part of `route`'s port, chosen now if it has none."""
        key = key_of(route)
        part = self.placement.get(key)
        if part is None:
            part = self.open_part()
            self.placement[key] = part
            self.sizes[part] = self.sizes.get(part, 0) + 1
        return part

    def open_part(self, shard_routes: int | None = None) -> str:
        """The part a new port goes to: the first with room (fewer routes
        than `shard_routes`, by default the layout's), else a new one."""
        room = shard_routes or self.shard_routes
        # Parts only fill as ports are placed: the ones found full stay full.
        index = self._full_below.get(room, 0)
        while self.sizes.get(f"static-{index}", 0) >= room:
            index += 1
        self._full_below[room] = index
        return f"static-{index}"

    def routes(self) -> dict[str, Route]:
        """Every route served, by service (a copy)."""
        return dict(self.served())

    def served(self) -> Mapping[str, Route]:
        """Every route served, by service: the layout's own index, not to be
        changed."""
        return self._served_index()

    def _served_index(self) -> dict[str, Route]:
        # Asked several times per change of a table of thousands: kept until
        # a slot changes (a plan's draft and a merge keep it up to date).
        if self._served is None:
            served = {s: b.route for s, b in self.static.items() if b.route}
            served.update({b.route.service: b.route for b in self.pool if b.route})
            self._served = served
        return self._served

    def served_parts(self) -> frozenset[str]:
        """The static parts that serve a route (and so run a process)."""
        return frozenset(part for part, services in self.members().items() if services)

    def members(self) -> dict[str, frozenset[str]]:
        """The services each static part serves."""
        if self._members is None:
            members: dict[str, set[str]] = {}
            for service, slot in self.static.items():
                if slot.route is not None:
                    members.setdefault(slot.part, set()).add(service)
            self._members = {part: frozenset(m) for part, m in members.items()}
        return self._members

    def part_static(self, part: str) -> dict[str, BackendSlot]:
        """The static slots of one part."""
        return {s: self.static[s] for s in self.members().get(part, ())}

    def pool_index(self) -> dict[str, int]:
        """The position in `pool` of each pool route's slot, by service."""
        if self._pool_index is None:
            self._pool_index = {
                b.route.service: i for i, b in enumerate(self.pool) if b.route is not None
            }
        return self._pool_index

    def spares(self) -> dict[Signature, list[BackendSlot]]:
        """Free pool slots by signature, the next one to take last."""
        if self._spares is None:
            spares: dict[Signature, list[BackendSlot]] = {}
            for slot in reversed(self.pool):
                if slot.route is None:
                    spares.setdefault(slot.signature, []).append(slot)
            self._spares = spares
        return self._spares

    def route_count(self) -> int:
        return len(self.served())

    def port_map(self) -> dict[int, str]:
        return {b.route.port: b.name for b in self.pool if b.route}


def build_layout(
    routes: dict[str, Route],
    *,
    port_range: tuple[int, int] | None,
    spares: bool = True,
    placement: dict[Key, str] | None = None,
    shard_routes: int = SHARD_ROUTES,
) -> Layout:
    """A fresh layout for `routes`, with spare pool backends for routes to come
    unless `spares` is false (a layout of which only the static part is used).
    Ports in `placement` keep their part; the others are placed in turn."""
    layout = Layout(port_range, shard_routes=shard_routes)
    placement = placement or {}
    placed: dict[str, str] = {}
    for service in sorted(routes):
        route = routes[service]
        if not layout.in_pool(route):
            part = placement.get(key_of(route))
            if part is not None:
                layout.placement[key_of(route)] = part
                placed[service] = part
    for part in layout.placement.values():
        layout.sizes[part] = layout.sizes.get(part, 0) + 1
    counts = {"http": 0, "tcp": 0}
    for service in sorted(routes):
        route = routes[service]
        slot = BackendSlot(
            name="",
            mode=route.mode,
            balance=route.balance,
            check=route.check,
            # Server lines are much of what a reload parses: room to double.
            slots=slots_for(len(route.backends), minimum=MIN_POOL_SLOTS),
            servers=route.backends,
            route=route,
            proxy_protocol=route.proxy_protocol,
            check_interval_ms=route.check_interval_ms,
        )
        if layout.in_pool(route):
            slot.name = f"pool_{len(layout.pool) + 1}"
            slot.part = POOL
            layout.pool.append(slot)
            counts[route.mode] += 1
        else:
            slot.name = f"be_{service}"
            slot.part = placed.get(service) or layout.place(route)
            layout.static[service] = slot
    if port_range is not None and spares:
        free = port_range[1] - port_range[0] + 1 - len(layout.pool)
        wanted = {
            mode: max(minimum, min(MAX_SPARES, int(counts[mode] * SPARE_SHARE)))
            for mode, minimum in MIN_SPARES.items()
        }
        tcp = min(wanted["tcp"], free // 8)
        for mode, count in (("http", min(wanted["http"], free - tcp)), ("tcp", tcp)):
            for index in range(count):
                layout.pool.append(
                    BackendSlot(
                        name=f"pool_{len(layout.pool) + 1}",
                        mode=mode,
                        balance="roundrobin",
                        check=True,
                        slots=MIN_SLOTS if index % LARGE_SPARE_EVERY == 0 else MIN_POOL_SLOTS,
                        part=POOL,
                    )
                )
    return layout


def part_of(route: Route, *, layout: Layout) -> str:
    """The HAProxy process a route belongs to: `pool` (the port range) or the
    static part its port was placed in (`static-N`, a frontend of its own);
    placed now if its port has no part yet."""
    return POOL if layout.in_pool(route) else layout.place(route)


@dataclass
class Plan:
    """Runtime commands that take the running layout towards the desired
    routes, by part (the HAProxy process they go to), and for each part that
    cannot get there at runtime the reason it must be reloaded. `layout` is
    the running one with the commands applied.

    The parts run as separate HAProxy processes: the pool (the range frontend
    and its pool backends) and the static parts (a proxy per port outside the
    range, a few hundred each), so a new port outside the range reloads one
    small process, never the one that holds thousands of range listeners.
    """

    commands_by_part: dict[str, list[str]]
    layout: Layout
    reloads: dict[str, str] = field(default_factory=dict)
    placed: dict[str, set[str]] = field(default_factory=dict)
    """Routes not yet served as they are, by the static part they go to."""

    @property
    def commands(self) -> list[str]:
        return [c for commands in self.commands_by_part.values() for c in commands]

    @property
    def reload(self) -> str | None:
        return next(iter(self.reloads.values()), None)

    @property
    def reload_static(self) -> str | None:
        return next((r for p, r in self.reloads.items() if p != POOL), None)

    @property
    def reload_pool(self) -> str | None:
        return self.reloads.get(POOL)

    @property
    def pool_commands(self) -> list[str]:
        return self.commands_by_part.get(POOL, [])


def _server_commands(slot: BackendSlot, new: tuple[Backend, ...]) -> list[str]:
    commands: list[str] = []
    old = slot.servers
    for index in range(slot.slots):
        server = f"{slot.name}/s{index + 1}"
        if index < len(new):
            if index >= len(old) or old[index] != new[index]:
                host, port = new[index].host, new[index].port
                commands.append(f"set server {server} addr {host} port {port}")
                commands.append(f"set server {server} state ready")
        elif index < len(old):
            commands.append(f"set server {server} state maint")
    return commands


def _fits(slot: BackendSlot, route: Route) -> bool:
    return (
        slot.route is not None
        and slot.route.port == route.port
        and (slot.route.hosts, slot.route.paths, slot.route.tls)
        == (route.hosts, route.paths, route.tls)
        and slot.signature == signature_of(route)
        and slot.slots >= len(route.backends)
    )


class _Draft:
    """The layout being planned. It shares the running layout's tables and
    copies each only when it first changes it, so a plan over thousands of
    routes costs what it changes, not what it holds; the running layout is
    never changed."""

    def __init__(self, current: Layout) -> None:
        self.layout = Layout(
            current.port_range,
            current.static,
            current.pool,
            current.placement,
            current.sizes,
            current.shard_routes,
        )
        # A plan changes no static slot's part, nor the order of the pool.
        self.layout._members = current.members()
        self.served = current._served_index()
        self.index = current.pool_index()
        self.spares = current.spares()
        self.copied: set[str] = set()

    def _copy(self, table: str) -> bool:
        """Whether `table` is still shared (and is to be copied now)."""
        if table in self.copied:
            return False
        self.copied.add(table)
        return True

    def part(self, route: Route) -> str:
        """`part_of` on the draft: placing a new port copies the placements."""
        layout = self.layout
        if layout.in_pool(route) or key_of(route) in layout.placement:
            return part_of(route, layout=layout)
        if self._copy("placement"):
            layout.placement, layout.sizes = dict(layout.placement), dict(layout.sizes)
        return part_of(route, layout=layout)

    def assign(self, slot: BackendSlot, route: Route | None) -> None:
        copy = dataclasses.replace(slot, servers=route.backends if route else (), route=route)
        if self._copy("served"):
            self.served = dict(self.served)
        if slot.part == POOL:
            if self._copy("pool"):
                self.layout.pool = list(self.layout.pool)
                self.index = dict(self.index)
            position = int(slot.name.removeprefix("pool_")) - 1
            self.layout.pool[position] = copy
            if slot.route is not None:
                self.served.pop(slot.route.service, None)
                self.index.pop(slot.route.service, None)
            if route is None:
                self._own_spares().setdefault(slot.signature, []).append(copy)
            else:
                self.served[route.service] = route
                self.index[route.service] = position
        else:
            assert route is not None
            if self._copy("static"):
                self.layout.static = dict(self.layout.static)
            self.layout.static[route.service] = copy
            if route.service not in self.index:  # the pool's slot wins while both have it
                self.served[route.service] = route

    def _own_spares(self) -> dict[Signature, list[BackendSlot]]:
        if self._copy("spares"):
            self.spares = {sig: list(stack) for sig, stack in self.spares.items()}
        return self.spares

    def done(self) -> Layout:
        self.layout._served = self.served
        self.layout._pool_index = self.index
        self.layout._spares = self.spares
        return self.layout

    def take_spare(self, route: Route) -> BackendSlot | None:
        stack = self.spares.get(signature_of(route), [])
        for index in range(len(stack) - 1, -1, -1):
            if stack[index].slots >= len(route.backends):
                return self._own_spares()[signature_of(route)].pop(index)
        return None


def plan_changes(
    current: Layout,
    desired: Mapping[str, Route],
    *,
    map_path: str,
    hint: Iterable[str] | None = None,
) -> Plan:
    """Commands for what fits the running layout; per part, the reason to reload.

    `hint` names every service whose desired route may not be the one
    served (None: any may differ); a plan looks at those alone.

    Pool backends are released before any is assigned, so a port that one
    route frees can be taken by another in the same change. Routes that fit
    get their commands even when others need a reload, so a burst is served
    as it arrives. A new port outside the range is placed in a static part
    here (the plan's layout records it), and that part reloads.
    """
    draft = _Draft(current)
    commands: dict[str, list[str]] = {}
    reloads: dict[str, str] = {}
    placed: dict[str, set[str]] = {}

    part = draft.part

    served = current.served()
    # Unchanged routes are the very objects served (the parse cache hands
    # out the same object): only the others can change anything.
    changed, removed = differences(served, desired, hint)
    touched = sorted(changed | removed)
    for service in touched:
        slot = current.static.get(service)
        if slot is None:
            continue
        route = desired.get(service)
        old = slot.part
        if route is None:
            reloads.setdefault(old, f"route {service} on port {served[service].port} removed")
        elif not _fits(slot, route) or key_of(route) != key_of(served[service]):
            reloads.setdefault(old, f"route {service} changed beyond its listener or slots")
    pool_by_service: dict[str, BackendSlot] = {}
    index = current.pool_index()
    for service in touched:
        position = index.get(service)
        if position is None:
            continue
        slot = current.pool[position]
        assert slot.route is not None
        route = desired.get(service)
        if route is None or not _fits(slot, route) or not current.in_pool(route):
            pool = commands.setdefault(POOL, [])
            pool.append(f"del map {map_path} {slot.route.port}")
            pool += _server_commands(slot, ())
            draft.assign(slot, None)
        else:
            pool_by_service[service] = slot
    for service in sorted(changed):
        route = desired[service]
        known = served.get(service)
        if known == route:
            continue
        target = part(route)
        if target != POOL:
            placed.setdefault(target, set()).add(service)
        if any(not is_ip(b.host) for b in route.backends):
            reloads.setdefault(target, f"route {service} names a host to resolve")
            continue
        if target != POOL:
            found = current.static.get(service)
            if found is not None and _fits(found, route):
                commands.setdefault(target, []).extend(_server_commands(found, route.backends))
                draft.assign(found, route)
            else:
                reloads.setdefault(target, f"route {service} needs a listener on port {route.port}")
            continue
        found = pool_by_service.get(service)
        if found is not None:
            commands.setdefault(POOL, []).extend(_server_commands(found, route.backends))
            draft.assign(found, route)
            continue
        spare = draft.take_spare(route)
        if spare is None:
            reloads.setdefault(POOL, f"no spare {route.mode} backend left for {service}")
            continue
        pool = commands.setdefault(POOL, [])
        pool += _server_commands(spare, route.backends)
        pool.append(f"add map {map_path} {route.port} {spare.name}")
        draft.assign(spare, route)
    return Plan(commands, draft.done(), reloads, placed)


def differences(
    served: Mapping[str, Route], desired: Mapping[str, Route], hint: Iterable[str] | None = None
) -> tuple[set[str], set[str]]:
    """The services whose desired route is not the very one served, and the
    ones served but no longer desired; among `hint` only, when given."""
    if hint is None:
        changed = {s for s, r in desired.items() if served.get(s) is not r}
        return changed, set(served.keys() - desired.keys())
    changed, removed = set(), set()
    for service in hint:
        route = desired.get(service)
        if route is None:
            if service in served:
                removed.add(service)
        elif served.get(service) is not route:
            changed.add(service)
    return changed, removed


def routes_by_part(
    layout: Layout,
    parts: set[str],
    desired: Mapping[str, Route],
    placed: dict[str, set[str]] | None = None,
) -> dict[str, dict[str, Route]]:
    """The desired routes each static part in `parts` is to serve: those
    whose port `layout` places there. `placed` (a plan's) names the routes
    sent to each part beyond those it serves, so only they and the part's
    own are looked at; None looks at every route."""
    routes: dict[str, dict[str, Route]] = {part: {} for part in parts}
    if placed is None:
        candidates: Iterable[str] = desired
    else:
        members = layout.members()
        candidates = {
            s for part in parts for s in members.get(part, frozenset()) | placed.get(part, set())
        }
    for service in candidates:
        route = desired.get(service)
        if route is None or layout.in_pool(route):
            continue
        part = layout.placement.get(key_of(route))
        if part in routes:
            routes[part][service] = route
    return routes
