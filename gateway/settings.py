"""Settings of one gateway agent, loaded once from the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    etcd: list[str]
    """etcd endpoints, tried in turn."""
    cluster: str
    """Cluster whose routes this gateway serves."""
    address: str
    """Address every route is served on."""
    state_dir: Path
    """Where haproxy.cfg, its socket and the last good configuration live."""
    gateway_id: str = ""
    """Name in the status key; `<cluster>-<address>` when empty."""
    metrics_port: int | None = None
    """Port for Prometheus metrics; none when unset."""
    metrics_address: str = "127.0.0.1"
    """Address the metrics are served on: loopback unless told otherwise."""
    port_range: tuple[int, int] | None = (30000, 32767)
    """Ports bound up front, so routes inside need no reload."""
    quiet: float = 0.01
    """A burst is applied once no change arrived for this long (seconds)."""
    max_delay: float = 0.03
    """A burst is applied at the latest this long after it began (seconds)."""
    reload_quiet: float = 0.03
    """During a burst, a reload of the pool waits until no change came for this long (seconds)..."""
    max_reload_delay: float = 2.0
    """...but no longer than this after it was first needed (seconds)."""
    shard_routes: int = 256
    """Routes on ports of their own per HAProxy process, as a burst fills them."""
    quiet_shard_routes: int = 64
    """The same, as ports that come alone fill them: a new port reloads one process
    of at most this many routes, however many are held (never more than
    `shard_routes`)."""
    wipe_share: float = 0.5
    """A change removing more than this share of the served routes is held."""
    wipe_hold: float = 30.0
    """How long a wipe must persist before it is applied (seconds)."""
    status_ttl: int = 10
    """Lease TTL of the status key (seconds)."""
    reserved_ports: frozenset[int] = field(default_factory=lambda: frozenset({2379, 2380}))
    """Ports no route may take (etcd's); the metrics port is added."""
    haproxy: str = "haproxy"
    """HAProxy binary."""
    etcd_tls: tuple[Path, Path, Path] | None = None
    """CA bundle, client certificate and key for `https://` etcd endpoints."""

    @property
    def ident(self) -> str:
        return self.gateway_id or f"{self.cluster}-{self.address}"

    @property
    def blocked_ports(self) -> frozenset[int]:
        extra = {self.metrics_port} if self.metrics_port else set()
        return self.reserved_ports | extra
