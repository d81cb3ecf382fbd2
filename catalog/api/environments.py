"""Routes of environments and the applications (services) added to them."""

from __future__ import annotations

from aiohttp import web

from catalog import environments as envs
from catalog.api.handling import (
    authorization,
    identify,
    present_environment,
    read_json,
    read_paging,
    reply_json,
    shown_environments,
    single_master_of,
    store_of,
)
from catalog.classes.registry import with_actions
from catalog.errors import Problem, Unauthorized, ValidationFailed
from catalog.ids import EnvironmentId, ObjectId
from catalog.quotas import QUOTAS
from catalog.tasks import collect_tasks, enqueue, new_task


async def list_environments(request: web.Request) -> web.Response:
    who = await identify(request)
    limit, marker = read_paging(request)
    page, following = await envs.list_environments(
        store_of(request), who.project, limit=limit, marker=marker
    )
    return reply_json({"environments": page, "next_marker": following})


async def create_environment(request: web.Request) -> web.Response:
    who = await identify(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed("body", [Problem("body", "must be a JSON object", body)])
    doc = await envs.create_environment(
        store_of(request), name=body.get("name"), project=who.project
    )
    return reply_json(envs.summary(doc), 201)


async def import_environment(request: web.Request) -> web.Response:
    who = await identify(request)
    doc = await envs.import_snapshot(
        store_of(request),
        who.project,
        await read_json(request),
        single_master=single_master_of(request),
    )
    return reply_json(present_environment(doc), 201)


async def show_environment(request: web.Request) -> web.Response:
    store = store_of(request)
    shown = shown_environments(store)
    env_id = request.match_info["env_id"]
    try:
        body = await shown.reply(store, env_id, authorization(request))
    except Unauthorized:
        # Not a Marina token (a Keystone one, say): identified as on every route.
        who = await identify(request)
        body = await shown.reply_to(store, env_id, who.project)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def delete_environment(request: web.Request) -> web.Response:
    who = await identify(request)
    store = store_of(request)
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
    return reply_json({"task_id": task["id"]}, 202)


async def add_service(request: web.Request) -> web.Response:
    who = await identify(request)
    dry_run = request.query.get("dry_run", "0")
    if dry_run not in ("0", "1", "true", "false"):
        raise ValidationFailed(
            "query", [Problem("dry_run", "must be 1, true, 0 or false", dry_run)]
        )
    checking = dry_run in ("1", "true")
    objects = await envs.add_application(
        store_of(request),
        request.match_info["env_id"],
        who.project,
        await read_json(request),
        dry_run=checking,
        single_master=single_master_of(request),
    )
    return reply_json([with_actions(o) for o in objects], 200 if checking else 201)


async def list_services(request: web.Request) -> web.Response:
    who = await identify(request)
    services = await envs.services_of(store_of(request), request.match_info["env_id"], who.project)
    return reply_json([with_actions(o) for o in services])
