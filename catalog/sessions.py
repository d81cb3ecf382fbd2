"""Murano's configuration sessions: edit an environment privately, then deploy.

A session records changes (services added, edited, removed) against the
environment's deployed version; until it is deployed nobody else sees them.
Deploying applies the changes in one compare-and-swap of the environment and
claims the next version first, so a session opened before another one was
deployed is refused as stale instead of overwriting what that one did.

Sessions live in etcd under a lease, so forgotten ones expire; each holds at
most `MAX_CHANGES` changes and an environment at most `MAX_OPEN` sessions.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any, Literal, TypedDict

from catalog import environments as envs
from catalog import keys, quotas
from catalog.documents import (
    EnvironmentDocument,
    EnvironmentObject,
    Json,
    JsonObject,
    MuranoDocument,
)
from catalog.errors import Conflict, MarinaError, NotFound, Problem, TooLarge, ValidationFailed
from catalog.ids import ObjectId, ProjectId, new_id
from catalog.packages import Package, get_package, list_packages, resolve_properties
from catalog.quotas import QUOTAS
from catalog.store import Store

SESSION_TTL = 3600
"""Seconds an untouched session lives."""
MAX_CHANGES = 100
MAX_BYTES = 512 * 1024
"""Encoded size of one session (etcd refuses values past 1.5 MiB)."""
MAX_OPEN = 20
SERVICE_TYPES = ("KubernetesCluster", "KubernetesPod", "KubernetesApplication")

State = Literal["opened", "deployed"]


class Change(TypedDict, total=False):
    op: Literal["add", "remove"]
    id: str
    body: JsonObject
    """add: Marina's `{"package", "name", "properties"}`."""


class SessionDoc(TypedDict):
    id: str
    environment_id: str
    user_id: str
    version: int
    state: State
    created: float
    updated: float
    changes: list[Change]
    lease: int


class StaleSession(MarinaError):
    """Another session was deployed after this one was opened."""

    status = 403
    code = "stale_session"

    def __init__(self, session_id: str, version: int, current: int) -> None:
        self.session_id, self.version, self.current = session_id, version, current
        super().__init__(
            f"session {session_id!r} is invalid: it was opened on version {version} of the "
            f"environment, which another session has since deployed as version {current}"
        )


def public(session: SessionDoc) -> MuranoDocument:
    """The session as Murano shows it."""
    return {k: v for k, v in session.items() if k not in ("changes", "lease")}


async def deployed_version(store: Store, env_id: str) -> tuple[int, int | None]:
    """The environment's deployed version and its key's revision (None: never deployed)."""
    found = await store.get(keys.environment_version(env_id))
    return (0, None) if found is None else (int(found.value["version"]), found.mod_revision)


async def open_session(store: Store, env_id: str, project: ProjectId) -> SessionDoc:
    envs.require_live((await envs.load(store, env_id, project)).value)
    opened = await store.list(keys.sessions_of(env_id))
    quotas.check("sessions", MAX_OPEN, used=len(opened))
    version, _ = await deployed_version(store, env_id)
    now = time.time()
    lease = await store.grant_lease(SESSION_TTL)
    session: SessionDoc = {
        "id": new_id(),
        "environment_id": env_id,
        "user_id": project,
        "version": version,
        "state": "opened",
        "created": now,
        "updated": now,
        "changes": [],
        "lease": lease,
    }
    await store.create(keys.session(env_id, session["id"]), session, lease=lease)
    return session


async def get_session(store: Store, env_id: str, session_id: str, project: ProjectId) -> SessionDoc:
    await envs.load(store, env_id, project)
    found = await store.get(keys.session(env_id, session_id))
    if found is None or found.value["user_id"] != project:
        raise NotFound("session", session_id)
    doc: SessionDoc = found.value
    return doc


async def delete_session(store: Store, env_id: str, session_id: str, project: ProjectId) -> None:
    session = await get_session(store, env_id, session_id, project)
    await store.delete(keys.session(env_id, session_id))
    await store.revoke_lease(session["lease"])


