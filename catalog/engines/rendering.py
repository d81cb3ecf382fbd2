"""Kubernetes objects from pod specs: what an engine applies, and what an export holds.

Pure data, no client library: the local engine renders with it for
`exportConfig`, and the Kubernetes engine applies the same objects.

What a replica gets on Kubernetes, as on the local engine: `POD_IP` and
`POD_NAME` from the downward API, the package's files (a ConfigMap mounted
where `${package}` points), secret values (a Secret with base64 `data`, so
that applying twice changes nothing), and Docker-link variables for each link
(`ALIAS_PORT_<port>_TCP_ADDR` and the rest), through a Service named after the
alias: a kubelet gives those variables for every Service of the namespace,
and they are spelled out when the service's address is known.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from catalog.documents import KubernetesObject
from catalog.engines.base import PodSpec
from catalog.errors import Problem, ValidationFailed

PACKAGE_MOUNT = "/app"
"""Where `${package}` points inside a container."""
CONFIGMAP_LIMIT = 1024 * 1024
"""The most a ConfigMap holds (etcd's object limit on Kubernetes)."""
POD_LABEL = "marina.pod"
POD_ID_LABEL = "marina.io/pod-id"
ALIAS_LABEL = "marina.io/alias-of"
SCOPE_ANNOTATION = "marina.io/scope"
FILES_ANNOTATION = "marina.io/files"


def k8s_name(text: str) -> str:
    """A DNS label: lower case, anything else a dash, at most 63 characters."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "marina"


def label_value(text: str) -> str:
    """A label value: what `k8s_name` keeps, or a digest when that would change it."""
    if re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", text):
        return text
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def files_configmap(
    name: str, namespace: str, package: str, files: Mapping[str, bytes]
) -> tuple[KubernetesObject, list[dict[str, str]], str]:
    """A package's files as a ConfigMap (text in `data`, the rest in
    `binaryData`), the volume items that put each at its path, and a digest
    that changes with the content; refused over the ConfigMap limit."""
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    items: list[dict[str, str]] = []
    digest = hashlib.sha256()
    for index, path in enumerate(sorted(files)):
        content = files[path]
        digest.update(path.encode() + b"\0" + hashlib.sha256(content).digest())
        key = f"f{index}-" + re.sub(r"[^-._a-zA-Z0-9]+", "_", path)[-200:]
        try:
            data[key] = content.decode()
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(content).decode()
        items.append({"key": key, "path": path})
    size = sum(len(k) + len(v) for k, v in data.items()) + sum(
        len(k) + len(v) for k, v in binary.items()
    )
    if size > CONFIGMAP_LIMIT:
        raise ValidationFailed(
            f"package {package}",
            [Problem("files", f"must fit a ConfigMap ({CONFIGMAP_LIMIT} bytes)", size)],
        )
    configmap: KubernetesObject = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {}},
    }
    if data:
        configmap["data"] = data
    if binary:
        configmap["binaryData"] = binary
    return configmap, items, digest.hexdigest()[:16]


def link_variables(alias: str, ip: str, port: int) -> dict[str, str]:
    """Docker-link variables, as a kubelet gives them for a Service named `alias`."""
    upper = alias.upper().replace("-", "_")
    url = f"tcp://{ip}:{port}"
    return {
        f"{upper}_SERVICE_HOST": ip,
        f"{upper}_SERVICE_PORT": str(port),
        f"{upper}_PORT": url,
        f"{upper}_PORT_{port}_TCP": url,
        f"{upper}_PORT_{port}_TCP_ADDR": ip,
        f"{upper}_PORT_{port}_TCP_PORT": str(port),
        f"{upper}_PORT_{port}_TCP_PROTO": "tcp",
    }


def manifests_for_specs(
    specs: list[PodSpec],
    *,
    namespace: str,
    files: Mapping[str, Mapping[str, bytes]] | None = None,
    addresses: Mapping[str, str] | None = None,
    namespace_labels: Mapping[str, str] | None = None,
    namespace_annotations: Mapping[str, str] | None = None,
) -> list[tuple[str, KubernetesObject]]:
    """The Kubernetes objects for these pods, in the order they depend on each
    other: Namespace, ConfigMaps and Secrets, Services, Deployments.

    `files` holds each package's files (a pod whose package is missing there
    gets none); `addresses` each service's cluster address, which spells out
    the link variables (else the kubelet gives them from the alias Services).
    """
    files = files or {}
    addresses = addresses or {}
    meta: KubernetesObject = {
        "name": namespace,
        "labels": {"app.kubernetes.io/managed-by": "marina", **(namespace_labels or {})},
    }
    if namespace_annotations:
        meta["annotations"] = dict(namespace_annotations)
    out: list[tuple[str, KubernetesObject]] = [
        ("namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
    ]
    configs: list[tuple[str, KubernetesObject]] = []
    deployments: list[tuple[str, KubernetesObject]] = []
    services: list[tuple[str, KubernetesObject]] = []
    targets = {s["name"]: (p, s) for p in specs for s in p["services"]}
    for spec in sorted(specs, key=lambda p: p["name"]):
        name = spec["name"]
        owned = {POD_LABEL: name}
        labels = {**spec.get("labels", {}), POD_LABEL: name, POD_ID_LABEL: label_value(spec["id"])}
        volumes: list[KubernetesObject] = []
        annotations: dict[str, str] = {}
        package = spec.get("package")
        if package and package in files:
            configmap, items, digest = files_configmap(
                k8s_name(f"{name}-files"), namespace, package, files[package]
            )
            configmap["metadata"]["labels"] = owned
            configs.append((f"configmap-{configmap['metadata']['name']}", configmap))
            volumes.append(
                {
                    "name": "package",
                    "configMap": {"name": configmap["metadata"]["name"], "items": items},
                }
            )
            # A changed package rolls the pod, as it restarts replicas on the local engine.
            annotations[FILES_ANNOTATION] = digest
        linked: dict[str, str] = {}
        for alias, target in sorted(spec.get("links", {}).items()):
            found = targets.get(target)
            if found is None:
                continue
            owner, service = found
            alias_name = k8s_name(alias)
            if alias_name != service["name"]:
                services.append(
                    (
                        f"service-{alias_name}",
                        {
                            "apiVersion": "v1",
                            "kind": "Service",
                            "metadata": {
                                "name": alias_name,
                                "namespace": namespace,
                                "labels": {**owned, ALIAS_LABEL: k8s_name(service["name"])},
                            },
                            "spec": {
                                "type": "ClusterIP",
                                "selector": {POD_LABEL: owner["name"]},
                                "ports": [_service_port(service, node_port=False)],
                            },
                        },
                    )
                )
            ip = addresses.get(alias_name) or addresses.get(service["name"])
            if ip:
                linked.update(link_variables(alias, ip, service["port"]))
        containers = []
        for container in spec["containers"]:
            values = {**linked, **spec.get("env", {}), **container.get("env", {})}
            env: list[KubernetesObject] = [
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ]
            env += [{"name": k, "value": v} for k, v in sorted(values.items())]
            secret_values = container.get("secrets", {})
            if secret_values:
                secret_name = k8s_name(f"{name}-{container['name']}")
                configs.append(
                    (
                        f"secret-{secret_name}",
                        {
                            "apiVersion": "v1",
                            "kind": "Secret",
                            "type": "Opaque",
                            "metadata": {
                                "name": secret_name,
                                "namespace": namespace,
                                "labels": owned,
                            },
                            # `data`, not `stringData`: the server keeps `data`, so
                            # applying the same object again changes nothing.
                            "data": {
                                k: base64.b64encode(v.encode()).decode()
                                for k, v in sorted(secret_values.items())
                            },
                        },
                    )
                )
                env += [
                    {"name": k, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": k}}}
                    for k in sorted(secret_values)
                ]
            entry: KubernetesObject = {
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
                "env": env,
            }
            command = [w.replace("${package}", PACKAGE_MOUNT) for w in container.get("command", [])]
            if command:
                entry["command"] = command
            if container.get("args"):
                entry["args"] = [w.replace("${package}", PACKAGE_MOUNT) for w in container["args"]]
            check = container.get("readiness")
            if check:
                probe = [w.replace("${package}", PACKAGE_MOUNT) for w in check["command"]]
                entry["readinessProbe"] = {
                    "exec": {"command": probe},
                    "initialDelaySeconds": check["start_period_s"],
                    "periodSeconds": check["interval_s"],
                    "timeoutSeconds": check["timeout_s"],
                    "failureThreshold": check["failure_threshold"],
                    "successThreshold": 1,
                }
            if volumes:
                entry["volumeMounts"] = [
                    {"name": "package", "mountPath": PACKAGE_MOUNT, "readOnly": True}
                ]
            containers.append(entry)
        template_meta: KubernetesObject = {"labels": labels}
        if annotations:
            template_meta["annotations"] = annotations
        pod_spec: KubernetesObject = {"containers": containers}
        if volumes:
            pod_spec["volumes"] = volumes
        deployments.append(
            (
                f"deployment-{name}",
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name, "namespace": namespace, "labels": labels},
                    "spec": {
                        "replicas": spec["replicas"],
                        "selector": {"matchLabels": {POD_LABEL: name}},
                        "template": {"metadata": template_meta, "spec": pod_spec},
                    },
                },
            )
        )
        for service in spec["services"]:
            scope = service.get("scope", "internal")
            kind = {"public": "NodePort", "cloud": "LoadBalancer"}.get(scope, "ClusterIP")
            services.append(
                (
                    f"service-{service['name']}",
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {
                            "name": service["name"],
                            "namespace": namespace,
                            "labels": owned,
                            "annotations": {SCOPE_ANNOTATION: scope},
                        },
                        "spec": {
                            "type": kind,
                            "selector": {POD_LABEL: name},
                            "ports": [_service_port(service, node_port=kind == "NodePort")],
                        },
                    },
                )
            )
    # A real service wins over an alias of its name; an alias is rendered once.
    unique: dict[str, tuple[str, KubernetesObject]] = {}
    for key, svc in sorted(services, key=lambda s: ALIAS_LABEL in s[1]["metadata"]["labels"]):
        unique.setdefault(key, (key, svc))
    return out + configs + sorted(unique.values(), key=lambda s: s[0]) + deployments


def _service_port(service: Mapping[str, Any], *, node_port: bool) -> KubernetesObject:
    port: KubernetesObject = {
        "name": "p" + str(service["port"]),
        "protocol": "TCP",
        "port": service["port"],
        "targetPort": service.get("targetPort", service["port"]),
    }
    # The public port where it can be one; elsewhere the cluster allocates.
    if node_port and 30000 <= service["port"] <= 32767:
        port["nodePort"] = service["port"]
    return port
