"""Server-side printing: the meta.k8s.io Table that `kubectl get` asks for, with its columns."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
Column = tuple[str, int, Callable[[Obj], Any]]
"""(name, priority, cell); priority 1 columns show with `-o wide`."""


def age(obj: Obj) -> str:
    created = obj["metadata"].get("creationTimestamp")
    if not created:
        return "<unknown>"
    then = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    if seconds < 600:
        return f"{seconds // 60}m{seconds % 60}s"
    if seconds < 3 * 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def pod_status(pod: Obj) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    for status in _status(pod).get("containerStatuses") or []:
        state = status.get("state") or {}
        for kind in ("waiting", "terminated"):
            reason = (state.get(kind) or {}).get("reason")
            if reason and reason != "ContainerCreating":
                return str(reason)
    return str(_status(pod).get("phase", "Pending"))


def ports(service: Obj) -> str:
    out = []
    for port in service["spec"].get("ports") or []:
        text = str(port["port"])
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        out.append(f"{text}/{port.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def node_status(node: Obj) -> str:
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in _status(node).get("conditions") or []
    )
    text = "Ready" if ready else "NotReady"
    return text + (",SchedulingDisabled" if (node.get("spec") or {}).get("unschedulable") else "")


def internal_ip(node: Obj) -> str:
    for address in _status(node).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return str(address["address"])
    return "<none>"


def selector(obj: Obj) -> str:
    found = (obj.get("spec") or {}).get("selector") or {}
    labels = found.get("matchLabels", found) if isinstance(found, dict) else {}
    return ",".join(f"{k}={v}" for k, v in labels.items()) or "<none>"


COLUMNS: dict[str, list[Column]] = {
    "Pod": [
        ("Ready", 0, lambda p: "{}/{}".format(
            sum(1 for c in _status(p).get("containerStatuses") or [] if c.get("ready")),
            len(p["spec"].get("containers") or []))),
        ("Status", 0, pod_status),
        ("Restarts", 0, lambda p: sum(c.get("restartCount", 0)
                                      for c in _status(p).get("containerStatuses") or [])),
        ("Age", 0, age),
        ("IP", 1, lambda p: _status(p).get("podIP", "<none>")),
        ("Node", 1, lambda p: p["spec"].get("nodeName", "<none>")),
    ],
    "Deployment": [
        ("Ready", 0, lambda d: "{}/{}".format(_status(d).get("readyReplicas", 0),
                                              d["spec"].get("replicas", 1))),
        ("Up-to-date", 0, lambda d: _status(d).get("updatedReplicas", 0)),
        ("Available", 0, lambda d: _status(d).get("availableReplicas", 0)),
        ("Age", 0, age),
        ("Selector", 1, selector),
    ],
    "ReplicaSet": [
        ("Desired", 0, lambda r: r["spec"].get("replicas", 1)),
        ("Current", 0, lambda r: _status(r).get("replicas", 0)),
        ("Ready", 0, lambda r: _status(r).get("readyReplicas", 0)),
        ("Age", 0, age),
    ],
    "Service": [
        ("Type", 0, lambda s: s["spec"].get("type", "ClusterIP")),
        ("Cluster-IP", 0, lambda s: s["spec"].get("clusterIP", "<none>")),
        ("External-IP", 0, lambda s: "<none>"),
        ("Port(s)", 0, ports),
        ("Age", 0, age),
        ("Selector", 1, selector),
    ],
    "Node": [
        ("Status", 0, node_status),
        ("Roles", 0, lambda n: "<none>"),
        ("Age", 0, age),
        ("Version", 0, lambda n: "v1.32.4"),
        ("Internal-IP", 1, internal_ip),
    ],
    "Namespace": [("Status", 0, lambda n: _status(n).get("phase", "Active")), ("Age", 0, age)],
    "PodDisruptionBudget": [
        ("Min Available", 0, lambda b: b["spec"].get("minAvailable", "N/A")),
        ("Max Unavailable", 0, lambda b: b["spec"].get("maxUnavailable", "N/A")),
        ("Allowed Disruptions", 0, lambda b: _status(b).get("disruptionsAllowed", 0)),
        ("Age", 0, age),
    ],
}  # fmt: skip


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def table(kind: str, items: list[Obj], resource_version: str, *, full: bool) -> Obj:
    columns: list[Column] = [("Name", 0, lambda o: o["metadata"]["name"])]
    columns += COLUMNS.get(kind, [("Age", 0, age)])
    definitions = [
        {"name": name, "type": "string", "format": "name" if name == "Name" else "",
         "description": "", "priority": priority}
        for name, priority, _ in columns
    ]  # fmt: skip
    rows = []
    for obj in items:
        embedded = obj if full else {
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"]}  # fmt: skip
        rows.append({"cells": [cell(obj) for _, _, cell in columns], "object": embedded})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": definitions, "rows": rows}  # fmt: skip
