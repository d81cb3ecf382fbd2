"""The REST API (Murano-compatible where Murano has the route).

Errors are mapped to HTTP in one place, `_errors`: a `MarinaError` answers
with its status and a JSON body naming the problem; anything else is a bug,
logged here and answered 500 without details.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

import catalog.classes  # noqa: F401  (the classes register their actions)
from catalog import environments as envs
from catalog import quotas
from catalog.api.openapi import openapi_document
from catalog.api.serving import LIMITS
from catalog.auth import Identity, authenticate, issue_token
from catalog.classes.registry import actions_of, check_arguments, find_action, with_actions
from catalog.errors import (
    MarinaError,
    NotFound,
    Problem,
    RequestTimeout,
    TooLarge,
    Unauthorized,
    ValidationFailed,
)
from catalog.ids import EnvironmentId, ObjectId, ProjectId
from catalog.packages import list_packages, load_zip, save_package
from catalog.quotas import QUOTAS
from catalog.store import Store
from catalog.tasks import TASKS as TASKS_PREFIX
from catalog.tasks import (
    collect_tasks,
    enqueue,
    follow_task,
    get_task,
    murano_result,
    new_task,
    recent_tasks,
    task_file,
    task_log,
)
from catalog.translators import import_package as translate_package
from catalog.validation import encodable, parse_json

log = logging.getLogger(__name__)

MAX_BODY = 2 * 1024 * 1024
PAGE_DEFAULT = 100
PAGE_MAX = 1000
MAX_FOLLOW = 3600.0
STORE: web.AppKey[Store] = web.AppKey("store", Store)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        _check_request_text(request)
        return await handler(request)
    except MarinaError as exc:
        response = _json(exc.payload(), exc.status)
        if exc.status == 503:  # the store is away; `marina up` brings it back
            response.headers["Retry-After"] = "1"
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _json({"error": "http", "message": exc.reason}, exc.status)
        if "Allow" in exc.headers:  # a 405 says which methods the route takes
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _json({"error": "internal", "message": "internal error; see the server log"}, 500)


def _store(request: web.Request) -> Store:
    return request.app[STORE]


def _shown(doc: dict[str, Any]) -> dict[str, Any]:
    """An environment as users see it: each object with its actions, secrets hidden."""
    shown = envs.show(doc)
    return {**shown, "objects": [with_actions(o) for o in shown["objects"]]}


async def _identity(request: web.Request) -> Identity:
    header = request.headers.get("Authorization")
    # EventSource cannot send headers: event streams also take ?access_token=.
    if header is None and request.path.endswith("/events"):
        token = request.query.get("access_token")
        header = f"Bearer {token}" if token else None
    return await authenticate(_store(request), header)


def _check_request_text(request: web.Request) -> None:
    """Path and query values that are not valid Unicode are refused before any
    handler sees them (they would break every client that shows them)."""
    problems = [
        Problem(name, "is not valid Unicode")
        for name, value in [*request.match_info.items(), *request.query.items()]
        if not encodable(name) or not encodable(value)
    ]
    if problems:
        raise ValidationFailed("request", problems)


async def _read(request: web.Request, *, what: str, limit: int = MAX_BODY) -> bytes:
    """The whole body, refused once over `limit` or when it trickles in too slowly."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(what, limit)
    try:
        async with asyncio.timeout(LIMITS.body_timeout):
            data = await request.content.read(limit + 1)
            while len(data) <= limit and not request.content.at_eof():
                more = await request.content.read(limit + 1 - len(data))
                if not more:
                    break
                data += more
    except TimeoutError:
        raise RequestTimeout(what, LIMITS.body_timeout) from None
    if len(data) > limit:
        raise TooLarge(what, limit)
    return data


async def _body(request: web.Request) -> Any:
    raw = await _read(request, what="body")
    if not raw:
        return {}
    return parse_json(raw, what="body")


