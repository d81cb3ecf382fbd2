"""Gateway routes: the public etcd contract and the rules a route must pass.

Key `/marina/gateway/routes/<cluster>/<service>`, value
`{"port": 8080, "mode": "http"|"tcp", "backends": [{"host": ..., "port": ...}]}`
with optional `scope`, `balance` and `check`. Every value is checked here
before it can reach a template: a rejected route is reported with its reason
and never rendered, so no value can inject configuration.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NotRequired, TypedDict

ROUTES_PREFIX = "/marina/gateway/routes/"
STATUS_PREFIX = "/marina/gateway/status/"

# Always used with `fullmatch`: `$` also matches before a final newline, which
# would let "name\n" through into haproxy.cfg.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
HOSTNAME_RE = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
MODES = ("http", "tcp")
BALANCES = ("roundrobin", "leastconn", "source", "first")
SCOPES = ("public", "cloud", "internal", "host")
MAX_BACKENDS = 256
MAX_HOSTS = 32
MIN_CHECK_INTERVAL, MAX_CHECK_INTERVAL = 100, 3_600_000
# Path prefixes: a leading slash and URL path characters that need no quoting
# in haproxy.cfg.
PATH_RE = re.compile(r"/[A-Za-z0-9._~/-]{0,199}")


class BackendDoc(TypedDict):
    host: str
    port: int


class RouteDoc(TypedDict):
    port: int
    mode: str
    backends: list[BackendDoc]
    scope: NotRequired[str]
    balance: NotRequired[str]
    check: NotRequired[bool]
    address: NotRequired[str]
    hosts: NotRequired[list[str]]
    paths: NotRequired[list[str]]
    tls: NotRequired[bool]
    proxy_protocol: NotRequired[bool]
    check_interval_ms: NotRequired[int]


class SkippedDoc(TypedDict):
    service: str
    reason: str


class CertificateProblemDoc(TypedDict):
    host: str
    problem: str


class StatusDoc(TypedDict):
    """A gateway's status under `status_key`, as the contract spells it."""

    address: str
    applied_revision: int
    routes: int
    last_error: str | None
    skipped: list[SkippedDoc]
    held: list[str]
    unchecked_backends: int
    reloads: int
    runtime_updates: int
    haproxy_restarts: int
    last_incident: str | None
    certificates: list[CertificateProblemDoc]


@dataclass(frozen=True)
class Backend:
    host: str
    port: int


@dataclass(frozen=True)
class Route:
    service: str
    port: int
    mode: str
    backends: tuple[Backend, ...]
    balance: str = "roundrobin"
    check: bool = True
    address: str | None = None
    """Bind here instead of the gateway's address (a service IP)."""
    hosts: tuple[str, ...] = ()
    """HTTP host names (lower case; `*.` for any one label); routes with host
    names share their port."""
    paths: tuple[str, ...] = ()
    """Path prefixes within those hosts; none means every path."""
    tls: bool = False
    """Terminate TLS on this port with the hosts' certificates."""
    proxy_protocol: bool = False
    """Send a PROXY protocol v2 header to the backends (the client's address)."""
    check_interval_ms: int | None = None
    """Milliseconds between health checks; HAProxy's 2 s when unset."""


@dataclass(frozen=True)
class Skipped:
    service: str
    reason: str


def routes_prefix(cluster: str) -> str:
    return f"{ROUTES_PREFIX}{cluster}/"


def status_key(gateway_id: str) -> str:
    return f"{STATUS_PREFIX}{gateway_id}"


def valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def valid_ip(text: object) -> bool:
    """An IP address, without an IPv6 zone: `ipaddress` accepts any text after
    `%` (spaces and newlines too), which would reach haproxy.cfg."""
    if not isinstance(text, str) or "%" in text:
        return False
    return _parses_as_ip(text)


@functools.lru_cache(maxsize=4096)
def _parses_as_ip(text: str) -> bool:
    # Backend addresses repeat across thousands of routes, and parsing one
    # is most of what checking a route costs.
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _valid_host(host: object) -> bool:
    if not isinstance(host, str):
        return False
    return valid_ip(host) or HOSTNAME_RE.fullmatch(host) is not None


