"""Tasks: every action run, queued per environment and run one at a time.

A task is a document in etcd (`queued`, `running`, `succeeded`, `failed`)
with an outcome (`changed` or `noop` and a reason), a structured result,
timestamped log lines and attached files. Each environment has a queue; a
worker that holds the environment's lock (a key bound to the worker's lease)
runs its tasks in order. If a worker dies, its lease expires, the lock goes
with it, and whoever takes the lock next finds the task still `running`: it
runs it again (actions are idempotent steps) or, after `MAX_ATTEMPTS`, fails
it with the reason. A task is never left `running`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from catalog import keys
from catalog.documents import JsonObject, LogLine, TaskDoc, TaskSummary
from catalog.errors import ActionFailed, MarinaError, NotFound, StoreUnavailable
from catalog.ids import EnvironmentId, ObjectId, ProjectId, TaskId, new_id
from catalog.store import Store

log = logging.getLogger(__name__)

TASKS = keys.TASKS
LOGS = keys.TASK_LOGS
FILES = keys.TASK_FILES
QUEUE = keys.QUEUE
BY_ENVIRONMENT = keys.TASKS_BY_ENVIRONMENT
BY_PROJECT = keys.TASKS_BY_PROJECT
LOCKS = keys.ENVIRONMENT_LOCKS
MAX_ATTEMPTS = 2
LEASE_TTL = 5

Pin = TypeVar("Pin", bound=int | str)


@dataclass
class Outcome:
    """What an action did: `changed`, or `noop` with the reason nothing changed."""

    changed: bool
    reason: str = ""
    result: JsonObject = field(default_factory=dict)

    @classmethod
    def noop(cls, reason: str, **result: Any) -> Outcome:
        return cls(False, reason, dict(result))

    @classmethod
    def done(cls, reason: str = "", **result: Any) -> Outcome:
        return cls(True, reason, dict(result))


class TaskContext:
    """What a running action gets: its task, a log and file attachments."""

    def __init__(self, store: Store, task: TaskDoc, first_line: int) -> None:
        self.store = store
        self.task = task
        self._line = first_line

    @property
    def environment(self) -> EnvironmentId:
        return EnvironmentId(self.task["environment"])

    @property
    def object_id(self) -> ObjectId:
        return ObjectId(self.task["object"])

    @property
    def args(self) -> JsonObject:
        return self.task["args"]

    def integer(self, name: str) -> int:
        """An integer argument; the action's schema requires it."""
        value = self.task["args"].get(name)
        if not isinstance(value, int):
            raise ActionFailed(self.task["method"], f"argument {name!r} is not an integer")
        return value

    async def log(self, message: str, *, level: str = "info") -> None:
        self._line += 1
        line: LogLine = {"time": time.time(), "level": level, "message": message}
        await self.store.put(f"{LOGS}{self.task['id']}/{self._line:08d}", line)

    async def pinned(self, name: str, value: Pin) -> Pin:
        """`value`, recorded in the task the first time; the recorded one after.

        An action's target ("4 replicas", not "one more") is pinned when it
        starts, so a run resumed after its worker died aims at the same one.
        """
        pins = self.task.get("pinned") or {}
        if name in pins:
            return cast(Pin, pins[name])  # pinned by this action, as this type

        def pin(doc: Any) -> Any:
            doc["pinned"] = {name: value, **(doc.get("pinned") or {})}
            return doc

        found = await self.store.update(f"{TASKS}{self.task['id']}", pin)
        self.task["pinned"] = found.value["pinned"]
        return cast(Pin, self.task["pinned"][name])

    async def attach(self, name: str, data: bytes, *, content_type: str) -> None:
        await self.store.put(
            f"{FILES}{self.task['id']}/{name}",
            {
                "name": name,
                "content_type": content_type,
                "size": len(data),
                "data": base64.b64encode(data).decode(),
            },
        )

        def add(doc: Any) -> Any:
            if name not in doc["files"]:
                doc["files"] = [*doc["files"], name]
            return doc

        await self.store.update(f"{TASKS}{self.task['id']}", add)