def _paging(request: web.Request) -> tuple[int, str | None]:
    """Murano's paging: at most `limit` items, those after `marker` in the list's order."""
    raw = request.query.get("limit", str(PAGE_DEFAULT))
    limit = int(raw) if raw.isdigit() and len(raw) <= 6 else 0
    if not 1 <= limit <= PAGE_MAX:
        raise ValidationFailed(
            "query", [Problem("limit", f"must be an integer from 1 to {PAGE_MAX}", raw)]
        )
    return limit, request.query.get("marker")


# -- environments -------------------------------------------------------------


async def list_environments(request: web.Request) -> web.Response:
    who = await _identity(request)
    limit, marker = _paging(request)
    page, following = await envs.list_environments(
        _store(request), who.project, limit=limit, marker=marker
    )
    return _json({"environments": page, "next_marker": following})


async def create_environment(request: web.Request) -> web.Response:
    who = await _identity(request)
    body = await _body(request)
    if not isinstance(body, dict):
        raise ValidationFailed("body", [Problem("body", "must be a JSON object", body)])
    doc = await envs.create_environment(_store(request), name=body.get("name"), project=who.project)
    return _json(envs.summary(doc), 201)


async def import_environment(request: web.Request) -> web.Response:
    who = await _identity(request)
    doc = await envs.import_snapshot(_store(request), who.project, await _body(request))
    return _json(_shown(doc), 201)


async def show_environment(request: web.Request) -> web.Response:
    who = await _identity(request)
    found = await envs.load(_store(request), request.match_info["env_id"], who.project)
    return _json(_shown(found.value))


async def delete_environment(request: web.Request) -> web.Response:
    who = await _identity(request)
    store = _store(request)
    env_id = request.match_info["env_id"]
    await envs.load(store, env_id, who.project)
    await collect_tasks(store, who.project, keep=QUOTAS.tasks - 1)  # deleting is never refused
    task = new_task(
        environment=EnvironmentId(env_id),
        project=who.project,
        object_id=ObjectId(env_id),
        method="destroy",
        args={},
    )
    await enqueue(store, task)
    return _json({"task_id": task["id"]}, 202)


async def add_service(request: web.Request) -> web.Response:
    who = await _identity(request)
    objects = await envs.add_application(
        _store(request), request.match_info["env_id"], who.project, await _body(request)
    )
    return _json([with_actions(o) for o in objects], 201)


async def list_services(request: web.Request) -> web.Response:
    who = await _identity(request)
    services = await envs.services_of(_store(request), request.match_info["env_id"], who.project)
    return _json([with_actions(o) for o in services])


# -- actions and tasks ----------------------------------------------------------


async def list_actions(request: web.Request) -> web.Response:
    who = await _identity(request)
    doc = (await envs.load(_store(request), request.match_info["env_id"], who.project)).value
    actions = []
    for obj_id in doc["order"]:
        obj = doc["objects"][obj_id]
        for spec in actions_of(obj):
            actions.append(
                {
                    **spec.describe(obj_id),
                    "object": obj_id,
                    "objectName": obj["?"]["name"],
                    "objectType": obj["?"]["type"],
                }
            )
    return _json({"actions": actions})


async def run_action(request: web.Request) -> web.Response:
    who = await _identity(request)
    store = _store(request)
    env_id = request.match_info["env_id"]
    doc = (await envs.load(store, env_id, who.project)).value
    envs.require_live(doc)
    object_id, spec = find_action(doc["objects"], request.match_info["action_id"])
    args = check_arguments(spec, await _body(request))
    await envs.check_action_quota(store, who.project, doc, object_id, spec.method, args)
    await _make_room_for_task(store, who.project)
    task = new_task(
        environment=EnvironmentId(env_id),
        project=who.project,
        object_id=ObjectId(object_id),
        method=spec.method,
        args=args,
    )
    await enqueue(store, task)
    return _json({"task_id": task["id"]}, 202)


async def _make_room_for_task(store: Store, project: ProjectId) -> None:
    """The oldest finished tasks go to keep the project's history within its quota."""
    stored = await collect_tasks(store, project, keep=QUOTAS.tasks - 1)
    quotas.check("tasks", QUOTAS.tasks, used=stored)


async def _own_task(request: web.Request, task_id: str) -> dict[str, Any]:
    who = await _identity(request)
    task = await get_task(_store(request), task_id)
    if task["project"] != who.project:
        raise NotFound("task", task_id)
    return dict(task)


