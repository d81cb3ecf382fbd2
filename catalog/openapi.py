"""The OpenAPI document the API serves at /v1/openapi.json."""

from __future__ import annotations

from typing import Any

from catalog.actions import ACTIONS

ERROR = {"$ref": "#/components/schemas/Error"}


def _op(
    summary: str,
    *,
    ok: int = 200,
    body: dict[str, Any] | None = None,
    content: str = "application/json",
    request: str = "application/json",
    params: tuple[str, ...] = (),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ],
        "responses": {
            str(ok): {"description": "success", "content": {content: {"schema": {}}}},
            "400": {
                "description": "invalid input, naming the field",
                "content": {"application/json": {"schema": ERROR}},
            },
            "401": {
                "description": "no or unknown token",
                "content": {"application/json": {"schema": ERROR}},
            },
            "404": {
                "description": "not found (or another project's)",
                "content": {"application/json": {"schema": ERROR}},
            },
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {request: {"schema": body}}}
    return op


def openapi_document() -> dict[str, Any]:
    env = ("env_id",)
    task = ("task_id",)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Marina",
            "version": "1",
            "description": "Action-driven application catalog. Actions: "
            + ", ".join(
                f"{kind}.{spec.method}" for kind, specs in ACTIONS.items() for spec in specs
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
                "get": _op("List the project's environments"),
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
                "delete": _op("Tear an environment down (a task)", ok=202, params=env),
            },
            "/v1/environments/{env_id}/services": {
                "get": _op("List the environment's applications", params=env),
                "post": _op(
                    "Add an application from a package",
                    ok=201,
                    params=env,
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
                    "The task's log; ?follow=1 streams NDJSON until it finishes", params=task
                )
            },
            "/v1/tasks/{task_id}/files/{name}": {
                "get": _op(
                    "A file the task attached",
                    params=("task_id", "name"),
                    content="application/octet-stream",
                )
            },
            "/v1/catalog/packages": {
                "get": _op("List packages"),
                "post": _op(
                    "Upload a package (zip body; admin)",
                    ok=201,
                    request="application/zip",
                    body={"type": "string", "format": "binary"},
                ),
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
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI"}},
                }
            },
        },
    }