async def _save(store: Store, session: SessionDoc) -> None:
    if len(json.dumps(session)) > MAX_BYTES:
        raise TooLarge("session", MAX_BYTES)
    session["updated"] = time.time()
    await store.put(
        keys.session(session["environment_id"], session["id"]), session, lease=session["lease"]
    )
    await store.refresh_lease(session["lease"])


def _open(session: SessionDoc) -> None:
    if session["state"] != "opened":
        raise Conflict(f"session {session['id']!r}", f"it is {session['state']}; open another")


# -- the session's view --------------------------------------------------------------


def _instantiate(
    package: Package,
    properties: JsonObject,
    doc: EnvironmentDocument,
    obj_id: str,
    name: Any,
    *,
    single_master: str | None = None,
) -> list[EnvironmentObject]:
    """The objects a recorded addition makes, its top object under the id it was given."""
    made = envs.instantiate(package, properties, doc, name=name, single_master=single_master)
    old = made[0]["?"]["id"]
    # Ids are random hex; renaming the top one everywhere keeps every reference to it.
    renamed: list[EnvironmentObject] = json.loads(json.dumps(made).replace(old, obj_id))
    return renamed


async def _packages_of(store: Store, changes: list[Change]) -> dict[str, Package]:
    wanted = {str(c["body"]["package"]) for c in changes if c["op"] == "add"}
    return {name: await get_package(store, name) for name in wanted}


def apply_changes(
    doc: EnvironmentDocument,
    changes: list[Change],
    packages: dict[str, Package],
    *,
    single_master: str | None = None,
) -> EnvironmentDocument:
    """The document with the changes applied, in order (changes `doc` in place);
    `single_master` as `environments.instantiate` takes it."""
    for change in changes:
        if change["op"] == "add":
            body = change["body"]
            package = packages[str(body["package"])]
            properties = resolve_properties(package, body.get("properties", {}))
            name = body.get("name")
            made = _instantiate(
                package, properties, doc, change["id"], name, single_master=single_master
            )
            for obj in made:
                doc["objects"][obj["?"]["id"]] = obj
                doc["order"].append(obj["?"]["id"])
        else:
            gone = set(owned(doc, change["id"]))
            for obj_id in gone:
                doc["objects"].pop(ObjectId(obj_id), None)
            doc["order"] = [i for i in doc["order"] if i not in gone]
    return doc


def owned(doc: EnvironmentDocument, obj_id: str) -> list[str]:
    """The object and those that exist for it (a cluster's nodes, an application's pods)."""
    found: list[str] = [obj_id]
    for other_id, other in doc["objects"].items():
        if other_id == obj_id:
            continue
        if other.get("app") == obj_id or (
            other["?"]["type"] not in SERVICE_TYPES and other.get("cluster") == obj_id
        ):
            found.append(other_id)
    return found


async def view(store: Store, env_id: str, project: ProjectId, session_id: str | None) -> Any:
    """The environment as the session sees it (as deployed without one)."""
    doc: EnvironmentDocument = (await envs.load(store, env_id, project)).value
    if session_id is None:
        return doc
    session = await get_session(store, env_id, session_id, project)
    if session["state"] != "opened":  # a deployed session's changes are in the document
        return doc
    return apply_changes(doc, session["changes"], await _packages_of(store, session["changes"]))


def services(doc: EnvironmentDocument) -> list[EnvironmentObject]:
    """The top-level objects: clusters, applications and pods of no application."""
    found = (doc["objects"][i] for i in doc["order"])
    return [o for o in found if o["?"]["type"] in SERVICE_TYPES and not o.get("app")]


def settings_of(obj: EnvironmentObject) -> JsonObject:
    """What a user sets on a service: its properties (a pod's specification)."""
    given = obj.get("properties", obj.get("spec", {}))
    return dict(given) if isinstance(given, dict) else {}


