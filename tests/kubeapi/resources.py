"""The resource types the test API server serves, as discovery describes them."""

from __future__ import annotations

from dataclasses import dataclass

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    has_status: bool = True
    """Whether writes through the main endpoint ignore `status` (a status subresource)."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def singular(self) -> str:
        return self.kind.lower()


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "Namespace", "namespaces", False, ("ns",), subresources=("status",)),
    Resource("", "v1", "Node", "nodes", False, ("no",), subresources=("status",)),
    Resource(
        "",
        "v1",
        "Pod",
        "pods",
        True,
        ("po",),
        ("all",),
        subresources=("status", "log", "eviction"),
    ),
    Resource("", "v1", "Service", "services", True, ("svc",), ("all",), subresources=("status",)),
    Resource("", "v1", "ConfigMap", "configmaps", True, ("cm",), has_status=False),
    Resource("", "v1", "Secret", "secrets", True, has_status=False),
    Resource("", "v1", "Endpoints", "endpoints", True, ("ep",), has_status=False),
    Resource(
        "", "v1", "ResourceQuota", "resourcequotas", True, ("quota",), subresources=("status",)
    ),
    Resource(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        True,
        ("deploy",),
        ("all",),
        subresources=("status", "scale"),
    ),
    Resource(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        True,
        ("rs",),
        ("all",),
        subresources=("status", "scale"),
    ),
    Resource(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        True,
        ("pdb",),
        subresources=("status",),
    ),
)

BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}
GROUPS = {
    "apps": "v1",
    "policy": "v1",
}
"""Named API groups and their (only) version (autoscaling/v1 Scale is only a subresource)."""

SUBRESOURCE_KINDS = {
    "scale": ("autoscaling", "v1", "Scale"),
    "eviction": ("policy", "v1", "Eviction"),
}