Runner = Callable[[TaskContext], Awaitable[Outcome]]


def new_task(
    *,
    environment: EnvironmentId,
    project: ProjectId,
    object_id: ObjectId,
    method: str,
    args: JsonObject,
) -> TaskDoc:
    return TaskDoc(
        id=TaskId(new_id()),
        environment=environment,
        project=project,
        object=object_id,
        method=method,
        action=f"{object_id}_{method}",
        args=args,
        state="queued",
        outcome=None,
        reason=None,
        result=None,
        error=None,
        retryable=False,
        created=time.time(),
        started=None,
        finished=None,
        attempts=0,
        worker=None,
        files=[],
        pinned={},
    )


async def enqueue(store: Store, task: TaskDoc) -> TaskId:
    """Store a task and put it on its environment's queue, in one step each."""
    await store.create(f"{TASKS}{task['id']}", task)
    # The index lists an environment's tasks in order without reading everyone's.
    await store.put(
        f"{BY_ENVIRONMENT}{task['environment']}/{task['created']:020.6f}-{task['id']}", task["id"]
    )
    # The project's index outlives the environment, so its tasks can be collected.
    await store.put(
        f"{BY_PROJECT}{task['project']}/{task['created']:020.6f}-{task['id']}",
        {"task": task["id"], "environment": task["environment"]},
    )
    await store.create(f"{QUEUE}{task['environment']}/{task['id']}", {"task": task["id"]})
    return TaskId(task["id"])


async def collect_tasks(
    store: Store,
    project: str,
    *,
    environment: str | None = None,
    keep: int | None = None,
    spare: frozenset[str] = frozenset(),
) -> int:
    """Remove a project's stored tasks (with their logs and files): every one of
    a deleted `environment` but those in `spare`, and the oldest finished ones
    beyond `keep`. Answers how many the project still stores."""
    index = sorted(await store.list(f"{BY_PROJECT}{project}/"), key=lambda v: v.key)
    left = len(index)
    for entry in index:
        task_id, env = entry.value["task"], entry.value["environment"]
        gone = env == environment and task_id not in spare
        if not gone and keep is not None and left > keep:
            found = await store.get(f"{TASKS}{task_id}")
            gone = found is None or found.value["state"] in ("succeeded", "failed")
        if not gone:
            continue
        suffix = entry.key.rsplit("/", 1)[1]
        await store.delete(f"{TASKS}{task_id}")
        await store.delete_prefix(f"{LOGS}{task_id}/")
        await store.delete_prefix(f"{FILES}{task_id}/")
        await store.delete(f"{BY_ENVIRONMENT}{env}/{suffix}")
        await store.delete(entry.key)
        left -= 1
    return left


async def get_task(store: Store, task_id: str) -> TaskDoc:
    found = await store.get(f"{TASKS}{task_id}")
    if found is None:
        raise NotFound("task", task_id)
    doc: TaskDoc = found.value
    return doc


async def recent_tasks(store: Store, environment: str, *, limit: int = 20) -> list[TaskSummary]:
    """The environment's latest tasks, newest first, without their arguments' bulk."""
    index = await store.list(f"{BY_ENVIRONMENT}{environment}/")
    newest = sorted(index, key=lambda v: v.key, reverse=True)[:limit]
    found = [await store.get(f"{TASKS}{v.value}") for v in newest]
    tasks: list[TaskDoc] = [t.value for t in found if t is not None]
    return [
        {
            "id": t["id"],
            "action": t["action"],
            "object": t["object"],
            "method": t["method"],
            "state": t["state"],
            "outcome": t["outcome"],
            "reason": t["reason"],
            "error": t["error"],
            "created": t["created"],
            "finished": t["finished"],
            "files": t["files"],
        }
        for t in tasks[:limit]
    ]


