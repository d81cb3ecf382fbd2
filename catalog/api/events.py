"""The dashboard's two Server-Sent Events streams.

An environment's stream sends the whole environment and its recent tasks
again after every change (followed by watches on etcd), so the page never
merges partial updates; a task's stream sends its log lines and its end.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from catalog import environments as envs
from catalog.api.handling import identify, present_environment, store_of
from catalog.api.tasks import own_task
from catalog.classes.registry import shown_task
from catalog.tasks import TASKS as TASKS_PREFIX
from catalog.tasks import follow_task, murano_result, recent_tasks


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
    who = await identify(request)
    store = store_of(request)
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
            await _send(response, "environment", present_environment(found.value))
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
    await own_task(request, task_id)
    store = store_of(request)
    response = await _sse(request)
    try:
        async for kind, item in follow_task(store, task_id):
            await _send(response, kind, shown_task(item) if kind == "task" else item)
            if kind == "task" and item["state"] in ("succeeded", "failed"):
                await _send(response, "done", murano_result(item))
    except ConnectionResetError:
        pass
    return response
