"""Environments and the objects in them.

An environment is one etcd document: its name, project, and its objects in a
flat map by id, each with a Murano `?` header. Every change is a
read-modify-write that compares the document's revision, so concurrent
changes (an action and an API call) never overwrite each other.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from catalog import keys, quotas
from catalog.documents import (
    NODE_TYPES,
    ApplicationObject,
    ClusterObject,
    ClusterProperties,
    EnvironmentDocument,
    EnvironmentObject,
    EnvironmentSummary,
    Header,
    IndexEntry,
    Json,
    JsonObject,
    NodeObject,
    PodObject,
    PodObjectSpec,
    ShownEnvironment,
    is_cluster,
    is_node,
    is_pod,
)
from catalog.errors import Conflict, NotFound, Problem, ValidationFailed
from catalog.ids import EnvironmentId, ObjectId, ProjectId, new_id
from catalog.model import render_pods, validate_pod_spec
from catalog.packages import Package, get_package, resolve_properties
from catalog.quotas import QUOTAS
from catalog.store import Store, Versioned
from catalog.validation import DNS_LABEL, ENVIRONMENT_NAME, VERSION, full

ENVIRONMENTS = keys.ENVIRONMENTS
BY_PROJECT = keys.ENVIRONMENTS_BY_PROJECT
STALE_INDEX = 60.0
"""Seconds after which an index entry without its document is dropped."""
NAME_RE = ENVIRONMENT_NAME
NODE_STEPS = ("deployInstance", "setupEtcd", "setupNode")
MASTER_COUNTS = (1, 3, 5)
"""How many masters a cluster may have: each holds an etcd member, and etcd
keeps a quorum only with an odd number of members."""
T = TypeVar("T")


def env_key(env_id: str) -> str:
    return f"{ENVIRONMENTS}{env_id}"


def header(obj_id: ObjectId, type_name: str, name: str, **extra: str) -> Header:
    made: Header = {"id": obj_id, "type": type_name, "name": name}
    if "package" in extra:
        made["package"] = extra["package"]
    if "version" in extra:
        made["version"] = extra["version"]
    return made


def check_name(name: Any, *, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or not name.strip():
        raise ValidationFailed(field, [Problem(field, "must be 1-80 printable characters", name)])
    return name


def new_environment(name: Any, project: ProjectId) -> EnvironmentDocument:
    now = time.time()
    return {
        "id": EnvironmentId(new_id()),
        "name": check_name(name),
        "project": project,
        "created": now,
        "updated": now,
        "status": "ready",
        "objects": {},
        "order": [],
    }


async def create_environment(store: Store, *, name: Any, project: ProjectId) -> EnvironmentDocument:
    doc = new_environment(name, project)
    await _store_new(store, doc)
    return doc


async def _store_new(store: Store, doc: EnvironmentDocument) -> None:
    """Create the document, within the project's quota, listed in its project's index
    (written first: an entry whose document is missing is skipped)."""
    project = doc["project"]
    quotas.check("environments", QUOTAS.environments, used=len(await _project_ids(store, project)))
    usage = count_objects(doc["objects"].values())
    for quota in ("nodes", "pods"):
        if usage[quota]:
            used = await project_usage(store, project)
            quotas.check(quota, getattr(QUOTAS, quota), used=used[quota], wanted=usage[quota])
    entry: IndexEntry = {"id": doc["id"], "created": doc["created"]}
    await store.put(f"{BY_PROJECT}{project}/{doc['id']}", entry)
    await store.create(env_key(doc["id"]), doc)


async def _project_ids(store: Store, project: ProjectId) -> list[str]:
    """The ids in a project's index, sorted; entries of environments gone for a
    while are dropped (deletion removes only the document)."""
    ids = []
    for entry in await store.list(f"{BY_PROJECT}{project}/"):
        env_id = entry.key.rsplit("/", 1)[1]
        stale = time.time() - float(entry.value.get("created", 0)) > STALE_INDEX
        if stale and await store.get(env_key(env_id)) is None:
            await store.delete(entry.key, mod_revision=entry.mod_revision)
            continue
        ids.append(env_id)
    return sorted(ids)


def count_objects(objects: Iterable[EnvironmentObject]) -> dict[str, int]:
    """Nodes and pods among these objects, as quotas count them."""
    objects = list(objects)
    return {
        "nodes": sum(o["?"]["type"] in NODE_TYPES for o in objects),
        "pods": sum(o["?"]["type"] == "KubernetesPod" for o in objects),
    }


async def project_usage(store: Store, project: ProjectId) -> dict[str, int]:
    docs = []
    for env_id in await _project_ids(store, project):
        found = await store.get(env_key(env_id))
        if found is not None and found.value.get("project") == project:
            docs.append(found.value)
    return count_objects(o for doc in docs for o in doc["objects"].values())


async def check_node_quota(store: Store, project: ProjectId, wanted: int) -> None:
    """Refuse `wanted` more nodes beyond the project's quota."""
    if wanted > 0:
        used = (await project_usage(store, project))["nodes"]
        quotas.check("nodes", QUOTAS.nodes, used=used, wanted=wanted)


