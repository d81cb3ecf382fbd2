"""The API application: its routes, the dashboard, and the one place errors
become HTTP.

Errors are mapped to HTTP in `_errors`: a `MarinaError` answers with its
status and a JSON body naming the problem; anything else is a bug, logged here
and answered 500 without details.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

import catalog.classes  # noqa: F401  (the classes register their actions)
from catalog.api import actions, environments, events, murano, packages, pods, tasks, tokens
from catalog.api.handling import KEYSTONE, MAX_BODY, PROVIDER, STORE, reply_json
from catalog.api.openapi import openapi_document
from catalog.engines.base import Engine
from catalog.errors import MarinaError, Problem, ValidationFailed
from catalog.keystone import Keystone, KeystoneSettings
from catalog.providers.base import Provider
from catalog.store import Store
from catalog.validation import encodable

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        _check_request_text(request)
        return await handler(request)
    except MarinaError as exc:
        payload = exc.payload()
        response = reply_json(
            murano.murano_error(payload) if murano.is_murano(request) else payload, exc.status
        )
        if exc.status == 503:  # the store is away; `marina up` brings it back
            response.headers["Retry-After"] = "1"
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        payload = {"error": "http", "message": exc.reason}
        response = reply_json(
            murano.murano_error(payload) if murano.is_murano(request) else payload, exc.status
        )
        if "Allow" in exc.headers:  # a 405 says which methods the route takes
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return reply_json(
            {"error": "internal", "message": "internal error; see the server log"}, 500
        )


def _check_request_text(request: web.Request) -> None:
    """Path and query values that are not valid Unicode are refused before any
    handler sees them (they would break every client that shows them)."""
    problems = [
        Problem(name, "is not valid Unicode")
        for name, value in [*request.match_info.items(), *request.query.items()]
        if not encodable(name) or not encodable(value)
    ]
    if problems:
        raise ValidationFailed("request", problems)


async def openapi(request: web.Request) -> web.Response:
    return reply_json(openapi_document())


DASHBOARD = Path(__file__).resolve().parent.parent / "dashboard"


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        DASHBOARD / "index.html",
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP},
    )


# The dashboard loads only its own script and style; no inline code runs.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def make_app(
    store: Store,
    *,
    engine: Engine | None = None,
    provider: Provider | None = None,
    keystone: str | None = None,
) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY)
    app[STORE] = store
    if keystone is not None:  # Murano's clients may bring Keystone tokens
        app[KEYSTONE] = Keystone(KeystoneSettings(keystone))
    if engine is not None:  # pods' logs come from it
        app[pods.ENGINE] = engine
    if provider is not None:  # what its nodes can be is checked when a cluster is added
        app[PROVIDER] = provider
    r = app.router
    r.add_get("/v1/openapi.json", openapi)
    r.add_get("/v1/environments", murano.list_environments)
    r.add_post("/v1/environments", murano.create_environment)
    r.add_post("/v1/environments/import", environments.import_environment)
    r.add_get("/v1/environments/{env_id}", murano.show_environment)
    r.add_put("/v1/environments/{env_id}", murano.rename_environment)
    r.add_delete("/v1/environments/{env_id}", murano.delete_environment)
    r.add_get("/v1/environments/{env_id}/services", murano.list_services)
    r.add_post("/v1/environments/{env_id}/services", murano.add_service)
    # Murano's session workflow (catalog.api.murano): services under a session.
    services = "/v1/environments/{env_id}/services/{path:.*}"
    r.add_get(services, murano.list_services)
    r.add_post(services, murano.add_service)
    r.add_put(services, murano.replace_services)
    r.add_delete(services, murano.delete_service)
    r.add_patch("/v1/environments/{env_id}/model/", murano.patch_model)
    r.add_post("/v1/environments/{env_id}/configure", murano.configure)
    r.add_get("/v1/environments/{env_id}/sessions/{session_id}", murano.show_session)
    r.add_delete("/v1/environments/{env_id}/sessions/{session_id}", murano.delete_session)
    r.add_post("/v1/environments/{env_id}/sessions/{session_id}/deploy", murano.deploy_session)
    r.add_get("/v1/environments/{env_id}/deployments", murano.list_deployments)
    r.add_get("/v1/environments/{env_id}/deployments/{deployment_id}", murano.deployment_reports)
    r.add_post("/v1/actions", murano.static_action)
    r.add_get("/v1/catalog/categories", murano.list_categories)
    r.add_get("/v1/catalog/packages/{package_id}", murano.show_package)
    r.add_patch("/v1/catalog/packages/{package_id}", murano.update_package)
    r.add_delete("/v1/catalog/packages/{package_id}", murano.delete_package)
    r.add_get("/v1/catalog/packages/{package_id}/download", murano.download_package)
    r.add_get("/v1/environments/{env_id}/actions", actions.list_actions)
    r.add_post("/v1/environments/{env_id}/actions/{action_id}", actions.run_action)
    r.add_get("/v1/environments/{env_id}/actions/{task_id}", actions.action_result)
    r.add_get("/v1/environments/{env_id}/tasks", tasks.list_tasks)
    r.add_get("/v1/environments/{env_id}/status", pods.environment_status)
    r.add_get("/v1/environments/{env_id}/pods/{pod}/logs", pods.pod_logs)
    r.add_delete("/v1/environments/{env_id}/objects/{object_id}", pods.remove_object)
    r.add_get("/v1/environments/{env_id}/events", events.environment_events)
    r.add_get("/v1/tasks/{task_id}", tasks.show_task)
    r.add_get("/v1/tasks/{task_id}/events", events.task_events)
    r.add_get("/v1/tasks/{task_id}/log", tasks.show_task_log)
    r.add_get("/v1/tasks/{task_id}/files/{name}", tasks.task_file_download)
    r.add_get("/v1/catalog/packages", murano.list_packages_route)
    r.add_post("/v1/catalog/packages", murano.upload_package)
    r.add_post("/v1/packages/import", packages.import_package)
    r.add_post("/v1/tokens", tokens.create_token)
    r.add_get("/", dashboard)
    r.add_static("/dashboard/", DASHBOARD)
    return app