# -- recording changes ---------------------------------------------------------------


async def to_marina_body(store: Store, given: Json, *, where: str) -> JsonObject:
    """Marina's `{"package", "name", "properties"}` from Murano's object form
    (`{"?": {"type": ...}, "name": ..., property: value, ...}`) or from Marina's own."""
    if not isinstance(given, dict):
        raise ValidationFailed(where, [Problem(where, "must be a JSON object", given)])
    if "?" not in given:
        return given
    head = given["?"] if isinstance(given["?"], dict) else {}
    kind = head.get("type")
    if not isinstance(kind, str) or not kind:
        raise ValidationFailed(where, [Problem(f"{where}.?.type", "is required: a class", kind)])
    package = await _package_for(store, head, kind, where)
    declared = package.manifest["properties"].get("properties", {})
    properties = {
        k: v for k, v in given.items() if k != "?" and (k != "name" or "name" in declared)
    }
    body: JsonObject = {"package": package.name, "properties": properties}
    if given.get("name") is not None:
        body["name"] = given["name"]
    return body


async def _package_for(store: Store, head: JsonObject, kind: str, where: str) -> Package:
    """The package a Murano type names: `Class/version@package`, `?.package`, a
    package's name, or the only package of that class."""
    kind, _, named = kind.partition("@")
    kind = kind.split("/", 1)[0]
    wanted = named or head.get("package")
    if isinstance(wanted, str) and wanted:
        return await get_package(store, wanted)
    catalog = await list_packages(store)
    by_name = [p for p in catalog if p["name"] == kind]
    by_class = [p for p in catalog if p["class"] == kind]
    found = by_name or by_class
    if len(found) != 1:
        rule = (
            "names no package or class in the catalog"
            if not found
            else "is the class of several packages: write 'Class@package'"
        )
        raise ValidationFailed(where, [Problem(f"{where}.?.type", rule, kind)])
    return await get_package(store, str(found[0]["name"]))


async def record(
    store: Store,
    session: SessionDoc,
    project: ProjectId,
    changes: list[Change],
    *,
    single_master: str | None = None,
) -> EnvironmentDocument:
    """Add `changes` to the session once the view they make is valid (nothing is
    saved otherwise); the new view. `single_master`: as `environments.instantiate`
    takes it."""
    _open(session)
    env_id = session["environment_id"]
    everything = session["changes"] + changes
    if len(everything) > MAX_CHANGES:
        raise ValidationFailed(
            "session", [Problem("changes", f"a session holds at most {MAX_CHANGES} changes")]
        )
    doc: EnvironmentDocument = (await envs.load(store, env_id, project)).value
    packages = await _packages_of(store, everything)
    made = apply_changes(doc, everything, packages, single_master=single_master)
    added = envs.count_objects(made["objects"].values())
    used = await envs.project_usage(store, project)
    before = envs.count_objects((await envs.load(store, env_id, project)).value["objects"].values())
    for quota in ("nodes", "pods"):
        extra = added[quota] - before[quota]
        if extra > 0:
            quotas.check(quota, getattr(QUOTAS, quota), used=used[quota], wanted=extra)
    session["changes"] = everything
    await _save(store, session)
    return made


def removal(doc: EnvironmentDocument, session: SessionDoc, obj_id: str) -> list[Change]:
    """The change that removes a service: a session's own addition is forgotten; a
    service never deployed is removed; a deployed one is refused (its pods run)."""
    found = doc["objects"].get(ObjectId(obj_id))
    if found is None or found["?"]["type"] not in SERVICE_TYPES or found.get("app"):
        raise NotFound("service", obj_id)
    if any(c["op"] == "add" and c["id"] == obj_id for c in session["changes"]):
        session["changes"] = [c for c in session["changes"] if c.get("id") != obj_id]
        return []
    if found.get("state") not in ("new", None):
        raise Conflict(
            f"service {obj_id!r}",
            "it is deployed; delete the environment, or scale it down with its actions",
        )
    return [{"op": "remove", "id": obj_id}]


