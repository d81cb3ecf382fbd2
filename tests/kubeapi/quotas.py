"""ResourceQuota accounting: object counts and the compute resources pods request."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

Obj = dict[str, Any]

SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}
QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(n|u|m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
COUNTED = {
    "pods": "Pod",
    "services": "Service",
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "deployments.apps": "Deployment",
    "replicasets.apps": "ReplicaSet",
}
"""Object counts a quota can limit (`pods` or `count/pods`, `count/deployments.apps`)."""
COMPUTE = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory")


def quantity(text: Any) -> Decimal:
    match = QUANTITY.match(str(text))
    if not match:
        raise ValueError(f"quantities must match the regular expression {QUANTITY.pattern!r}")
    return Decimal(match.group(1)) * SUFFIXES[match.group(2) or ""]


def pod_compute(pod: Obj, key: str) -> Decimal | None:
    """What a pod asks of `key` (requests.cpu ...); None when a container does not say."""
    section, _, name = key.rpartition(".")
    section = section or "requests"
    total = Decimal(0)
    for container in (pod.get("spec") or {}).get("containers") or []:
        value = ((container.get("resources") or {}).get(section) or {}).get(name)
        if value is None:
            return None
        total += quantity(value)
    return total


def usage(key: str, kind: str, objects: list[Obj]) -> Decimal:
    counted = COUNTED.get(key.removeprefix("count/"))
    if counted is not None:
        return Decimal(len(objects)) if counted == kind else Decimal(0)
    if key in COMPUTE and kind == "Pod":
        return sum((pod_compute(p, key) or Decimal(0) for p in objects if live(p)), Decimal(0))
    return Decimal(0)


def live(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def render(value: Decimal, key: str) -> str:
    if "cpu" in key and value != value.to_integral_value():
        return f"{int(value * 1000)}m"
    return str(int(value)) if value == value.to_integral_value() else str(value)


def refusal(quota: Obj, kind: str, existing: list[Obj], new: Obj) -> str | None:
    """Why `new` would break `quota`, in the real server's words, or None."""
    hard = (quota.get("spec") or {}).get("hard") or {}
    name = quota["metadata"]["name"]
    missing = [k for k in hard if k in COMPUTE and kind == "Pod" and pod_compute(new, k) is None]
    if missing:
        return f"failed quota: {name}: must specify {','.join(sorted(missing))}"
    over, requested, used, limited = [], [], [], []
    for key, limit in sorted(hard.items()):
        wanted = usage(key, kind, [new])
        if not wanted:
            continue
        current = usage(key, kind, existing)
        if current + wanted > quantity(limit):
            over.append(key)
            requested.append(f"{key}={render(wanted, key)}")
            used.append(f"{key}={render(current, key)}")
            limited.append(f"{key}={limit}")
    if over:
        return (
            f"exceeded quota: {name}, requested: {','.join(requested)}, used: "
            f"{','.join(used)}, limited: {','.join(limited)}"
        )
    return None