_SCALING = {
    "scaleNodesUp": ("minion", None),
    "scaleGatewaysUp": ("gateway", None),
    "scaleNodes": ("minion", "count"),
    "scaleGateways": ("gateway", "count"),
}


async def check_action_quota(
    store: Store,
    project: ProjectId,
    doc: EnvironmentDocument,
    object_id: str,
    method: str,
    args: JsonObject,
) -> None:
    """Refuse an action that would take the cluster past its own limit or the
    project past its node quota."""
    if method not in _SCALING:
        return
    role, argument = _SCALING[method]
    cluster = cluster_in(doc, object_id)
    current = sum(node["role"] == role for node in nodes_of(doc, cluster))
    count = args[argument] if argument is not None else None
    # The cluster's own limit, refused now rather than when the task runs.
    properties = cluster["properties"]
    limit, maximum = (
        ("maxNodes", properties["maxNodes"])
        if role == "minion"
        else ("maxGateways", properties["maxGateways"])
    )
    if isinstance(count, int) and count > maximum:
        raise ValidationFailed(
            f"arguments of {method}",
            [Problem("count", f"must not exceed the cluster's {limit} ({maximum})", count)],
        )
    wanted = 1 if not isinstance(count, int) else count - current
    await check_node_quota(store, project, wanted)


async def list_environments(
    store: Store, project: ProjectId, *, limit: int = 100, marker: str | None = None
) -> tuple[list[EnvironmentSummary], str | None]:
    """A page of the project's environments by id, after `marker`, and the next
    marker; only this project's documents are read."""
    ids = [i for i in await _project_ids(store, project) if marker is None or i > marker]
    page: list[EnvironmentSummary] = []
    for position, env_id in enumerate(ids):
        if len(page) == limit:
            return page, ids[position - 1]
        found = await store.get(env_key(env_id))
        if found is not None and found.value.get("project") == project:
            page.append(summary(found.value))
    return page, None


def summary(doc: EnvironmentSummary) -> EnvironmentSummary:
    return {
        "id": doc["id"],
        "name": doc["name"],
        "project": doc["project"],
        "created": doc["created"],
        "updated": doc["updated"],
        "status": doc["status"],
    }


async def load(store: Store, env_id: str, project: ProjectId | None = None) -> Versioned:
    """The environment document; another project's is reported as not found."""
    found = await store.get(env_key(env_id))
    if found is None or (project is not None and found.value["project"] != project):
        raise NotFound("environment", env_id)
    return found


def require_live(doc: EnvironmentDocument) -> None:
    """Refuse changes to an environment that is being deleted."""
    if doc.get("status") == "deleting":
        raise Conflict(f"environment {doc['name']!r}", "it is being deleted")


def show(doc: EnvironmentDocument) -> ShownEnvironment:
    """The environment with its objects in order (the API adds their actions)."""
    return {**summary(doc), "objects": [doc["objects"][i] for i in doc["order"]]}


