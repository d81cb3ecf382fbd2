"""OpenAPI v3 documents built from the official schemas, as much as kubectl reads.

kubectl asks `/openapi/v3` which group-versions exist, then reads each one's
document: whether PATCH takes `fieldValidation` (so validation happens on
the server, strictly) and the schemas' patch metadata for three-way
strategic merges in `kubectl apply`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from tests.kubeapi.resources import RESOURCES, Resource
from tests.kubeapi.validation import SCHEMA_VERSIONS, definitions

Obj = dict[str, Any]
GROUP_VERSIONS = sorted({r.group_version_path.lstrip("/") for r in RESOURCES})
QUERY = ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")


def _convert(node: Any) -> Any:
    """JSON-schema `$defs` to OpenAPI 3 components: refs moved, nullable types folded."""
    if isinstance(node, list):
        return [_convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: Obj = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            out[key] = "#/components/schemas/" + value.rsplit("/", 1)[1]
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            out[key] = types[0] if len(types) == 1 else types
        elif key == "enum" and isinstance(value, list):
            out[key] = [v for v in value if v is not None]
        else:
            out[key] = _convert(value)
    return out


@functools.cache
def _schemas() -> Obj:
    return _convert(definitions(SCHEMA_VERSIONS[-1]))  # type: ignore[no-any-return]


def _gvk(resource: Resource) -> Obj:
    return {"group": resource.group, "version": resource.version, "kind": resource.kind}


def _schema_name(resource: Resource) -> str:
    for name, node in definitions(SCHEMA_VERSIONS[-1]).items():
        if _gvk(resource) in (node.get("x-kubernetes-group-version-kind") or []):
            return name
    raise KeyError(resource.kind)


def _operation(resource: Resource, verb: str, action: str) -> Obj:
    ref = {"$ref": f"#/components/schemas/{_schema_name(resource)}"}
    params = [
        {"name": q, "in": "query", "schema": {"type": "string"}, "uniqueItems": True} for q in QUERY
    ]
    operation: Obj = {
        "operationId": f"{verb}{resource.kind}",
        "parameters": params if verb in ("patch", "create", "replace") else [],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ref}}}
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(resource),
    }
    if verb in ("patch", "create", "replace"):
        types = (
            (
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            )
            if verb == "patch"
            else ("application/json",)
        )
        operation["requestBody"] = {"content": {t: {"schema": ref} for t in types}}
    return operation


@functools.cache
def _document(group_version: str) -> str:
    paths: Obj = {}
    for r in RESOURCES:
        if r.group_version_path.lstrip("/") != group_version:
            continue
        base = f"/{group_version}" + ("/namespaces/{namespace}" if r.namespaced else "")
        paths[f"{base}/{r.plural}"] = {
            "get": _operation(r, "list", "list"),
            "post": _operation(r, "create", "post"),
        }
        paths[f"{base}/{r.plural}/{{name}}"] = {
            "get": _operation(r, "read", "get"),
            "put": _operation(r, "replace", "put"),
            "patch": _operation(r, "patch", "patch"),
            "delete": _operation(r, "delete", "delete"),
        }
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.4"},
        "paths": paths,
        "components": {"schemas": _schemas()},
    }
    return json.dumps(doc)


def openapi_index() -> Obj:
    paths = {}
    for gv in GROUP_VERSIONS:
        digest = hashlib.sha256(_document(gv).encode()).hexdigest()[:32].upper()
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
    return {"paths": paths}


def openapi_v3(group_version: str) -> str | None:
    """The document of one group-version, as JSON text."""
    if group_version not in GROUP_VERSIONS:
        return None
    return _document(group_version)
