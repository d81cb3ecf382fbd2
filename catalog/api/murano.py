"""Murano's own routes and shapes, so python-muranoclient works unchanged.

Murano clients send `X-Auth-Token` (Marina's clients send `Authorization:
Bearer`); replies to them follow Murano where it differs from Marina: errors
as `{"error": {"type", "message"}}` (the client reads `message` from every
top-level object of an error body), packages with Murano's fields and paging,
services as Murano objects. Sessions, deployments and static actions exist
only here.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime
from typing import Any, cast

import yaml
from aiohttp import BodyPartReader, web

from catalog import environments as envs
from catalog import keys, sessions
from catalog.api import environments, packages
from catalog.api.handling import (
    MAX_BODY,
    identify,
    murano_service,
    present_with_murano,
    read_json,
    read_paging,
    reply_json,
    single_master_of,
    store_of,
)
from catalog.classes.registry import REGISTRY, with_actions
from catalog.documents import EnvironmentDocument, Json, MuranoDocument
from catalog.errors import (
    MarinaError,
    NotFound,
    Problem,
    TooLarge,
    Unauthorized,
    ValidationFailed,
)
from catalog.ids import EnvironmentId, ObjectId, ProjectId, new_id
from catalog.packages import get_package, list_packages, load_zip, save_package
from catalog.store import Store
from catalog.tasks import enqueue, get_task, new_task, recent_tasks, task_log

SESSION_HEADER = "X-Configuration-Session"


def is_murano(request: web.Request) -> bool:
    """A Murano client: it authenticates with `X-Auth-Token`."""
    return "X-Auth-Token" in request.headers and "Authorization" not in request.headers


def murano_error(payload: dict[str, object]) -> dict[str, object]:
    """Marina's error body in Murano's shape: one object with `message`."""
    inner = {"type": payload.get("error"), "message": payload.get("message")}
    return {"error": {**payload, **inner}}


def _iso(stamp: float | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC).isoformat()


def _session_id(request: web.Request) -> str | None:
    return request.headers.get(SESSION_HEADER) or None


def _require_session(request: web.Request) -> str:
    found = _session_id(request)
    if found is None:
        raise ValidationFailed(
            "headers",
            [Problem(SESSION_HEADER, "is required: open one with POST .../configure")],
        )
    return found


# -- environments ------------------------------------------------------------------------


async def rename_environment(request: web.Request) -> web.Response:
    who = await identify(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed("body", [Problem("body", "must be a JSON object", body)])
    unknown = sorted(set(body) - {"name"})
    if unknown:
        raise ValidationFailed("body", [Problem(k, "is not a known field") for k in unknown])
    name = envs.check_name(body.get("name"))
    store = store_of(request)
    env_id = request.match_info["env_id"]
    envs.require_live((await envs.load(store, env_id, who.project)).value)

    def rename(doc: EnvironmentDocument) -> EnvironmentDocument:
        doc["name"] = name
        return doc

    doc = await envs.change(store, env_id, rename)
    shown = envs.summary(doc)
    return reply_json(_murano_times(shown) if is_murano(request) else shown)


def _murano_times(shown: Any) -> MuranoDocument:
    """Murano's timestamps are text (`2016-06-16T09:21:44`); Marina's are seconds."""
    return {
        **shown,
        **{
            k: datetime.fromtimestamp(float(shown[k]), UTC).strftime("%Y-%m-%dT%H:%M:%S")
            for k in ("created", "updated")
            if isinstance(shown.get(k), int | float)
        },
    }


async def list_environments(request: web.Request) -> web.Response:
    if not is_murano(request):
        return await environments.list_environments(request)
    who = await identify(request)
    limit, marker = read_paging(request)
    page, _ = await envs.list_environments(
        store_of(request), who.project, limit=limit, marker=marker
    )
    return reply_json(
        {"environments": [_murano_times({**e, "tenant_id": e["project"]}) for e in page]}
    )


async def create_environment(request: web.Request) -> web.Response:
    if not is_murano(request):
        return await environments.create_environment(request)
    who = await identify(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed("body", [Problem("body", "must be a JSON object", body)])
    doc = await envs.create_environment(
        store_of(request), name=body.get("name"), project=who.project
    )
    return reply_json(_murano_times(present_with_murano(doc)), 200)


async def delete_environment(request: web.Request) -> web.Response:
    """Murano's clients say `abandon=False`; abandoning (forgetting an environment
    while what it runs keeps running) would orphan pods and nodes, so it is refused."""
    abandon = request.query.get("abandon", "False")
    if abandon.lower() not in ("false", "0"):
        raise ValidationFailed(
            "query",
            [
                Problem(
                    "abandon",
                    "must be False: deleting an environment always stops what it runs",
                    abandon,
                )
            ],
        )
    return await environments.delete_environment(request)


async def show_environment(request: web.Request) -> web.Response:
    session_id = _session_id(request)
    if session_id is None and not is_murano(request):
        return await environments.show_environment(request)
    who = await identify(request)
    env_id = request.match_info["env_id"]
    doc = await sessions.view(store_of(request), env_id, who.project, session_id)
    return reply_json(_murano_times(present_with_murano(doc)))


# -- services ----------------------------------------------------------------------------


def _services(doc: EnvironmentDocument) -> list[MuranoDocument]:
    return [murano_service(with_actions(o)) for o in sessions.services(doc)]


def _service_path(request: web.Request) -> str:
    """The object id a service path names (`/<id>`; deeper paths are refused)."""
    path = request.match_info.get("path", "").strip("/")
    if "/" in path:
        raise ValidationFailed(
            "path", [Problem("path", "must name a service by its id, nothing below it", path)]
        )
    return path


async def list_services(request: web.Request) -> web.Response:
    session_id = _session_id(request)
    path = _service_path(request)
    if session_id is None and not path and not is_murano(request):
        return await environments.list_services(request)
    who = await identify(request)
    doc = await sessions.view(
        store_of(request), request.match_info["env_id"], who.project, session_id
    )
    found = _services(doc)
    if not path:
        return reply_json(found)
    for service in found:
        if service["?"]["id"] == path:
            return reply_json(service)
    raise NotFound("service", path)


async def add_service(request: web.Request) -> web.Response:
    session_id = _session_id(request)
    if session_id is None and not is_murano(request):
        return await environments.add_service(request)
    session_id = _require_session(request)
    if _service_path(request):
        raise ValidationFailed(
            "path", [Problem("path", "services are added at the root", request.path)]
        )
    who = await identify(request)
    store = store_of(request)
    env_id = request.match_info["env_id"]
    session = await sessions.get_session(store, env_id, session_id, who.project)
    given = await read_json(request)
    items = given if isinstance(given, list) else [given]
    changes: list[sessions.Change] = []
    for index, item in enumerate(items):
        where = f"body[{index}]" if isinstance(given, list) else "body"
        body = await sessions.to_marina_body(store, item, where=where)
        head = item.get("?") if isinstance(item, dict) else None
        wanted = head.get("id") if isinstance(head, dict) else None
        obj_id = wanted if isinstance(wanted, str) and sessions._is_id(wanted) else None
        changes.append({"op": "add", "id": obj_id or new_id(), "body": body})
    doc = await sessions.record(
        store, session, who.project, changes, single_master=single_master_of(request)
    )
    added = {c["id"] for c in changes}
    made = [s for s in _services(doc) if s["?"]["id"] in added]
    return reply_json(made if isinstance(given, list) else made[0], 200)


async def replace_services(request: web.Request) -> web.Response:
    session_id = _require_session(request)
    who = await identify(request)
    path = _service_path(request)
    given = await read_json(request)
    if path:
        if not isinstance(given, dict):
            raise ValidationFailed("body", [Problem("body", "must be a JSON object", given)])
        head = given.get("?")
        given = {**given, "?": {**(head if isinstance(head, dict) else {}), "id": path}}
    doc = await sessions.replace_services(
        store_of(request),
        request.match_info["env_id"],
        session_id,
        who.project,
        given,
        where="body",
        single_master=single_master_of(request),
    )
    found = _services(doc)
    if path:
        return reply_json(next(s for s in found if s["?"]["id"] == path))
    return reply_json(found)


async def delete_service(request: web.Request) -> web.Response:
    session_id = _require_session(request)
    who = await identify(request)
    store = store_of(request)
    env_id = request.match_info["env_id"]
    path = _service_path(request)
    session = await sessions.get_session(store, env_id, session_id, who.project)
    doc = await sessions.view(store, env_id, who.project, session_id)
    changes = sessions.removal(doc, session, path)
    await sessions.record(store, session, who.project, changes)
    return reply_json({})


async def patch_model(request: web.Request) -> web.Response:
    """A JSON patch (RFC 6902: add, replace, remove) of `{"services": [...]}`."""
    session_id = _require_session(request)
    who = await identify(request)
    store = store_of(request)
    env_id = request.match_info["env_id"]
    doc = await sessions.view(store, env_id, who.project, session_id)
    model: Json = {"services": cast(Json, _services(doc))}
    patched = apply_patch(model, await read_json(request))
    assert isinstance(patched, dict)  # the root is never replaced (apply_patch refuses)
    changed = await sessions.replace_services(
        store,
        env_id,
        session_id,
        who.project,
        patched.get("services"),
        where="services",
        single_master=single_master_of(request),
    )
    return reply_json({"services": _services(changed)})


def apply_patch(document: Json, patch: Json) -> Json:
    """`document` with the patch applied; every bad operation named by its path."""
    if not isinstance(patch, list):
        raise ValidationFailed("patch", [Problem("patch", "must be a list of operations", patch)])
    for index, op in enumerate(patch):
        where = f"patch[{index}]"
        if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "remove"):
            raise ValidationFailed(
                "patch", [Problem(f"{where}.op", "must be add, replace or remove", _get(op, "op"))]
            )
        path = op.get("path")
        if not isinstance(path, str) or not path.startswith("/services"):
            raise ValidationFailed(
                "patch", [Problem(f"{where}.path", "must be a pointer under /services", path)]
            )
        if op["op"] != "remove" and "value" not in op:
            raise ValidationFailed(
                "patch", [Problem(f"{where}.value", f"is required by {op['op']}", path)]
            )
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
        parent: Any = document
        for token in tokens[:-1]:
            parent = _step(parent, token, where, path)
        last = tokens[-1]
        if isinstance(parent, list):
            size = len(parent) + (1 if op["op"] == "add" else 0)
            if last == "-" and op["op"] == "add":
                position = len(parent)
            elif last.isdigit() and int(last) < size and len(last) < 7:
                position = int(last)
            else:
                raise ValidationFailed(
                    "patch", [Problem(f"{where}.path", f"{path} names no item of the list", path)]
                )
            if op["op"] == "add":
                parent.insert(position, op["value"])
            elif op["op"] == "replace":
                parent[position] = op["value"]
            else:
                del parent[position]
        elif isinstance(parent, dict):
            if op["op"] != "add" and last not in parent:
                raise ValidationFailed(
                    "patch",
                    [Problem(f"{where}.path", f"{path} names no member of the object", path)],
                )
            if op["op"] == "remove":
                del parent[last]
            else:
                parent[last] = op["value"]
        else:
            raise ValidationFailed(
                "patch",
                [
                    Problem(
                        f"{where}.path", f"{path} goes through a value that is no container", path
                    )
                ],
            )
    return document


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else value


def _step(node: Any, token: str, where: str, path: str) -> Any:
    if isinstance(node, list) and token.isdigit() and len(token) < 7 and int(token) < len(node):
        return node[int(token)]
    if isinstance(node, dict) and token in node:
        return node[token]
    raise ValidationFailed(
        "patch", [Problem(f"{where}.path", f"{path} names nothing in the model", path)]
    )


# -- sessions ----------------------------------------------------------------------------


async def configure(request: web.Request) -> web.Response:
    who = await identify(request)
    session = await sessions.open_session(
        store_of(request), request.match_info["env_id"], who.project
    )
    return reply_json(sessions.public(session))


async def show_session(request: web.Request) -> web.Response:
    who = await identify(request)
    session = await sessions.get_session(
        store_of(request),
        request.match_info["env_id"],
        request.match_info["session_id"],
        who.project,
    )
    return reply_json(sessions.public(session))


async def delete_session(request: web.Request) -> web.Response:
    who = await identify(request)
    await sessions.delete_session(
        store_of(request),
        request.match_info["env_id"],
        request.match_info["session_id"],
        who.project,
    )
    return reply_json({})


async def deploy_session(request: web.Request) -> web.Response:
    """Apply the session, then queue `deploy` of every service not yet deployed
    (clusters first); the tasks are Murano's deployments."""
    who = await identify(request)
    store = store_of(request)
    env_id = request.match_info["env_id"]
    doc = await sessions.deploy(store, env_id, request.match_info["session_id"], who.project)
    await _queue_deploys(store, doc, who.project)
    return reply_json({})


