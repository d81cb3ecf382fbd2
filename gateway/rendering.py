"""Rendering a layout into haproxy.cfg from the Jinja2 template.

Values reach the template only after `gateway.routes` validated them, and the
template adds nothing user-supplied beyond those checked names, addresses and
ports.
"""

from __future__ import annotations

import ipaddress
import resource
from dataclasses import dataclass

import jinja2

from gateway.planning import Layout

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("gateway", "templates"),
    autoescape=False,  # HAProxy configuration, not HTML; inputs are validated
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)


def _addr(host: str) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


_ENV.filters["addr"] = _addr

# Sockets HAProxy keeps besides listeners, servers and connections.
FD_MARGIN = 256
MAX_MAXCONN = 8000


@dataclass(frozen=True)
class RenderContext:
    gateway_id: str
    address: str
    socket: str
    map_path: str
    revision: int
    hard_stop_after: str = "30s"


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def maxconn_for(layout: Layout, *, limit: int) -> int:
    """The largest maxconn whose sockets fit the open-file limit.

    Each connection takes two descriptors (client and server side); every
    listener and every checked server takes one more.
    """
    listeners = len(layout.static)
    if layout.port_range is not None:
        listeners += layout.port_range[1] - layout.port_range[0] + 1
    spare = limit - listeners - layout.server_count() - FD_MARGIN
    return max(64, min(MAX_MAXCONN, spare // 2))


def render_config(layout: Layout, context: RenderContext, *, limit: int | None = None) -> str:
    backends = sorted(layout.static.values(), key=lambda b: b.name) + layout.pool
    return _ENV.get_template("haproxy.cfg.j2").render(
        gateway_id=context.gateway_id,
        revision=context.revision,
        route_count=len(layout.routes()),
        maxconn=maxconn_for(layout, limit=limit or fd_limit()),
        socket=context.socket,
        hard_stop_after=context.hard_stop_after,
        bind_host=_addr(context.address),
        static=sorted(layout.static.values(), key=lambda b: b.route.port if b.route else 0),
        port_range=layout.port_range,
        map_path=context.map_path,
        backends=backends,
    )


def render_map(layout: Layout) -> str:
    return "".join(f"{port} {name}\n" for port, name in sorted(layout.port_map().items()))
