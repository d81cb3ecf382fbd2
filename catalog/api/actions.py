"""Routes of actions: what each object offers, running one (a queued task),
and its result the way Murano reports it."""

from __future__ import annotations

from aiohttp import web

from catalog import environments as envs
from catalog import quotas
from catalog.api.handling import identify, read_json, reply_json, store_of
from catalog.api.tasks import own_task
from catalog.classes.registry import actions_of, check_arguments, find_action
from catalog.documents import ListedAction
from catalog.errors import NotFound
from catalog.ids import EnvironmentId, ObjectId, ProjectId
from catalog.quotas import QUOTAS
from catalog.store import Store
from catalog.tasks import collect_tasks, enqueue, murano_result, new_task


async def list_actions(request: web.Request) -> web.Response:
    who = await identify(request)
    doc = (await envs.load(store_of(request), request.match_info["env_id"], who.project)).value
    actions: list[ListedAction] = []
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
    return reply_json({"actions": actions})


async def run_action(request: web.Request) -> web.Response:
    who = await identify(request)
    store = store_of(request)
    env_id = request.match_info["env_id"]
    doc = (await envs.load(store, env_id, who.project)).value
    envs.require_live(doc)
    object_id, spec = find_action(doc["objects"], request.match_info["action_id"])
    args = check_arguments(spec, await read_json(request))
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
    return reply_json({"task_id": task["id"]}, 202)


async def _make_room_for_task(store: Store, project: ProjectId) -> None:
    """The oldest finished tasks go to keep the project's history within its quota."""
    stored = await collect_tasks(store, project, keep=QUOTAS.tasks - 1)
    quotas.check("tasks", QUOTAS.tasks, used=stored)


async def action_result(request: web.Request) -> web.Response:
    task = await own_task(request, request.match_info["task_id"])
    if task["environment"] != request.match_info["env_id"]:
        raise NotFound("task", request.match_info["task_id"])
    return reply_json(murano_result(task))