async def change(store: Store, env_id: str, edit: Callable[[EnvironmentDocument], T]) -> T:
    """Apply `edit` to the environment document in one compare-and-swap.

    `edit` changes the document in place and returns a value for the caller;
    it runs again if another writer got in first.
    """
    box: list[T] = []

    def apply(doc: EnvironmentDocument | None) -> EnvironmentDocument:
        if doc is None:
            raise NotFound("environment", env_id)
        box.clear()
        box.append(edit(doc))
        doc["updated"] = time.time()
        return doc

    await store.update(env_key(env_id), apply)
    return box[0]


def clusters(doc: EnvironmentDocument) -> list[ClusterObject]:
    return [o for o in doc["objects"].values() if is_cluster(o)]


def cluster_in(doc: EnvironmentDocument, object_id: str) -> ClusterObject:
    """The cluster of that id; `NotFound` if there is none (or it is no cluster)."""
    found = doc["objects"].get(ObjectId(object_id))
    if found is None or not is_cluster(found):
        raise NotFound("cluster", object_id)
    return found


def pod_in(doc: EnvironmentDocument, object_id: str) -> PodObject:
    """The pod of that id; `NotFound` if there is none (or it is no pod)."""
    found = doc["objects"].get(ObjectId(object_id))
    if found is None or not is_pod(found):
        raise NotFound("pod", object_id)
    return found


def node_in(doc: EnvironmentDocument, object_id: str) -> NodeObject:
    """The node of that id; `NotFound` if there is none (or it is no node)."""
    found = doc["objects"].get(ObjectId(object_id))
    if found is None or not is_node(found):
        raise NotFound("node", object_id)
    return found


def nodes_of(doc: EnvironmentDocument, cluster: ClusterObject) -> list[NodeObject]:
    """The cluster's nodes still in the environment, in the cluster's order."""
    found = (doc["objects"].get(n) for n in cluster["nodes"])
    return [n for n in found if n is not None and is_node(n)]


def pods_of(doc: EnvironmentDocument) -> list[PodObject]:
    return [o for o in doc["objects"].values() if is_pod(o)]


def cluster_key(env_id: str, name: str) -> str:
    """The cluster's name in etcd keys and gateway routes (unique per environment)."""
    return f"{env_id[:12]}-{name}"


def master_count(properties: ClusterProperties) -> int:
    """The cluster's masters: one for a cluster stored before `masterCount` existed."""
    return int(properties.get("masterCount", 1))


def make_node(cluster_id: ObjectId, role: str, index: int) -> NodeObject:
    kind = {"master": "MasterNode", "minion": "MinionNode", "gateway": "GatewayNode"}[role]
    node_id = ObjectId(new_id())
    return {
        "?": header(node_id, kind, f"{role}-{index}"),
        "cluster": cluster_id,
        "role": role,
        "index": index,
        "state": "pending",
        "address": None,
        "steps": {"deployInstance": False, "setupEtcd": False, "setupNode": False},
    }


def instantiate(
    package: Package,
    properties: JsonObject,
    doc: EnvironmentDocument,
    *,
    name: str | None,
    cluster: Any = None,
    single_master: str | None = None,
) -> list[EnvironmentObject]:
    """The objects that adding `package` to the environment creates; `properties`
    are checked against the package's schema (`resolve_properties`).

    `single_master` names the provider of the nodes when it runs one master
    only: a cluster of more is refused, naming it."""
    kind = package.class_name
    obj_id = ObjectId(new_id())
    source = {"package": package.name, "version": package.version}
    if kind == "KubernetesCluster":
        return _instantiate_cluster(
            cast(ClusterProperties, properties),
            doc,
            obj_id,
            source,
            name,
            single_master=single_master,
        )
    cluster_id = _pick_cluster(doc, properties.get("cluster", cluster))
    if kind == "KubernetesPod":
        spec = cast(PodObjectSpec, {k: v for k, v in properties.items() if k != "cluster"})
        pods = [_pod(spec, cluster_id, source, app=None)]
        return list(_check_pods(pods, doc))
    title = package.manifest.get("title", package.name)
    app: ApplicationObject = {
        "?": header(obj_id, kind, name or str(title), **source),
        "properties": properties,
        "cluster": cluster_id,
        "pods": [],
        "state": "new",
    }
    template = package.manifest["template"]
    specs = cast(list[PodObjectSpec], render_pods(template, properties, package_dir="${package}"))
    pods = [_pod(spec, cluster_id, source, app=obj_id) for spec in specs]
    app["pods"] = [p["?"]["id"] for p in pods]
    return [app, *_check_pods(pods, doc)]