async def _queue_deploys(store: Store, doc: EnvironmentDocument, project: ProjectId) -> None:
    pending = [
        o
        for o in sessions.services(doc)
        if o.get("state") == "new" and "deploy" in REGISTRY.get(o["?"]["type"], {})
    ]
    pending.sort(key=lambda o: o["?"]["type"] != "KubernetesCluster")
    for obj in pending:
        await enqueue(
            store,
            new_task(
                environment=EnvironmentId(doc["id"]),
                project=project,
                object_id=ObjectId(obj["?"]["id"]),
                method="deploy",
                args={},
            ),
        )


# -- deployments -------------------------------------------------------------------------

_STATES = {
    "queued": "running",
    "running": "running",
    "succeeded": "success",
    "failed": "completed_w_errors",
}


async def list_deployments(request: web.Request) -> web.Response:
    who = await identify(request)
    store = store_of(request)
    env_id = request.match_info["env_id"]
    await envs.load(store, env_id, who.project)
    found = []
    for task in await recent_tasks(store, env_id, limit=100):
        found.append(
            {
                "id": task["id"],
                "environment_id": env_id,
                "state": _STATES[task["state"]],
                "created": _iso(task["created"]),
                "updated": _iso(task["finished"] or task["created"]),
                "started": _iso(task["created"]),
                "finished": _iso(task["finished"]),
                "description": {"action": task["action"], "object": task["object"]},
                "action": {"object_id": task["object"], "method": task["method"]},
                "result": {"outcome": task["outcome"], "reason": task["reason"] or task["error"]},
            }
        )
    return reply_json({"deployments": found})


