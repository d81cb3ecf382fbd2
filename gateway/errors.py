"""Errors of the gateway agent, each built from typed fields."""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class EtcdUnavailable(GatewayError):
    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"etcd at {endpoint} is unavailable: {reason}")


class EtcdCompacted(GatewayError):
    def __init__(self, compact_revision: int) -> None:
        self.compact_revision = compact_revision
        super().__init__(f"watch revision compacted; oldest kept is {compact_revision}")


class HAProxyError(GatewayError):
    def __init__(self, operation: str, detail: str) -> None:
        self.operation = operation
        self.detail = detail
        super().__init__(f"haproxy {operation} failed: {detail}")


class PortsHeld(GatewayError):
    """Another process listens on ports this gateway serves."""

    def __init__(self, holders: list[str]) -> None:
        self.holders = holders
        more = f"; and {len(holders) - 5} more" if len(holders) > 5 else ""
        shown = "; ".join(holders[:5]) + more
        super().__init__(f"refusing to start: {shown}")


class AlreadyRunning(GatewayError):
    def __init__(self, state_dir: str, pid: str) -> None:
        self.state_dir = state_dir
        self.pid = pid
        super().__init__(f"another marina-gateway (pid {pid or '?'}) runs from {state_dir}")