def _instantiate_cluster(
    properties: ClusterProperties,
    doc: EnvironmentDocument,
    obj_id: ObjectId,
    source: dict[str, str],
    name: str | None,
    *,
    single_master: str | None,
) -> list[EnvironmentObject]:
    """The cluster and the nodes its properties plan: masters `master-0` on
    (deployed in that order: later masters join the first one's etcd),
    workers and gateways from 1."""
    kind = "KubernetesCluster"
    cname = properties["name"]
    if any(c["properties"]["name"] == cname for c in clusters(doc)):
        raise Conflict(f"cluster {cname!r}", "the environment has one by that name")
    problems = []
    masters = master_count(properties)
    if masters not in MASTER_COUNTS:  # a package of other rules than the shipped one
        problems.append(
            Problem(
                "masterCount",
                "must be 1, 3 or 5: etcd keeps a quorum only with an odd number of members",
                masters,
            )
        )
    elif masters > 1 and single_master is not None:
        problems.append(
            Problem("masterCount", f"the {single_master} provider runs one master", masters)
        )
    if properties["nodeCount"] > properties["maxNodes"]:
        problems.append(Problem("nodeCount", "must not exceed maxNodes", properties["nodeCount"]))
    if properties["gatewayCount"] > properties["maxGateways"]:
        problems.append(
            Problem("gatewayCount", "must not exceed maxGateways", properties["gatewayCount"])
        )
    if problems:
        raise ValidationFailed("properties", problems)
    cluster: ClusterObject = {
        "?": header(obj_id, kind, name or cname, **source),
        "properties": properties,
        "key": cluster_key(doc["id"], cname),
        "state": "new",
        "nodes": [],
        "endpoints": [],
    }
    nodes = [make_node(obj_id, "master", i) for i in range(masters)]
    nodes += [make_node(obj_id, "minion", i + 1) for i in range(properties["nodeCount"])]
    nodes += [make_node(obj_id, "gateway", i + 1) for i in range(properties["gatewayCount"])]
    cluster["nodes"] = [n["?"]["id"] for n in nodes]
    return [cluster, *nodes]


def _pick_cluster(doc: EnvironmentDocument, wanted: Json) -> ObjectId:
    found = clusters(doc)
    if wanted is not None:
        for cluster in found:
            if wanted in (cluster["?"]["id"], cluster["properties"]["name"]):
                return cluster["?"]["id"]
        raise ValidationFailed(
            "properties", [Problem("cluster", "names no cluster in this environment", wanted)]
        )
    if len(found) != 1:
        raise ValidationFailed(
            "properties",
            [
                Problem(
                    "cluster",
                    "is required: add a kubernetes-cluster first"
                    if not found
                    else "is required: the environment has several clusters",
                )
            ],
        )
    return found[0]["?"]["id"]


def _pod(
    spec: PodObjectSpec, cluster_id: ObjectId, source: dict[str, str], *, app: ObjectId | None
) -> PodObject:
    obj_id = ObjectId(new_id())
    return {
        "?": header(obj_id, "KubernetesPod", spec.get("name", "pod"), **source),
        "cluster": cluster_id,
        "app": app,
        "spec": spec,
        "state": "new",
        "replicas": {"desired": spec.get("replicas", 1), "ready": 0},
        "services": [],
        "endpoints": [],
    }


def _check_pods(pods: list[PodObject], doc: EnvironmentDocument) -> list[PodObject]:
    """The pods, once their specifications are checked (as given, they may be anything)."""
    problems: list[Problem] = []
    taken_pods = {o["spec"]["name"] for o in pods_of(doc)}
    taken_services = {s["name"] for o in pods_of(doc) for s in o["spec"].get("services", [])}
    for pod in pods:
        spec: JsonObject = pod["spec"]  # type: ignore[assignment]
        problems += validate_pod_spec(spec, where=f"pod {spec.get('name')}")
        if spec.get("name") in taken_pods:
            problems.append(
                Problem("name", "another pod in the environment has it", spec.get("name"))
            )
        taken_pods.add(str(spec.get("name")))
        services = spec.get("services", [])
        for service in services if isinstance(services, list) else []:
            if isinstance(service, dict) and service.get("name") in taken_services:
                problems.append(
                    Problem(
                        f"services.{service.get('name')}",
                        "another service in the environment has it",
                        service.get("name"),
                    )
                )
            if isinstance(service, dict):
                taken_services.add(str(service.get("name")))
    if problems:
        raise ValidationFailed("application", problems)
    return pods