async def deployment_reports(request: web.Request) -> web.Response:
    who = await identify(request)
    store = store_of(request)
    env_id, task_id = request.match_info["env_id"], request.match_info["deployment_id"]
    await envs.load(store, env_id, who.project)
    task = await get_task(store, task_id)
    if task["environment"] != env_id or task["project"] != who.project:
        raise NotFound("deployment", task_id)
    reports = []
    for index, line in enumerate(await task_log(store, task_id)):
        stamp = _iso(float(line["time"]))
        reports.append(
            {
                "id": f"{task_id}-{index}",
                "task_id": task_id,
                "entity_id": task["object"],
                "text": line["message"],
                "level": line["level"],
                "created": stamp,
                "updated": stamp,
                "timestamp": stamp,
            }
        )
    return reply_json({"reports": reports})


# -- static actions ----------------------------------------------------------------------


class NoStaticActions(NotFound):
    """Murano's static actions: no catalog class declares one (every action
    acts on an object)."""

    def __init__(self, class_name: str, method: str) -> None:
        MarinaError.__init__(
            self,
            f"{class_name} declares no static action {method!r}: "
            "no class in Marina's catalog declares static actions",
        )
        self.kind, self.ident = "static action", f"{class_name}.{method}"


async def static_action(request: web.Request) -> web.Response:
    await identify(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed("body", [Problem("body", "must be a JSON object", body)])
    problems = [
        Problem(field, "is required: a non-empty string", body.get(field))
        for field in ("className", "methodName")
        if not isinstance(body.get(field), str) or not body.get(field)
    ]
    if not isinstance(body.get("parameters", {}), dict):
        problems.append(Problem("parameters", "must be a JSON object", body.get("parameters")))
    if problems:
        raise ValidationFailed("body", problems)
    raise NoStaticActions(str(body["className"]), str(body["methodName"]))


# -- packages ----------------------------------------------------------------------------


async def _flags(store: Store, name: str) -> dict[str, bool]:
    found = await store.get(keys.package_flags(name))
    value = found.value if found is not None else {}
    return {
        "enabled": bool(value.get("enabled", True)),
        "is_public": bool(value.get("is_public", True)),
    }


async def _murano_package(store: Store, summary: Any) -> MuranoDocument:
    name = str(summary["name"])
    return {
        **summary,
        "id": name,
        "fully_qualified_name": name,
        "type": "Application",
        "author": "Marina",
        "tags": [],
        "categories": [],
        "class_definitions": [summary["class"]],
        "owner_id": "",
        "supplier": {},
        **await _flags(store, name),
    }


async def list_packages_route(request: web.Request) -> web.Response:
    if not is_murano(request):
        return await packages.list_catalog_packages(request)
    await identify(request)
    store = store_of(request)
    raw = request.query.get("limit", "20")
    limit = int(raw) if raw.isdigit() and len(raw) <= 4 else 0
    if not 1 <= limit <= 1000:
        raise ValidationFailed(
            "query", [Problem("limit", "must be an integer from 1 to 1000", raw)]
        )
    marker = request.query.get("marker")
    disabled = request.query.get("include_disabled", "false").lower() in ("true", "1")
    found = [
        await _murano_package(store, p)
        for p in sorted(await list_packages(store), key=lambda p: str(p["name"]))
    ]
    shown = [p for p in found if (disabled or p["enabled"]) and (not marker or p["id"] > marker)]
    reply: MuranoDocument = {"packages": shown[:limit]}
    if len(shown) > limit:  # Murano leaves the marker out on the last page
        reply["next_marker"] = shown[limit - 1]["id"]
    return reply_json(reply)


async def show_package(request: web.Request) -> web.Response:
    await identify(request)
    store = store_of(request)
    package = await get_package(store, request.match_info["package_id"])
    return reply_json(await _murano_package(store, package.summary()))


async def download_package(request: web.Request) -> web.Response:
    await identify(request)
    package = await get_package(store_of(request), request.match_info["package_id"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.yaml", yaml.safe_dump(package.manifest, sort_keys=False))
        for path, data in sorted(package.files.items()):
            archive.writestr(path, data)
    return web.Response(
        body=buffer.getvalue(),
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{package.name}.zip"'},
    )


async def _admin(request: web.Request, what: str) -> None:
    who = await identify(request)
    if not who.admin:
        raise Unauthorized(f"{what} needs an admin token")


async def delete_package(request: web.Request) -> web.Response:
    await _admin(request, "deleting packages")
    store = store_of(request)
    name = request.match_info["package_id"]
    await get_package(store, name)
    await store.delete(f"{keys.PACKAGES}{name}")
    await store.delete(keys.package_flags(name))
    return reply_json({})


async def update_package(request: web.Request) -> web.Response:
    """Murano's package patch: `enabled` and `is_public` may be replaced."""
    await _admin(request, "changing packages")
    store = store_of(request)
    name = request.match_info["package_id"]
    package = await get_package(store, name)
    patch = await read_json(request)
    if not isinstance(patch, list):
        raise ValidationFailed("patch", [Problem("patch", "must be a list of operations", patch)])
    flags = await _flags(store, name)
    problems = []
    for index, op in enumerate(patch):
        path = op.get("path") if isinstance(op, dict) else None
        field = path[1:] if isinstance(path, str) else None
        if not isinstance(op, dict) or op.get("op") != "replace" or field not in flags:
            problems.append(
                Problem(
                    f"patch[{index}].path",
                    f"{path}: only 'replace' of /enabled or /is_public is supported",
                    path,
                )
            )
        elif not isinstance(op.get("value"), bool):
            problems.append(
                Problem(f"patch[{index}].value", "must be true or false", op.get("value"))
            )
        else:
            flags[field] = op["value"]
    if problems:
        raise ValidationFailed("patch", problems)
    await store.put(keys.package_flags(name), flags)
    return reply_json(await _murano_package(store, package.summary()))


async def list_categories(request: web.Request) -> web.Response:
    await identify(request)
    found = await list_packages(store_of(request))
    names = sorted({str(c) for p in found for c in cast(dict[str, Any], p).get("categories") or []})
    return reply_json({"categories": [{"id": n, "name": n, "package_count": 0} for n in names]})


MURANO_KEYS = ("Format", "FullName", "Type", "Classes", "UI")


async def upload_package(request: web.Request) -> web.Response:
    """Murano's multipart upload (`__metadata__` and the zip), or Marina's own."""
    if not request.content_type.startswith("multipart/"):
        return await packages.upload_package(request)
    await _admin(request, "uploading packages")
    data = b""
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader) and part.filename:
            while chunk := await part.read_chunk():
                data += chunk
                if len(data) > MAX_BODY:
                    raise TooLarge("package", MAX_BODY)
            break
    if not data:
        raise ValidationFailed("body", [Problem("file", "is required: the package's zip")])
    refused = murano_format_problems(data)
    if refused:
        raise ValidationFailed("package", refused)
    package = load_zip(data, source="upload")
    change = await save_package(store_of(request), package, allow_downgrade=True)
    return reply_json(
        {**await _murano_package(store_of(request), package.summary()), **change}, 201
    )


def murano_format_problems(data: bytes) -> list[Problem]:
    """What in a Murano-format package (MuranoPL) Marina cannot take; [] for others."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            manifest = yaml.safe_load(archive.read("manifest.yaml")[:65536])
            names = archive.namelist()
    except (zipfile.BadZipFile, KeyError, yaml.YAMLError, ValueError, OSError):
        return []  # Marina's loader names what is wrong with it
    if not isinstance(manifest, dict) or not any(k in manifest for k in MURANO_KEYS):
        return []
    problems = [
        Problem(
            "manifest.yaml Format",
            "MuranoPL packages are programs in MuranoPL, which Marina does not run; "
            "write a marina/1 manifest (format, name, version, class, properties)",
            manifest.get("Format", "MuranoPL/1.0"),
        )
    ]
    classes = manifest.get("Classes")
    for cls, path in classes.items() if isinstance(classes, dict) else []:
        problems.append(
            Problem(f"Classes/{path}", "MuranoPL class definitions are not supported", cls)
        )
    problems += [
        Problem(n, "Murano dynamic UI forms are not supported; Marina forms come from properties")
        for n in names
        if n.startswith("UI/") and not n.endswith("/")
    ]
    return problems