async def action_result(request: web.Request) -> web.Response:
    task = await _own_task(request, request.match_info["task_id"])
    if task["environment"] != request.match_info["env_id"]:
        raise NotFound("task", request.match_info["task_id"])
    return _json(murano_result(task))  # type: ignore[arg-type]


async def show_task(request: web.Request) -> web.Response:
    return _json(await _own_task(request, request.match_info["task_id"]))


async def show_task_log(request: web.Request) -> web.StreamResponse:
    task_id = request.match_info["task_id"]
    await _own_task(request, task_id)
    store = _store(request)
    follow = request.query.get("follow", "0")
    raw_timeout = request.query.get("timeout", "600")
    problems = []
    if follow not in ("0", "1", "true", "false", "yes", "no"):
        problems.append(Problem("follow", "must be 1, true, yes, 0, false or no", follow))
    try:
        timeout = float(raw_timeout)
    except ValueError:
        timeout = -1.0
    if not 0 < timeout <= MAX_FOLLOW:  # also refuses nan
        problems.append(
            Problem(
                "timeout", f"must be a number of seconds above 0, at most {MAX_FOLLOW}", raw_timeout
            )
        )
    if problems:
        raise ValidationFailed("query", problems)
    if follow not in ("1", "true", "yes"):
        return _json({"log": await task_log(store, task_id)})
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    async for kind, item in follow_task(store, task_id, timeout=timeout):
        if kind == "log":
            await response.write(json.dumps(item).encode() + b"\n")
        elif item["state"] in ("succeeded", "failed"):
            await response.write(json.dumps({"state": item["state"]}).encode() + b"\n")
    await response.write_eof()
    return response


async def list_tasks(request: web.Request) -> web.Response:
    who = await _identity(request)
    env_id = request.match_info["env_id"]
    await envs.load(_store(request), env_id, who.project)
    return _json({"tasks": await recent_tasks(_store(request), env_id)})


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, event: str, data: Any) -> None:
    payload = json.dumps(data, default=str)
    await response.write(f"event: {event}\ndata: {payload}\n\n".encode())


async def environment_events(request: web.Request) -> web.StreamResponse:
    """The environment (objects, actions) and its tasks, again after every change."""
    who = await _identity(request)
    store = _store(request)
    env_id = request.match_info["env_id"]
    await envs.load(store, env_id, who.project)
    response = await _sse(request)
    changed = asyncio.Event()

    async def follow(prefix: str) -> None:
        async for change in store.watch(prefix):
            if prefix == TASKS_PREFIX and (change.value or {}).get("environment") != env_id:
                continue
            changed.set()

    watchers = [
        asyncio.create_task(follow(envs.env_key(env_id))),
        asyncio.create_task(follow(TASKS_PREFIX)),
    ]
    try:
        while True:
            changed.clear()
            found = await store.get(envs.env_key(env_id))
            if found is None:
                await _send(response, "deleted", {"id": env_id})
                break
            await _send(response, "environment", _shown(found.value))
            await _send(response, "tasks", await recent_tasks(store, env_id))
            try:
                await asyncio.wait_for(changed.wait(), 15)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
            await asyncio.sleep(0.05)  # one update for a burst of changes
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    return response


async def task_events(request: web.Request) -> web.StreamResponse:
    """A task's log lines as they come, then its final state."""
    task_id = request.match_info["task_id"]
    await _own_task(request, task_id)
    store = _store(request)
    response = await _sse(request)
    try:
        async for kind, item in follow_task(store, task_id):
            await _send(response, kind, item)
            if kind == "task" and item["state"] in ("succeeded", "failed"):
                await _send(response, "done", murano_result(item))
    except ConnectionResetError:
        pass
    return response


async def task_file_download(request: web.Request) -> web.Response:
    task_id, name = request.match_info["task_id"], request.match_info["name"]
    await _own_task(request, task_id)
    content_type, data = await task_file(_store(request), task_id, name)
    safe = name.replace('"', "")
    return web.Response(
        body=data,
        content_type=content_type,
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )


# -- catalog --------------------------------------------------------------------


