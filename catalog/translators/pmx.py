"""Panamax templates (`.pmx`, YAML) to drafts.

A template lists `images`, each with a `source` image, Docker links to other
images by name, `ports` (host to container), `expose`, environment as
`variable`/`value` pairs and a `deployment.count`. Panamax's own Kubernetes
adapter could give a link only the lowest port; Marina keeps every port.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from catalog.translators.base import (
    Application,
    Document,
    LinkDraft,
    PortDraft,
    Refusals,
    ServiceDraft,
    Source,
    Warnings,
    pointer_of,
)
from catalog.translators.building import as_env_value, as_port, as_words, set_replicas
from catalog.translators.reading import load_yaml

TOP = {
    "name",
    "description",
    "keywords",
    "type",
    "documentation",
    "authors",
    "recommended",
    "icon",
    "images",
    "source",
}
IMAGE = {
    "name",
    "source",
    "description",
    "category",
    "categories",
    "type",
    "ports",
    "expose",
    "environment",
    "links",
    "volumes",
    "volumes_from",
    "command",
    "deployment",
    "icon",
}
IGNORED_TOP = {"keywords", "type", "documentation", "authors", "recommended", "icon", "source"}


class PmxTranslator:
    format: str = "pmx"
    title: str = "Panamax template"
    suffixes: tuple[str, ...] = (".pmx",)

    def parse(self, source: Source) -> Document:
        return load_yaml(source)

    def recognises(self, data: Any) -> bool:
        return isinstance(data, dict) and isinstance(data.get("images"), list)

    def read(self, source: Source, document: Document, warnings: Warnings) -> Application:
        refusals = Refusals(source, document)
        data = document.data
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            refusals.add(
                "/images" if isinstance(data, dict) else "",
                "a Panamax template needs a list of images",
            )
            refusals.raise_if_any()
        for key, value in data.items():
            if key in IGNORED_TOP:
                warnings.add(
                    pointer_of(key), value, "not-carried", "template metadata Marina does not keep"
                )
            elif key not in TOP:
                warnings.unknown(pointer_of(key), value, "a Panamax template")
        services = [_image(i, image, warnings, refusals) for i, image in enumerate(data["images"])]
        refusals.raise_if_any()
        name = data.get("name")
        title = name if isinstance(name, str) and name.strip() else Path(source.file).stem
        description = data.get("description")
        return Application(
            name=title,
            name_pointer="/name" if isinstance(name, str) else None,
            title=title,
            description=description if isinstance(description, str) else "",
            services=services,
        )


def _image(index: int, image: Any, warnings: Warnings, refusals: Refusals) -> ServiceDraft:
    base = pointer_of("images", index)
    if not isinstance(image, dict):
        refusals.add(base, "must be a mapping", image)
        return ServiceDraft(name=f"image-{index}", pointer=base)
    name = image.get("name")
    if not isinstance(name, str) or not name.strip():
        refusals.add(f"{base}/name", "is required: each image needs a name", name)
        name = f"image-{index}"
    draft = ServiceDraft(name=name, pointer=base)
    for key, value in image.items():
        here = f"{base}{pointer_of(key)}"
        if key in ("description", "category", "categories", "type", "icon"):
            warnings.add(here, value, "not-carried", "template metadata Marina does not keep")
        elif key in ("volumes", "volumes_from") and value:
            warnings.add(
                here,
                value,
                "not-carried",
                "Marina keeps no volumes: what the container writes is lost when a "
                "replica restarts",
            )
        elif key not in IMAGE:
            warnings.unknown(here, value, "a Panamax image")
    source = image.get("source")
    if not isinstance(source, str) or not source or any(c.isspace() for c in source):
        refusals.add(f"{base}/source", "is required: the image reference", source)
    else:
        draft.image = source
    draft.command = as_words(image.get("command"), f"{base}/command", refusals)
    for i, item in enumerate(image.get("environment") or []):
        here = f"{base}/environment/{i}"
        if not isinstance(item, dict) or not isinstance(item.get("variable"), str):
            refusals.add(here, "must be a mapping with a variable and a value", item)
            continue
        for key in item:
            if key not in ("variable", "value", "description", "required"):
                warnings.unknown(f"{here}{pointer_of(key)}", item[key], "an environment entry")
        value = as_env_value(item.get("value", ""))
        if value is None:
            refusals.add(f"{here}/value", "must be a string or a number", item.get("value"))
            continue
        draft.env[item["variable"]] = value
        draft.env_pointers[item["variable"]] = f"{here}/variable"
    for i, item in enumerate(image.get("ports") or []):
        here = f"{base}/ports/{i}"
        if not isinstance(item, dict):
            refusals.add(here, "must be a mapping with host_port and container_port", item)
            continue
        for key in item:
            if key not in ("host_port", "container_port", "proto", "protocol", "host_interface"):
                warnings.unknown(f"{here}{pointer_of(key)}", item[key], "a port")
        proto = str(item.get("proto", item.get("protocol", "tcp"))).lower()
        container = as_port(item.get("container_port"))
        if container is None:
            refusals.add(
                f"{here}/container_port",
                "must be a port from 1 to 65535",
                item.get("container_port"),
            )
            continue
        if proto != "tcp":
            warnings.add(
                here, item, "not-carried", f"{proto} ports are not carried: Marina serves TCP"
            )
            continue
        if item.get("host_interface"):
            warnings.add(
                f"{here}/host_interface",
                item["host_interface"],
                "approximated",
                "gateways publish on their own addresses; the host interface is not kept",
            )
        host = item.get("host_port")
        published = as_port(host) if host not in (None, "") else None
        if host not in (None, "") and published is None:
            refusals.add(f"{here}/host_port", "must be a port from 1 to 65535", host)
            continue
        if published is None:
            warnings.add(
                here,
                item,
                "approximated",
                f"has no host port; Marina keeps port {container} internal",
            )
        draft.ports.append(PortDraft(container, published, here))
    for i, item in enumerate(image.get("expose") or []):
        here = f"{base}/expose/{i}"
        number = as_port(item)
        if number is None:
            refusals.add(here, "must be a port from 1 to 65535", item)
        else:
            draft.ports.append(PortDraft(number, None, here))
    for i, item in enumerate(image.get("links") or []):
        here = f"{base}/links/{i}"
        if not isinstance(item, dict) or not isinstance(item.get("service"), str):
            refusals.add(here, "must be a mapping with a service (and an alias)", item)
            continue
        alias = item.get("alias") or item["service"]
        draft.links.append(LinkDraft(item["service"], str(alias), here))
    deployment = image.get("deployment")
    if isinstance(deployment, dict):
        for key, value in deployment.items():
            here = f"{base}/deployment{pointer_of(key)}"
            if key == "count":
                set_replicas(draft, value, here, warnings, refusals)
            else:
                warnings.unknown(here, value, "a deployment")
    elif deployment is not None:
        refusals.add(f"{base}/deployment", "must be a mapping with a count", deployment)
    return draft
