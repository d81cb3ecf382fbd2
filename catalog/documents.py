"""The JSON documents that cross etcd and HTTP, typed.

An environment is one etcd document holding its objects in a flat map by id,
each with a Murano `?` header; the API shows it with each object's actions.
The engine protocol's documents live in `catalog.engines.base`, the local
engine's in `catalog.engines.local.records`.

Where a value is JSON whose shape Marina does not fix (a package's properties
before they are checked), it is `Json` or `JsonObject`; JSON-Schemas and
Kubernetes objects, which code walks freely, are `JsonSchema` and
`KubernetesObject`; replies in the shape Murano's API gives them (its field
names, objects with their properties inline) are `MuranoDocument`. A pod's
specification here is what its package or template gave, checked by
`catalog.model.validate_pod_spec` before it is stored.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypeAlias, TypedDict, TypeGuard

from catalog.ids import EnvironmentId, ObjectId, ProjectId, TaskId

Json: TypeAlias = bool | int | float | str | list["Json"] | dict[str, "Json"] | None
JsonObject: TypeAlias = dict[str, Json]
JsonSchema: TypeAlias = dict[str, Any]
KubernetesObject: TypeAlias = dict[str, Any]
MuranoDocument: TypeAlias = dict[str, Any]

NODE_TYPES = ("MasterNode", "MinionNode", "GatewayNode")


class ActionInfo(TypedDict):
    """An action as the API lists it, in an object's `_actions`."""

    id: str
    name: str
    title: str
    description: str
    schema: JsonSchema
    destructive: bool
    enabled: bool


class ApplicationTemplate(TypedDict):
    """What a `KubernetesApplication` package instantiates: pod specifications
    with `${property}` placeholders (`catalog.model.render_pods`)."""

    pods: list[JsonObject]


Manifest = TypedDict(
    "Manifest",
    {
        "format": NotRequired[str],
        "name": str,
        "version": str,
        "description": str,
        "class": str,
        "title": NotRequired[str],
        "properties": JsonSchema,
        "ui": NotRequired[JsonObject],
        "template": NotRequired[ApplicationTemplate],
        "tags": NotRequired[list[str]],
    },
)
"""A package's `manifest.yaml`, checked by `catalog.packages.validate_manifest`."""


class PackageDocument(TypedDict):
    """A package in etcd: its manifest and files (base64)."""

    manifest: Manifest
    files: dict[str, str]


PackageSummary = TypedDict(
    "PackageSummary",
    {
        "name": str,
        "version": str,
        "description": str,
        "class": str,
        "title": str,
        "properties": JsonSchema,
        "ui": JsonObject,
    },
)


class PackageChange(TypedDict):
    """What saving a package changed."""

    change: str
    """`added`, `upgraded`, `downgraded` or `replaced`."""
    previous_version: str | None
    version: str


class ListedAction(ActionInfo):
    """An action in an environment's list, with the object it acts on."""

    object: ObjectId
    objectName: str
    objectType: str


State = Literal["queued", "running", "succeeded", "failed"]


class TaskDoc(TypedDict):
    """A task in etcd (`catalog.tasks`), as the API shows it."""

    id: TaskId
    environment: EnvironmentId
    project: ProjectId
    object: ObjectId
    method: str
    action: str
    args: JsonObject
    """Checked against the action's schema before the task was queued."""
    state: State
    outcome: str | None
    reason: str | None
    result: JsonObject | None
    error: str | None
    retryable: bool
    created: float
    started: float | None
    finished: float | None
    attempts: int
    worker: str | None
    files: list[str]
    pinned: dict[str, int | str]


class TaskSummary(TypedDict):
    """A task in a list, without its arguments and result."""

    id: TaskId
    action: str
    object: ObjectId
    method: str
    state: State
    outcome: str | None
    reason: str | None
    error: str | None
    created: float
    finished: float | None
    files: list[str]


class LogLine(TypedDict):
    """A line of a task's log."""

    time: float
    level: str
    message: str


class Header(TypedDict):
    """The Murano `?` header of an object."""

    id: ObjectId
    type: str
    """`KubernetesCluster`, a node type (`NODE_TYPES`), `KubernetesPod` or
    `KubernetesApplication`."""
    name: str
    package: NotRequired[str]
    version: NotRequired[str]
    _actions: NotRequired[dict[str, ActionInfo]]
    """In replies only: what can be done to the object."""


_Object = TypedDict("_Object", {"?": Header})


class ClusterProperties(TypedDict):
    """A `kubernetes-cluster` package's properties, checked and with defaults."""

    name: str
    masterCount: NotRequired[int]
    """1, 3 or 5 (clusters stored before it existed have none: one master)."""
    nodeCount: int
    maxNodes: int
    gatewayCount: int
    maxGateways: int
    nodeCores: float
    nodeMemory: int
    flavor: NotRequired[str]
    image: NotRequired[str]


class ClusterObject(_Object):
    properties: ClusterProperties
    key: str
    """The cluster's name in etcd keys and gateway routes (`catalog.environments.cluster_key`)."""
    state: str
    nodes: list[ObjectId]
    endpoints: list[str]
    """Public URLs of every pod of the cluster."""


class NodeSteps(TypedDict):
    """Which deployment steps are done (`catalog.environments.NODE_STEPS`)."""

    deployInstance: bool
    setupEtcd: bool
    setupNode: bool


class Capacity(TypedDict):
    cores: float
    memory: int


class NodeObject(_Object):
    cluster: ObjectId
    role: str
    """`master`, `minion` or `gateway`."""
    index: int
    state: str
    address: str | None
    steps: NodeSteps
    capacity: NotRequired[Capacity]


