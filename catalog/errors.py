"""Marina's errors: one root, messages built from typed fields.

The API maps them to HTTP statuses in one place (`catalog.api.app`), through the
`status` each class carries; anything that is not a `MarinaError` is a bug
and answers 500 without details.
"""

from __future__ import annotations

from dataclasses import dataclass


class MarinaError(Exception):
    status = 500
    code = "internal"

    def payload(self) -> dict[str, object]:
        return {"error": self.code, "message": str(self)}


@dataclass(frozen=True)
class Problem:
    """One broken rule: where, what was given, what the rule is."""

    field: str
    rule: str
    value: object = None

    def as_dict(self) -> dict[str, object]:
        return {"field": self.field, "rule": self.rule, "value": _shown(self.value)}

    def __str__(self) -> str:
        return f"{self.field}: {self.rule}"


def _shown(value: object) -> object:
    if isinstance(value, str | int | float | bool) or value is None:
        return value if not isinstance(value, str) or len(value) <= 200 else value[:200] + "..."
    return repr(value)[:200]


class ValidationFailed(MarinaError):
    status = 400
    code = "invalid"

    def __init__(self, what: str, problems: list[Problem]) -> None:
        self.what = what
        self.problems = problems
        listed = "; ".join(str(p) for p in problems[:20])
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        super().__init__(f"{what} is invalid: {listed}{more}")

    def payload(self) -> dict[str, object]:
        return {**super().payload(), "problems": [p.as_dict() for p in self.problems]}


class NotFound(MarinaError):
    status = 404
    code = "not_found"

    def __init__(self, kind: str, ident: str) -> None:
        self.kind, self.ident = kind, ident
        super().__init__(f"{kind} {ident!r} not found")


class ActionNotFound(NotFound):
    def __init__(self, object_id: str, action: str) -> None:
        MarinaError.__init__(self, f"object {object_id!r} has no action {action!r}")
        self.kind, self.ident = "action", f"{object_id}_{action}"


class Conflict(MarinaError):
    status = 409
    code = "conflict"

    def __init__(self, what: str, reason: str) -> None:
        self.what, self.reason = what, reason
        super().__init__(f"{what}: {reason}")


class Unauthorized(MarinaError):
    status = 401
    code = "unauthorized"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class NotSupported(MarinaError):
    status = 501
    code = "not_supported"

    def __init__(self, driver: str, operation: str) -> None:
        self.driver, self.operation = driver, operation
        super().__init__(f"the {driver} driver cannot {operation}")


class StoreUnavailable(MarinaError):
    status = 503
    code = "store_unavailable"

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint, self.reason = endpoint, reason
        super().__init__(f"etcd at {endpoint} is unavailable: {reason}")


class SchedulingFailed(MarinaError):
    """Nothing can take a replica: a permanent failure of the action."""

    status = 409
    code = "unschedulable"

    def __init__(self, pod: str, reason: str) -> None:
        self.pod, self.reason = pod, reason
        super().__init__(f"cannot place a replica of {pod}: {reason}")


class ActionFailed(MarinaError):
    """An action that could not complete; `retryable` tells a rerun may help."""

    status = 409
    code = "action_failed"

    def __init__(self, action: str, reason: str, *, retryable: bool = False) -> None:
        self.action, self.reason, self.retryable = action, reason, retryable
        super().__init__(f"{action} failed: {reason}")


class TooLarge(MarinaError):
    """A request body over the limit; nothing of it is kept."""

    status = 413
    code = "too_large"

    def __init__(self, what: str, limit: int) -> None:
        self.what, self.limit = what, limit
        super().__init__(f"{what} must be at most {limit} bytes")

    def payload(self) -> dict[str, object]:
        return {**super().payload(), "problems": [Problem(self.what, str(self)).as_dict()]}


class RequestTimeout(MarinaError):
    status = 408
    code = "timeout"

    def __init__(self, what: str, seconds: float) -> None:
        self.what, self.seconds = what, seconds
        super().__init__(f"{what} did not arrive within {seconds:g}s")


class QuotaExceeded(MarinaError):
    """A project asked for more than its quota allows."""

    status = 429
    code = "quota_exceeded"

    def __init__(self, quota: str, limit: int, *, used: int, wanted: int) -> None:
        self.quota, self.limit, self.used, self.wanted = quota, limit, used, wanted
        super().__init__(f"quota {quota!r} is {limit}: {used} in use, {wanted} more asked for")

    def payload(self) -> dict[str, object]:
        return {
            **super().payload(),
            "quota": self.quota,
            "limit": self.limit,
            "problems": [
                Problem(self.quota, f"quota of {self.limit} exceeded", self.used).as_dict()
            ],
        }
