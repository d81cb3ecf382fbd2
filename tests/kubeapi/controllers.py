"""The control plane behind the test API server: what turns objects into running pods.

A Deployment controller (ReplicaSets per pod template, rolling updates
within maxSurge/maxUnavailable, status and revisions), a ReplicaSet
controller, a scheduler that binds pods to schedulable Ready nodes, the
namespace controller (deleting a namespace deletes its contents), garbage
collection of orphaned pods, and status for PodDisruptionBudgets and
ResourceQuotas. They all write through the API, so their objects are
validated like anyone's, and they run on the server's loop after each change.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from decimal import Decimal
from typing import Any

from tests.kubeapi import quotas
from tests.kubeapi.resources import BY_PATH, RESOURCES
from tests.kubeapi.server import ApiError, ApiServer, now, random_suffix, template_hash
from tests.kubeapi.validation import selector_matches

Obj = dict[str, Any]
log = logging.getLogger(__name__)

NAMESPACES = BY_PATH[("", "v1", "namespaces")]
NODES = BY_PATH[("", "v1", "nodes")]
PODS = BY_PATH[("", "v1", "pods")]
DEPLOYMENTS = BY_PATH[("apps", "v1", "deployments")]
REPLICASETS = BY_PATH[("apps", "v1", "replicasets")]
PDBS = BY_PATH[("policy", "v1", "poddisruptionbudgets")]
QUOTAS = BY_PATH[("", "v1", "resourcequotas")]
SERVICES = BY_PATH[("", "v1", "services")]
ENDPOINTS = BY_PATH[("", "v1", "endpoints")]
REVISION = "deployment.kubernetes.io/revision"


def owned_by(obj: Obj, owner: Obj) -> bool:
    return any(
        ref.get("uid") == owner["metadata"]["uid"]
        for ref in obj["metadata"].get("ownerReferences") or []
    )


def owner_reference(owner: Obj) -> Obj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_ready(pod: Obj) -> bool:
    return ApiServer.pod_ready(pod)


def node_ready(node: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )


def scaled(value: Any, total: int, *, up: bool) -> int:
    return ApiServer.int_or_percent(value, total, up=up)


class Controllers:
    def __init__(self, api: ApiServer) -> None:
        self.api = api
        self.task: asyncio.Task[None] | None = None
        self.failures: dict[str, str] = {}
        """The last refusal each controller met (a ReplicaSet's FailedCreate)."""

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def run(self) -> None:
        sub = self.api.store.subscribe(lambda event: True)
        try:
            while not self.api.closing.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sub.queue.get(), 0.5)
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                try:
                    self.reconcile()
                except Exception:  # a controller bug must not stop the others' next round
                    log.exception("reconcile failed")
        finally:
            self.api.store.unsubscribe(sub)

    def reconcile(self) -> None:
        self.namespaces()
        self.deployments()
        self.replicasets()
        self.orphans()
        self.schedule()
        self.budgets()
        self.quotas()
        self.endpoints()

    # writes ---------------------------------------------------------------------------------

    def save(self, resource: Any, old: Obj, new: Obj, manager: str, *, status: bool = False) -> Obj:
        if new == old:
            return old
        try:
            return self.api.replace(
                resource, old, new, None, "status" if status else None, manager=manager
            )
        except ApiError as exc:
            log.warning("%s could not write %s: %s", manager, old["metadata"]["name"], exc.message)
            return old

    def create(self, resource: Any, obj: Obj, manager: str) -> Obj | None:
        try:
            return self.api.create(
                resource, obj["metadata"].get("namespace", ""), obj, None, manager=manager
            )
        except ApiError as exc:
            log.warning("%s could not create %s: %s", manager, obj["metadata"], exc.message)
            self.failures[manager] = exc.message
            return None

    # namespaces ----------------------------------------------------------------------------

    def namespaces(self) -> None:
        for ns in self.api.store.select(NAMESPACES):
            if not ns["metadata"].get("deletionTimestamp"):
                continue
            name = ns["metadata"]["name"]
            left = 0
            for resource in RESOURCES:
                if not resource.namespaced:
                    continue
                for obj in self.api.store.select(resource, name):
                    left += 1
                    if not obj["metadata"].get("deletionTimestamp"):
                        self.api.remove(resource, obj, None)
            if left == 0:
                self.api.store.remove(NAMESPACES, "", name)

    # deployments ---------------------------------------------------------------------------

    def deployments(self) -> None:
        for deployment in self.api.store.select(DEPLOYMENTS):
            if deployment["metadata"].get("deletionTimestamp"):
                continue
            self.deployment(deployment)

    def deployment(self, d: Obj) -> None:
        ns = d["metadata"]["namespace"]
        spec = d["spec"]
        template = spec["template"]
        digest = template_hash(template)
        sets = [rs for rs in self.api.store.select(REPLICASETS, ns) if owned_by(rs, d)]
        new = next(
            (
                rs
                for rs in sets
                if rs["metadata"].get("labels", {}).get("pod-template-hash") == digest
            ),
            None,
        )
        olds = [rs for rs in sets if rs is not new]
        revisions = [int(rs["metadata"].get("annotations", {}).get(REVISION, "0")) for rs in sets]
        desired = spec.get("replicas", 1)
        if new is None:
            new = self.new_replicaset(d, digest, max(revisions, default=0) + 1)
            if new is None:
                return
            sets.append(new)
        elif olds and int(new["metadata"]["annotations"].get(REVISION, "0")) < max(revisions):
            # a rollback to an older template: it becomes the newest revision again
            updated = copy.deepcopy(new)
            updated["metadata"]["annotations"][REVISION] = str(max(revisions) + 1)
            new = self.save(REPLICASETS, new, updated, "deployment-controller")
        strategy = spec.get("strategy") or {}
        active_olds = [rs for rs in olds if rs["spec"].get("replicas", 0) > 0]
        if strategy.get("type") == "Recreate":
            for rs in active_olds:
                self.scale_replicaset(rs, 0)
            old_pods = any((rs.get("status") or {}).get("replicas", 0) for rs in olds)
            target = 0 if (active_olds or old_pods) else desired
            self.scale_replicaset(new, target)
        else:
            rolling = strategy.get("rollingUpdate") or {}
            surge = scaled(rolling.get("maxSurge", "25%"), desired, up=True)
            unavailable = scaled(rolling.get("maxUnavailable", "25%"), desired, up=False)
            if surge == 0 and unavailable == 0:
                unavailable = 1
            current = new["spec"].get("replicas", 0)
            if not active_olds:
                target = desired
            else:
                total = sum(rs["spec"].get("replicas", 0) for rs in sets)
                room = desired + surge - total
                target = min(desired, current + max(0, room)) if current < desired else desired
            new = self.scale_replicaset(new, target)
            ready = sum((rs.get("status") or {}).get("readyReplicas", 0) for rs in sets)
            removable = ready - (desired - unavailable)
            for rs in sorted(active_olds, key=lambda r: r["metadata"]["creationTimestamp"]):
                replicas = rs["spec"].get("replicas", 0)
                unready = max(0, replicas - (rs.get("status") or {}).get("readyReplicas", 0))
                cut = min(replicas, unready + max(0, removable))
                removable -= max(0, cut - unready)
                if cut:
                    self.scale_replicaset(rs, replicas - cut)
        self.deployment_status(d, new, [rs for rs in sets if rs is not new])
        self.prune_history(d, [rs for rs in sets if rs is not new])

    def new_replicaset(self, d: Obj, digest: str, revision: int) -> Obj | None:
        template = copy.deepcopy(d["spec"]["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = digest
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})["pod-template-hash"] = digest
        annotations = {
            REVISION: str(revision),
            "deployment.kubernetes.io/desired-replicas": str(d["spec"].get("replicas", 1)),
        }
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{d['metadata']['name']}-{digest}",
                "namespace": d["metadata"]["namespace"],
                "labels": template["metadata"]["labels"],
                "annotations": annotations,
                "ownerReferences": [owner_reference(d)],
            },
            "spec": {
                "replicas": 0,
                "selector": selector,
                "template": template,
                "minReadySeconds": d["spec"].get("minReadySeconds", 0),
            },
        }
        return self.create(REPLICASETS, rs, "deployment-controller")

    def scale_replicaset(self, rs: Obj, replicas: int) -> Obj:
        if rs["spec"].get("replicas") == replicas:
            return rs
        updated = copy.deepcopy(rs)
        updated["spec"]["replicas"] = replicas
        return self.save(REPLICASETS, rs, updated, "deployment-controller")

    def deployment_status(self, d: Obj, new: Obj, olds: list[Obj]) -> None:
        def total(field: str, sets: list[Obj]) -> int:
            return sum((rs.get("status") or {}).get(field, 0) for rs in sets)

        new = (
            self.api.store.get(REPLICASETS, new["metadata"]["namespace"], new["metadata"]["name"])
            or new
        )
        sets = [new, *olds]
        desired = d["spec"].get("replicas", 1)
        available = total("availableReplicas", sets)
        updated = total("replicas", [new])
        complete = updated == desired and total("replicas", olds) == 0 and available >= desired
        rolling = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        unavailable = scaled(rolling.get("maxUnavailable", "25%"), desired, up=False)
        old_conditions = {c["type"]: c for c in (d.get("status") or {}).get("conditions", [])}

        def condition(kind: str, status: str, reason: str, message: str) -> Obj:
            before = old_conditions.get(kind) or {}
            same = before.get("status") == status and before.get("reason") == reason
            stamp = before.get("lastTransitionTime") if same else now()
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastUpdateTime": before.get("lastUpdateTime") if same else stamp,
                "lastTransitionTime": stamp,
            }

        name = new["metadata"]["name"]
        status = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": total("replicas", sets),
            "updatedReplicas": updated,
            "readyReplicas": total("readyReplicas", sets),
            "availableReplicas": available,
            "unavailableReplicas": max(0, desired - available),
            "conditions": [
                condition(
                    "Available",
                    "True" if available >= desired - unavailable else "False",
                    "MinimumReplicasAvailable"
                    if available >= desired - unavailable
                    else "MinimumReplicasUnavailable",
                    "Deployment has minimum availability."
                    if available >= desired - unavailable
                    else "Deployment does not have minimum availability.",
                ),
                condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                    f'ReplicaSet "{name}" has successfully progressed.'
                    if complete
                    else f'ReplicaSet "{name}" is progressing.',
                ),
            ],
        }
        failed = [
            c
            for rs in sets
            for c in (rs.get("status") or {}).get("conditions") or []
            if c.get("type") == "ReplicaFailure"
        ]
        if failed:
            status["conditions"].append(
                condition("ReplicaFailure", "True", "FailedCreate", failed[0]["message"])
            )
        for key in ("readyReplicas", "availableReplicas", "unavailableReplicas", "updatedReplicas"):
            if status[key] == 0:
                del status[key]
        updated_d = copy.deepcopy(d)
        updated_d["status"] = status
        annotations = updated_d["metadata"].setdefault("annotations", {})
        annotations[REVISION] = new["metadata"]["annotations"][REVISION]
        if updated_d["metadata"] != d["metadata"]:
            d = self.save(
                DEPLOYMENTS, d, {**updated_d, "status": d.get("status")}, "deployment-controller"
            )
            updated_d = {**copy.deepcopy(d), "status": status}
        self.save(DEPLOYMENTS, d, updated_d, "deployment-controller", status=True)

    def prune_history(self, d: Obj, olds: list[Obj]) -> None:
        limit = d["spec"].get("revisionHistoryLimit", 10)
        idle = [
            rs
            for rs in olds
            if rs["spec"].get("replicas", 0) == 0 and not (rs.get("status") or {}).get("replicas")
        ]
        idle.sort(key=lambda rs: int(rs["metadata"].get("annotations", {}).get(REVISION, "0")))
        for rs in idle[: max(0, len(idle) - limit)]:
            self.api.remove(REPLICASETS, rs, None)

    # replicasets ---------------------------------------------------------------------------

    def replicasets(self) -> None:
        for rs in self.api.store.select(REPLICASETS):
            if rs["metadata"].get("deletionTimestamp"):
                continue
            ns = rs["metadata"]["namespace"]
            pods = [p for p in self.api.store.select(PODS, ns) if owned_by(p, rs)]
            active = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            desired = rs["spec"].get("replicas", 1)
            failure = None
            for _ in range(desired - len(active)):
                self.failures.pop("replicaset-controller", None)
                pod = self.new_pod(rs)
                if pod is None:
                    failure = self.failures.get("replicaset-controller")
                    break
                active.append(pod)
            if len(active) > desired:
                # not-ready and unscheduled pods go first, then the youngest
                active.sort(
                    key=lambda p: (
                        pod_ready(p),
                        bool(p["spec"].get("nodeName")),
                        p["metadata"]["creationTimestamp"],
                    ),
                )
                doomed = active[: len(active) - desired]
                for pod in sorted(
                    doomed, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True
                ):
                    self.api.remove(PODS, pod, None)
                active = [p for p in active if p not in doomed]
            ready = sum(1 for p in active if pod_ready(p))
            status = {
                "replicas": len(active),
                "fullyLabeledReplicas": len(active),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"].get("generation", 1),
            }
            for key in ("readyReplicas", "availableReplicas", "fullyLabeledReplicas"):
                if status[key] == 0:
                    del status[key]
            if failure is not None:
                before = [
                    c
                    for c in (rs.get("status") or {}).get("conditions") or []
                    if c.get("message") == failure
                ]
                status["conditions"] = before or [
                    {
                        "type": "ReplicaFailure",
                        "status": "True",
                        "reason": "FailedCreate",
                        "message": failure,
                        "lastTransitionTime": now(),
                    }
                ]
            updated = copy.deepcopy(rs)
            updated["status"] = status
            self.save(REPLICASETS, rs, updated, "replicaset-controller", status=True)

    def new_pod(self, rs: Obj) -> Obj | None:
        template = copy.deepcopy(rs["spec"]["template"])
        meta = template.get("metadata") or {}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                **meta,
                "name": f"{rs['metadata']['name']}-{random_suffix()}",
                "namespace": rs["metadata"]["namespace"],
                "ownerReferences": [owner_reference(rs)],
            },
            "spec": template["spec"],
        }
        pod["metadata"].pop("creationTimestamp", None)
        return self.create(PODS, pod, "replicaset-controller")

    # pods without a home ------------------------------------------------------------------

    def orphans(self) -> None:
        nodes = {n["metadata"]["name"] for n in self.api.store.select(NODES)}
        for pod in self.api.store.select(PODS):
            node = pod["spec"].get("nodeName")
            if node and node not in nodes:
                self.api.store.remove(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])

    def schedule(self) -> None:
        every = self.api.store.select(NODES)
        nodes = [n for n in every if node_ready(n)]
        schedulable = [n for n in nodes if not (n.get("spec") or {}).get("unschedulable")]
        pods = self.api.store.select(PODS)
        load = {n["metadata"]["name"]: 0 for n in schedulable}
        for pod in pods:
            if pod["spec"].get("nodeName") in load:
                load[pod["spec"]["nodeName"]] += 1
        for pod in pods:
            if pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            updated = copy.deepcopy(pod)
            conditions = [
                c for c in updated["status"].get("conditions", []) if c["type"] != "PodScheduled"
            ]
            if not load:
                unschedulable = len(nodes) - len(schedulable)
                unready = len(every) - len(nodes)
                reasons = []
                if unready:
                    # a node whose kubelet went silent carries the unreachable taint
                    reasons.append(
                        f"{unready} node(s) had untolerated taint "
                        "{node.kubernetes.io/unreachable: }"
                    )
                if unschedulable:
                    reasons.append(f"{unschedulable} node(s) were unschedulable")
                message = f"0/{len(every)} nodes are available" + (
                    ": " + ", ".join(reasons) + "." if reasons else "."
                )
                conditions.append(
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastTransitionTime": now(),
                        "lastProbeTime": None,
                    }
                )
                updated["status"]["conditions"] = conditions
                old_cond = [
                    c for c in pod["status"].get("conditions", []) if c["type"] == "PodScheduled"
                ]
                if not old_cond or old_cond[0].get("message") != message:
                    self.save(PODS, pod, updated, "default-scheduler", status=True)
                continue
            node = min(load, key=lambda n: (load[n], n))
            load[node] += 1
            bound = copy.deepcopy(pod)
            bound["spec"]["nodeName"] = node
            bound = self.save(PODS, pod, bound, "default-scheduler")
            scheduled = copy.deepcopy(bound)
            scheduled["status"]["conditions"] = [
                *conditions,
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": now(),
                    "lastProbeTime": None,
                },
            ]
            self.save(PODS, bound, scheduled, "default-scheduler", status=True)

    # budgets and quotas --------------------------------------------------------------------

    def budgets(self) -> None:
        for pdb in self.api.store.select(PDBS):
            healthy, desired, expected = self.api.pdb_numbers(pdb)
            updated = copy.deepcopy(pdb)
            updated["status"] = {
                "observedGeneration": pdb["metadata"].get("generation", 1),
                "currentHealthy": healthy,
                "desiredHealthy": desired,
                "expectedPods": expected,
                "disruptionsAllowed": max(0, healthy - desired),
                "conditions": [
                    {
                        "type": "DisruptionAllowed",
                        "status": "True" if healthy > desired else "False",
                        "reason": "SufficientPods" if healthy > desired else "InsufficientPods",
                        "message": "",
                        "observedGeneration": pdb["metadata"].get("generation", 1),
                        "lastTransitionTime": ((pdb.get("status") or {}).get("conditions") or [{}])[
                            0
                        ].get("lastTransitionTime")
                        or now(),
                    }
                ],
            }
            if updated["status"]["conditions"][0]["status"] != (
                ((pdb.get("status") or {}).get("conditions") or [{}])[0].get("status")
            ):
                updated["status"]["conditions"][0]["lastTransitionTime"] = now()
            self.save(PDBS, pdb, updated, "controller-manager", status=True)

    def quotas(self) -> None:
        kinds = {
            "Pod": PODS,
            "Service": BY_PATH[("", "v1", "services")],
            "ConfigMap": BY_PATH[("", "v1", "configmaps")],
            "Secret": BY_PATH[("", "v1", "secrets")],
        }
        for quota in self.api.store.select(QUOTAS):
            ns = quota["metadata"]["namespace"]
            hard = (quota.get("spec") or {}).get("hard") or {}
            used = {}
            for key in hard:
                total = sum(
                    (
                        quotas.usage(key, kind, self.api.store.select(resource, ns))
                        for kind, resource in kinds.items()
                    ),
                    Decimal(0),
                )
                used[key] = quotas.render(total, key)
            updated = copy.deepcopy(quota)
            updated["status"] = {"hard": hard, "used": used}
            self.save(QUOTAS, quota, updated, "resourcequota-controller", status=True)

    # endpoints -----------------------------------------------------------------------------

    def endpoints(self) -> None:
        services = {
            (s["metadata"]["namespace"], s["metadata"]["name"]): s
            for s in self.api.store.select(SERVICES)
        }
        for ep in self.api.store.select(ENDPOINTS):
            key = (ep["metadata"]["namespace"], ep["metadata"]["name"])
            if key not in services:
                self.api.store.remove(ENDPOINTS, *key)
        for (ns, name), svc in services.items():
            selector = svc["spec"].get("selector")
            if not selector:
                continue
            ready, waiting = [], []
            for pod in self.api.store.select(PODS, ns):
                ip = (pod.get("status") or {}).get("podIP")
                labels = pod["metadata"].get("labels") or {}
                if not ip or not selector_matches({"matchLabels": selector}, labels):
                    continue
                address = {
                    "ip": ip,
                    "nodeName": pod["spec"].get("nodeName", ""),
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": ns,
                        "name": pod["metadata"]["name"],
                        "uid": pod["metadata"]["uid"],
                    },
                }
                if pod_ready(pod) and not pod["metadata"].get("deletionTimestamp"):
                    ready.append(address)
                else:
                    waiting.append(address)
            ports = [
                {
                    k: v
                    for k, v in (
                        ("name", p.get("name")),
                        ("port", self.target_port(p, svc, ns)),
                        ("protocol", p.get("protocol", "TCP")),
                    )
                    if v is not None
                }
                for p in svc["spec"].get("ports") or []
            ]
            subset: Obj = {"ports": ports}
            if ready:
                subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
            if waiting:
                subset["notReadyAddresses"] = sorted(waiting, key=lambda a: a["ip"])
            wanted: Obj = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": svc["metadata"].get("labels") or {},
                },
                "subsets": [subset] if ready or waiting else [],
            }
            if not wanted["metadata"]["labels"]:
                del wanted["metadata"]["labels"]
            current = self.api.store.get(ENDPOINTS, ns, name)
            if current is None:
                self.create(ENDPOINTS, wanted, "endpoint-controller")
            elif current.get("subsets") != wanted["subsets"]:
                updated = copy.deepcopy(current)
                updated["subsets"] = wanted["subsets"]
                self.save(ENDPOINTS, current, updated, "endpoint-controller")

    def target_port(self, port: Obj, svc: Obj, ns: str) -> int | None:
        target = port.get("targetPort", port.get("port"))
        if isinstance(target, int):
            return target
        for pod in self.api.store.select(PODS, ns):
            for container in pod["spec"].get("containers") or []:
                for p in container.get("ports") or []:
                    if p.get("name") == target:
                        return int(p["containerPort"])
        return None
