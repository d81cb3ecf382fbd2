"""The Kubernetes engine: pods run on a real cluster, through the official client.

A cluster of an environment is a Namespace (labelled with its project and
environment ids); a pod is a Deployment applied with server-side apply
(field manager `marina`: another manager's fields are reported, never
forced), its services are Services (public ones NodePorts, on the requested
port where it lies in the NodePort range), its package files a ConfigMap
and its secret values Secrets, all rendered by `rendering.py`, so an export
holds exactly what is applied. Marina's gateways front the cluster as they
front the local engine: each public service gets a gateway route from its
port to every ready node's InternalIP and NodePort. A service's host names
(and path prefixes) and TLS secrets ride on its Service as annotations, so
the routes and the certificates (read from the pod's Secrets) follow what
the cluster holds.

Observed state is read from the API server; the change stream follows
watches (resourceVersion, bookmarks, a fresh list after 410 Gone) run in
threads, since the client blocks. This is the only module that imports
`kubernetes`; its errors become Marina's here, with the cause chained.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypedDict, TypeVar

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.watch import watch as _watch

from catalog import keys
from catalog.engines.base import (
    Capability,
    Changes,
    ClusterKey,
    Endpoint,
    PodId,
    PodSpec,
    PodState,
    Progress,
    ProgressReport,
    ReplicaState,
    ServiceSpec,
    failure_reasons,
)
from catalog.engines.rendering import (
    ALIAS_LABEL,
    POD_ID_LABEL,
    POD_LABEL,
    SCOPE_ANNOTATION,
    k8s_name,
    label_value,
    manifests_for_specs,
)
from catalog.errors import (
    ActionFailed,
    Conflict,
    MarinaError,
    NotFound,
    Problem,
    ValidationFailed,
)
from catalog.packages import get_package
from catalog.quotas import QUOTAS
from catalog.routing import ROUTES, Backend, Route, public_route, publish_certificates
from catalog.store import Store

log = logging.getLogger(__name__)

# The client's untyped helpers, typed loosely once here.
kube_config: Any = kubernetes.config
iter_resp_lines: Any = _watch.iter_resp_lines

Obj = dict[str, Any]
T = TypeVar("T")

MANAGER = "marina"
APPLY = "application/apply-patch+yaml"
CLUSTER_ANNOTATION = "marina.io/cluster"
CLUSTER_LABEL = "marina.io/cluster"
NODE_LABEL = "marina.io/node"
"""On a Node Marina registered: the cluster and the Marina node it stands for."""
PROJECT_LABEL = "marina.io/project"
ENVIRONMENT_LABEL = "marina.io/environment"
QUOTA = "marina-project-quota"
"""The ResourceQuota that holds a namespace to its project's pod quota."""
RESTARTED = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
WATCH_SECONDS = 60
"""How long one watch request lasts before it is made again (from its resourceVersion)."""
REQUEST_TIMEOUT = (5.0, 30.0)
"""Connect and read time limits of a request that is not a watch or a log stream."""
HOSTS_ANNOTATION = "marina.io/hosts"
"""On a public Service: the host names it answers to on the gateways, comma-separated."""
SECRETS_ANNOTATION = "marina.io/secrets-changed"
"""On a pod template: how many times the pod's Secrets took new values, so
that each change rolls the Deployment (applied only, not exported)."""
PATHS_ANNOTATION = "marina.io/paths"
"""On a public Service with hosts: its path prefixes within them, comma-separated."""
TLS_ANNOTATION = "marina.io/tls"
"""On a public Service with hosts: `{"certificate": VAR, "key": VAR}` as JSON,
two keys of its pod's Secrets (names, never the values)."""


class ClusterUnavailable(MarinaError):
    """The Kubernetes API cannot be reached or fails: a retry may help."""

    status = 503
    code = "cluster_unavailable"

    def __init__(self, server: str, reason: str) -> None:
        self.server, self.reason = server, reason
        super().__init__(f"the Kubernetes API at {server} is unavailable: {reason}")


class Throttled(ActionFailed):
    """429: the API asks to come back later (an eviction a disruption budget refuses)."""

    def __init__(self, action: str, reason: str) -> None:
        super().__init__(action, reason, retryable=True)


def _status_of(exc: ApiException) -> Obj:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def translate(exc: BaseException, *, server: str, what: str, kind: str, name: str) -> MarinaError:
    """The Marina error for what the client raised (an API answer or a transport failure)."""
    if isinstance(exc, ApiException):
        status = _status_of(exc)
        message = str(status.get("message") or exc.reason or exc)
        code = exc.status or 0
        if code == 404:
            return NotFound(kind, name)
        if code == 409:
            return Conflict(what, message)
        if code in (400, 422):
            causes = (status.get("details") or {}).get("causes") or []
            problems = [
                Problem(str(c.get("field") or kind), str(c.get("message") or c.get("reason")))
                for c in causes
            ] or [Problem(kind, message)]
            return ValidationFailed(f"{kind} {name}", problems)
        if code == 429:
            return Throttled(what, message)
        if code in (401, 403):
            return ActionFailed(what, message)
        if code == 0 or code >= 500:
            return ClusterUnavailable(server, message)
        return ActionFailed(what, message)
    if isinstance(exc, ConfigException):
        return ClusterUnavailable(server, f"kubeconfig: {exc}")
    return ClusterUnavailable(server, f"{type(exc).__name__}: {exc}")


CLIENT_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _body(response: Any) -> Obj:
    data: Obj = json.loads(response.data or b"{}")
    return data


class Selecting(TypedDict, total=False):
    """What a list (and the watch after it) selects by."""

    label_selector: str


