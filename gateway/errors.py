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