class PortSpec(TypedDict):
    containerPort: int


class Readiness(TypedDict):
    """A command whose success makes a replica ready, run where the container runs."""

    command: list[str]
    interval_s: int
    """Seconds from the end of one run to the start of the next."""
    timeout_s: int
    """Seconds a run may take; then it is killed and counts as a failure."""
    failure_threshold: int
    """Failures in a row that take a ready replica out of its services."""
    start_period_s: int
    """Seconds after the container starts before the first run."""


class ContainerObjectSpec(TypedDict):
    name: str
    image: str
    command: list[str]
    args: NotRequired[list[str]]
    env: NotRequired[dict[str, str]]
    ports: NotRequired[list[PortSpec]]
    cores: NotRequired[float]
    memory: NotRequired[int]
    secrets: NotRequired[dict[str, str]]
    readiness: NotRequired[JsonObject]
    """As given: `catalog.model.readiness_of` fills in the defaults."""


class ServiceObjectSpec(TypedDict):
    name: str
    port: int
    targetPort: NotRequired[int]
    scope: NotRequired[str]
    hosts: NotRequired[list[str]]
    paths: NotRequired[list[str]]
    tls: NotRequired[dict[str, str]]


class PodObjectSpec(TypedDict):
    name: str
    containers: list[ContainerObjectSpec]
    replicas: NotRequired[int]
    labels: NotRequired[dict[str, str]]
    services: NotRequired[list[ServiceObjectSpec]]
    links: NotRequired[dict[str, str]]


class ShownService(TypedDict):
    """A pod's service with the address the engine gave it."""

    name: str
    port: int
    targetPort: int
    scope: str
    ip: NotRequired[str]


class ReplicaSummary(TypedDict):
    """A replica as users see it (`catalog.observing.replica_summary`)."""

    name: str
    node: str
    address: str
    ready: bool
    restarts: int
    reason: str
    restarted: NotRequired[float]
    """When its restart count last grew."""
    draining: NotRequired[bool]


class PodStatus(TypedDict):
    replicas: list[ReplicaSummary]
    pending: str


class ReplicaCounts(TypedDict):
    desired: int
    ready: int


class PodObject(_Object):
    cluster: ObjectId
    app: ObjectId | None
    spec: PodObjectSpec
    state: str
    replicas: ReplicaCounts
    services: list[ShownService]
    endpoints: list[str]
    status: NotRequired[PodStatus]


class ApplicationObject(_Object):
    properties: JsonObject
    cluster: ObjectId
    pods: list[ObjectId]
    state: str


EnvironmentObject: TypeAlias = ClusterObject | NodeObject | PodObject | ApplicationObject


class EnvironmentSummary(TypedDict):
    id: EnvironmentId
    name: str
    project: ProjectId
    created: float
    updated: float
    status: str
    """`ready`, `degraded` or `deleting`."""


class EnvironmentDocument(EnvironmentSummary):
    """An environment as etcd holds it."""

    objects: dict[ObjectId, EnvironmentObject]
    order: list[ObjectId]
    """Object ids in the order they were added, as they are shown."""
    version: NotRequired[int]
    """Murano's version of the environment: how many sessions were deployed into it."""


class ShownEnvironment(EnvironmentSummary):
    """An environment as the API shows it: its objects in order."""

    objects: list[EnvironmentObject]


class PresentedEnvironment(ShownEnvironment):
    """As the API presents it: with each public service's URLs
    (`catalog.routing.environment_urls`)."""

    urls: list[ServiceUrls]


class ServiceUrls(TypedDict):
    """Where users reach one public service of a pod."""

    pod: str
    service: str
    urls: list[str]


class ReplicaLine(TypedDict):
    """A replica in an environment's status (`GET .../status`)."""

    index: int
    name: str
    node: str
    address: str
    ready: bool
    restarts: int
    reason: str


class PodLine(TypedDict):
    id: ObjectId
    name: str
    state: str
    cluster: ObjectId
    app: ObjectId | None
    desired: int
    ready: int
    restarts: int
    pending: str
    endpoints: list[str]
    replicas: list[ReplicaLine]


class NodeLine(TypedDict):
    name: str
    role: str
    state: str
    address: str | None


class ClusterLine(TypedDict):
    id: ObjectId
    name: str
    state: str
    endpoints: list[str]
    nodes: list[NodeLine]


class ApplicationLine(TypedDict):
    id: ObjectId
    name: str
    type: str
    package: str | None
    state: str
    pods: list[str]


class TaskLine(TypedDict):
    id: str
    object: str
    method: str
    state: str
    outcome: str | None
    reason: str | None
    error: str | None


class EnvironmentStatus(TypedDict):
    """An environment in one summary (`GET /v1/environments/{id}/status`)."""

    id: EnvironmentId
    name: str
    status: str
    applications: list[ApplicationLine]
    pods: list[PodLine]
    clusters: list[ClusterLine]
    urls: list[str]
    tasks: list[TaskLine]


class IndexEntry(TypedDict):
    """An environment in its project's index."""

    id: EnvironmentId
    created: float


def is_cluster(obj: EnvironmentObject) -> TypeGuard[ClusterObject]:
    return obj["?"]["type"] == "KubernetesCluster"


def is_node(obj: EnvironmentObject) -> TypeGuard[NodeObject]:
    return obj["?"]["type"] in NODE_TYPES


def is_pod(obj: EnvironmentObject) -> TypeGuard[PodObject]:
    return obj["?"]["type"] == "KubernetesPod"


def is_application(obj: EnvironmentObject) -> TypeGuard[ApplicationObject]:
    return obj["?"]["type"] == "KubernetesApplication"
