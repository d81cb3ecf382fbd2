"""`marina-gateway`: run one gateway agent."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path

from gateway.agent import Agent
from gateway.errors import GatewayError
from gateway.settings import Settings

# Collect the youngest generation after this many allocations (Python's
# default is 700), the older ones every 20 collections of the one below.
GC_THRESHOLDS = (50_000, 20, 20)


def _port_range(text: str) -> tuple[int, int] | None:
    if text.lower() in ("", "none", "off"):
        return None
    try:
        low, high = (int(part) for part in text.split("-", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW-HIGH or 'none'") from None
    if not 1 <= low <= high <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} must satisfy 1 <= LOW <= HIGH <= 65535")
    return (low, high)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def parse_settings(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser(
        prog="marina-gateway",
        description="Serve a cluster's gateway routes from etcd through HAProxy.",
    )
    parser.add_argument(
        "--etcd", required=True, action="append", help="etcd endpoint URL (repeat for several)"
    )
    parser.add_argument("--etcd-cacert", type=Path, help="CA bundle of an https:// etcd")
    parser.add_argument("--etcd-cert", type=Path, help="client certificate for etcd")
    parser.add_argument("--etcd-key", type=Path, help="client certificate's key for etcd")
    parser.add_argument("--cluster", required=True, help="cluster whose routes to serve")
    parser.add_argument("--address", required=True, help="IP address to serve routes on")
    parser.add_argument("--state-dir", type=Path, help="directory for haproxy files")
    parser.add_argument("--id", default="", help="gateway id in the status key")
    parser.add_argument("--metrics-port", type=int, help="port for Prometheus metrics")
    parser.add_argument(
        "--metrics-address", default="127.0.0.1", help="address for metrics (default loopback)"
    )
    parser.add_argument(
        "--port-range",
        type=_port_range,
        default=(30000, 32767),
        help="ports bound up front for reload-free routes, LOW-HIGH or none",
    )
    parser.add_argument(
        "--quiet-ms", type=_positive, default=10.0, help="quiet period that ends a burst of changes"
    )
    parser.add_argument(
        "--max-delay-ms", type=_positive, default=30.0, help="longest a burst is held back"
    )
    parser.add_argument(
        "--reload-quiet-ms",
        type=_positive,
        default=30.0,
        help="during a burst, a reload of the range's process waits for this long without changes",
    )
    parser.add_argument(
        "--max-reload-delay-ms",
        type=_positive,
        default=2000.0,
        help="longest a reload waits for a burst to end",
    )
    parser.add_argument(
        "--shard-routes",
        type=int,
        default=256,
        help="routes on ports of their own per HAProxy process, as a burst fills them",
    )
    parser.add_argument(
        "--quiet-shard-routes",
        type=int,
        default=64,
        help="the same, as ports that come alone fill them (a new port reloads one "
        "process); never more than --shard-routes",
    )
    parser.add_argument(
        "--wipe-share",
        type=_positive,
        default=0.5,
        help="share of routes whose removal at once is held",
    )
    parser.add_argument(
        "--wipe-hold",
        type=_positive,
        default=30.0,
        help="seconds a wipe must persist before it is applied",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from gateway.routes import valid_ip, valid_name

    if not valid_name(args.cluster):
        parser.error(f"--cluster {args.cluster!r} must be letters, digits, '.', '_' or '-'")
    if not valid_ip(args.address):
        parser.error(f"--address {args.address!r} is not an IP address")
    if not valid_ip(args.metrics_address):
        parser.error(f"--metrics-address {args.metrics_address!r} is not an IP address")
    if args.metrics_port is not None and not 1 <= args.metrics_port <= 65535:
        parser.error(f"--metrics-port {args.metrics_port} must be from 1 to 65535")
    if (
        args.metrics_port
        and args.port_range
        and args.port_range[0] <= args.metrics_port <= args.port_range[1]
    ):
        parser.error(f"--metrics-port {args.metrics_port} lies inside --port-range")
    if args.shard_routes < 1:
        parser.error("--shard-routes must be at least 1")
    if args.quiet_shard_routes < 1:
        parser.error("--quiet-shard-routes must be at least 1")
    if args.wipe_share > 1:
        parser.error("--wipe-share must be between 0 and 1")
    tls_files = (args.etcd_cacert, args.etcd_cert, args.etcd_key)
    if any(tls_files) and not all(tls_files):
        parser.error("--etcd-cacert, --etcd-cert and --etcd-key go together")
    for option, path in zip(("--etcd-cacert", "--etcd-cert", "--etcd-key"), tls_files, strict=True):
        if path is not None and not path.is_file():
            parser.error(f"{option} {path}: no such file")
    ident = args.id or f"{args.cluster}-{args.address}"
    state_dir = args.state_dir or Path.home() / ".local/share/marina/gateway" / ident
    return Settings(
        etcd=args.etcd,
        cluster=args.cluster,
        address=args.address,
        state_dir=state_dir,
        gateway_id=args.id,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        port_range=args.port_range,
        quiet=args.quiet_ms / 1000,
        max_delay=args.max_delay_ms / 1000,
        reload_quiet=args.reload_quiet_ms / 1000,
        max_reload_delay=args.max_reload_delay_ms / 1000,
        shard_routes=args.shard_routes,
        quiet_shard_routes=args.quiet_shard_routes,
        wipe_share=args.wipe_share,
        wipe_hold=args.wipe_hold,
        etcd_tls=tls_files if all(tls_files) else None,
    )


async def _run(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await Agent(settings).run(stop=stop)


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(sys.argv[1:] if argv is None else argv)
    # A burst of thousands of routes allocates objects by the hundred
    # thousand, few of them in cycles: at the default thresholds the cyclic
    # collector ran dozens of times per burst, a fifth of the agent's time.
    # What was loaded at start-up never goes away: out of its sight.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        asyncio.run(_run(settings))
    except GatewayError as exc:
        print(f"marina-gateway: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