async def packages(request: web.Request) -> web.Response:
    await _identity(request)
    limit, marker = _paging(request)
    found = sorted(await list_packages(_store(request)), key=lambda p: str(p["name"]))
    after = [p for p in found if marker is None or str(p["name"]) > marker]
    following = str(after[limit - 1]["name"]) if len(after) > limit else None
    return _json({"packages": after[:limit], "next_marker": following})


async def upload_package(request: web.Request) -> web.Response:
    who = await _identity(request)
    if not who.admin:
        raise Unauthorized("uploading packages needs an admin token")
    allow = request.query.get("allow_downgrade", "false")
    if allow not in ("true", "false", "1", "0"):
        raise ValidationFailed(
            "query", [Problem("allow_downgrade", "must be true or false", allow)]
        )
    data = await _read(request, what="package")
    package = load_zip(data, source=request.query.get("filename", "upload"))
    stored = {p["name"] for p in await list_packages(_store(request))}
    if package.name not in stored:
        quotas.check("packages", QUOTAS.packages, used=len(stored))
    change = await save_package(_store(request), package, allow_downgrade=allow in ("true", "1"))
    return _json({**package.summary(), **change}, 201)


async def import_package(request: web.Request) -> web.Response:
    who = await _identity(request)
    if not who.admin:
        raise Unauthorized("importing packages needs an admin token")
    data = await _read(request, what="file")
    flag = {"true", "1"}
    dry_run = request.query.get("dry_run", "") in flag
    result = await translate_package(
        _store(request),
        data,
        filename=request.query.get("filename", "upload"),
        fmt=request.query.get("format"),
        name=request.query.get("name"),
        dry_run=dry_run,
        replace=request.query.get("replace", "") in flag,
    )
    return _json(result, 200 if dry_run else 201)


async def create_token(request: web.Request) -> web.Response:
    who = await _identity(request)
    if not who.admin:
        raise Unauthorized("issuing tokens needs an admin token")
    body = await _body(request)
    project = body.get("project") if isinstance(body, dict) else None
    token = await issue_token(
        _store(request),
        project=project,  # type: ignore[arg-type]
        admin=bool(isinstance(body, dict) and body.get("admin")),
    )
    return _json({"token": token, "project": project}, 201)


async def openapi(request: web.Request) -> web.Response:
    return _json(openapi_document())


DASHBOARD = Path(__file__).resolve().parent.parent / "dashboard"


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        DASHBOARD / "index.html",
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP},
    )


# The dashboard loads only its own script and style; no inline code runs.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def make_app(store: Store) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY)
    app[STORE] = store
    r = app.router
    r.add_get("/v1/openapi.json", openapi)
    r.add_get("/v1/environments", list_environments)
    r.add_post("/v1/environments", create_environment)
    r.add_post("/v1/environments/import", import_environment)
    r.add_get("/v1/environments/{env_id}", show_environment)
    r.add_delete("/v1/environments/{env_id}", delete_environment)
    r.add_get("/v1/environments/{env_id}/services", list_services)
    r.add_post("/v1/environments/{env_id}/services", add_service)
    r.add_get("/v1/environments/{env_id}/actions", list_actions)
    r.add_post("/v1/environments/{env_id}/actions/{action_id}", run_action)
    r.add_get("/v1/environments/{env_id}/actions/{task_id}", action_result)
    r.add_get("/v1/environments/{env_id}/tasks", list_tasks)
    r.add_get("/v1/environments/{env_id}/events", environment_events)
    r.add_get("/v1/tasks/{task_id}", show_task)
    r.add_get("/v1/tasks/{task_id}/events", task_events)
    r.add_get("/v1/tasks/{task_id}/log", show_task_log)
    r.add_get("/v1/tasks/{task_id}/files/{name}", task_file_download)
    r.add_get("/v1/catalog/packages", packages)
    r.add_post("/v1/catalog/packages", upload_package)
    r.add_post("/v1/packages/import", import_package)
    r.add_post("/v1/tokens", create_token)
    r.add_get("/", dashboard)
    r.add_static("/dashboard/", DASHBOARD)
    return app
