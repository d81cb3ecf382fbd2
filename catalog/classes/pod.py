"""KubernetesPod: a group of containers with labels, services and a replica count.

Its actions hand the engine desired state (the pod at N replicas, a restart)
and follow the engine's changes until the pod serves as asked, or fail with
the reasons its replicas give. Targets are pinned when a task starts, so a
run resumed after its worker died aims at the same count.
"""

from __future__ import annotations

from catalog import environments as envs
from catalog.classes.registry import action
from catalog.classes.runtime import Runtime
from catalog.documents import PodObject
from catalog.engines.base import (
    Capability,
    PodId,
    PodState,
    ProgressReport,
    require,
    wait_pod,
)
from catalog.errors import SchedulingFailed
from catalog.export import pod_spec
from catalog.tasks import Outcome

CLASS = "KubernetesPod"
MAX_REPLICAS = 50
READY_TIMEOUT = 60.0


def converged(state: PodState, want: int) -> bool:
    """Exactly `want` replicas, all current and serving, none left draining."""
    return (
        state["desired"] == want
        and len(state["replicas"]) == want
        and state["serving"] == want
        and state["updated"] == want
    )


def _running(state: PodState | None) -> set[str]:
    return {r["name"] for r in state["replicas"] if not r["draining"]} if state else set()


async def converge(rt: Runtime, pod: PodObject, want: int) -> Outcome:
    """Apply the pod at `want` replicas and wait until exactly those serve."""
    doc = await rt.doc()
    pod = envs.pod_in(doc, pod["?"]["id"])
    cluster = rt.cluster_of(doc, pod)
    rt.require_ready(cluster, "deploy pod")
    key, pod_id, name = rt.key(cluster), PodId(pod["?"]["id"]), pod["spec"]["name"]
    before = await rt.engine.pod_state(key, pod_id)
    report = ProgressReport(name, rt.ctx.log)
    await report(before)
    await rt.edit_object(
        pod_id, replicas={"desired": want, "ready": pod["replicas"]["ready"]}, state="deploying"
    )
    await rt.engine.apply_pod(key, pod_spec(doc, pod, replicas=want))
    state = await wait_pod(
        rt.engine,
        key,
        pod_id,
        lambda s: converged(s, want) or bool(s["pending"]),
        timeout=READY_TIMEOUT,
        what=f"{name} did not reach {want} serving replicas",
        report=report,
    )
    if not converged(state, want):
        # What runs is what the pod has; the request that did not fit is not kept.
        running = len(_running(state))
        await rt.engine.scale_pod(key, pod_id, running)
        await rt.edit_object(
            pod_id,
            replicas={"desired": running, "ready": state["serving"]},
            services=state["services"],
            state="running",
        )
        raise SchedulingFailed(name, state["pending"])
    await rt.edit_object(
        pod_id,
        replicas={"desired": want, "ready": state["serving"]},
        services=state["services"],
        state="running",
    )
    started, stopped = _running(state) - _running(before), _running(before) - _running(state)
    if not started and not stopped and before is not None and before["desired"] == want:
        return Outcome.noop(f"the pod already runs {want} replicas", replicas=want)
    return Outcome.done(
        f"{want} replicas", replicas=want, started=len(started), stopped=len(stopped)
    )


@action(CLASS, "scalePodUp", "Add a replica", "Run one more replica of the pod.")
async def scale_up(rt: Runtime, pod: PodObject) -> Outcome:
    want = await rt.ctx.pinned("replicas", pod["replicas"]["desired"] + 1)
    if want > MAX_REPLICAS:
        return Outcome.noop(f"the pod already has the maximum of {MAX_REPLICAS} replicas")
    return await converge(rt, pod, want)


@action(
    CLASS,
    "scalePodDown",
    "Remove a replica",
    "Run one replica fewer; zero is allowed.",
    destructive=True,
)
async def scale_down(rt: Runtime, pod: PodObject) -> Outcome:
    want = await rt.ctx.pinned("replicas", pod["replicas"]["desired"] - 1)
    if want < 0:
        return Outcome.noop("the pod already has no replicas")
    return await converge(rt, pod, want)


@action(
    CLASS,
    "scalePod",
    "Set replicas",
    "Run this many replicas.",
    schema={
        "type": "object",
        "additionalProperties": False,
        "required": ["replicas"],
        "properties": {
            "replicas": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_REPLICAS,
                "title": "Replicas",
            }
        },
    },
    destructive=True,
)
async def scale(rt: Runtime, pod: PodObject) -> Outcome:
    return await converge(rt, pod, rt.ctx.integer("replicas"))


async def _roll(rt: Runtime, pod: PodObject, *, in_place: bool) -> Outcome:
    doc = await rt.doc()
    cluster = rt.cluster_of(doc, pod)
    what = "restartContainers" if in_place else "recreatePod"
    rt.require_ready(cluster, what)
    if in_place:
        require(rt.engine, Capability.RESTART, "restart containers in place")
    key, pod_id, name = rt.key(cluster), PodId(pod["?"]["id"]), pod["spec"]["name"]
    state = await rt.engine.pod_state(key, pod_id)
    if state is None or not state["replicas"]:
        return Outcome.noop(f"the pod has no replicas to {'restart' if in_place else 'recreate'}")
    # The mark of the pod before this task's roll: a resumed run does not roll twice.
    mark: int | str = state["generation"] if in_place else state["template"]
    if mark == await rt.ctx.pinned("generation" if in_place else "template", mark):
        if in_place:
            await rt.engine.restart_pod(key, pod_id)
        else:
            await rt.engine.recreate_pod(key, pod_id)
    want = state["desired"]
    report = ProgressReport(name, rt.ctx.log)
    await report(state)
    await wait_pod(
        rt.engine,
        key,
        pod_id,
        lambda s: converged(s, want),
        report=report,
        timeout=READY_TIMEOUT + 10 * want,
        what=f"{name} did not finish its {'restart' if in_place else 'recreation'}",
    )
    verb = "restarted" if in_place else "recreated"
    await rt.ctx.log(f"{want} replicas of {name} {verb}")
    return Outcome.done(f"{want} replicas {verb}")


@action(
    CLASS,
    "recreatePod",
    "Recreate",
    "Start new replicas, then stop the old ones.",
    destructive=True,
)
async def recreate(rt: Runtime, pod: PodObject) -> Outcome:
    return await _roll(rt, pod, in_place=False)


@action(
    CLASS,
    "restartContainers",
    "Restart containers",
    "Restart every replica's processes in place, one replica at a time.",
    destructive=True,
)
async def restart(rt: Runtime, pod: PodObject) -> Outcome:
    return await _roll(rt, pod, in_place=True)