def _valid_port(port: object) -> bool:
    return isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535


def parse_route(service: str, raw: bytes, *, reserved_ports: frozenset[int]) -> Route | Skipped:
    """Turn one etcd value into a `Route`, or say every rule it breaks."""
    problems: list[str] = []
    if not valid_name(service):
        shown = service.encode("unicode_escape").decode("ascii")[:80]
        problems.append(
            f"service name {shown!r} must be 1-63 characters of letters, digits, '.', '_' or '-'"
        )
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        return Skipped(service, f"value is not JSON: {exc}")
    if not isinstance(doc, dict):
        return Skipped(service, "value must be a JSON object")
    port = doc.get("port")
    if not _valid_port(port):
        problems.append(f"port {port!r} must be an integer from 1 to 65535")
    elif port in reserved_ports:
        problems.append(f"port {port} is reserved for the gateway or etcd")
    mode = doc.get("mode", "http")
    if mode not in MODES:
        problems.append(f"mode {mode!r} must be one of {', '.join(MODES)}")
    balance = doc.get("balance", "roundrobin")
    if balance not in BALANCES:
        problems.append(f"balance {balance!r} must be one of {', '.join(BALANCES)}")
    scope = doc.get("scope", "public")
    if scope not in SCOPES:
        problems.append(f"scope {scope!r} must be one of {', '.join(SCOPES)}")
    check = doc.get("check", True)
    if not isinstance(check, bool):
        problems.append(f"check {check!r} must be true or false")
    address = doc.get("address")
    if address is not None and not valid_ip(address):
        shown = str(address).encode("unicode_escape").decode("ascii")[:80]
        problems.append(f"address {shown!r} must be an IP address")
    backends_raw = doc.get("backends")
    backends: list[Backend] = []
    if not isinstance(backends_raw, list):
        problems.append("backends must be a list of {host, port}")
    elif len(backends_raw) > MAX_BACKENDS:
        problems.append(f"backends has {len(backends_raw)} entries; at most {MAX_BACKENDS}")
    else:
        for index, entry in enumerate(backends_raw):
            if not isinstance(entry, dict):
                problems.append(f"backends[{index}] must be an object with host and port")
                continue
            host, bport = entry.get("host"), entry.get("port")
            good_host = _valid_host(host)
            if not good_host:
                shown = str(host).encode("unicode_escape").decode("ascii")[:80]
                problems.append(
                    f"backends[{index}].host {shown!r} must be an IP address or a host name"
                )
            if not _valid_port(bport):
                problems.append(f"backends[{index}].port {bport!r} must be from 1 to 65535")
            if good_host and _valid_port(bport):
                assert isinstance(host, str) and isinstance(bport, int)
                backends.append(Backend(host, bport))
    hosts = _names(doc, "hosts", valid_host_pattern, "a host name (or *.name)", problems)
    paths = _names(doc, "paths", _valid_path, "a path prefix such as /api", problems)
    tls = doc.get("tls", False)
    if not isinstance(tls, bool):
        problems.append(f"tls {tls!r} must be true or false")
    proxy_protocol = doc.get("proxy_protocol", False)
    if not isinstance(proxy_protocol, bool):
        problems.append(f"proxy_protocol {proxy_protocol!r} must be true or false")
    interval = doc.get("check_interval_ms")
    if interval is not None and not (
        isinstance(interval, int)
        and not isinstance(interval, bool)
        and MIN_CHECK_INTERVAL <= interval <= MAX_CHECK_INTERVAL
    ):
        problems.append(
            f"check_interval_ms {interval!r} must be an integer from "
            f"{MIN_CHECK_INTERVAL} to {MAX_CHECK_INTERVAL}"
        )
    if (paths or tls) and not hosts:
        problems.append("paths and tls need hosts")
    if hosts and mode != "http":
        problems.append("hosts need mode http")
    if problems:
        return Skipped(service, "; ".join(problems))
    assert isinstance(port, int)
    unique = tuple(dict.fromkeys(backends))
    return Route(
        service,
        port,
        str(mode),
        unique,
        str(balance),
        bool(check),
        str(address) if address is not None else None,
        tuple(h.lower() for h in hosts),
        tuple(paths),
        bool(tls),
        bool(proxy_protocol),
        interval if isinstance(interval, int) else None,
    )


