"""The served OpenAPI document is valid OpenAPI and names every API route."""

from __future__ import annotations

from openapi_spec_validator import validate

from catalog.api import make_app
from catalog.api.openapi import openapi_document


def test_document_is_valid_openapi():
    validate(openapi_document())


def test_every_v1_route_is_documented():
    app = make_app(store=None)  # type: ignore[arg-type]  # routes only; nothing is called
    routes = {
        r.resource.canonical
        for r in app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/v1/")
    }
    assert routes <= set(openapi_document()["paths"])