def follow(
    list_call: Callable[..., Any],
    *,
    limit: int | None = None,
    stopping: Callable[[], bool] = lambda: False,
    **params: Any,
) -> Iterator[tuple[str, Obj]]:
    """A list, then a watch from its resourceVersion, for as long as asked.

    Yields ("LISTED", the list) after each full list (the first, and again
    after 410 Gone), then each event ("ADDED", "MODIFIED", "DELETED") with
    its object. Bookmarks only move the resourceVersion on. Client errors
    reach the caller untranslated: this runs in a thread under `_Watches`.
    """
    seen = 0
    version: str | None = None
    while limit is None or seen < limit:
        if stopping():
            return
        if version is None:
            listed = _body(list_call(**params, _preload_content=False))
            version = str(listed["metadata"].get("resourceVersion") or "")
            seen += 1
            yield "LISTED", listed
            continue
        try:
            response = list_call(
                **params,
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT[0], WATCH_SECONDS + 15),
            )
        except ApiException as exc:
            if exc.status == 410:
                version = None  # compacted away: list again
                continue
            raise
        try:
            for line in iter_resp_lines(response):
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        version = None
                        break
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if event.get("type") == "BOOKMARK":
                    if stopping():
                        return
                    continue
                seen += 1
                yield str(event.get("type")), obj
                if stopping() or (limit is not None and seen >= limit):
                    return
        finally:
            response.release_conn()


class _Watches:
    """Cluster-wide watches of Marina's Deployments, pods and Services and of
    nodes, each in a thread; listeners hear which namespace changed (None:
    maybe any)."""

    def __init__(self, engine: KubernetesEngine) -> None:
        self.engine = engine
        self.listeners: set[tuple[asyncio.AbstractEventLoop, Callable[[str | None], None]]] = set()
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        with self.lock:
            if self.threads:
                return
            core, apps = self.engine.core, self.engine.apps
            selector = POD_LABEL
            mine: Selecting = {"label_selector": selector}
            calls: list[tuple[str, Callable[..., Any], Selecting]] = [
                ("deployments", apps.list_deployment_for_all_namespaces, mine),
                ("pods", core.list_pod_for_all_namespaces, mine),
                ("services", core.list_service_for_all_namespaces, mine),
                ("nodes", core.list_node, {}),
            ]
            for what, call, params in calls:
                thread = threading.Thread(
                    target=self._run, args=(what, call, params), daemon=True, name=f"watch-{what}"
                )
                self.threads.append(thread)
                thread.start()

    def stop(self) -> None:
        self.closing.set()

    def listen(self, loop: asyncio.AbstractEventLoop, fn: Callable[[str | None], None]) -> None:
        with self.lock:
            self.listeners.add((loop, fn))

    def forget(self, loop: asyncio.AbstractEventLoop, fn: Callable[[str | None], None]) -> None:
        with self.lock:
            self.listeners.discard((loop, fn))

    def _tell(self, namespace: str | None) -> None:
        with self.lock:
            listeners = list(self.listeners)
        for loop, fn in listeners:
            with contextlib.suppress(RuntimeError):  # a loop that closed meanwhile
                loop.call_soon_threadsafe(fn, namespace)

    def _run(self, what: str, call: Callable[..., Any], params: Selecting) -> None:
        while not self.closing.is_set():
            try:
                for kind, obj in follow(call, stopping=self.closing.is_set, **params):
                    if kind == "LISTED" or what == "nodes":
                        self._tell(None)
                    else:
                        self._tell((obj.get("metadata") or {}).get("namespace"))
            except CLIENT_ERRORS as exc:
                if self.closing.is_set():
                    return
                log.warning("watch of %s failed, listing again: %s", what, exc)
                self._tell(None)
                self.closing.wait(1.0)


