"""KubernetesApplication: a package's pods, deployed together."""

from __future__ import annotations

from typing import Any

from catalog.classes.pod import converge
from catalog.classes.registry import action
from catalog.classes.runtime import Runtime
from catalog.tasks import Outcome

CLASS = "KubernetesApplication"


@action(CLASS, "deploy", "Deploy", "Start the application's pods on its cluster.")
async def deploy(rt: Runtime, app: dict[str, Any]) -> Outcome:
    changed = False
    for pod_id in app["pods"]:
        pod = (await rt.doc())["objects"][pod_id]
        outcome = await converge(rt, pod, pod["replicas"]["desired"])
        changed = changed or outcome.changed
    await rt.edit_object(app["?"]["id"], state="deployed")
    if not changed:
        return Outcome.noop("every pod already runs its replicas")
    return Outcome.done(f"{len(app['pods'])} pods deployed")
