"""A Kubernetes API server for tests, over real HTTP (aiohttp).

It speaks the wire protocol the official Python client and kubectl expect:
discovery, OpenAPI v3, CRUD with resourceVersion preconditions, JSON,
merge and strategic merge patches, server-side apply with managedFields,
label and field selectors, watches with bookmarks and 410 Gone, the scale,
eviction, status and log subresources. Every write is validated strictly
(`validation`), so what a real server refuses is refused here too.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import hashlib
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from aiohttp import web

from tests.kubeapi import patching, protobuf, quotas, validation
from tests.kubeapi.openapi import openapi_index, openapi_v3
from tests.kubeapi.resources import BY_PATH, GROUPS, RESOURCES, VERBS, Resource
from tests.kubeapi.selectors import SelectorError, field_matcher, label_matcher
from tests.kubeapi.store import Event, Store
from tests.kubeapi.tables import table, wants_table

Obj = dict[str, Any]
GIT_VERSION = "v1.32.4"
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
NODE_PORTS = (30000, 32767)
DEFAULT_MANAGER_SEPARATOR = "/"
JSON_TYPES = ("application/json", "application/yaml")
PROTOBUF = "application/vnd.kubernetes.protobuf"


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(NAME_CHARS) for _ in range(n))


def qualified(resource: Resource) -> str:
    return f"{resource.plural}.{resource.group}" if resource.group else resource.plural


def kind_name(resource: Resource) -> str:
    return f"{resource.kind}.{resource.group}" if resource.group else resource.kind


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified(resource)} "{name}" not found',
        {"name": name, "group": resource.group, "kind": resource.plural},
    )


def stale(resource: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(resource)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        {"name": name, "group": resource.group, "kind": resource.plural},
    )


def invalid(resource: Resource, name: str, causes: list[validation.Cause]) -> ApiError:
    unique = {(c["field"], c["message"]): c for c in causes}
    causes = list(unique.values())
    listed = [f"{c['field']}: {c['message']}" if c["field"] else c["message"] for c in causes]
    text = listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{kind_name(resource)} "{name}" is invalid: {text}',
        {"name": name, "group": resource.group, "kind": resource.kind, "causes": causes},
    )


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(NAME_CHARS[b % len(NAME_CHARS)] for b in digest[:10])


SPECLESS = ("ConfigMap", "Secret", "Endpoints")


class ApiServer:
    """The API: storage, admission, handlers. Controllers and the kubelet plug in."""

    def __init__(self, *, bookmark_interval: float = 1.0) -> None:
        self.store = Store()
        self.bookmark_interval = bookmark_interval
        self.service_ips: set[str] = set()
        self.pod_log: Callable[[Obj, str, web.Request], Awaitable[web.StreamResponse]] | None = None
        self.watch_tasks: set[asyncio.Task[Any]] = set()
        self.closing = asyncio.Event()
        self.app = web.Application(client_max_size=8 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.dispatch)

    # Requests ------------------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self.route(request)
        except ApiError as exc:
            return web.json_response(exc.status(), status=exc.code)

    async def route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.method == "GET":
            found = self.discovery(parts)
            if found is not None:
                return web.json_response(found)
            if parts[:2] == ["openapi", "v3"]:
                if len(parts) == 2:
                    return web.json_response(openapi_index())
                doc = openapi_v3("/".join(parts[2:]))
                if doc is None:
                    raise ApiError(
                        404, "NotFound", "the server could not find the requested resource"
                    )
                return web.Response(text=doc, content_type="application/json")
            if parts and parts[0] in ("healthz", "livez", "readyz"):
                return web.Response(text="ok")
        resource, namespace, name, sub = self.parse(parts)
        if (
            namespace
            and resource.namespaced
            and request.method != "GET"
            and not (request.method == "DELETE" and name)
        ):
            self.require_namespace(namespace, resource, creating=request.method == "POST")
        method = request.method
        if sub in ("log",) and method == "GET":
            return await self.logs(request, namespace, name or "")
        if sub == "eviction" and method == "POST":
            return web.json_response(await self.evict(request, namespace, name or ""), status=201)
        if sub == "scale":
            return web.json_response(await self.scale(request, resource, namespace, name or ""))
        if name is None:
            if method == "GET":
                if request.query.get("watch") in ("1", "true"):
                    return await self.watch(request, resource, namespace)
                found = self.list_objects(request, resource, namespace)
                if wants_table(request.headers.get("Accept", "")):
                    found = table(
                        resource.kind,
                        found["items"],
                        found["metadata"]["resourceVersion"],
                        full=request.query.get("includeObject") == "Object",
                    )
                return web.json_response(found)
            if method == "POST":
                body = await self.body(request)
                obj = self.create(resource, namespace, body, request)
                return web.json_response(obj, status=201)
            if method == "DELETE":
                return web.json_response(self.delete_collection(request, resource, namespace))
        else:
            if method == "GET":
                found = self.store.get(resource, namespace, name)
                if found is None:
                    raise not_found(resource, name)
                obj = found
                if wants_table(request.headers.get("Accept", "")):
                    obj = table(
                        resource.kind,
                        [obj],
                        obj["metadata"]["resourceVersion"],
                        full=request.query.get("includeObject") == "Object",
                    )
                return web.json_response(obj)
            if method == "PUT":
                body = await self.body(request)
                return web.json_response(self.update(resource, namespace, name, body, request, sub))
            if method == "PATCH":
                obj, created = self.patch(
                    resource, namespace, name, await request.read(), request, sub
                )
                return web.json_response(obj, status=201 if created else 200)
            if method == "DELETE":
                raw = await request.read()
                try:
                    options = json.loads(raw) if raw.strip() else {}
                except ValueError as exc:
                    raise ApiError(400, "BadRequest", f"invalid DeleteOptions: {exc}") from exc
                return web.json_response(self.delete(request, resource, namespace, name, options))
        raise ApiError(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

    def parse(self, parts: list[str]) -> tuple[Resource, str, str | None, str | None]:
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis" and GROUPS.get(parts[1]) == parts[2]:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in BY_PATH:
            namespace, rest = rest[1], rest[2:]
        if not rest or (group, version, rest[0]) not in BY_PATH:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resource = BY_PATH[(group, version, rest[0])]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in resource.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if resource.namespaced and name is not None and not namespace:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return resource, namespace, name, sub

    async def body(self, request: web.Request) -> Obj:
        raw = await request.read()
        given = request.headers.get("Content-Type")
        if request.content_type == PROTOBUF:
            try:
                return protobuf.decode(raw)
            except protobuf.Undecodable as exc:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format: {exc}",
                ) from exc
        if given is not None and request.content_type not in JSON_TYPES:
            # no protobuf or CBOR here (as a server without them answers); none means JSON
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an "
                f"unknown format - accepted media types include: "
                f"{', '.join(JSON_TYPES)}",
            )
        try:
            data = yaml.safe_load(raw) if "yaml" in request.content_type else json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(
                400, "BadRequest", f"the body of the request was in an unknown format: {exc}"
            ) from exc
        if not isinstance(data, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be an object")
        return data

    def require_namespace(self, namespace: str, resource: Resource, *, creating: bool) -> None:
        ns_resource = BY_PATH[("", "v1", "namespaces")]
        ns = self.store.get(ns_resource, "", namespace)
        if ns is None:
            raise not_found(ns_resource, namespace)
        if creating and ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"{qualified(resource)} is forbidden: unable to "
                f"create new content in namespace {namespace} because it is being "
                "terminated",
            )

    # Discovery -----------------------------------------------------------------------------

    def discovery(self, parts: list[str]) -> Obj | None:
        if parts == ["version"]:
            return {
                "major": "1",
                "minor": GIT_VERSION.split(".")[1],
                "gitVersion": GIT_VERSION,
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "go1.23",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if parts == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
                ],
            }
        if parts == ["apis"]:
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self.group(g) for g in GROUPS],
            }
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in GROUPS:
            return {"kind": "APIGroup", "apiVersion": "v1", **self.group(parts[1])}
        if parts == ["api", "v1"]:
            return self.resource_list("", "v1")
        if len(parts) == 3 and parts[0] == "apis" and GROUPS.get(parts[1]) == parts[2]:
            return self.resource_list(parts[1], parts[2])
        return None

    @staticmethod
    def group(name: str) -> Obj:
        gv = {"groupVersion": f"{name}/{GROUPS[name]}", "version": GROUPS[name]}
        return {"name": name, "versions": [gv], "preferredVersion": gv}

    @staticmethod
    def resource_list(group: str, version: str) -> Obj:
        entries: list[Obj] = []
        for r in RESOURCES:
            if (r.group, r.version) != (group, version):
                continue
            entry = {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": VERBS,
            }
            if r.short_names:
                entry["shortNames"] = list(r.short_names)
            if r.categories:
                entry["categories"] = list(r.categories)
            entries.append(entry)
            for sub in r.subresources:
                sub_entry: Obj = {
                    "name": f"{r.plural}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "patch", "update"],
                }
                if sub == "scale":
                    sub_entry.update(group="autoscaling", version="v1", kind="Scale")
                elif sub == "eviction":
                    sub_entry.update(
                        group="policy", version="v1", kind="Eviction", verbs=["create"]
                    )
                elif sub == "log":
                    sub_entry.update(verbs=["get"])
                entries.append(sub_entry)
        gv = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": entries,
        }

    # Reading -------------------------------------------------------------------------------

    def matcher(self, request: web.Request) -> Callable[[Obj], bool]:
        try:
            labels = label_matcher(request.query.get("labelSelector"))
            fields = field_matcher(request.query.get("fieldSelector"))
        except SelectorError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from exc
        return lambda obj: labels(obj) and fields(obj)

    def list_objects(self, request: web.Request, resource: Resource, namespace: str) -> Obj:
        matches = self.matcher(request)
        items = [o for o in self.store.select(resource, namespace or None) if matches(o)]
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": str(self.store.revision)},
            "items": items,
        }

    async def watch(
        self, request: web.Request, resource: Resource, namespace: str
    ) -> web.StreamResponse:
        matches = self.matcher(request)

        def accepts(event: Event) -> bool:
            return (
                event.resource == resource
                and (not namespace or event.obj["metadata"].get("namespace") == namespace)
                and matches(event.obj)
            )

        sub = self.store.subscribe(accepts)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        since = request.query.get("resourceVersion", "")
        timeout = float(request.query.get("timeoutSeconds") or 0) or None
        bookmarks = request.query.get("allowWatchBookmarks") in ("1", "true")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None

        as_table = wants_table(request.headers.get("Accept", ""))
        full = request.query.get("includeObject") == "Object"

        async def send(kind: str, obj: Obj) -> None:
            if as_table and kind not in ("ERROR", "BOOKMARK"):
                obj = table(resource.kind, [obj], obj["metadata"]["resourceVersion"], full=full)
            line = json.dumps({"type": kind, "object": obj}) + "\n"
            await response.write(line.encode())

        try:
            if since in ("", "0"):
                for obj in self.store.select(resource, namespace or None):
                    if matches(obj):
                        await send("ADDED", obj)
            else:
                try:
                    revision = int(since)
                except ValueError as exc:
                    raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}") from exc
                backlog = self.store.since(revision)
                if backlog is None:
                    gone = ApiError(
                        410,
                        "Expired",
                        f"too old resource version: {revision} ({self.store.compacted + 1})",
                    )
                    await send("ERROR", gone.status())
                    return response
                for event in backlog:
                    if accepts(event):
                        await send(event.type, event.obj)
                # the queue may hold events the backlog already had
                while not sub.queue.empty():
                    event_or_none = sub.queue.get_nowait()
                    if event_or_none is not None and event_or_none.revision > (
                        backlog[-1].revision if backlog else revision
                    ):
                        await send(event_or_none.type, event_or_none.obj)
            while not self.closing.is_set():
                wait = self.bookmark_interval if bookmarks else 5.0
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                    if wait <= 0:
                        break
                try:
                    next_event: Event | None = await asyncio.wait_for(sub.queue.get(), wait)
                except TimeoutError:
                    if bookmarks:
                        await send(
                            "BOOKMARK",
                            {
                                "kind": resource.kind,
                                "apiVersion": resource.api_version,
                                "metadata": {"resourceVersion": str(self.store.revision)},
                            },
                        )
                    continue
                if next_event is None:
                    break
                await send(next_event.type, next_event.obj)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unsubscribe(sub)
        return response

    async def logs(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        pods = BY_PATH[("", "v1", "pods")]
        pod = self.store.get(pods, namespace, name)
        if pod is None:
            raise not_found(pods, name)
        containers = [c["name"] for c in pod["spec"]["containers"]]
        container = request.query.get("container")
        if container is None:
            if len(containers) > 1:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod "
                    f"{name}, choose one of: [{' '.join(containers)}]",
                )
            container = containers[0]
        if container not in containers:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        if self.pod_log is None:
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating',
            )
        return await self.pod_log(pod, container, request)

    # Writing -------------------------------------------------------------------------------

    @staticmethod
    def manager(request: web.Request | None, default: str = "") -> str:
        if request is None:
            return default
        given = request.query.get("fieldManager")
        if given:
            return given
        agent = request.headers.get("User-Agent", "unknown")
        return agent.split(DEFAULT_MANAGER_SEPARATOR, 1)[0] or "unknown"

    def check_identity(self, resource: Resource, namespace: str, body: Obj) -> None:
        if body.get("apiVersion") != resource.api_version or body.get("kind") != resource.kind:
            if body.get("kind") in (None, "") and body.get("apiVersion") in (None, ""):
                raise ApiError(
                    400, "BadRequest", f"Object 'Kind' is missing in '{json.dumps(body)[:200]}'"
                )
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data "
                f"({body.get('apiVersion')}) does not match the expected API version "
                f"({resource.api_version}) or kind ({body.get('kind')}) is not "
                f"{resource.kind}",
            )
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            meta = body["metadata"] = {}
        if resource.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not "
                    "match the namespace sent on the request",
                )
            meta["namespace"] = namespace

    def validate(self, resource: Resource, obj: Obj, old: Obj | None) -> None:
        causes = validation.schema_causes(obj)
        causes += validation.name_causes(obj, namespaced=resource.namespaced)
        kind = resource.kind
        if kind in ("Deployment", "ReplicaSet"):
            causes += validation.deployment_causes(obj, old)
        elif kind == "Pod":
            causes += validation.pod_spec_causes(obj.get("spec") or {}, "spec")
            if old is not None:
                causes += validation.pod_update_causes(obj, old)
        elif kind == "Service":
            causes += validation.service_causes(obj, old, self.taken_node_ports(obj))
        elif kind in ("ConfigMap", "Secret"):
            causes += validation.config_causes(obj)
        elif kind == "PodDisruptionBudget":
            causes += validation.pdb_causes(obj)
        if causes:
            raise invalid(resource, obj["metadata"].get("name", ""), causes)

    def taken_node_ports(self, obj: Obj) -> set[int]:
        taken: set[int] = set()
        for svc in self.store.select(BY_PATH[("", "v1", "services")]):
            meta = svc["metadata"]
            if (meta.get("namespace"), meta["name"]) == (
                obj["metadata"].get("namespace"),
                obj["metadata"].get("name"),
            ):
                continue
            taken |= {p["nodePort"] for p in svc["spec"].get("ports", []) if p.get("nodePort")}
        return taken

    def create(
        self,
        resource: Resource,
        namespace: str,
        body: Obj,
        request: web.Request | None,
        *,
        manager: str = "",
        operation: str = "Update",
    ) -> Obj:
        self.check_identity(resource, namespace, body)
        meta = body["metadata"]
        if meta.get("resourceVersion"):
            raise ApiError(
                400, "BadRequest", "resourceVersion should not be set on objects to be created"
            )
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(10):
                meta["name"] = meta["generateName"] + random_suffix()
                if self.store.get(resource, namespace, meta["name"]) is None:
                    break
        for field in (
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ):
            meta.pop(field, None)
        if resource.has_status and resource.kind not in ("Node",):
            body.pop("status", None)
        self.validate(resource, body, None)
        if self.store.get(resource, namespace, meta["name"]) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{qualified(resource)} "{meta["name"]}" already exists',
                {"name": meta["name"], "group": resource.group, "kind": resource.plural},
            )
        self.check_quota(resource, namespace, body)
        obj = copy.deepcopy(body)
        fields = patching.field_set(obj, self.schema(resource))
        obj["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=now())
        self.default(resource, obj)
        if self.has_generation(resource):
            obj["metadata"]["generation"] = 1
        self.admit(resource, obj, None)
        manager = manager or self.manager(request)
        self.set_managed(obj, [self.entry(manager, operation, resource, fields)])
        if request is not None and request.query.get("dryRun") == "All":
            return obj
        return self.store.put(resource, obj, created=True)

    def update(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        body: Obj,
        request: web.Request | None,
        sub: str | None = None,
        *,
        manager: str = "",
    ) -> Obj:
        self.check_identity(resource, namespace, body)
        if body["metadata"].get("name") != name:
            raise ApiError(
                400,
                "BadRequest",
                "the name of the object "
                f"({body['metadata'].get('name')}) does not match the name on the URL "
                f"({name})",
            )
        old = self.store.get(resource, namespace, name)
        if old is None:
            raise not_found(resource, name)
        given = body["metadata"].get("resourceVersion")
        if given and given != old["metadata"]["resourceVersion"]:
            raise stale(resource, name)
        return self.replace(resource, old, body, request, sub, manager=manager)

    def replace(
        self,
        resource: Resource,
        old: Obj,
        new: Obj,
        request: web.Request | None,
        sub: str | None,
        *,
        manager: str = "",
        operation: str = "Update",
        managed: list[Obj] | None = None,
    ) -> Obj:
        new = copy.deepcopy(new)
        meta, old_meta = new["metadata"], old["metadata"]
        for field in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if sub == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is not None:
                new["status"] = status
        elif resource.has_status and resource.kind != "Node":
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        check = copy.deepcopy(new)
        check["metadata"].pop("managedFields", None)
        self.validate(resource, check, old)
        self.default(resource, new)
        self.admit(resource, new, old)
        if self.has_generation(resource) and self.spec_of(new) != self.spec_of(old):
            meta["generation"] = old_meta.get("generation", 1) + 1
        schema = self.schema(resource)
        if managed is not None:
            self.set_managed(new, managed)
        else:
            entries = self.entries(old)
            changed = patching.changed_fields(self.bare(old), self.bare(new), schema)
            removed = {
                p
                for p in patching.field_set(self.bare(old), schema)
                if patching.is_absent(patching.value_at(new, p, schema))
            }
            for entry in entries:
                entry["fields"] -= changed | removed
            manager = manager or self.manager(request)
            if sub != "status" and changed:
                mine = next(
                    (e for e in entries if (e["manager"], e["operation"]) == (manager, "Update")),
                    None,
                )
                if mine is None:
                    mine = self.entry(manager, operation, resource, set())
                    entries.append(mine)
                mine["fields"] |= changed
                mine["time"] = now()
            self.set_managed(new, entries)
        if new == old:
            return old
        if request is not None and request.query.get("dryRun") == "All":
            return new
        return self.store.put(resource, new, created=False)

    def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        raw: bytes,
        request: web.Request,
        sub: str | None,
    ) -> tuple[Obj, bool]:
        content_type = request.content_type
        old = self.store.get(resource, namespace, name)
        if content_type == "application/apply-patch+yaml":
            return self.apply(resource, namespace, name, raw, request, old)
        if old is None:
            raise not_found(resource, name)
        try:
            patch = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"error decoding patch: {exc}") from exc
        try:
            if content_type == "application/json-patch+json":
                new = patching.json_patch(old, patch)
            elif content_type == "application/merge-patch+json":
                new = patching.merge_patch(old, patch)
            elif content_type == "application/strategic-merge-patch+json":
                new = patching.strategic_merge(old, patch, self.schema(resource))
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an "
                    "unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json, "
                    "application/apply-patch+yaml",
                )
        except patching.PatchError as exc:
            raise ApiError(422 if "test" in str(exc) else 400, "BadRequest", str(exc)) from exc
        if not isinstance(new, dict):
            raise ApiError(400, "BadRequest", "the patch did not produce an object")
        given = new.get("metadata", {}).get("resourceVersion")
        if given and given != old["metadata"]["resourceVersion"]:
            raise stale(resource, name)
        new.setdefault("metadata", {})
        if new["metadata"].get("name") != name:
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        self.check_identity(resource, namespace, new)
        return self.replace(resource, old, new, request, sub), False

    def apply(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        raw: bytes,
        request: web.Request,
        old: Obj | None,
    ) -> tuple[Obj, bool]:
        manager = request.query.get("fieldManager")
        if not manager:
            raise ApiError(
                400,
                "BadRequest",
                "PATCH, application/apply-patch+yaml requests require fieldManager",
            )
        force = request.query.get("force") in ("true", "1")
        try:
            applied = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ApiError(400, "BadRequest", f"error decoding YAML: {exc}") from exc
        if not isinstance(applied, dict):
            raise ApiError(400, "BadRequest", "the applied configuration must be an object")
        self.check_identity(resource, namespace, applied)
        if applied["metadata"].get("name") != name:
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        for field in ("managedFields", "uid", "creationTimestamp", "generation"):
            applied["metadata"].pop(field, None)
        given = applied["metadata"].pop("resourceVersion", None)
        schema = self.schema(resource)
        # the object must be valid as applied, before it is merged
        probe = copy.deepcopy(applied)
        causes = validation.schema_causes(probe, partial=True)
        if causes:
            raise invalid(resource, name, causes)
        if old is None:
            obj = self.create(
                resource, namespace, applied, request, manager=manager, operation="Apply"
            )
            return obj, True
        if given and given != old["metadata"]["resourceVersion"]:
            raise stale(resource, name)
        fields = patching.field_set(applied, schema)
        entries = self.entries(old)
        mine = next(
            (e for e in entries if (e["manager"], e["operation"]) == (manager, "Apply")), None
        )
        previous = mine["fields"] if mine else set()
        current = self.bare(old)
        conflicts: list[tuple[Obj, tuple[str, ...]]] = []
        for entry in entries:
            if entry is mine:
                continue
            for path in sorted(fields & entry["fields"]):
                if path[-1] == ".":
                    continue
                if patching.value_at(current, path, schema) != patching.value_at(
                    applied, path, schema
                ):
                    conflicts.append((entry, path))
        if conflicts and not force:
            raise self.conflict(resource, name, conflicts)
        for entry, path in conflicts:
            entry["fields"].discard(path)
        others = set().union(*(e["fields"] for e in entries if e is not mine))
        new = patching.remove_fields(old, (previous - fields) - others, schema)
        new = patching.apply_merge(new, applied, schema)
        if mine is None:
            mine = self.entry(manager, "Apply", resource, set())
            entries.append(mine)
        mine["fields"] = fields
        mine["time"] = now()
        return self.replace(resource, old, new, request, None, managed=entries), False

    def conflict(
        self, resource: Resource, name: str, conflicts: list[tuple[Obj, tuple[str, ...]]]
    ) -> ApiError:
        causes = [
            {
                "reason": "FieldManagerConflict",
                "message": f'conflict with "{e["manager"]}"'
                + (" using " + e["apiVersion"] if e["operation"] == "Update" else ""),
                "field": patching.display(p),
            }
            for e, p in conflicts
        ]
        count = len(causes)
        if count == 1:
            text = f"Apply failed with 1 conflict: {causes[0]['message']}: {causes[0]['field']}"
        else:
            lines = "\n".join(f"- {c['field']}" for c in causes)
            text = f"Apply failed with {count} conflicts: {causes[0]['message']}:\n{lines}"
        return ApiError(
            409,
            "Conflict",
            text,
            {"name": name, "group": resource.group, "kind": resource.plural, "causes": causes},
        )

    # managedFields, as sets while we work on them

    def entry(self, manager: str, operation: str, resource: Resource, fields: set[Any]) -> Obj:
        return {
            "manager": manager,
            "operation": operation,
            "apiVersion": resource.api_version,
            "time": now(),
            "fields": fields,
        }

    @staticmethod
    def entries(obj: Obj) -> list[Obj]:
        out = []
        for e in obj["metadata"].get("managedFields") or []:
            entry = {k: v for k, v in e.items() if k not in ("fieldsV1", "fieldsType")}
            entry["fields"] = patching.from_fields_v1(e.get("fieldsV1") or {})
            out.append(entry)
        return out

    @staticmethod
    def set_managed(obj: Obj, entries: list[Obj]) -> None:
        rendered = []
        for e in entries:
            fields = {p for p in e["fields"]}
            if not fields:
                continue
            item = {k: v for k, v in e.items() if k != "fields"}
            item["fieldsType"] = "FieldsV1"
            item["fieldsV1"] = patching.to_fields_v1(fields)
            rendered.append(item)
        if rendered:
            obj["metadata"]["managedFields"] = rendered
        else:
            obj["metadata"].pop("managedFields", None)

    @staticmethod
    def bare(obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        out["metadata"].pop("managedFields", None)
        return out

    @staticmethod
    def schema(resource: Resource) -> patching.Schema:
        return patching.root_schema(resource.api_version, resource.kind)

    @staticmethod
    def has_generation(resource: Resource) -> bool:
        return resource.kind in ("Deployment", "ReplicaSet", "PodDisruptionBudget")

    @staticmethod
    def spec_of(obj: Obj) -> Any:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

    # Admission: defaults and allocations -------------------------------------------------

    def default(self, resource: Resource, obj: Obj) -> None:
        kind = resource.kind
        # Kinds without a spec get none (an Endpoints with one fails validation on update).
        spec = obj.setdefault("spec", {}) if kind not in SPECLESS else {}
        if kind in ("Deployment", "ReplicaSet"):
            spec.setdefault("replicas", 1)
            if kind == "Deployment":
                spec.setdefault("revisionHistoryLimit", 10)
                spec.setdefault("progressDeadlineSeconds", 600)
                strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
                if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                    strategy.setdefault("type", "RollingUpdate")
                    strategy.setdefault(
                        "rollingUpdate", {"maxSurge": "25%", "maxUnavailable": "25%"}
                    )
            self.default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))
        elif kind == "Pod":
            self.default_pod_spec(spec)
        elif kind == "Service":
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            for port in spec.get("ports", []):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
        elif kind == "Namespace":
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj[
                "metadata"
            ]["name"]
            spec.setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {"phase": "Active"})
        elif kind == "Secret":
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        elif kind == "Node" and "status" not in obj:
            obj["status"] = {}

    @staticmethod
    def default_pod_spec(spec: Obj) -> None:
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("securityContext", {})
        for container in spec.get("containers", []):
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            image = str(container.get("image", ""))
            latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
            container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            container.setdefault("resources", {})
            for port in container.get("ports", []):
                port.setdefault("protocol", "TCP")

    def admit(self, resource: Resource, obj: Obj, old: Obj | None) -> None:
        if resource.kind == "Service":
            self.allocate_service(obj, old)
        elif resource.kind == "Pod" and old is None:
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}

    def allocate_service(self, obj: Obj, old: Obj | None) -> None:
        spec = obj["spec"]
        old_spec = (old or {}).get("spec") or {}
        if spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None":
            ip = spec.get("clusterIP") or old_spec.get("clusterIP")
            while not ip or (old is None and ip in self.service_ips):
                ip = f"127.71.{random.randint(0, 254)}.{random.randint(2, 254)}"
            self.service_ips.add(ip)
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
            taken = self.taken_node_ports(obj)
            old_ports = {p.get("port"): p.get("nodePort") for p in old_spec.get("ports", [])}
            for port in spec.get("ports", []):
                if not port.get("nodePort"):
                    port["nodePort"] = old_ports.get(port.get("port")) or next(
                        p
                        for p in random.sample(range(NODE_PORTS[0], NODE_PORTS[1] + 1), 200)
                        if p not in taken
                    )
                taken.add(port["nodePort"])
        else:
            for port in spec.get("ports", []):
                port.pop("nodePort", None)

    def check_quota(self, resource: Resource, namespace: str, obj: Obj) -> None:
        if not namespace:
            return
        existing = self.store.select(resource, namespace)
        for quota in self.store.select(BY_PATH[("", "v1", "resourcequotas")], namespace):
            reason = quotas.refusal(quota, resource.kind, existing, obj)
            if reason is not None:
                name = obj["metadata"].get("name", "")
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{qualified(resource)} "{name}" is forbidden: {reason}',
                    # as a real server's details: the group only when there is one
                    {
                        "name": name,
                        **({"group": resource.group} if resource.group else {}),
                        "kind": resource.plural,
                    },
                )

    # Deleting ------------------------------------------------------------------------------

    def delete(
        self,
        request: web.Request | None,
        resource: Resource,
        namespace: str,
        name: str,
        options: Obj | None = None,
        *,
        grace: int | None = None,
    ) -> Obj:
        obj = self.store.get(resource, namespace, name)
        if obj is None:
            raise not_found(resource, name)
        options = options or {}
        if request is not None and "gracePeriodSeconds" in request.query:
            grace = int(request.query["gracePeriodSeconds"])
        grace = options.get("gracePeriodSeconds", grace)
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != obj["metadata"]["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: "
                f"{preconditions['uid']}, UID in object meta: "
                f"{obj['metadata']['uid']}",
            )
        if preconditions.get("resourceVersion") and (
            preconditions["resourceVersion"] != obj["metadata"]["resourceVersion"]
        ):
            raise stale(resource, name)
        if request is not None and request.query.get("dryRun") == "All":
            return obj
        return self.remove(resource, obj, grace)

    def remove(self, resource: Resource, obj: Obj, grace: int | None) -> Obj:
        meta = obj["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        if resource.kind == "Namespace":
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = now()
                meta["deletionGracePeriodSeconds"] = 0
                obj["status"] = {"phase": "Terminating"}
                obj = self.store.put(resource, obj, created=False)
            return obj
        if resource.kind == "Pod" and (obj.get("spec") or {}).get("nodeName") and grace != 0:
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = now()
                meta["deletionGracePeriodSeconds"] = (
                    grace
                    if grace is not None
                    else obj["spec"].get("terminationGracePeriodSeconds", 30)
                )
                obj = self.store.put(resource, obj, created=False)
            return obj
        gone = self.store.remove(resource, namespace, name)
        if resource.kind == "Service":
            self.service_ips.discard((obj.get("spec") or {}).get("clusterIP", ""))
        self.collect_garbage(meta["uid"])
        if resource.kind == "Pod":
            return gone or obj
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": name,
                "group": resource.group,
                "kind": resource.plural,
                "uid": meta["uid"],
            },
        }

    def collect_garbage(self, owner_uid: str) -> None:
        for resource in RESOURCES:
            for obj in self.store.select(resource):
                owners = obj["metadata"].get("ownerReferences") or []
                if any(o.get("uid") == owner_uid for o in owners):
                    self.remove(resource, obj, None)

    def delete_collection(self, request: web.Request, resource: Resource, namespace: str) -> Obj:
        matches = self.matcher(request)
        items = [o for o in self.store.select(resource, namespace or None) if matches(o)]
        for obj in items:
            self.remove(resource, obj, None)
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": str(self.store.revision)},
            "items": items,
        }

    # Subresources --------------------------------------------------------------------------

    async def scale(
        self, request: web.Request, resource: Resource, namespace: str, name: str
    ) -> Obj:
        obj = self.store.get(resource, namespace, name)
        if obj is None:
            raise not_found(resource, name)
        current = self.scale_of(obj)
        if request.method == "GET":
            return current
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"error decoding body: {exc}") from exc
        if request.method == "PUT":
            wanted = body
        elif request.method == "PATCH":
            if request.content_type == "application/json-patch+json":
                wanted = patching.json_patch(current, body)
            else:
                wanted = patching.merge_patch(current, body)
        else:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        given = (wanted.get("metadata") or {}).get("resourceVersion")
        if given and given != obj["metadata"]["resourceVersion"]:
            raise stale(resource, name)
        replicas = (wanted.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(
                422,
                "Invalid",
                f'Scale.autoscaling "{name}" is invalid: '
                f"spec.replicas: Invalid value: {json.dumps(replicas)}: must be greater "
                "than or equal to 0",
                {
                    "name": name,
                    "group": "autoscaling",
                    "kind": "Scale",
                    "causes": [
                        validation.invalid(
                            "spec.replicas", replicas, "must be greater than or equal to 0"
                        )
                    ],
                },
            )
        new = copy.deepcopy(obj)
        new["spec"]["replicas"] = replicas
        updated = self.replace(resource, obj, new, request, "scale")
        return self.scale_of(updated)

    @staticmethod
    def scale_of(obj: Obj) -> Obj:
        meta = obj["metadata"]
        selector = obj["spec"].get("selector") or {}
        text = ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items())
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": text},
        }

    async def evict(self, request: web.Request, namespace: str, name: str) -> Obj:
        body = await self.body(request)
        if body.get("kind") != "Eviction":
            raise ApiError(400, "BadRequest", "the body must be an Eviction")
        pods = BY_PATH[("", "v1", "pods")]
        pod = self.store.get(pods, namespace, name)
        if pod is None:
            raise not_found(pods, name)
        if (body.get("metadata") or {}).get("name") not in (None, name):
            raise ApiError(400, "BadRequest", "name in URL does not match name in Eviction object")
        labels = pod["metadata"].get("labels") or {}
        if not pod["metadata"].get("deletionTimestamp") and self.pod_ready(pod):
            for pdb in self.store.select(
                BY_PATH[("policy", "v1", "poddisruptionbudgets")], namespace
            ):
                if not validation.selector_matches(pdb["spec"].get("selector"), labels):
                    continue
                healthy, desired, _ = self.pdb_numbers(pdb)
                if healthy - desired < 1:
                    raise ApiError(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        {
                            "causes": [
                                {
                                    "reason": "DisruptionBudget",
                                    "message": f"The disruption budget "
                                    f"{pdb['metadata']['name']} needs {desired} "
                                    f"healthy pods and has {healthy} currently",
                                }
                            ]
                        },
                    )
        grace = (body.get("deleteOptions") or {}).get("gracePeriodSeconds")
        self.remove(pods, pod, grace)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }

    @staticmethod
    def pod_ready(pod: Obj) -> bool:
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )

    def pdb_numbers(self, pdb: Obj) -> tuple[int, int, int]:
        """(currentHealthy, desiredHealthy, expectedPods) of a PodDisruptionBudget."""
        pods = [
            p
            for p in self.store.select(BY_PATH[("", "v1", "pods")], pdb["metadata"]["namespace"])
            if validation.selector_matches(
                pdb["spec"].get("selector"), p["metadata"].get("labels") or {}
            )
            and not p["metadata"].get("deletionTimestamp")
        ]
        expected = len(pods)
        healthy = sum(1 for p in pods if self.pod_ready(p))
        spec = pdb["spec"]
        if "minAvailable" in spec:
            desired = self.int_or_percent(spec["minAvailable"], expected, up=True)
        elif "maxUnavailable" in spec:
            desired = max(
                0, expected - self.int_or_percent(spec["maxUnavailable"], expected, up=True)
            )
        else:
            desired = expected
        return healthy, desired, expected

    @staticmethod
    def int_or_percent(value: Any, total: int, *, up: bool) -> int:
        if isinstance(value, str) and value.endswith("%"):
            share = int(value[:-1]) * total / 100
            return int(-(-share // 1)) if up else int(share)
        return int(value)

    # Running -------------------------------------------------------------------------------

    async def close(self) -> None:
        self.closing.set()
        for sub in list(self.store.subscriptions):
            self.store.unsubscribe(sub)
