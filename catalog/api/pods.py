"""Routes that say how an environment runs: one status summary (applications,
pods and their replicas, public URLs, nodes, recent tasks), a pod's logs, and
the removal of one object (an application, a pod, a cluster).

Pods and objects are named by id or by name; logs come from the engine
through its protocol (`Engine.logs`), so they work with every driver.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from catalog import environments as envs
from catalog.api.handling import identify, reply_json, store_of
from catalog.documents import (
    ApplicationLine,
    ClusterLine,
    EnvironmentDocument,
    EnvironmentObject,
    EnvironmentStatus,
    PodLine,
    PodObject,
    PodStatus,
    ReplicaLine,
    TaskSummary,
    is_application,
    is_cluster,
    is_pod,
)
from catalog.engines.base import ClusterKey, Engine, PodId
from catalog.errors import Conflict, NotFound, NotSupported, Problem, ValidationFailed
from catalog.ids import EnvironmentId, ObjectId
from catalog.quotas import QUOTAS
from catalog.tasks import collect_tasks, enqueue, new_task, recent_tasks

ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
MAX_TAIL = 100_000
MAX_FOLLOW = 3600.0
DISCONNECT_CHECK = 1.0
"""Seconds between checks that a follower of a quiet log is still connected."""


def find_object(doc: EnvironmentDocument, ref: str, *, kinds: tuple[str, ...]) -> EnvironmentObject:
    """The object of one of `kinds` whose id or name is `ref`."""
    found = [o for o in doc["objects"].values() if o["?"]["type"] in kinds]
    for obj in found:
        if obj["?"]["id"] == ref:
            return obj
    named = [o for o in found if o["?"]["name"] == ref]
    if len(named) == 1:
        return named[0]
    what = "pod" if kinds == ("KubernetesPod",) else "object"
    raise NotFound(what, ref)


def pod_summary(pod: PodObject) -> PodLine:
    status: PodStatus = pod.get("status") or {"replicas": [], "pending": ""}
    replicas: list[ReplicaLine] = [
        {
            "index": i,
            "name": r["name"],
            "node": r["node"],
            "address": r["address"],
            "ready": r["ready"],
            "restarts": r["restarts"],
            "reason": r["reason"],
        }
        for i, r in enumerate(status.get("replicas", []))
    ]
    return {
        "id": pod["?"]["id"],
        "name": pod["?"]["name"],
        "state": pod["state"],
        "cluster": pod.get("cluster"),
        "app": pod.get("app"),
        "desired": pod["replicas"]["desired"],
        "ready": pod["replicas"]["ready"],
        "restarts": sum(r["restarts"] for r in replicas),
        "pending": status.get("pending", ""),
        "endpoints": pod.get("endpoints", []),
        "replicas": replicas,
    }


def status_of(doc: EnvironmentDocument, tasks: Sequence[TaskSummary]) -> EnvironmentStatus:
    """The environment in one summary, in the order its objects were added."""
    objects = [doc["objects"][i] for i in doc["order"]]
    clusters: list[ClusterLine] = []
    applications: list[ApplicationLine] = []
    pods: list[PodLine] = []
    for obj in objects:
        kind = obj["?"]["type"]
        if is_cluster(obj):
            nodes = envs.nodes_of(doc, obj)
            clusters.append(
                {
                    "id": obj["?"]["id"],
                    "name": obj["?"]["name"],
                    "state": obj["state"],
                    "endpoints": obj.get("endpoints", []),
                    "nodes": [
                        {
                            "name": n["?"]["name"],
                            "role": n["role"],
                            "state": n["state"],
                            "address": n["address"],
                        }
                        for n in nodes
                    ],
                }
            )
        elif is_pod(obj):
            pods.append(pod_summary(obj))
        elif is_application(obj):
            applications.append(
                {
                    "id": obj["?"]["id"],
                    "name": obj["?"]["name"],
                    "type": kind,
                    "package": obj["?"].get("package"),
                    "state": obj["state"],
                    "pods": [doc["objects"][p]["?"]["name"] for p in obj["pods"]],
                }
            )
    urls = sorted({u for p in pods for u in p["endpoints"]})
    return {
        "id": doc["id"],
        "name": doc["name"],
        "status": doc["status"],
        "applications": applications,
        "pods": pods,
        "clusters": clusters,
        "urls": urls,
        "tasks": [
            {
                "id": t["id"],
                "object": t["object"],
                "method": t["method"],
                "state": t["state"],
                "outcome": t["outcome"],
                "reason": t["reason"],
                "error": t["error"],
            }
            for t in tasks
        ],
    }


async def environment_status(request: web.Request) -> web.Response:
    who = await identify(request)
    store = store_of(request)
    doc = (await envs.load(store, request.match_info["env_id"], who.project)).value
    tasks = await recent_tasks(store, doc["id"], limit=5)
    return reply_json(status_of(doc, tasks))


def _logs_query(request: web.Request) -> tuple[int, int | None, bool, float]:
    query = request.query
    problems = []
    values: dict[str, int] = {}
    for name, default, most in (("replica", "0", 10_000), ("tail", "", MAX_TAIL)):
        raw = query.get(name, default)
        if name == "tail" and raw == "":
            continue
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 6 and int(raw) <= most):
            problems.append(Problem(name, f"must be an integer from 0 to {most}", raw))
        else:
            values[name] = int(raw)
    follow = query.get("follow", "0")
    if follow not in ("0", "1", "true", "false", "yes", "no"):
        problems.append(Problem("follow", "must be 1, true, yes, 0, false or no", follow))
    raw_timeout = query.get("timeout", str(MAX_FOLLOW))
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
    return values.get("replica", 0), values.get("tail"), follow in ("1", "true", "yes"), timeout


async def pod_logs(request: web.Request) -> web.StreamResponse:
    """A replica's output as text; ?follow=1 keeps the response open for more."""
    who = await identify(request)
    replica, tail, follow, timeout = _logs_query(request)
    doc = (await envs.load(store_of(request), request.match_info["env_id"], who.project)).value
    pod = find_object(doc, request.match_info["pod"], kinds=("KubernetesPod",))
    cluster = doc["objects"].get(pod.get("cluster") or "")
    engine = request.app.get(ENGINE)
    if engine is None:
        raise NotSupported("api", "logs without an engine")
    if cluster is None or cluster["state"] == "new" or pod["state"] == "new":
        raise Conflict(f"pod {pod['?']['name']!r}", "it is not deployed yet")
    chunks = engine.logs(
        ClusterKey(cluster["key"]), PodId(pod["?"]["id"]), replica=replica, tail=tail, follow=follow
    )
    # The first chunk (or the engine's refusal: no such replica) comes before
    # the response starts, so errors still answer with their status.
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=16)
    pump = asyncio.create_task(_pump(chunks, queue))
    try:
        first = await _next(queue, request, deadline=None)
        if isinstance(first, BaseException):
            raise first
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        if first:
            await response.write(first)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(ConnectionResetError):  # the follower left
            while first is not None:
                item = await _next(queue, request, deadline=deadline)
                if item is None or isinstance(item, BaseException):
                    break  # the replica went away, or the follower did: the log ends here
                await response.write(item)
            await response.write_eof()
        return response
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump
        with contextlib.suppress(Exception):
            await chunks.aclose()  # type: ignore[attr-defined]


