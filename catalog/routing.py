"""Services to gateway routes, in the contract the gateway agents read.

Internal services are served at their own address by the gateway on the
cluster's master (`<cluster>.internal` routes, TCP); public services by every
gateway node (`<cluster>` routes, HTTP). A replica is a backend while its
node reports it ready and it is not being drained.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

from catalog import keys

ROUTES = keys.ROUTES


class Backend(TypedDict):
    host: str
    port: int


class Route(TypedDict):
    """A route as the gateway contract spells it (docs/architecture.md)."""

    port: int
    mode: str
    backends: list[Backend]
    scope: NotRequired[str]
    address: NotRequired[str]


def route_keys(cluster: str, service: Mapping[str, Any]) -> list[str]:
    keys = [f"{ROUTES}{cluster}.internal/{service['name']}"]
    if service.get("scope") == "public":
        keys.append(f"{ROUTES}{cluster}/{service['name']}")
    return keys


def routes_for(cluster: str, service: Mapping[str, Any], hosts: list[str]) -> dict[str, Route]:
    backends: list[Backend] = [{"host": h, "port": service["targetPort"]} for h in sorted(hosts)]
    routes: dict[str, Route] = {
        f"{ROUTES}{cluster}.internal/{service['name']}": {
            "port": service["port"],
            "mode": "tcp",
            "address": service["ip"],
            "scope": "internal",
            "backends": backends,
        }
    }
    if service.get("scope") == "public":
        routes[f"{ROUTES}{cluster}/{service['name']}"] = {
            "port": service["port"],
            "mode": "http",
            "scope": "public",
            "backends": backends,
        }
    return routes
