"""Tasks against a real etcd: order, one at a time, and takeover after a crash."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

from catalog.ids import EnvironmentId, ObjectId, ProjectId
from catalog.store import Store
from catalog.tasks import (
    Outcome,
    TaskContext,
    Worker,
    enqueue,
    get_task,
    murano_result,
    new_task,
    task_log,
)


def task_for(env: str, method: str, **args: object):
    return new_task(
        environment=EnvironmentId(env),
        project=ProjectId("p"),
        object_id=ObjectId("obj"),
        method=method,
        args=dict(args),
    )


async def wait_state(store: Store, task_id: str, states: set[str], timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = await get_task(store, task_id)
        if task["state"] in states:
            return task
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} still {task['state']}")


def test_one_environment_runs_in_order_one_at_a_time(etcd, cluster):
    running: list[str] = []
    order: list[str] = []
    overlap: list[bool] = []

    async def runner(context: TaskContext) -> Outcome:
        overlap.append(bool(running))
        running.append(context.task["method"])
        await asyncio.sleep(0.05)
        running.pop()
        order.append(context.task["method"])
        if context.task["method"] == "m2":
            return Outcome.noop("nothing to change")
        if context.task["method"] == "m3":
            from catalog.errors import ActionFailed

            raise ActionFailed("m3", "it broke", retryable=True)
        return Outcome.done(count=1)

    async def scenario() -> list:
        async with Store(etcd.url) as store:
            stop = asyncio.Event()
            workers = [Worker(store, runner, lease_ttl=2) for _ in range(3)]
            runs = [asyncio.create_task(w.run(stop)) for w in workers]
            ids = [await enqueue(store, task_for(f"e-{cluster}", f"m{i}")) for i in range(5)]
            done = [await wait_state(store, t, {"succeeded", "failed"}) for t in ids]
            stop.set()
            await asyncio.gather(*runs)
            return done

    done = asyncio.run(scenario())
    assert order == [f"m{i}" for i in range(5)]
    assert not any(overlap)
    assert [t["state"] for t in done] == ["succeeded"] * 3 + ["failed", "succeeded"]
    assert done[2]["outcome"] == "noop" and done[2]["reason"] == "nothing to change"
    assert murano_result(done[0]) == {
        "isException": False,
        "result": {"outcome": "changed", "reason": "", "count": 1},
    }
    assert murano_result(done[3])["isException"] is True
    assert done[3]["retryable"] is True


def test_task_of_a_killed_worker_is_resumed_by_another(etcd, cluster):
    proc = subprocess.Popen([sys.executable, "-m", "tests.worker_process", etcd.url, "doomed"])

    async def resumed(context: TaskContext) -> Outcome:
        return Outcome.done("finished after takeover")

    async def scenario():
        async with Store(etcd.url) as store:
            task_id = await enqueue(store, task_for(f"k-{cluster}", "scaleNodesUp"))
            await wait_state(store, task_id, {"running"})
            deadline = time.monotonic() + 20
            while not await task_log(store, task_id):  # its runner has begun
                assert time.monotonic() < deadline, "the doomed worker never logged"
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            stop = asyncio.Event()
            run = asyncio.create_task(Worker(store, resumed, lease_ttl=2).run(stop))
            task = await wait_state(store, task_id, {"succeeded", "failed"})
            lines = await task_log(store, task_id)
            stop.set()
            await run
            return task, lines

    try:
        task, lines = asyncio.run(scenario())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert task["state"] == "succeeded"
    assert task["attempts"] == 2
    messages = [line["message"] for line in lines]
    assert messages[0] == "started; hanging"
    assert "resuming" in messages[1] and "doomed" in messages[1]
    assert messages[-1] == "changed: finished after takeover"


def test_a_task_that_keeps_killing_its_worker_fails_with_a_reason(etcd, cluster):
    async def scenario():
        async with Store(etcd.url) as store:
            task_id = await enqueue(store, task_for(f"x-{cluster}", "deploy"))
            for attempt in range(2):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "tests.worker_process", etcd.url, f"w{attempt}"]
                )
                deadline = time.monotonic() + 20
                while (await get_task(store, task_id))["attempts"] != attempt + 1:
                    assert time.monotonic() < deadline, "the worker never started the task"
                    await asyncio.sleep(0.05)
                proc.kill()
                proc.wait()

            async def never(context: TaskContext) -> Outcome:
                raise AssertionError("must not run a third time")

            stop = asyncio.Event()
            run = asyncio.create_task(Worker(store, never, lease_ttl=2).run(stop))
            task = await wait_state(store, task_id, {"succeeded", "failed"})
            stop.set()
            await run
            return task

    task = asyncio.run(scenario())
    assert task["state"] == "failed"
    assert "stopped 2 times" in task["error"]