async def task_log(store: Store, task_id: str) -> list[LogLine]:
    return [v.value for v in await store.list(f"{LOGS}{task_id}/")]


async def follow_task(
    store: Store, task_id: str, *, interval: float = 0.2, timeout: float = 600.0
) -> AsyncIterator[tuple[str, Any]]:
    """("log", line) for each new log line and ("task", task) after each look,
    until the task has finished (or `timeout` passed); every line is sent
    before the final task."""
    sent = 0
    deadline = time.monotonic() + timeout
    while True:
        task = await get_task(store, task_id)
        # The log is read after the task, so a finished task's last lines are in it.
        lines = await task_log(store, task_id)
        for line in lines[sent:]:
            yield "log", line
        sent = len(lines)
        yield "task", task
        if task["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return
        await asyncio.sleep(interval)


async def task_file(store: Store, task_id: str, name: str) -> tuple[str, bytes]:
    found = await store.get(f"{FILES}{task_id}/{name}")
    if found is None:
        raise NotFound("file", f"{task_id}/{name}")
    return found.value["content_type"], base64.b64decode(found.value["data"])


def murano_result(task: TaskDoc) -> JsonObject:
    """Murano's shape for an action's result: `{}` until it has finished."""
    if task["state"] in ("queued", "running"):
        return {}
    if task["state"] == "failed":
        return {
            "isException": True,
            "result": {"message": task["error"], "retryable": task["retryable"]},
        }
    return {
        "isException": False,
        "result": {"outcome": task["outcome"], "reason": task["reason"], **(task["result"] or {})},
    }


class Worker:
    """Runs queued tasks of any environment whose lock it can take.

    Several workers (in several processes) may run at once; the lock makes
    each environment's tasks run one at a time, in the order they were queued.
    """

    def __init__(
        self, store: Store, runner: Runner, *, ident: str | None = None, lease_ttl: int = LEASE_TTL
    ) -> None:
        self.store = store
        self.runner = runner
        self.ident = ident or new_id()[:12]
        self.lease_ttl = lease_ttl
        self.lease: int | None = None
        self._busy: set[str] = set()
        self._drains: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        if self.lease is None:
            self.lease = await self.store.grant_lease(self.lease_ttl)
        keeper = asyncio.create_task(self._keep_lease(stop))
        watchers = [asyncio.create_task(self._watch(stop, prefix)) for prefix in (QUEUE, LOCKS)]
        try:
            while not stop.is_set():
                try:
                    await self._scan()
                except StoreUnavailable as exc:
                    log.warning("task scan failed: %s", exc)
                self._wake.clear()
                # Woken by a change, by Ctrl-C (which must not wait out the timeout) or by time.
                waits = [asyncio.ensure_future(e.wait()) for e in (self._wake, stop)]
                await asyncio.wait(waits, timeout=self.lease_ttl, return_when="FIRST_COMPLETED")
                for waiting in waits:
                    waiting.cancel()
        finally:
            for task in (keeper, *watchers, *self._drains):
                task.cancel()
            await asyncio.gather(keeper, *watchers, *self._drains, return_exceptions=True)
            if self.lease is not None:
                with contextlib.suppress(MarinaError):
                    await self.store.revoke_lease(self.lease)

    async def _keep_lease(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if self.lease is None or not await self.store.refresh_lease(self.lease):
                    self.lease = await self.store.grant_lease(self.lease_ttl)
            except StoreUnavailable as exc:
                log.warning("worker lease not refreshed: %s", exc)
            await asyncio.sleep(self.lease_ttl / 3)

    async def _watch(self, stop: asyncio.Event, prefix: str) -> None:
        """Wake the scan when a task is queued or a lock is let go."""
        while not stop.is_set():
            try:
                async for _ in self.store.watch(prefix):
                    self._wake.set()
            except StoreUnavailable:
                await asyncio.sleep(1)

    async def _scan(self) -> None:
        queued = await self.store.list(QUEUE)
        environments = {q.key[len(QUEUE) :].split("/", 1)[0] for q in queued}
        for env in environments - self._busy:
            if self.lease is None:
                return
            try:
                await self.store.create(f"{LOCKS}{env}", {"worker": self.ident}, lease=self.lease)
            except MarinaError:
                # Ours when the store went away before a drain could let it go.
                held = await self.store.get(f"{LOCKS}{env}")
                if held is None or held.value.get("worker") != self.ident:
                    continue  # another worker holds it
            self._busy.add(env)
            drain = asyncio.create_task(self._drain(env))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)

    async def _drain(self, env: str) -> None:
        try:
            while True:
                queued = sorted(
                    await self.store.list(f"{QUEUE}{env}/"), key=lambda q: q.create_revision
                )
                if not queued:
                    return
                for entry in queued:
                    await self._run_one(entry.value["task"])
                    await self.store.delete(entry.key)
        except StoreUnavailable as exc:
            log.warning("environment %s: tasks paused: %s", env, exc)
        finally:
            self._busy.discard(env)
            with contextlib.suppress(MarinaError):
                await self.store.delete(f"{LOCKS}{env}")
            self._wake.set()

    async def _run_one(self, task_id: str) -> None:
        try:
            task = await get_task(self.store, task_id)
        except NotFound:
            return
        if task["state"] in ("succeeded", "failed"):
            return
        lines = len(await task_log(self.store, task_id))
        if task["state"] == "running":
            if task["attempts"] >= MAX_ATTEMPTS:
                await self._finish(
                    task_id,
                    failed=(f"the process running it stopped {task['attempts']} times", False),
                )
                return
            context = TaskContext(self.store, task, lines)
            await context.log(
                f"resuming: the process running this task ({task['worker']}) stopped",
                level="warning",
            )
            lines = context._line

        def start(doc: Any) -> Any:
            doc.update(
                state="running",
                worker=self.ident,
                attempts=doc["attempts"] + 1,
                started=doc["started"] or time.time(),
            )
            return doc

        task = (await self.store.update(f"{TASKS}{task_id}", start)).value
        context = TaskContext(self.store, task, lines)
        try:
            outcome = await self.runner(context)
        except StoreUnavailable:
            raise  # not the action's fault: the task stays running and resumes
        except ActionFailed as exc:
            await context.log(str(exc), level="error")
            await self._finish(task_id, failed=(str(exc), exc.retryable))
        except MarinaError as exc:
            await context.log(str(exc), level="error")
            await self._finish(task_id, failed=(str(exc), False))
        except Exception as exc:  # a bug: the task fails, the worker goes on
            log.exception("task %s crashed", task_id)
            await context.log(f"internal error: {type(exc).__name__}", level="error")
            await self._finish(task_id, failed=(f"internal error: {type(exc).__name__}", True))
        else:
            await context.log(
                ("changed" if outcome.changed else "nothing to do")
                + (f": {outcome.reason}" if outcome.reason else "")
            )
            await self._finish(task_id, outcome=outcome)
            if task["method"] == "destroy":
                # The environment is gone: its tasks go too, but the one that deleted it.
                try:
                    await collect_tasks(
                        self.store,
                        task["project"],
                        environment=task["environment"],
                        spare=frozenset({task_id}),
                    )
                except MarinaError as exc:
                    log.warning(
                        "tasks of environment %s not collected: %s", task["environment"], exc
                    )

    async def _finish(
        self,
        task_id: str,
        *,
        outcome: Outcome | None = None,
        failed: tuple[str, bool] | None = None,
    ) -> None:
        def finish(doc: Any) -> Any:
            doc["finished"] = time.time()
            if failed is not None:
                doc.update(state="failed", error=failed[0], retryable=failed[1])
            elif outcome is not None:
                doc.update(
                    state="succeeded",
                    outcome="changed" if outcome.changed else "noop",
                    reason=outcome.reason,
                    result=outcome.result,
                )
            return doc

        await self.store.update(f"{TASKS}{task_id}", finish)