async def _pump(
    chunks: AsyncIterator[bytes], queue: asyncio.Queue[bytes | BaseException | None]
) -> None:
    try:
        async for chunk in chunks:
            await queue.put(chunk)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # handed to the handler, which answers with it
        await queue.put(exc)
        return
    await queue.put(None)


async def _next(
    queue: asyncio.Queue[bytes | BaseException | None],
    request: web.Request,
    *,
    deadline: float | None,
) -> bytes | BaseException | None:
    """The next chunk; None when the log ends, the follower left or time is up."""
    loop = asyncio.get_running_loop()
    while True:
        if deadline is not None and loop.time() >= deadline:
            return None
        transport = request.transport
        if transport is None or transport.is_closing():
            return None
        try:
            return await asyncio.wait_for(queue.get(), DISCONNECT_CHECK)
        except TimeoutError:
            if deadline is None:
                return b""  # nothing yet: start the response, keep waiting


NODES = ("MasterNode", "MinionNode", "GatewayNode")


async def remove_object(request: web.Request) -> web.Response:
    """Queue the removal of an application, a pod or a cluster (a task)."""
    who = await identify(request)
    store = store_of(request)
    doc = (await envs.load(store, request.match_info["env_id"], who.project)).value
    envs.require_live(doc)
    ref = request.match_info["object_id"]
    kinds = tuple({o["?"]["type"] for o in doc["objects"].values()} - set(NODES))
    obj = find_object(doc, ref, kinds=kinds)
    if obj["?"]["type"] == "KubernetesCluster":
        on_it = sorted(
            o["?"]["name"]
            for o in doc["objects"].values()
            if o.get("cluster") == obj["?"]["id"] and o["?"]["type"] not in NODES
        )
        if on_it:
            raise Conflict(
                f"cluster {obj['?']['name']!r}",
                f"it still has {', '.join(on_it)}: remove them first",
            )
    await collect_tasks(store, who.project, keep=QUOTAS.tasks - 1)  # removing is never refused
    task = new_task(
        environment=EnvironmentId(doc["id"]),
        project=who.project,
        object_id=ObjectId(obj["?"]["id"]),
        method="remove",
        args={},
    )
    await enqueue(store, task)
    return reply_json({"task_id": task["id"]}, 202)