def valid_host_pattern(name: object) -> bool:
    """A host name, or `*.` and a host name (any one more label)."""
    if not isinstance(name, str):
        return False
    bare = name[2:] if name.startswith("*.") else name
    return not valid_ip(bare) and HOSTNAME_RE.fullmatch(bare) is not None


def _valid_path(path: object) -> bool:
    return isinstance(path, str) and PATH_RE.fullmatch(path) is not None


def _names(
    doc: dict[str, object],
    field: str,
    valid: Callable[[object], bool],
    rule: str,
    problems: list[str],
) -> list[str]:
    """An optional list of unique strings, each checked by `valid`."""
    raw = doc.get(field)
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw or len(raw) > MAX_HOSTS:
        problems.append(f"{field} must be a list of 1 to {MAX_HOSTS} entries")
        return []
    good = []
    for index, entry in enumerate(raw):
        if valid(entry):
            assert isinstance(entry, str)
            good.append(entry)
        else:
            shown = str(entry).encode("unicode_escape").decode("ascii")[:80]
            problems.append(f"{field}[{index}] {shown!r} must be {rule}")
    return list(dict.fromkeys(good))


def select_routes(
    raw: dict[str, bytes],
    *,
    reserved_ports: frozenset[int],
    cache: dict[str, tuple[bytes, Route | Skipped]] | None = None,
) -> tuple[dict[str, Route], list[Skipped]]:
    """Valid routes by service, and the skipped ones with reasons.

    Two routes that claim one port: the first by service name keeps it.
    `cache` keeps parsed values between calls, so a change to one route out of
    thousands parses one value; it must be dropped when `reserved_ports` changes.
    """
    routes: dict[str, Route] = {}
    skipped: list[Skipped] = []
    owners: dict[tuple[str | None, int], str] = {}
    # Ports shared by routes with host names: each (host, path) has one owner.
    shared: dict[tuple[str | None, int], dict[tuple[str, str], str]] = {}
    if cache is not None:
        for gone in cache.keys() - raw.keys():
            del cache[gone]
    for service in sorted(raw):
        value = raw[service]
        hit = cache.get(service) if cache is not None else None
        if hit is not None and hit[0] == value:
            parsed = hit[1]
        else:
            parsed = parse_route(service, value, reserved_ports=reserved_ports)
            if cache is not None:
                cache[service] = (value, parsed)
        if isinstance(parsed, Skipped):
            skipped.append(parsed)
        elif parsed.hosts:
            reason = _share_port(parsed, owners, shared, routes)
            if reason:
                skipped.append(Skipped(service, reason))
            else:
                routes[service] = parsed
        elif (parsed.address, parsed.port) in shared:
            skipped.append(
                Skipped(service, f"port {parsed.port} is shared by routes with host names")
            )
        elif (parsed.address, parsed.port) in owners:
            skipped.append(
                Skipped(
                    service,
                    f"port {parsed.port} is already served for "
                    f"{owners[parsed.address, parsed.port]!r}",
                )
            )
        else:
            owners[parsed.address, parsed.port] = service
            routes[service] = parsed
    return routes, skipped


def _share_port(
    route: Route,
    owners: dict[tuple[str | None, int], str],
    shared: dict[tuple[str | None, int], dict[tuple[str, str], str]],
    routes: dict[str, Route],
) -> str | None:
    """Claim `route`'s host names and paths on its port, or say why not."""
    key = (route.address, route.port)
    if key in owners:
        return f"port {route.port} is already served for {owners[key]!r}"
    claims = shared.setdefault(key, {})
    for other in {routes[s] for s in claims.values()}:
        if other.tls != route.tls:
            return f"port {route.port} is served {'with' if other.tls else 'without'} tls"
    pairs = [(h, p) for h in route.hosts for p in (route.paths or ("/",))]
    for pair in pairs:
        if pair in claims:
            return f"host {pair[0]} path {pair[1]} is already served for {claims[pair]!r}"
    for pair in pairs:
        claims[pair] = route.service
    return None