async def replace_services(
    store: Store,
    env_id: str,
    session_id: str,
    project: ProjectId,
    given: Json,
    *,
    where: str,
    single_master: str | None = None,
) -> EnvironmentDocument:
    """PUT of services: each given service replaces the one of its id (a new id
    adds one; at the root, a service left out is removed)."""
    session = await get_session(store, env_id, session_id, project)
    _open(session)
    doc = await view(store, env_id, project, session_id)
    items = given if isinstance(given, list) else [given]
    current: dict[str, EnvironmentObject] = {str(s["?"]["id"]): s for s in services(doc)}
    changes: list[Change] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        here = f"{where}[{index}]" if isinstance(given, list) else where
        head = item.get("?") if isinstance(item, dict) else None
        obj_id = head.get("id") if isinstance(head, dict) else None
        if isinstance(obj_id, str) and obj_id in current:
            seen.add(obj_id)
            old = current[obj_id]
            named = item.get("name") if isinstance(item, dict) else None
            unchanged = settings_of(old) == _settings_given(item) and named in (
                None,
                old["?"]["name"],
            )
            if unchanged:
                continue
            if not any(c["op"] == "add" and c["id"] == obj_id for c in session["changes"]):
                problems.append(
                    Problem(
                        here,
                        "changes a service outside this session's additions; "
                        "change deployed services with their actions",
                        obj_id,
                    )
                )
                continue
            body = await to_marina_body(store, item, where=here)
            session["changes"] = [
                {**c, "body": body} if c.get("id") == obj_id else c for c in session["changes"]
            ]
        else:
            body = await to_marina_body(store, item, where=here)
            fresh = obj_id if isinstance(obj_id, str) and _is_id(obj_id) else new_id()
            changes.append({"op": "add", "id": fresh, "body": body})
    if isinstance(given, list):
        for obj_id in current.keys() - seen:
            changes += removal(doc, session, obj_id)
    if problems:
        raise ValidationFailed(where, problems)
    return await record(store, session, project, changes, single_master=single_master)


def _is_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def _settings_given(item: Json) -> JsonObject:
    if not isinstance(item, dict):
        return {}
    return {k: v for k, v in item.items() if k not in ("?", "name")}


# -- deploying -----------------------------------------------------------------------


async def deploy(
    store: Store, env_id: str, session_id: str, project: ProjectId
) -> EnvironmentDocument:
    """Apply the session's changes to the environment as its next version; the
    changed document. Refused when another session deployed first."""
    session = await get_session(store, env_id, session_id, project)
    _open(session)
    version, revision = await deployed_version(store, env_id)
    if version != session["version"]:
        raise StaleSession(session_id, session["version"], version)
    packages = await _packages_of(store, session["changes"])
    # Claiming the version first makes a second deploy of the same base fail here.
    claimed = {"version": version + 1, "session": session_id}
    key = keys.environment_version(env_id)
    try:
        if revision is None:
            await store.create(key, claimed)
        else:
            await store.replace(key, claimed, mod_revision=revision)
    except Conflict:
        raise StaleSession(session_id, session["version"], version + 1) from None

    def apply(doc: EnvironmentDocument) -> EnvironmentDocument:
        envs.require_live(doc)
        apply_changes(doc, copy.deepcopy(session["changes"]), packages)
        # Murano's `version` of the environment, shown with it.
        doc["version"] = version + 1
        return doc

    try:
        doc = await envs.change(store, env_id, apply)
    except BaseException:
        # Nothing was applied: the version goes back, so the session can be mended.
        back = await store.get(key)
        if back is not None and back.value == claimed:
            if revision is None:
                await store.delete(key, mod_revision=back.mod_revision)
            else:
                await store.replace(
                    key, {"version": version, "session": None}, mod_revision=back.mod_revision
                )
        raise
    session["state"] = "deployed"
    await _save(store, session)
    return doc
