"""Kubernetes objects from pod specs: what an engine applies, and what an export holds.

Pure data, no client library: the local engine renders with it for
`exportConfig`, and the Kubernetes engine applies the same objects.
"""

from __future__ import annotations

import re
from typing import Any

from catalog.engines.base import PodSpec


def k8s_name(text: str) -> str:
    """A DNS label: lower case, anything else a dash, at most 63 characters."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "marina"


def manifests_for_specs(
    specs: list[PodSpec], *, namespace: str
) -> list[tuple[str, dict[str, Any]]]:
    """The Kubernetes objects for these pods, in the order they depend on each other."""
    out: list[tuple[str, dict[str, Any]]] = [
        (
            "namespace",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": namespace,
                    "labels": {"app.kubernetes.io/managed-by": "marina"},
                },
            },
        )
    ]
    secrets: list[tuple[str, dict[str, Any]]] = []
    deployments: list[tuple[str, dict[str, Any]]] = []
    services: list[tuple[str, dict[str, Any]]] = []
    for spec in sorted(specs, key=lambda p: p["name"]):
        name = spec["name"]
        labels = {**spec.get("labels", {}), "marina.pod": name}
        containers = []
        for container in spec["containers"]:
            env: list[dict[str, Any]] = [
                {"name": k, "value": v} for k, v in sorted(container.get("env", {}).items())
            ]
            secret_values = container.get("secrets", {})
            if secret_values:
                secret_name = k8s_name(f"{name}-{container['name']}")
                secrets.append(
                    (
                        f"secret-{secret_name}",
                        {
                            "apiVersion": "v1",
                            "kind": "Secret",
                            "type": "Opaque",
                            "metadata": {"name": secret_name, "namespace": namespace},
                            "stringData": dict(sorted(secret_values.items())),
                        },
                    )
                )
                env += [
                    {"name": k, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": k}}}
                    for k in sorted(secret_values)
                ]
            entry: dict[str, Any] = {
                "name": container["name"],
                "image": container["image"],
                "ports": [
                    {"containerPort": p["containerPort"], "protocol": "TCP"}
                    for p in container.get("ports", [])
                ],
                "resources": {
                    "requests": {
                        "cpu": f"{round(float(container.get('cores', 0.1)) * 1000)}m",
                        "memory": f"{int(container.get('memory', 64))}Mi",
                    }
                },
            }
            command = [w.replace("${package}", "/app") for w in container.get("command", [])]
            if command:
                entry["command"] = command
            if container.get("args"):
                entry["args"] = container["args"]
            if env:
                entry["env"] = env
            containers.append(entry)
        deployments.append(
            (
                f"deployment-{name}",
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name, "namespace": namespace, "labels": labels},
                    "spec": {
                        "replicas": spec["replicas"],
                        "selector": {"matchLabels": {"marina.pod": name}},
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {"containers": containers},
                        },
                    },
                },
            )
        )
        for service in spec["services"]:
            kind = {"public": "NodePort", "cloud": "LoadBalancer"}.get(
                service.get("scope", "internal"), "ClusterIP"
            )
            port: dict[str, Any] = {
                "name": "p" + str(service["port"]),
                "protocol": "TCP",
                "port": service["port"],
                "targetPort": service.get("targetPort", service["port"]),
            }
            if kind == "NodePort" and 30000 <= service["port"] <= 32767:
                port["nodePort"] = service["port"]
            services.append(
                (
                    f"service-{service['name']}",
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {
                            "name": service["name"],
                            "namespace": namespace,
                            "labels": {"marina.pod": name},
                        },
                        "spec": {"type": kind, "selector": {"marina.pod": name}, "ports": [port]},
                    },
                )
            )
    return out + secrets + services + deployments