class RouteSelection:
    """`select_routes` kept up to date a change at a time.

    A change to one route of thousands costs that route and the ports it
    leaves and takes: of the routes claiming a port, the first by service
    name keeps it, as in `select_routes`. Routes with host names share ports
    by rules that involve every route on the port: while there are any,
    each change selects anew.
    """

    def __init__(self, *, reserved_ports: frozenset[int]) -> None:
        self.reserved_ports = reserved_ports
        self.cache: dict[str, tuple[bytes, Route | Skipped]] = {}
        self.routes: dict[str, Route] = {}
        self.skipped: dict[str, Skipped] = {}
        # Valid routes without host names, by the address and port they claim.
        self.claims: dict[tuple[str | None, int], set[str]] = {}
        self.with_hosts = 0
        self.complete = False
        self.touched: set[str] | None = None
        """Services whose selection the last call may have changed (None: any)."""

    def select(
        self, raw: dict[str, bytes], changed: set[str] | None
    ) -> tuple[Mapping[str, Route], list[Skipped]]:
        """What `select_routes(raw)` returns; `changed` names the services
        whose value changed since the last call (None: anything may have).
        The routes are the selection's own table, not to be changed: the
        next call changes them."""
        if (
            changed is None
            or not self.complete
            or self.with_hosts
            or len(changed) > len(self.routes) // 4
            or not self._update(raw, changed)
        ):
            self._select_all(raw)
            self.touched = None
        return self.routes, [self.skipped[s] for s in sorted(self.skipped)]

    def _select_all(self, raw: dict[str, bytes]) -> None:
        routes, skipped = select_routes(raw, reserved_ports=self.reserved_ports, cache=self.cache)
        self.routes = routes
        self.skipped = {s.service: s for s in skipped}
        self.claims = {}
        self.with_hosts = 0
        for _, parsed in self.cache.values():
            if isinstance(parsed, Route):
                if parsed.hosts:
                    self.with_hosts += 1
                else:
                    self.claims.setdefault((parsed.address, parsed.port), set()).add(parsed.service)
        self.complete = True

    def _update(self, raw: dict[str, bytes], changed: set[str]) -> bool:
        """Apply `changed`; False when a route with host names is involved
        (the caller then selects anew from the cache)."""
        affected: set[tuple[str | None, int]] = set()
        touched = set(changed)
        for service in changed:
            old = self.cache.get(service)
            if old is not None and isinstance(old[1], Route):
                if old[1].hosts:
                    return False
                key = (old[1].address, old[1].port)
                self.claims.get(key, set()).discard(service)
                affected.add(key)
            self.routes.pop(service, None)
            self.skipped.pop(service, None)
            value = raw.get(service)
            if value is None:
                self.cache.pop(service, None)
                continue
            if old is not None and old[0] == value:
                parsed = old[1]
            else:
                parsed = parse_route(service, value, reserved_ports=self.reserved_ports)
            self.cache[service] = (value, parsed)
            if isinstance(parsed, Skipped):
                self.skipped[service] = parsed
                continue
            if parsed.hosts:
                return False
            key = (parsed.address, parsed.port)
            self.claims.setdefault(key, set()).add(service)
            affected.add(key)
        for key in affected:
            claimants = self.claims.get(key)
            if not claimants:
                self.claims.pop(key, None)
                continue
            owner = min(claimants)
            touched |= claimants
            for service in claimants:
                route = self.cache[service][1]
                assert isinstance(route, Route)
                if service == owner:
                    self.routes[service] = route
                    self.skipped.pop(service, None)
                else:
                    self.routes.pop(service, None)
                    self.skipped[service] = Skipped(
                        service, f"port {route.port} is already served for {owner!r}"
                    )
        self.touched = touched
        return True
