"""Services to gateway routes, in the contract the gateway agents read.

Internal services are served at their own address by the gateway on the
cluster's master (`<cluster>.internal` routes, TCP); public services by every
gateway node (`<cluster>` routes, HTTP). A replica is a backend while its
node reports it ready and it is not being drained.
"""

from __future__ import annotations

from typing import Any

from catalog.store import Store

ROUTES = "/marina/gateway/routes/"
STATUS = "/marina/gateway/status/"


def route_keys(cluster: str, service: dict[str, Any]) -> list[str]:
    keys = [f"{ROUTES}{cluster}.internal/{service['name']}"]
    if service.get("scope") == "public":
        keys.append(f"{ROUTES}{cluster}/{service['name']}")
    return keys


def routes_for(
    cluster: str, service: dict[str, Any], hosts: list[str]
) -> dict[str, dict[str, Any]]:
    backends = [{"host": h, "port": service["targetPort"]} for h in sorted(hosts)]
    routes = {
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


async def route_revisions(
    store: Store, cluster: str, services: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """For each route of these services: its backend hosts and revision."""
    found = []
    for service in services:
        for key in route_keys(cluster, service):
            route = await store.get(key)
            hosts = [b["host"] for b in route.value["backends"]] if route else []
            found.append(
                {"key": key, "hosts": hosts, "revision": route.mod_revision if route else 0}
            )
    return found


async def gateways_applied(store: Store, gateway_ids: list[str], revision: int) -> bool:
    for ident in gateway_ids:
        status = await store.get(f"{STATUS}{ident}")
        if status is None or int(status.value.get("applied_revision", 0)) < revision:
            return False
    return True
