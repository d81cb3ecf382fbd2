"""Prometheus text metrics of one gateway agent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web


@dataclass
class Metrics:
    reloads: int = 0
    reload_failures: int = 0
    runtime_updates: int = 0
    render_seconds_sum: float = 0.0
    render_count: int = 0
    reload_seconds_sum: float = 0.0
    applied_revision: int = 0
    routes: int = 0
    skipped_routes: int = 0
    held_routes: int = 0
    etcd_errors: int = 0
    haproxy_restarts: int = 0

    def text(self) -> str:
        rows = [
            ("marina_gateway_reloads_total", "counter", "HAProxy reloads", self.reloads),
            (
                "marina_gateway_reload_failures_total",
                "counter",
                "reloads refused by validation or start-up",
                self.reload_failures,
            ),
            (
                "marina_gateway_runtime_updates_total",
                "counter",
                "changes applied through the runtime API without a reload",
                self.runtime_updates,
            ),
            (
                "marina_gateway_applied_revision",
                "gauge",
                "etcd revision last applied",
                self.applied_revision,
            ),
            ("marina_gateway_routes", "gauge", "routes served", self.routes),
            (
                "marina_gateway_skipped_routes",
                "gauge",
                "routes rejected by validation",
                self.skipped_routes,
            ),
            (
                "marina_gateway_held_routes",
                "gauge",
                "route removals held by the wipe guard",
                self.held_routes,
            ),
            ("marina_gateway_etcd_errors_total", "counter", "failed etcd calls", self.etcd_errors),
            (
                "marina_gateway_haproxy_restarts_total",
                "counter",
                "times HAProxy was found dead and started again",
                self.haproxy_restarts,
            ),
        ]
        out = []
        for name, kind, help_text, value in rows:
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        for name, help_text, total, count in (
            (
                "marina_gateway_render_seconds",
                "time to render a configuration",
                self.render_seconds_sum,
                self.render_count,
            ),
            (
                "marina_gateway_reload_seconds",
                "time from swap to confirmed new worker",
                self.reload_seconds_sum,
                self.reloads,
            ),
        ):
            out += [
                f"# HELP {name} {help_text}",
                f"# TYPE {name} summary",
                f"{name}_sum {total:.6f}",
                f"{name}_count {count}",
            ]
        return "\n".join(out) + "\n"


def merge_exposition(texts: dict[str, str], *, label: str) -> str:
    """Several Prometheus texts of the same exporter as one: each family's
    HELP and TYPE once, every sample labelled with where it came from."""
    families: dict[str, list[str]] = {}
    for source, text in texts.items():
        family = ""
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = line.split()[2]
                headers = families.setdefault(family, [])
                if line not in headers:
                    headers.append(line)
                continue
            if not line or line.startswith("#"):
                continue
            name, brace, rest = line.partition("{")
            tag = f'{label}="{source}"'
            if brace:
                sample = f"{name}{{{tag}{'' if rest.startswith('}') else ','}{rest}"
            else:
                metric, _, value = line.partition(" ")
                sample = f"{metric}{{{tag}}} {value}"
            families.setdefault(family or name.split()[0], []).append(sample)
    return "".join(line + "\n" for lines in families.values() for line in lines)


async def serve_metrics(
    metrics: Metrics,
    *,
    host: str,
    port: int,
    haproxy: Callable[[], Awaitable[dict[str, str]]] | None = None,
) -> web.AppRunner:
    """The agent's metrics at `/metrics`, HAProxy's own (each process's, with a
    `process` label) at `/haproxy/metrics`."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(text=metrics.text(), content_type="text/plain")

    async def handle_haproxy(_: web.Request) -> web.Response:
        texts = await haproxy() if haproxy is not None else {}
        text = merge_exposition(texts, label="process")
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    app.router.add_get("/haproxy/metrics", handle_haproxy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
