"""Rendering a layout into haproxy.cfg from the Jinja2 template.

Values reach the template only after `gateway.routes` validated them, and the
template adds nothing user-supplied beyond those checked names, addresses and
ports.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import resource
from dataclasses import dataclass

import jinja2

from gateway.planning import BackendSlot, Layout
from gateway.routes import Backend

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("gateway", "templates"),
    autoescape=False,  # HAProxy configuration, not HTML; inputs are validated
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)


@functools.lru_cache(maxsize=4096)
def _addr(host: str) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


_ENV.filters["addr"] = _addr

# Sockets HAProxy keeps besides listeners, checks and connections.
FD_MARGIN = 256
MAX_MAXCONN = 8000
MIN_MAXCONN = 256


@dataclass(frozen=True)
class RenderContext:
    gateway_id: str
    address: str
    socket: str
    map_path: str
    revision: int
    hard_stop_after: str = "30s"
    certs: str = ""
    metrics_socket: str = ""
    """Where HAProxy's Prometheus exporter listens (a UNIX socket)."""
    """Folder of the TLS certificates: `default.pem` and a crt-list per port."""


@dataclass(frozen=True)
class Budget:
    """How the open-file limit is shared between connections and health checks.

    HAProxy reserves one descriptor per listener and per server that has
    `check`, and two per connection. With thousands of routes the limit cannot
    hold a check for every slot, so checks go first to servers that carry
    traffic, then to one slot more per backend, then to the rest; servers
    left without a check are counted and reported.
    """

    maxconn: int
    checked: dict[str, int]
    unchecked_servers: int


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def plan_budget(layout: Layout, *, limit: int) -> Budget:
    listeners = len(layout.static)
    if layout.port_range is not None:
        listeners += layout.port_range[1] - layout.port_range[0] + 1
    available = limit - listeners - FD_MARGIN
    slots = [*layout.static.values(), *layout.pool]
    wanted = sum(b.slots for b in slots if b.check)
    maxconn = max(MIN_MAXCONN, min(MAX_MAXCONN, (available - wanted) // 2))
    left = max(0, available - 2 * maxconn)
    checked = dict.fromkeys((b.name for b in slots), 0)
    passes = (
        lambda b: len(b.servers),
        lambda b: len(b.servers) + 1,
        lambda b: b.slots,
    )
    for target in passes:
        for b in slots:
            if not b.check:
                continue
            grant = min(max(0, min(target(b), b.slots) - checked[b.name]), left)
            checked[b.name] += grant
            left -= grant
    unchecked = sum(max(0, len(b.servers) - checked[b.name]) for b in slots if b.check)
    return Budget(maxconn, checked, unchecked)


@dataclass(frozen=True)
class HostRule:
    backend: str
    service: str
    match: str  # HAProxy string match: `str` (exact) or `end` (a wildcard's suffix)
    host: str
    path: str


@dataclass(frozen=True)
class SharedFrontend:
    """A port shared by routes with host names (what Ingress does)."""

    name: str
    bind: str
    port: int
    tls: bool
    rules: tuple[HostRule, ...]


def shared_frontends(layout: Layout, bind_host: str) -> list[SharedFrontend]:
    by_port: dict[tuple[str | None, int], list[BackendSlot]] = {}
    for slot in layout.static.values():
        if slot.route is not None and slot.route.hosts:
            by_port.setdefault((slot.route.address, slot.route.port), []).append(slot)
    frontends = []
    for (address, port), slots in sorted(by_port.items(), key=lambda item: item[0][1]):
        rules = []
        for slot in slots:
            assert slot.route is not None
            for host in slot.route.hosts:
                wildcard = host.startswith("*.")
                for path in slot.route.paths or ("/",):
                    rules.append(
                        HostRule(
                            slot.name,
                            slot.route.service,
                            "end" if wildcard else "str",
                            host[1:] if wildcard else host,
                            path,
                        )
                    )
        # The longest path first, then exact names before wildcards.
        rules.sort(key=lambda r: (-len(r.path), r.match != "str", r.host, r.path))
        suffix = f"{address.replace(':', '_')}_{port}" if address else str(port)
        frontends.append(
            SharedFrontend(
                f"fe_hosts_{suffix}",
                _addr(address) if address else bind_host,
                port,
                any(s.route is not None and s.route.tls for s in slots),
                tuple(rules),
            )
        )
    return frontends


def render_config(
    layout: Layout, context: RenderContext, budget: Budget, *, part: str | None = None
) -> str:
    """The configuration of one part, `static` (a frontend per route outside
    the range) or `pool` (the range frontend and its pool backends), or of both."""
    backends = []
    if part != "pool":
        backends += sorted(layout.static.values(), key=lambda b: b.name)
    listening = len(backends)  # the static ones come first
    if part != "static":
        backends += layout.pool
    return _ENV.get_template("haproxy.cfg.j2").render(
        part=part,
        gateway_id=context.gateway_id,
        revision=context.revision,
        route_count=sum(1 for b in backends if b.route),
        maxconn=budget.maxconn,
        checked=budget.checked,
        socket=context.socket,
        hard_stop_after=context.hard_stop_after,
        bind_host=_addr(context.address),
        # A route on a port of its own is one `listen` proxy, which HAProxy
        # starts in three quarters of the time of a frontend and a backend.
        sections=[
            _section(
                b,
                checked=budget.checked[b.name],
                bind_host=_addr(context.address),
                listens=index < listening,
            )
            for index, b in enumerate(backends)
        ],
        shared=shared_frontends(layout, _addr(context.address)) if part != "pool" else [],
        certs=context.certs,
        metrics_socket=context.metrics_socket,
        port_range=layout.port_range,
        map_path=context.map_path,
        backends=backends,
    )


def _section(slot: BackendSlot, *, checked: int, bind_host: str, listens: bool) -> str:
    """A backend, or the `listen` proxy of a static route on a port of its own."""
    route = slot.route
    return _section_text(
        slot.name,
        slot.mode,
        slot.balance,
        slot.slots,
        slot.servers,
        slot.proxy_protocol,
        slot.check_interval_ms,
        checked,
        None if route is None else (route.service, route.port, route.address),
        listens and route is not None and not route.hosts,
        bind_host,
    )


# The text of each backend is kept: a reload re-renders a part whose routes
# mostly did not change, and the key is what the text is made of.
@functools.lru_cache(maxsize=16384)
def _section_text(
    name: str,
    mode: str,
    balance: str,
    slots: int,
    servers: tuple[Backend, ...],
    proxy_protocol: bool,
    check_interval_ms: int | None,
    checked: int,
    route: tuple[str, int, str | None] | None,
    listens: bool,
    bind_host: str,
) -> str:
    if route is not None and listens:
        # A route on a port of its own is one `listen` proxy, which HAProxy
        # starts in three quarters of the time of a frontend and a backend.
        service, port, address = route
        lines = [
            f"listen {name}  # route {service} port {port}",
            f"    mode {mode}",
            f"    bind {_addr(address) if address else bind_host}:{port}",
        ]
    else:
        note = f"  # route {route[0]} port {route[1]}" if route is not None else ""
        lines = [f"backend {name}{note}", f"    mode {mode}"]
    lines.append(f"    balance {balance}")
    if mode == "http":
        lines.append("    option forwardfor")
    check = " check" + (f" inter {check_interval_ms}ms" if check_interval_ms else "")
    proxy = " send-proxy-v2" if proxy_protocol else ""
    for index in range(slots):
        if index < len(servers):
            target = f"{_addr(servers[index].host)}:{servers[index].port}"
        else:
            target = "127.0.0.1:1 disabled"
        lines.append(f"    server s{index + 1} {target}{check if index < checked else ''}{proxy}")
    return "\n".join(lines)


def render_map(layout: Layout) -> str:
    return "".join(f"{port} {name}\n" for port, name in sorted(layout.port_map().items()))


_LINE_REF = re.compile(r"\[[^\]\s]*\.cfg[^\]\s:]*:(\d+)\]")
_PROXY_REF = re.compile(r"(?:proxy|backend|frontend|listen) '([^']+)'")
_ROUTE_MARK = re.compile(r"# route (\S+)")
_SECTION = re.compile(r"(?:backend|frontend|listen) (\S+)")


def routes_blamed(config: str, message: str) -> set[str]:
    """Services whose part of `config` HAProxy's `message` points at, by line
    number or by proxy name."""
    lines = config.splitlines()
    blamed: set[str] = set()
    numbers = [int(n) for n in _LINE_REF.findall(message)]
    names = set(_PROXY_REF.findall(message))
    if names:
        numbers += [
            i + 1
            for i, line in enumerate(lines)
            if (m := _SECTION.match(line)) and m.group(1) in names
        ]
    for number in numbers:
        if 0 < number <= len(lines) and (mark := _ROUTE_MARK.search(lines[number - 1])):
            blamed.add(mark.group(1))  # a line of a shared frontend names its route
            continue
        # Find the section the line belongs to: a route's backend names the
        # route on its own line, a route's frontend on the line above it;
        # shared sections and spare backends name none.
        for index in range(min(number, len(lines)) - 1, -1, -1):
            if not lines[index] or lines[index][0].isspace() or lines[index][0] == "#":
                continue
            marked = [lines[index], lines[index - 1] if index else ""]
            for line in marked:
                if (mark := _ROUTE_MARK.search(line)) is not None:
                    blamed.add(mark.group(1))
                    break
            break
    return blamed