async def add_application(
    store: Store,
    env_id: str,
    project: ProjectId,
    body: Json,
    *,
    dry_run: bool = False,
    single_master: str | None = None,
) -> list[EnvironmentObject]:
    """POST /services: `{"package": NAME, "name"?: TEXT, "properties"?: {...}}`;
    with `dry_run`, every check runs and the objects come back, nothing saved.
    `single_master`: as `instantiate` takes it."""
    if not isinstance(body, dict):
        raise ValidationFailed("body", [Problem("body", "must be a JSON object", body)])
    unknown = set(body) - {"package", "name", "properties"}
    if unknown:
        raise ValidationFailed(
            "body", [Problem(k, "is not a known field") for k in sorted(unknown)]
        )
    package_name = body.get("package")
    if not isinstance(package_name, str):
        raise ValidationFailed(
            "body", [Problem("package", "is required: a package name", package_name)]
        )
    name = check_name(body["name"]) if body.get("name") is not None else None
    require_live((await load(store, env_id, project)).value)
    package = await get_package(store, package_name)
    given = body.get("properties", {})
    wanted_cluster = None
    # Which cluster an application goes to is the environment's business, not
    # the package's: `cluster` is taken even where the schema does not name it.
    declared = (package.manifest.get("properties") or {}).get("properties") or {}
    if (
        package.class_name != "KubernetesCluster"
        and isinstance(given, dict)
        and "cluster" in given
        and "cluster" not in declared
    ):
        given = dict(given)
        wanted_cluster = given.pop("cluster")
    properties = resolve_properties(package, given)

    used = await project_usage(store, project)

    def add(doc: EnvironmentDocument) -> list[EnvironmentObject]:
        require_live(doc)
        objects = instantiate(
            package,
            properties,
            doc,
            name=name,
            cluster=wanted_cluster,
            single_master=single_master,
        )
        adding = count_objects(objects)
        for quota in ("nodes", "pods"):
            quotas.check(quota, getattr(QUOTAS, quota), used=used[quota], wanted=adding[quota])
        for obj in objects:
            doc["objects"][obj["?"]["id"]] = obj
            doc["order"].append(obj["?"]["id"])
        return objects

    if dry_run:
        return add(copy.deepcopy((await load(store, env_id, project)).value))
    return await change(store, env_id, add)


SNAPSHOT_FORMAT = "marina-export/1"


