"""Routes of tasks: their state, their log (whole or followed), their files.

A task is seen only from its own project; `own_task` is that check for every
route that names a task.
"""

from __future__ import annotations

import json

from aiohttp import web

from catalog import environments as envs
from catalog.api.handling import identify, reply_json, store_of
from catalog.classes.registry import shown_task
from catalog.documents import TaskDoc
from catalog.errors import NotFound, Problem, ValidationFailed
from catalog.tasks import follow_task, get_task, recent_tasks, task_file, task_log

MAX_FOLLOW = 3600.0


async def own_task(request: web.Request, task_id: str) -> TaskDoc:
    who = await identify(request)
    task = await get_task(store_of(request), task_id)
    if task["project"] != who.project:
        raise NotFound("task", task_id)
    return shown_task(task)


async def show_task(request: web.Request) -> web.Response:
    return reply_json(await own_task(request, request.match_info["task_id"]))


async def show_task_log(request: web.Request) -> web.StreamResponse:
    task_id = request.match_info["task_id"]
    await own_task(request, task_id)
    store = store_of(request)
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
        return reply_json({"log": await task_log(store, task_id)})
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
    who = await identify(request)
    env_id = request.match_info["env_id"]
    await envs.load(store_of(request), env_id, who.project)
    return reply_json({"tasks": await recent_tasks(store_of(request), env_id)})


async def task_file_download(request: web.Request) -> web.Response:
    task_id, name = request.match_info["task_id"], request.match_info["name"]
    await own_task(request, task_id)
    content_type, data = await task_file(store_of(request), task_id, name)
    safe = name.replace('"', "")
    return web.Response(
        body=data,
        content_type=content_type,
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )
