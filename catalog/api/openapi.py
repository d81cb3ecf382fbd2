"""The OpenAPI document the API serves at /v1/openapi.json."""

from __future__ import annotations

from typing import Any, TypeAlias

from catalog.classes.registry import classes

OpenApi: TypeAlias = dict[str, Any]
"""A part of the OpenAPI 3.1 document (its schemas are JSON-Schemas)."""

ERROR = {"$ref": "#/components/schemas/Error"}
PAGING = (
    {
        "name": "limit",
        "in": "query",
        "description": "at most this many items (default 100)",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
    {
        "name": "marker",
        "in": "query",
        "description": "the items after this one (a previous page's next_marker)",
        "schema": {"type": "string"},
    },
)
# Every operation may answer these, besides its own success and 400/401/404.
COMMON = {
    "405": "method not allowed; the Allow header names those that are",
    "408": "the body did not arrive in time",
    "409": "conflicts with the current state (a name taken, a deletion under way)",
    "413": "the body is too large",
    "429": "a project quota would be exceeded (the body names it)",
    "503": "the store is unavailable; retry later",
}


def _error(description: str) -> OpenApi:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _op(
    summary: str,
    *,
    ok: int = 200,
    body: OpenApi | None = None,
    content: str = "application/json",
    request: str = "application/json",
    params: tuple[str, ...] = (),
    query: tuple[OpenApi, ...] = (),
    also: tuple[str, ...] = (),
    also_ok: int | None = None,
    secured: bool = True,
) -> OpenApi:
    op: OpenApi = {
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ]
        + list(query),
        "responses": {
            str(ok): {
                "description": "success",
                "content": {kind: {"schema": {}} for kind in (content, *also)},
            },
            "400": _error("invalid input, naming the field"),
            "401": _error("no or unknown token"),
            "404": _error("not found (or another project's)"),
            **{status: _error(text) for status, text in COMMON.items()},
        },
    }
    if also_ok is not None:  # a second success (a dry run's 200 beside a 201)
        op["responses"][str(also_ok)] = op["responses"][str(ok)]
    if not secured:
        op["security"] = []
        del op["responses"]["401"]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {request: {"schema": body}}}
    return op


def openapi_document() -> OpenApi:
    env = ("env_id",)
    task = ("task_id",)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Marina",
            "version": "1",
            "description": "Action-driven application catalog. Actions: "
            + ", ".join(
                f"{kind}.{method}" for kind, specs in classes().items() for method in specs
            ),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "problems": {"type": "array"},
                    },
                }
            },
        },
        "paths": {
            "/v1/environments": {
                "get": _op(
                    "List the project's environments, by id, a page at a time", query=PAGING
                ),
                "post": _op(
                    "Create an environment",
                    ok=201,
                    body={
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string", "maxLength": 80}},
                    },
                ),
            },
            "/v1/environments/import": {
                "post": _op(
                    "A new environment from an export's marina.json",
                    ok=201,
                    body={"type": "object"},
                ),
            },
            "/v1/environments/{env_id}": {
                "get": _op("Show an environment with its objects and actions", params=env),
                "put": _op(
                    "Rename an environment",
                    params=env,
                    body={
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string", "maxLength": 80}},
                    },
                ),
                "delete": _op("Tear an environment down (a task)", ok=202, params=env),
            },
            "/v1/environments/{env_id}/services": {
                "get": _op("List the environment's applications", params=env),
                "post": _op(
                    "Add an application from a package (?dry_run=1: check, answer 200 with "
                    "the objects it would add, save nothing)",
                    ok=201,
                    params=env,
                    query=(
                        {
                            "name": "dry_run",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["0", "1", "true", "false"]},
                        },
                    ),
                    also_ok=200,
                    body={
                        "type": "object",
                        "required": ["package"],
                        "properties": {
                            "package": {"type": "string"},
                            "name": {"type": "string"},
                            "properties": {"type": "object"},
                        },
                    },
                ),
            },
            "/v1/environments/{env_id}/actions": {
                "get": _op("Every available action with its argument schema", params=env),
            },
            "/v1/environments/{env_id}/actions/{action_id}": {
                "post": _op(
                    "Run an action (body: its arguments); answers a task id",
                    ok=202,
                    params=("env_id", "action_id"),
                    body={"type": "object"},
                ),
            },
            "/v1/environments/{env_id}/actions/{task_id}": {
                "get": _op(
                    "Murano's result shape: {} until finished", params=("env_id", "task_id")
                ),
            },
            "/v1/environments/{env_id}/tasks": {
                "get": _op("The environment's recent tasks, newest first", params=env),
            },
            "/v1/environments/{env_id}/objects/{object_id}": {
                "delete": _op(
                    "Remove an application (with its pods), a pod or a cluster with nothing "
                    "on it, by id or name (a task)",
                    ok=202,
                    params=("env_id", "object_id"),
                ),
            },
            "/v1/environments/{env_id}/status": {
                "get": _op(
                    "One summary: applications, pods and their replicas (ready, restarts, "
                    "last reason), public URLs, nodes, the latest tasks",
                    params=env,
                ),
            },
            "/v1/environments/{env_id}/pods/{pod}/logs": {
                "get": _op(
                    "A replica's output (the pod by id or name); ?follow=1 streams more",
                    params=("env_id", "pod"),
                    content="text/plain",
                    query=(
                        {
                            "name": "replica",
                            "in": "query",
                            "description": "the replica's index (default 0)",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 10000},
                        },
                        {
                            "name": "tail",
                            "in": "query",
                            "description": "only the last N lines",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 100000},
                        },
                        {
                            "name": "follow",
                            "in": "query",
                            "schema": {
                                "type": "string",
                                "enum": ["0", "1", "true", "false", "yes", "no"],
                            },
                        },
                        {
                            "name": "timeout",
                            "in": "query",
                            "description": "seconds to follow at most (default 3600)",
                            "schema": {
                                "type": "number",
                                "minimum": 0,
                                "exclusiveMinimum": True,
                                "maximum": 3600,
                            },
                        },
                    ),
                ),
            },
            "/v1/environments/{env_id}/events": {
                "get": _op(
                    "Server-Sent Events: the environment after every change "
                    "(?access_token= accepted)",
                    params=env,
                    content="text/event-stream",
                ),
            },
            "/v1/tasks/{task_id}/events": {
                "get": _op(
                    "Server-Sent Events: log lines, the task, its result (?access_token= accepted)",
                    params=task,
                    content="text/event-stream",
                ),
            },
            "/v1/tasks/{task_id}": {"get": _op("The whole task", params=task)},
            "/v1/tasks/{task_id}/log": {
                "get": _op(
                    "The task's log; ?follow=1 streams NDJSON until it finishes",
                    params=task,
                    also=("application/x-ndjson",),
                    query=(
                        {
                            "name": "follow",
                            "in": "query",
                            "schema": {
                                "type": "string",
                                "enum": ["0", "1", "true", "false", "yes", "no"],
                            },
                        },
                        {
                            "name": "timeout",
                            "in": "query",
                            "description": "seconds to follow at most (default 600)",
                            "schema": {
                                "type": "number",
                                "minimum": 0,
                                "exclusiveMinimum": True,
                                "maximum": 3600,
                            },
                        },
                    ),
                )
            },
            "/v1/tasks/{task_id}/files/{name}": {
                "get": _op(
                    "A file the task attached",
                    params=("task_id", "name"),
                    content="*/*",  # the type the task gave the file
                )
            },
            "/v1/catalog/packages": {
                "get": _op("List packages, by name, a page at a time", query=PAGING),
                "post": _op(
                    "Upload a package (zip body; admin); an older version replaces a newer "
                    "one only with allow_downgrade=true. Answers what changed.",
                    ok=201,
                    query=(
                        {
                            "name": "allow_downgrade",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["true", "false", "1", "0"]},
                        },
                        {"name": "filename", "in": "query", "schema": {"type": "string"}},
                    ),
                    request="application/zip",
                    body={"type": "string", "format": "binary"},
                ),
            },
            "/v1/packages/import": {
                "post": _op(
                    "Import a docker-compose file, Panamax template (.pmx) or Zoe application "
                    "(JSON) as a package (the file is the body; admin). Answers the package "
                    "and every field not carried over: warnings of {file, pointer, kind, code, "
                    "reason}. A bad file is a 400 naming each problem and its line; nothing is "
                    "saved. A package of the same name is replaced only with replace=true.",
                    ok=201,
                    query=tuple(
                        {"name": n, "in": "query", "description": d, "schema": {"type": "string"}}
                        for n, d in (
                            ("filename", "the file's name (its ending helps detect the format)"),
                            ("format", "compose, pmx or zapp; detected when left out"),
                            ("name", "the package name (a DNS label)"),
                            ("dry_run", "true: translate and answer, save nothing (200)"),
                            ("replace", "true: replace a package of the same name"),
                        )
                    ),
                    request="application/octet-stream",
                    body={"type": "string", "format": "binary"},
                )
            },
            "/v1/tokens": {
                "post": _op(
                    "Issue a token for a project (admin)",
                    ok=201,
                    body={
                        "type": "object",
                        "required": ["project"],
                        "properties": {"project": {"type": "string"}, "admin": {"type": "boolean"}},
                    },
                )
            },
            **murano_paths(),
            "/v1/openapi.json": {"get": _op("This document", secured=False)},
        },
    }


SESSION = (
    {
        "name": "X-Configuration-Session",
        "in": "header",
        "description": "a session from POST .../configure; its changes are seen only through it",
        "schema": {"type": "string"},
    },
)
JSON_PATCH = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["op", "path"],
        "properties": {
            "op": {"type": "string", "enum": ["add", "replace", "remove"]},
            "path": {"type": "string"},
            "value": {},
        },
    },
}


def murano_paths() -> OpenApi:
    """Murano's routes (catalog.api.murano): sessions, deployments, static actions
    and the package catalog, for python-muranoclient (docs/murano.md)."""
    env = ("env_id",)
    session = ("env_id", "session_id")
    package = ("package_id",)
    return {
        "/v1/environments/{env_id}/services/{path}": {
            "get": _op("One service (Murano's form)", params=("env_id", "path"), query=SESSION),
            "put": _op(
                "Replace the service (a session's own additions only)",
                params=("env_id", "path"),
                query=SESSION,
                body={"type": "object"},
            ),
            "delete": _op(
                "Remove a service in the session", params=("env_id", "path"), query=SESSION
            ),
        },
        "/v1/environments/{env_id}/model/": {
            "patch": _op(
                "JSON patch (add, replace, remove) of {services} in the session",
                params=env,
                query=SESSION,
                body=JSON_PATCH,
            ),
        },
        "/v1/environments/{env_id}/configure": {
            "post": _op("Open a configuration session", params=env),
        },
        "/v1/environments/{env_id}/sessions/{session_id}": {
            "get": _op("A session", params=session),
            "delete": _op("Forget a session", params=session),
        },
        "/v1/environments/{env_id}/sessions/{session_id}/deploy": {
            "post": _op(
                "Apply the session and queue deploy of what is new (403: another "
                "session deployed first)",
                params=session,
            ),
        },
        "/v1/environments/{env_id}/deployments": {
            "get": _op("The environment's tasks as Murano's deployments", params=env),
        },
        "/v1/environments/{env_id}/deployments/{deployment_id}": {
            "get": _op(
                "A deployment's reports (its task's log)", params=("env_id", "deployment_id")
            ),
        },
        "/v1/actions": {
            "post": _op(
                "Murano's static actions: no catalog class declares any (404)",
                body={
                    "type": "object",
                    "required": ["className", "methodName"],
                    "properties": {
                        "className": {"type": "string"},
                        "methodName": {"type": "string"},
                        "packageName": {"type": "string", "nullable": True},
                        "classVersion": {"type": "string"},
                        "parameters": {"type": "object"},
                    },
                },
            ),
        },
        "/v1/catalog/categories": {"get": _op("Categories of the catalog's packages")},
        "/v1/catalog/packages/{package_id}": {
            "get": _op("A package, with Murano's fields", params=package),
            "patch": _op(
                "Replace /enabled or /is_public (admin; muranoclient sends it as "
                "application/murano-packages-json-patch, read as JSON)",
                params=package,
                body=JSON_PATCH,
            ),
            "delete": _op("Delete a package (admin)", params=package),
        },
        "/v1/catalog/packages/{package_id}/download": {
            "get": _op("The package as a zip", params=package, content="application/zip"),
        },
    }