class KubernetesEngine:
    name = "kubernetes"
    # Kubernetes restarts a pod's containers only by replacing the pod
    # (a rollout restart), so it does not claim in-place restarts.
    capabilities = frozenset(
        {Capability.APPLY, Capability.SCALE, Capability.LOGS, Capability.DRAIN, Capability.RENDER}
    )

    def __init__(
        self,
        store: Store,
        *,
        state_dir: Path,
        kubeconfig: Path | None = None,
        context: str | None = None,
    ) -> None:
        self.store = store
        self.state_dir = state_dir
        try:
            if kubeconfig is None and not context:
                try:
                    kube_config.load_incluster_config()
                    self.client = kubernetes.client.ApiClient()
                except ConfigException:
                    self.client = kube_config.new_client_from_config(context=context)
            else:
                self.client = kube_config.new_client_from_config(
                    config_file=str(kubeconfig) if kubeconfig else None, context=context
                )
        except (ConfigException, OSError) as exc:
            raise ClusterUnavailable(str(kubeconfig or "the default kubeconfig"), str(exc)) from exc
        self.server = str(self.client.configuration.host)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.apps = kubernetes.client.AppsV1Api(self.client)
        self.watches = _Watches(self)
        self.files: dict[str, dict[str, bytes]] = {}
        """Package files, by package, as last read from the store (for `render`)."""
        self.routes_wanted = asyncio.Event()

    # -- the edge ------------------------------------------------------------------------

    async def _call(
        self, fn: Callable[..., Any], *args: Any, what: str, kind: str, name: str, **kwargs: Any
    ) -> Any:
        """One API request in a thread, its errors as Marina's; JSON bodies as dicts."""
        stream = kwargs.pop("_stream", False)
        kwargs.setdefault("_preload_content", False)
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)

        def call() -> Any:
            response = fn(*args, **kwargs)
            return response if stream else _body(response)

        try:
            return await asyncio.to_thread(call)
        except CLIENT_ERRORS as exc:
            raise translate(exc, server=self.server, what=what, kind=kind, name=name) from exc

    async def _apply(self, manifest: Obj) -> Obj:
        """Server-side apply of one object as `marina`, without force."""
        kind, meta = manifest["kind"], manifest["metadata"]
        name, namespace = meta["name"], meta.get("namespace")
        patches: dict[str, Callable[..., Any]] = {
            "Namespace": self.core.patch_namespace,
            "ResourceQuota": self.core.patch_namespaced_resource_quota,
            "ConfigMap": self.core.patch_namespaced_config_map,
            "Secret": self.core.patch_namespaced_secret,
            "Service": self.core.patch_namespaced_service,
            "Deployment": self.apps.patch_namespaced_deployment,
        }
        patch = patches[kind]
        args = (name, namespace) if namespace else (name,)
        try:
            result: Obj = await self._call(
                patch,
                *args,
                body=manifest,
                field_manager=MANAGER,
                _content_type=APPLY,
                what=f"apply {kind} {name}",
                kind=kind,
                name=name,
            )
        except Conflict as exc:
            raise Conflict(
                f"{kind} {namespace}/{name}",
                f"fields are managed by another field manager, not overwritten: {exc.reason}",
            ) from exc
        return result

    # -- names ---------------------------------------------------------------------------

    @staticmethod
    def namespace(cluster: ClusterKey) -> str:
        return k8s_name(cluster)

    async def _deployment(self, cluster: ClusterKey, pod: PodId) -> Obj | None:
        found = await self._call(
            self.apps.list_namespaced_deployment,
            self.namespace(cluster),
            label_selector=f"{POD_ID_LABEL}={label_value(pod)}",
            what="read pod",
            kind="pod",
            name=pod,
        )
        items: list[Obj] = found["items"]
        return items[0] if items else None

    async def _require(self, cluster: ClusterKey, pod: PodId) -> Obj:
        found = await self._deployment(cluster, pod)
        if found is None:
            raise NotFound("pod", pod)
        return found

    # -- desired state -------------------------------------------------------------------

    async def _namespace_manifest(self, cluster: ClusterKey, environment: str) -> Obj:
        project = ""
        with contextlib.suppress(MarinaError):
            doc = await self.store.get(keys.environment(environment))
            project = str(doc.value.get("project", "")) if doc else ""
        labels = {ENVIRONMENT_LABEL: label_value(environment)}
        if project:
            labels[PROJECT_LABEL] = label_value(project)
        return {
            "labels": labels,
            "annotations": {CLUSTER_ANNOTATION: cluster},
        }

    async def _files_of(self, spec: PodSpec) -> None:
        package = spec.get("package")
        if package:
            self.files[package] = dict((await get_package(self.store, package)).files)

    def _render(
        self,
        cluster: ClusterKey,
        specs: list[PodSpec],
        *,
        namespace: str,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> list[tuple[str, Obj]]:
        # No cluster addresses in the objects: link variables come from the
        # (alias) Services, as a kubelet gives them, so an export runs anywhere.
        objects = manifests_for_specs(
            specs,
            namespace=namespace,
            files=self.files,
            namespace_labels=labels,
            namespace_annotations=annotations
            if annotations is not None
            else {CLUSTER_ANNOTATION: cluster},
        )
        routed = {s["name"]: s for spec in specs for s in spec["services"] if s.get("hosts")}
        for _, manifest in objects:
            meta = manifest["metadata"]
            service = routed.get(meta["name"]) if manifest["kind"] == "Service" else None
            if service is None or ALIAS_LABEL in (meta.get("labels") or {}):
                continue
            meta["annotations"][HOSTS_ANNOTATION] = ",".join(sorted(service.get("hosts", [])))
            if service.get("paths"):
                meta["annotations"][PATHS_ANNOTATION] = ",".join(sorted(service["paths"]))
            if service.get("tls"):
                meta["annotations"][TLS_ANNOTATION] = json.dumps(service["tls"], sort_keys=True)
        return objects

    async def apply_pod(self, cluster: ClusterKey, spec: PodSpec) -> None:
        namespace = self.namespace(cluster)
        await self._files_of(spec)
        meta = await self._namespace_manifest(cluster, spec["environment"])
        objects = self._render(
            cluster,
            [spec],
            namespace=namespace,
            labels=meta["labels"],
            annotations=meta["annotations"],
        )
        wanted = {o["metadata"]["name"] for _, o in objects if o["kind"] == "Service"}
        rolls = await self._secret_rolls(cluster, spec["id"], objects)
        # Services first: a kubelet gives link variables for those that exist.
        for _, manifest in objects:
            if manifest["kind"] != "Deployment":
                await self._apply(manifest)
            if manifest["kind"] == "Namespace":
                await self._apply(self._quota(namespace))
        deployment = next(o for _, o in objects if o["kind"] == "Deployment")
        if rolls:
            template = deployment["spec"]["template"]["metadata"]
            template.setdefault("annotations", {})[SECRETS_ANNOTATION] = str(rolls)
        try:
            await self._apply(deployment)
        except Conflict as exc:
            # Our own scale subresource writes own spec.replicas under
            # another entry: set the count there, then apply again.
            if f'"{MANAGER}"' not in str(exc) or ".spec.replicas" not in str(exc):
                raise
            await self._scale(namespace, spec["name"], spec["replicas"])
            await self._apply(deployment)
        await self._forget_services(cluster, spec["name"], keep=wanted)
        await self.publish_routes(cluster)

    async def _secret_rolls(
        self, cluster: ClusterKey, pod: PodId, objects: list[tuple[str, Obj]]
    ) -> int:
        """How many times new secret values rolled the pod, counting this
        apply: a kubelet reads secret variables only when it starts a
        container, so new values roll the pod, as they restart replicas on
        the local engine. A count, not a digest: nothing of the values
        leaves their Secrets."""
        deployment = await self._deployment(cluster, pod)
        if deployment is None:
            return 0
        annotations = (deployment["spec"]["template"].get("metadata") or {}).get("annotations")
        rolls = int((annotations or {}).get(SECRETS_ANNOTATION, "0") or 0)
        for _, manifest in objects:
            if manifest["kind"] != "Secret":
                continue
            name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
            try:
                current = await self._call(
                    self.core.read_namespaced_secret,
                    name,
                    namespace,
                    what=f"read Secret {name}",
                    kind="Secret",
                    name=name,
                )
            except NotFound:
                continue  # a container's first secrets change its template anyway
            if (current.get("data") or {}) != manifest["data"]:
                return rolls + 1
        return rolls

    @staticmethod
    def _quota(namespace: str) -> Obj:
        """The project's pod quota as the API server enforces it: no more
        Deployments in the namespace than the project may have pods (each
        project's total is also checked by the catalog, before anything runs)."""
        return {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": QUOTA, "namespace": namespace},
            "spec": {"hard": {"count/deployments.apps": str(QUOTAS.pods)}},
        }

    async def _scale(self, namespace: str, name: str, replicas: int) -> None:
        await self._call(
            self.apps.patch_namespaced_deployment_scale,
            name,
            namespace,
            body={"spec": {"replicas": replicas}},
            field_manager=MANAGER,
            _content_type="application/merge-patch+json",
            what=f"scale {name}",
            kind="pod",
            name=name,
        )

    async def scale_pod(self, cluster: ClusterKey, pod: PodId, replicas: int) -> None:
        deployment = await self._require(cluster, pod)
        await self._scale(self.namespace(cluster), deployment["metadata"]["name"], replicas)

    async def _roll(self, cluster: ClusterKey, pod: PodId) -> None:
        deployment = await self._require(cluster, pod)
        name = deployment["metadata"]["name"]
        # What `kubectl rollout restart` writes: a new template, replaced pod by pod.
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED: now()}}}}}
        await self._call(
            self.apps.patch_namespaced_deployment,
            name,
            self.namespace(cluster),
            body=patch,
            field_manager=MANAGER,
            _content_type="application/strategic-merge-patch+json",
            what=f"restart {name}",
            kind="pod",
            name=name,
        )

    async def restart_pod(self, cluster: ClusterKey, pod: PodId) -> None:
        await self._roll(cluster, pod)

    async def recreate_pod(self, cluster: ClusterKey, pod: PodId) -> None:
        await self._roll(cluster, pod)

    async def delete_pod(self, cluster: ClusterKey, pod: PodId) -> None:
        deployment = await self._deployment(cluster, pod)
        if deployment is None:
            return
        name, namespace = deployment["metadata"]["name"], self.namespace(cluster)
        with contextlib.suppress(NotFound):
            await self._call(
                self.apps.delete_namespaced_deployment,
                name,
                namespace,
                propagation_policy="Background",
                what=f"delete {name}",
                kind="pod",
                name=name,
            )
        await self._forget_services(cluster, name, keep=set())
        selector = f"{POD_LABEL}={name}"
        core = self.core
        for lister, deleter, kind in (
            (core.list_namespaced_config_map, core.delete_namespaced_config_map, "ConfigMap"),
            (core.list_namespaced_secret, core.delete_namespaced_secret, "Secret"),
        ):
            found = await self._call(
                lister, namespace, label_selector=selector, what="list", kind=kind, name=name
            )
            for item in found["items"]:
                with contextlib.suppress(NotFound):
                    await self._call(
                        deleter,
                        item["metadata"]["name"],
                        namespace,
                        what=f"delete {kind}",
                        kind=kind,
                        name=item["metadata"]["name"],
                    )
        await self.publish_routes(cluster)  # its services' certificates go too

    async def _services(self, namespace: str, pod_name: str | None = None) -> list[Obj]:
        selector = f"{POD_LABEL}={pod_name}" if pod_name else POD_LABEL
        found = await self._call(
            self.core.list_namespaced_service,
            namespace,
            label_selector=selector,
            what="list services",
            kind="Service",
            name=pod_name or namespace,
        )
        items: list[Obj] = found["items"]
        return items

    async def _forget_services(self, cluster: ClusterKey, pod_name: str, *, keep: set[str]) -> None:
        namespace = self.namespace(cluster)
        for service in await self._services(namespace, pod_name):
            name = service["metadata"]["name"]
            if name in keep:
                continue
            with contextlib.suppress(NotFound):
                await self._call(
                    self.core.delete_namespaced_service,
                    name,
                    namespace,
                    what=f"delete Service {name}",
                    kind="Service",
                    name=name,
                )
            await self.store.delete(f"{ROUTES}{cluster}/{name}")

    async def delete_cluster(self, cluster: ClusterKey) -> None:
        namespace = self.namespace(cluster)
        with contextlib.suppress(NotFound):
            await self._call(
                self.core.delete_namespace,
                namespace,
                what=f"delete namespace {namespace}",
                kind="Namespace",
                name=namespace,
            )
        await self.store.delete_prefix(f"{ROUTES}{cluster}/")
        await self.store.delete_prefix(f"{keys.GATEWAY_CERTS}{cluster}/")

    # -- nodes ---------------------------------------------------------------------------

    async def _nodes(self) -> list[Obj]:
        found = await self._call(self.core.list_node, what="list nodes", kind="Node", name="*")
        items: list[Obj] = found["items"]
        return items

    @staticmethod
    def _node_ready(node: Obj) -> bool:
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (node.get("status") or {}).get("conditions") or []
        )

    @staticmethod
    def _marina_name(cluster: ClusterKey, node: Obj) -> str | None:
        """The Marina name of a Node: its own, or the one it was registered for
        (None: registered for another cluster)."""
        labels = node["metadata"].get("labels") or {}
        if CLUSTER_LABEL not in labels:
            return str(node["metadata"]["name"])
        if labels[CLUSTER_LABEL] != label_value(cluster):
            return None
        return str(labels.get(NODE_LABEL, node["metadata"]["name"]))

    async def _node_names(self, cluster: ClusterKey) -> dict[str, str]:
        """Node object name -> Marina node name, for the nodes this cluster sees."""
        names = {}
        for node in await self._nodes():
            name = self._marina_name(cluster, node)
            if name is not None:
                names[str(node["metadata"]["name"])] = name
        return names

    async def _node_object(self, cluster: ClusterKey, node: str) -> str:
        """The Node object that stands for Marina's node `node`."""
        for kube, name in (await self._node_names(cluster)).items():
            if name == node:
                return kube
        raise NotFound("node", node)

    async def node_states(self, cluster: ClusterKey) -> dict[str, str]:
        states: dict[str, str] = {}
        # Gateway nodes are Marina's own agents, registered in etcd, not Kubernetes nodes.
        for registered in await self.store.list(f"{keys.NODES}{cluster}/"):
            states[str(registered.value["node"])] = "ready"
        for node in await self._nodes():
            name = self._marina_name(cluster, node)
            if name is not None and self._node_ready(node):
                cordoned = bool((node.get("spec") or {}).get("unschedulable"))
                states[name] = "cordoned" if cordoned else "ready"
        return states

    async def join_node(
        self, cluster: ClusterKey, node: str, address: str, capacity: Mapping[str, Any]
    ) -> None:
        """Register a Node for Marina's worker `node`, Ready at `address`, as a
        kubelet joining the cluster does (its Node, then its status)."""
        name = k8s_name(f"{self.namespace(cluster)}-{node}")
        labels = {
            "kubernetes.io/hostname": name,
            CLUSTER_LABEL: label_value(cluster),
            NODE_LABEL: label_value(node),
            "app.kubernetes.io/managed-by": "marina",
        }
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
        with contextlib.suppress(Conflict):  # a run cut off after creating it
            await self._call(
                self.core.create_node, body=body, what=f"register {node}", kind="Node", name=name
            )
        cores, memory = int(capacity.get("cores", 2)), int(capacity.get("memory", 2048))
        resources = {"cpu": str(cores), "memory": f"{memory}Mi", "pods": "110"}
        status = {
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now(),
                    "lastTransitionTime": now(),
                }
            ],
            "capacity": resources,
            "allocatable": resources,
        }
        await self._call(
            self.core.patch_node_status,
            name,
            body={"status": status},
            _content_type="application/merge-patch+json",
            what=f"register {node}",
            kind="Node",
            name=name,
        )

    async def leave_node(self, cluster: ClusterKey, node: str) -> None:
        """Remove the Node registered for `node` (nothing when there is none)."""
        try:
            name = await self._node_object(cluster, node)
        except NotFound:
            return
        with contextlib.suppress(NotFound):
            await self._call(
                self.core.delete_node, name, what=f"remove {node}", kind="Node", name=name
            )
        await self.publish_routes(cluster)

    async def node_joined(self, cluster: ClusterKey, node: str) -> bool:
        return node in (await self._node_names(cluster)).values()

    async def _set_unschedulable(self, cluster: ClusterKey, marina_node: str, value: bool) -> None:
        node = await self._node_object(cluster, marina_node)
        await self._call(
            self.core.patch_node,
            node,
            body={"spec": {"unschedulable": value or None}},
            _content_type="application/merge-patch+json",
            what=f"{'cordon' if value else 'uncordon'} {node}",
            kind="Node",
            name=node,
        )

    async def cordon(self, cluster: ClusterKey, node: str) -> None:
        await self._set_unschedulable(cluster, node, True)

    async def uncordon(self, cluster: ClusterKey, node: str) -> None:
        await self._set_unschedulable(cluster, node, False)

    async def forget_node(self, cluster: ClusterKey, node: str) -> None:
        """Nothing is kept about nodes here: the API server holds them."""

    async def _pods_on(self, node: str) -> list[Obj]:
        found = await self._call(
            self.core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node}",
            what=f"list pods on {node}",
            kind="Node",
            name=node,
        )
        return [
            p
            for p in found["items"]
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            # As `kubectl drain`: DaemonSet pods stay, they would come back anyway.
            and not any(
                o.get("kind") == "DaemonSet" for o in p["metadata"].get("ownerReferences") or []
            )
        ]

    async def _evict(self, pod: Obj) -> bool:
        """Ask for one pod's eviction; False when a disruption budget says not now."""
        meta = pod["metadata"]
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        }
        try:
            await self._call(
                self.core.create_namespaced_pod_eviction,
                meta["name"],
                meta["namespace"],
                body=body,
                what=f"evict {meta['name']}",
                kind="pod",
                name=meta["name"],
            )
        except Throttled:
            return False
        except NotFound:
            pass
        return True

    async def drain(
        self,
        cluster: ClusterKey,
        node: str,
        *,
        progress: Progress | None = None,
        timeout: float = 120.0,
    ) -> None:
        await self.cordon(cluster, node)
        node = await self._node_object(cluster, node)
        namespace = self.namespace(cluster)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reports: dict[str, ProgressReport] = {}
        affected: dict[str, str] = {}  # pod id -> name, of this cluster's pods that were here
        refused: list[str] = []
        async with Changes(self, cluster) as changes:
            await self._route_around(cluster, node, changes, deadline=deadline, timeout=timeout)
            while True:
                left = await self._pods_on(node)
                for pod in left:
                    labels = pod["metadata"].get("labels") or {}
                    if pod["metadata"]["namespace"] == namespace and POD_ID_LABEL in labels:
                        affected[labels[POD_ID_LABEL]] = labels.get(POD_LABEL, "")
                states = {p: await self.pod_state(cluster, PodId(p)) for p in affected}
                if progress is not None:
                    for pod_id, state in states.items():
                        if pod_id not in reports:
                            reports[pod_id] = ProgressReport(affected[pod_id], progress)
                        await reports[pod_id](state)
                elsewhere = all(
                    s is None or s["ready"] >= min(s["desired"], len(s["replicas"]))
                    for s in states.values()
                )
                if not left and elsewhere:
                    return
                refused = [p["metadata"]["name"] for p in left if not await self._evict(p)]
                if loop.time() > deadline:
                    reasons = failure_reasons(states.values())
                    if refused:
                        reasons.append(f"a disruption budget refuses evicting {', '.join(refused)}")
                    raise ActionFailed(
                        "drain",
                        f"{len(left)} pods still on {node} after {timeout:.0f}s"
                        + (f" ({'; '.join(reasons)})" if reasons else ""),
                        retryable=True,
                    )
                # Refused evictions are asked again after a change or a second (429).
                await changes.next(1.0)

    # -- routes --------------------------------------------------------------------------

    async def publish_routes(self, cluster: ClusterKey) -> set[str]:
        """Each public service's route: its port (and host names and path
        prefixes) on the gateways, to every ready node's InternalIP at the
        service's NodePort; and the certificates of its TLS hosts, from its
        pod's Secrets (those of services gone, or without TLS now, deleted).
        Returns the node addresses routed to."""
        namespace = self.namespace(cluster)
        nodes = [n for n in await self._nodes() if self._node_ready(n)]
        # Nodes being drained take no new connections while others can.
        open_nodes = [n for n in nodes if not (n.get("spec") or {}).get("unschedulable")] or nodes
        hosts = sorted(
            {
                a["address"]
                for n in open_nodes
                for a in (n.get("status") or {}).get("addresses") or []
                if a.get("type") == "InternalIP"
            }
        )
        published = {v.key: v.value for v in await self.store.list(f"{ROUTES}{cluster}/")}
        wanted: dict[str, Route] = {}
        tls: list[tuple[ServiceSpec, str]] = []
        for service in await self._services(namespace):
            spec = self._service_spec(service)
            port = service["spec"]["ports"][0]
            if spec is None or spec["scope"] != "public" or not port.get("nodePort"):
                continue
            backends: list[Backend] = [{"host": h, "port": int(port["nodePort"])} for h in hosts]
            wanted[f"{ROUTES}{cluster}/{spec['name']}"] = public_route(spec, backends)
            if spec.get("tls"):
                tls.append((spec, str((service["metadata"].get("labels") or {})[POD_LABEL])))
        for key, route in wanted.items():
            if published.get(key) != route:
                await self.store.put(key, route)
        for key in set(published) - set(wanted):
            await self.store.delete(key)
        secrets = await self._secrets(namespace) if tls else {}
        await publish_certificates(
            self.store, cluster, [(spec, secrets.get(pod, {})) for spec, pod in tls]
        )
        return set(hosts)

    async def _route_around(
        self, cluster: ClusterKey, node: str, changes: Changes, *, deadline: float, timeout: float
    ) -> None:
        """Return once every gateway of the cluster applied routes that leave
        the cordoned Node `node` out (unless no other node can serve).

        Nothing on the node may stop before then: the gateways send requests
        to every routed node's NodePort, and a node that leaves while still
        routed fails the requests on their way to it (refused, or reset when
        its kube-proxy stops listening with connections still queued). The
        routes are published here, not left to `run`, which may be a pass
        behind the cordon; and published again while one still names the
        node (a pass of `run` that listed the nodes before the cordon)."""
        found = await self._call(
            self.core.read_node, node, what=f"read {node}", kind="Node", name=node
        )
        addresses = {
            a["address"]
            for a in (found.get("status") or {}).get("addresses") or []
            if a.get("type") == "InternalIP"
        }
        loop = asyncio.get_running_loop()
        while True:
            routed = await self.publish_routes(cluster)
            leaving = addresses - routed  # empty when no other node can serve
            routes = await self.store.list(f"{ROUTES}{cluster}/")
            still = [
                r.key.rsplit("/", 1)[1]
                for r in routes
                if any(b["host"] in leaving for b in r.value.get("backends") or [])
            ]
            applied = await self._gateways_applied(cluster)
            newest = max((r.mod_revision for r in routes), default=0)
            if not still and (not applied or min(applied) >= newest):
                return
            if loop.time() > deadline:
                raise ActionFailed(
                    "drain",
                    f"the gateways still route to {node} after {timeout:.0f}s: "
                    + (
                        f"routes {', '.join(sorted(still))} name it"
                        if still
                        else f"a gateway applied revision {min(applied)} of {newest}"
                    ),
                    retryable=True,
                )
            await changes.next(1.0)

    async def _secrets(self, namespace: str) -> dict[str, dict[str, str]]:
        """The secret values of each of Marina's pods in the namespace, by pod name."""
        found = await self._call(
            self.core.list_namespaced_secret,
            namespace,
            label_selector=POD_LABEL,
            what="list secrets",
            kind="Secret",
            name=namespace,
        )
        values: dict[str, dict[str, str]] = {}
        for secret in found["items"]:
            pod = str((secret["metadata"].get("labels") or {}).get(POD_LABEL, ""))
            for name, data in (secret.get("data") or {}).items():
                try:
                    values.setdefault(pod, {})[name] = base64.b64decode(data).decode()
                except ValueError:  # not text: no certificate anyway
                    log.warning("secret %s/%s: %s is not text", namespace, pod, name)
        return values

    async def _clusters(self) -> list[ClusterKey]:
        found = await self._call(
            self.core.list_namespace,
            label_selector="app.kubernetes.io/managed-by=marina",
            what="list namespaces",
            kind="Namespace",
            name="*",
        )
        return [
            ClusterKey(n["metadata"]["annotations"][CLUSTER_ANNOTATION])
            for n in found["items"]
            if CLUSTER_ANNOTATION in (n["metadata"].get("annotations") or {})
            and not n["metadata"].get("deletionTimestamp")
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Keep every cluster's routes on its ready nodes, as nodes come and go."""
        self.watches.start()
        loop = asyncio.get_running_loop()

        def heard(namespace: str | None) -> None:
            self.routes_wanted.set()

        self.watches.listen(loop, heard)
        self.routes_wanted.set()
        try:
            while not stop.is_set():
                waiter = asyncio.ensure_future(self.routes_wanted.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                if stop.is_set():
                    break
                self.routes_wanted.clear()
                try:
                    for cluster in await self._clusters():
                        await self.publish_routes(cluster)
                except MarinaError as exc:
                    log.warning("gateway routes not refreshed: %s", exc)
                    await asyncio.sleep(1.0)
                    self.routes_wanted.set()
                await asyncio.sleep(0.05)  # one pass for a burst of node changes
        finally:
            self.watches.forget(loop, heard)
            self.watches.stop()

    # -- observed state ------------------------------------------------------------------

    async def _gateways_applied(self, cluster: ClusterKey) -> list[int]:
        """The revision each public gateway of the cluster applied (none: no gateway).

        A master node's agent runs a gateway too, for the cluster's internal
        routes only: it never applies public ones, so it is left out."""
        internal = {
            keys.gateway_status(f"{cluster}-{v.value.get('node')}")
            for v in await self.store.list(f"{keys.NODES}{cluster}/")
            if v.value.get("role") == "master"
        }
        return [
            int(v.value.get("applied_revision", 0))
            for v in await self.store.list(f"{keys.GATEWAY_STATUS}{cluster}-")
            if v.key not in internal
        ]

    async def _routed(self, cluster: ClusterKey, services: list[ServiceSpec]) -> bool:
        """Every public service has a route with backends that every gateway applied."""
        public = [s for s in services if s.get("scope") == "public"]
        if not public:
            return True
        applied = await self._gateways_applied(cluster)
        if not applied:
            return True
        for service in public:
            route = await self.store.get(f"{ROUTES}{cluster}/{service['name']}")
            if route is None or not route.value.get("backends"):
                return False
            if min(applied) < route.mod_revision:
                return False
        return True

    @staticmethod
    def _reason(pod: Obj) -> str:
        """Why a replica last stopped or cannot start, in the words the catalog uses."""
        status = pod.get("status") or {}
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            terminated = (container.get("state") or {}).get("terminated") or {}
            last = (container.get("lastState") or {}).get("terminated") or {}
            why, message = waiting.get("reason", ""), str(waiting.get("message", ""))
            ended = last or terminated
            # containerd's StartError, Docker's ContainerCannotRun: the process never ran.
            if ended.get("reason") in ("StartError", "ContainerCannotRun"):
                words = str(ended.get("message") or ended["reason"])
                missing = "not found" in words or "no such file" in words
                return f"command not found: {words}" if missing else f"cannot start: {words}"
            if why == "CrashLoopBackOff" and last:
                if last.get("reason") == "OOMKilled":
                    return "out of memory (OOMKilled)"
                code = last.get("exitCode")
                return f"exited with code {code}" + (": command not found" if code == 127 else "")
            if why in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                return f"image cannot be pulled: {message}" if message else why
            if why in ("CreateContainerConfigError", "CreateContainerError", "RunContainerError"):
                return f"{why}: {message}" if message else why
            if terminated and terminated.get("exitCode"):
                code = terminated.get("exitCode")
                return f"exited with code {code}" + (": command not found" if code == 127 else "")
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return str(condition.get("message") or condition.get("reason") or "")
        return ""

    @staticmethod
    def _pod_ready(pod: Obj) -> bool:
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )

    async def pod_state(self, cluster: ClusterKey, pod: PodId) -> PodState | None:
        deployment = await self._deployment(cluster, pod)
        if deployment is None:
            return None
        namespace, name = self.namespace(cluster), deployment["metadata"]["name"]
        selector = f"{POD_ID_LABEL}={label_value(pod)}"
        sets = (
            await self._call(
                self.apps.list_namespaced_replica_set,
                namespace,
                label_selector=selector,
                what="read pod",
                kind="pod",
                name=pod,
            )
        )["items"]
        pods = (
            await self._call(
                self.core.list_namespaced_pod,
                namespace,
                label_selector=selector,
                what="read pod",
                kind="pod",
                name=pod,
            )
        )["items"]
        newest = max(
            sets,
            key=lambda rs: int((rs["metadata"].get("annotations") or {}).get(REVISION, "0")),
            default=None,
        )
        current_hash = (
            (newest["metadata"].get("labels") or {}).get("pod-template-hash", "") if newest else ""
        )
        services = await self._pod_services(namespace, name)
        routed = await self._routed(cluster, services)
        node_names = await self._node_names(cluster)
        replicas: list[ReplicaState] = []
        pending = ""
        pods = [
            p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        pods.sort(key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))
        for item in pods:
            meta, status = item["metadata"], item.get("status") or {}
            ready = self._pod_ready(item)
            draining = bool(meta.get("deletionTimestamp"))
            reason = self._reason(item)
            if not item["spec"].get("nodeName") and reason and not pending:
                pending = reason
            replicas.append(
                {
                    "name": meta["name"],
                    "node": node_names.get(
                        str(item["spec"].get("nodeName") or ""),
                        str(item["spec"].get("nodeName") or ""),
                    ),
                    "address": str(status.get("podIP") or ""),
                    "ready": ready,
                    "serving": ready and not draining and routed,
                    "restarts": sum(
                        int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or []
                    ),
                    "reason": "being deleted" if draining and not reason else reason,
                    "draining": draining,
                    "current": (meta.get("labels") or {}).get("pod-template-hash") == current_hash,
                }
            )
        for condition in (deployment.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
                pending = pending or str(condition.get("message", ""))
        active = [r for r in replicas if not r["draining"]]
        annotations = (
            (deployment["spec"]["template"].get("metadata") or {}).get("annotations")
        ) or {}
        return {
            "pod": pod,
            "desired": int(deployment["spec"].get("replicas", 1)),
            "ready": sum(1 for r in active if r["ready"]),
            "serving": sum(1 for r in active if r["serving"]),
            "updated": sum(1 for r in active if r["current"] and r["ready"]),
            "generation": int(deployment["metadata"].get("generation", 0)),
            "template": f"{current_hash}/{annotations.get(RESTARTED, '')}",
            "pending": pending,
            "services": services,
            "replicas": replicas,
        }

    async def _pod_services(self, namespace: str, pod_name: str) -> list[ServiceSpec]:
        found = [self._service_spec(s) for s in await self._services(namespace, pod_name)]
        return sorted((s for s in found if s is not None), key=lambda s: s["name"])

    @staticmethod
    def _service_spec(service: Obj) -> ServiceSpec | None:
        """The pod's service a Service stands for (None: a link alias)."""
        meta = service["metadata"]
        if ALIAS_LABEL in (meta.get("labels") or {}):
            return None
        annotations = meta.get("annotations") or {}
        port = service["spec"]["ports"][0]
        target = port.get("targetPort", port["port"])
        entry: ServiceSpec = {
            "name": meta["name"],
            "port": int(port["port"]),
            "targetPort": int(target) if isinstance(target, int) else int(port["port"]),
            "scope": str(annotations.get(SCOPE_ANNOTATION, "internal")),
        }
        ip = service["spec"].get("clusterIP")
        if ip and ip != "None":
            entry["ip"] = str(ip)
        if annotations.get(HOSTS_ANNOTATION):
            entry["hosts"] = str(annotations[HOSTS_ANNOTATION]).split(",")
            if annotations.get(PATHS_ANNOTATION):
                entry["paths"] = str(annotations[PATHS_ANNOTATION]).split(",")
            try:
                tls = json.loads(annotations.get(TLS_ANNOTATION) or "null")
            except ValueError:
                log.warning("service %s: %s is not JSON; no TLS", meta["name"], TLS_ANNOTATION)
                tls = None
            if isinstance(tls, dict):
                entry["tls"] = {str(k): str(v) for k, v in tls.items()}
        return entry

    async def endpoints(self, cluster: ClusterKey, service: str) -> list[Endpoint]:
        namespace = self.namespace(cluster)
        try:
            found = await self._call(
                self.core.read_namespaced_service,
                service,
                namespace,
                what=f"read service {service}",
                kind="Service",
                name=service,
            )
        except NotFound:
            return []
        selector = ",".join(f"{k}={v}" for k, v in (found["spec"].get("selector") or {}).items())
        if not selector:
            return []
        port = found["spec"]["ports"][0]
        target = port.get("targetPort", port["port"])
        pods = await self._call(
            self.core.list_namespaced_pod,
            namespace,
            label_selector=selector,
            what=f"read service {service}",
            kind="Service",
            name=service,
        )
        return [
            {"host": str(p["status"]["podIP"]), "port": int(target)}
            for p in pods["items"]
            if self._pod_ready(p)
            and not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("podIP")
        ]

    async def changes(self, cluster: ClusterKey | None) -> AsyncGenerator[None, None]:
        self.watches.start()
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        mine = self.namespace(cluster) if cluster else None

        def heard(namespace: str | None) -> None:
            if mine is None or namespace is None or namespace == mine:
                wake.set()

        async def gateways() -> None:
            # Serving also depends on what the gateways applied.
            scope = f"{cluster}" if cluster else ""
            prefixes = [f"{ROUTES}{scope}", f"{keys.GATEWAY_STATUS}{scope}"]
            async for _ in self.store.watch_many(prefixes):
                wake.set()

        self.watches.listen(loop, heard)
        follower = asyncio.ensure_future(gateways())
        try:
            while True:
                await wake.wait()
                wake.clear()
                yield None
        finally:
            self.watches.forget(loop, heard)
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, MarinaError):
                await follower

    async def logs(
        self, cluster: ClusterKey, pod: PodId, *, replica: int, tail: int | None, follow: bool
    ) -> AsyncIterator[bytes]:
        state = await self.pod_state(cluster, pod)
        if state is None:
            raise NotFound("pod", pod)
        if not 0 <= replica < len(state["replicas"]):
            raise NotFound("replica", str(replica))
        name = state["replicas"][replica]["name"]
        params: dict[str, object] = {"follow": follow}
        if tail is not None:
            params["tail_lines"] = tail
        response = await self._call(
            self.core.read_namespaced_pod_log,
            name,
            self.namespace(cluster),
            _stream=True,
            _request_timeout=None if follow else REQUEST_TIMEOUT,
            what=f"logs of {name}",
            kind="replica",
            name=name,
            **params,
        )
        chunks: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        done = threading.Event()

        def pump() -> None:
            try:
                for chunk in response.stream(65536, decode_content=False):
                    if done.is_set():
                        return
                    loop.call_soon_threadsafe(chunks.put_nowait, chunk)
                loop.call_soon_threadsafe(chunks.put_nowait, None)
            except CLIENT_ERRORS as exc:
                if not done.is_set():
                    error = translate(
                        exc, server=self.server, what=f"logs of {name}", kind="replica", name=name
                    )
                    error.__cause__ = exc
                    loop.call_soon_threadsafe(chunks.put_nowait, error)
            except RuntimeError:
                pass  # the loop closed: nobody reads any more
            except (AttributeError, ValueError):
                # urllib3 read from a response the reader closed: the reader left.
                if not done.is_set():
                    raise

        thread = threading.Thread(target=pump, daemon=True, name=f"logs-{name}")
        thread.start()
        try:
            while True:
                item = await chunks.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            done.set()
            with contextlib.suppress(*CLIENT_ERRORS):
                response.release_conn()
            with contextlib.suppress(*CLIENT_ERRORS):
                response.close()

    def render(
        self,
        cluster: ClusterKey,
        specs: list[PodSpec],
        *,
        namespace: str,
        files: Mapping[str, Mapping[str, bytes]] | None = None,
    ) -> list[tuple[str, dict[str, object]]]:
        # The files given win over those read when this process applied the pod:
        # an export after a restart of Marina ships them too.
        self.files.update({k: dict(v) for k, v in (files or {}).items()})
        return self._render(cluster, specs, namespace=namespace)

    def close(self) -> None:
        self.watches.stop()
        client: Any = self.client
        with contextlib.suppress(*CLIENT_ERRORS):
            client.close()
