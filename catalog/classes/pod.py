"""KubernetesPod: a group of containers with labels, services and a replica count.

Its actions hand the engine desired state (the pod at N replicas, a restart)
and follow the engine's changes until the pod serves as asked, or fail with
the reasons its replicas give. Targets are pinned when a task starts, so a
run resumed after its worker died aims at the same count.
"""

from __future__ import annotations

import copy

from catalog import environments as envs
from catalog.classes.registry import MASKED, action
from catalog.classes.runtime import Runtime
from catalog.documents import PodObject, PodObjectSpec
from catalog.engines.base import (
    Capability,
    PodId,
    PodState,
    ProgressReport,
    require,
    wait_pod,
)
from catalog.errors import Problem, SchedulingFailed, ValidationFailed
from catalog.export import pod_spec
from catalog.model import PLACEHOLDER, validate_pod_spec
from catalog.routing import certificate_problems
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


@action(
    CLASS,
    "setSecrets",
    "Set secrets",
    "Give a container new secret values (a password, a TLS certificate and key): its "
    "replicas restart with them one at a time, and the gateways take a certificate a "
    "service names without a reload. A pod the new values would break keeps the old ones.",
    schema={
        "type": "object",
        "additionalProperties": False,
        "required": ["container", "secrets"],
        "properties": {
            "container": {"type": "string", "title": "Container", "minLength": 1},
            "secrets": {
                "type": "object",
                "title": "Secrets",
                "description": "variable names to their new values; other secrets stay",
                "minProperties": 1,
                "additionalProperties": {"type": "string"},
                # Sent, never shown back: a task shows their names only.
                "writeOnly": True,
            },
        },
    },
    destructive=True,
)
async def set_secrets(rt: Runtime, pod: PodObject) -> Outcome:
    doc = await rt.doc()
    pod = envs.pod_in(doc, pod["?"]["id"])
    name, values = str(rt.ctx.args["container"]), rt.ctx.args["secrets"]
    # The schema checked them when the task was made: a map of strings.
    given = {str(k): str(v) for k, v in values.items()} if isinstance(values, dict) else {}
    if MASKED in given.values():
        raise ValidationFailed(
            "arguments of setSecrets",
            [Problem("secrets", f"{MASKED} is how Marina hides a value, not a value")],
        )
    spec = copy.deepcopy(pod["spec"])
    found = [c for c in spec["containers"] if c["name"] == name]
    if not found:
        names = ", ".join(c["name"] for c in spec["containers"])
        raise ValidationFailed(
            "arguments of setSecrets", [Problem("container", f"is none of {names}", name)]
        )
    container = found[0]
    unchanged = all(container.get("secrets", {}).get(k) == v for k, v in given.items())
    if not unchanged:
        clash = sorted(set(given) & set(container.get("env", {})))
        if clash:
            raise ValidationFailed(
                "arguments of setSecrets",
                [Problem("secrets", "names variables the container's env sets", clash)],
            )
        container["secrets"] = {**container.get("secrets", {}), **given}
        problems = validate_pod_spec(spec) + _certificate_problems(spec, given)
        if problems:  # e.g. pod.services[0].tls.certificate: the old values keep serving
            raise ValidationFailed(f"pod {spec['name']} with new secrets for {name}", problems)
        await rt.edit_object(pod["?"]["id"], spec=spec)
        await rt.ctx.log(f"new values for {', '.join(sorted(given))} of {name}")
    if pod["state"] == "new":
        if unchanged:
            return Outcome.noop(f"{name} already has these secret values")
        return Outcome.done(f"secrets of {name} set; the pod runs with them when deployed")
    # Also when the values are already set: a run cut off before the engine
    # had them is finished here.
    outcome = await converge(rt, pod, pod["replicas"]["desired"])
    if unchanged and not outcome.changed:
        return Outcome.noop(f"{name} already runs with these secret values")
    return Outcome.done(
        f"secrets of {name} set; {pod['replicas']['desired']} replicas run with them",
        **{k: v for k, v in outcome.result.items() if k != "replicas"},
    )


def _certificate_problems(spec: PodObjectSpec, given: dict[str, str]) -> list[Problem]:
    """The TLS pairs the new values touch, checked as given: a value that
    looks like a `${property}` template is no certificate here (the pod's
    check leaves templates to the moment they are filled)."""
    secrets = {k: v for c in spec["containers"] for k, v in c.get("secrets", {}).items()}
    problems: list[Problem] = []
    for i, service in enumerate(spec.get("services", [])):
        tls = service.get("tls") or {}
        cert, key = secrets.get(tls.get("certificate", "")), secrets.get(tls.get("key", ""))
        if cert is None or key is None or not set(tls.values()) & set(given):
            continue  # no TLS, untouched, or a missing secret (the pod's check names it)
        if PLACEHOLDER.search(cert + key):
            problems += [
                Problem(f"pod.services[{i}].tls.{field}", rule, tls[field])
                for field, rule in certificate_problems(service.get("hosts", []), cert, key)
            ]
    return problems