async def import_snapshot(
    store: Store, project: ProjectId, body: Any, *, single_master: str | None = None
) -> EnvironmentDocument:
    """A new environment from an export's `marina.json`: its cluster (not yet
    deployed, with the exported properties: as many masters, workers and
    gateways) and its pods and applications, with new ids.

    Body: the snapshot itself, or `{"name": ..., "snapshot": {...}}`.
    `single_master`: as `instantiate` takes it.
    """
    if isinstance(body, dict) and "snapshot" in body:
        name, snapshot = body.get("name"), body["snapshot"]
    else:
        name, snapshot = None, body
    if not isinstance(snapshot, dict) or snapshot.get("format") != SNAPSHOT_FORMAT:
        raise ValidationFailed(
            "snapshot",
            [
                Problem(
                    "format",
                    f"must be {SNAPSHOT_FORMAT!r} (marina.json from exportConfig)",
                    snapshot.get("format") if isinstance(snapshot, dict) else snapshot,
                )
            ],
        )
    objects = snapshot.get("objects")
    if not isinstance(objects, list) or not all(
        isinstance(o, dict) and isinstance(o.get("?"), dict) and isinstance(o["?"].get("id"), str)
        for o in objects
    ):
        raise ValidationFailed("snapshot", [Problem("objects", "must be a list of objects")])
    cluster_package = await get_package(store, "kubernetes-cluster")
    properties = resolve_properties(cluster_package, snapshot.get("cluster") or {})
    doc = new_environment(name or snapshot.get("environment"), project)
    created = instantiate(cluster_package, properties, doc, name=None, single_master=single_master)
    cluster_id = created[0]["?"]["id"]
    new_ids = {o["?"]["id"]: ObjectId(new_id()) for o in objects}
    pods: list[PodObject] = []
    problems: list[Problem] = []
    for i, old in enumerate(objects):
        kind = old["?"].get("type")
        header_, found = await _imported_header(store, old["?"], f"objects[{i}].?", problems)
        header_["id"] = new_ids[old["?"].get("id")]
        if kind == "KubernetesPod":
            spec = old.get("spec")
            desired = (old.get("replicas") or {}).get("desired")
            if isinstance(spec, dict) and isinstance(desired, int):
                spec = {**spec, "replicas": desired}
            pod: PodObject = {
                "?": header_,
                "cluster": cluster_id,
                "spec": spec,
                "app": new_ids.get(old.get("app") or ""),
                "state": "new",
                "replicas": {
                    "desired": (spec or {}).get("replicas", 1) if isinstance(spec, dict) else 1,
                    "ready": 0,
                },
                "services": [],
                "endpoints": [],
            }
            pods.append(pod)
        elif kind == "KubernetesApplication":
            app_properties = old.get("properties", {})
            if found is not None:
                # Stored properties are checked as if the user had just given them.
                try:
                    app_properties = resolve_properties(found, app_properties)
                except ValidationFailed as exc:
                    problems += [
                        Problem(f"objects[{i}].properties.{p.field}", p.rule, p.value)
                        for p in exc.problems
                    ]
            app_pods = old.get("pods", [])
            if not isinstance(app_pods, list) or not all(isinstance(p, str) for p in app_pods):
                problems.append(Problem(f"objects[{i}].pods", "must be a list of object ids"))
                app_pods = []
            created.append(
                {
                    "?": header_,
                    "properties": app_properties,
                    "cluster": cluster_id,
                    "state": "new",
                    "pods": [new_ids[p] for p in app_pods if p in new_ids],
                }
            )
        else:
            problems.append(Problem(f"objects[{i}].?.type", "is not a type that is imported", kind))
    if problems:
        raise ValidationFailed("snapshot", problems)
    created += _check_pods(pods, doc)
    for obj in created:
        doc["objects"][obj["?"]["id"]] = obj
        doc["order"].append(obj["?"]["id"])
    await _store_new(store, doc)
    return doc


async def _imported_header(
    store: Store, given: JsonObject, where: str, problems: list[Problem]
) -> tuple[Header, Package | None]:
    """The known fields of an imported object's `?` header, each checked: the
    package names the folder a node unpacks the package into."""
    header_: JsonObject = {"type": given.get("type")}
    name = given.get("name")
    if not full(ENVIRONMENT_NAME, name):
        problems.append(Problem(f"{where}.name", "must be 1-80 printable characters", name))
    header_["name"] = name
    package = given.get("package")
    found: Package | None = None
    if isinstance(package, str) and full(DNS_LABEL, package):
        try:
            found = await get_package(store, package)
        except NotFound:
            problems.append(Problem(f"{where}.package", "names no known package", package))
        header_["package"] = package
    elif package is not None:
        problems.append(Problem(f"{where}.package", "must name a package", package))
    version = given.get("version")
    if version is not None:
        if not full(VERSION, version):
            problems.append(Problem(f"{where}.version", "must be a version", version))
        header_["version"] = version
    # Checked above; the caller adds the id.
    return cast(Header, header_), found


async def services_of(store: Store, env_id: str, project: ProjectId) -> list[EnvironmentObject]:
    doc = (await load(store, env_id, project)).value
    return [
        doc["objects"][i]
        for i in doc["order"]
        if doc["objects"][i]["?"]["type"]
        in ("KubernetesCluster", "KubernetesPod", "KubernetesApplication")
    ]
