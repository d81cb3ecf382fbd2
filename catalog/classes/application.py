"""KubernetesApplication: a package's pods, deployed together."""

from __future__ import annotations

from catalog import environments as envs
from catalog.classes.pod import converge
from catalog.classes.registry import action
from catalog.classes.runtime import Runtime
from catalog.documents import ApplicationObject
from catalog.tasks import Outcome

CLASS = "KubernetesApplication"


@action(CLASS, "deploy", "Deploy", "Start the application's pods on its cluster.")
async def deploy(rt: Runtime, app: ApplicationObject) -> Outcome:
    changed = False
    for pod_id in app["pods"]:
        pod = envs.pod_in(await rt.doc(), pod_id)
        outcome = await converge(rt, pod, pod["replicas"]["desired"])
        changed = changed or outcome.changed
    await rt.edit_object(app["?"]["id"], state="deployed")
    if not changed:
        return Outcome.noop("every pod already runs its replicas")
    return Outcome.done(f"{len(app['pods'])} pods deployed")
