"""Zoe application descriptions (ZApps, JSON, format versions 2 and 3) to drafts.

Zoe services reach each other by DNS name, which Marina does not give, so a
ZApp has no links; `startup_order` becomes the start order. Resources are
fractional `cores` and `memory` in bytes, either a number or a `min`/`max`
pair (the minimum is what Marina reserves). Zoe's `{user_name}`-style
placeholders are Zoe's to fill at run time and are reported.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from catalog.translators.base import (
    Application,
    Document,
    Parsed,
    PortDraft,
    Refusals,
    ServiceDraft,
    Source,
    Warnings,
    pointer_of,
)
from catalog.translators.building import (
    as_port,
    as_words,
    set_cores,
    set_labels,
    set_memory,
    set_replicas,
)
from catalog.translators.reading import load_json

VERSIONS = (2, 3)
PLACEHOLDER = re.compile(
    r"\{(user_name|execution_id|execution_name|deployment_name|dns_name#[^}]*)\}"
)
TOP = {
    "name",
    "version",
    "will_end",
    "priority",
    "requires_binary",
    "disable_autorestart",
    "services",
    "size",
    "description",
}
SERVICE = {
    "name",
    "docker_image",
    "image",
    "environment",
    "networks",
    "volumes",
    "monitor",
    "total_count",
    "essential_count",
    "required_resources",
    "startup_order",
    "ports",
    "command",
    "replicas",
    "work_dir",
    "labels",
}
PORT = {
    "name",
    "path",
    "protocol",
    "is_main_endpoint",
    "expose",
    "port_number",
    "url_template",
    "proto",
}


class ZappTranslator:
    format: str = "zapp"
    title: str = "Zoe application"
    suffixes: tuple[str, ...] = (".json", ".zapp")

    def parse(self, source: Source) -> Document:
        return load_json(source)

    def recognises(self, data: Any) -> bool:
        return (
            isinstance(data, dict) and isinstance(data.get("services"), list) and "version" in data
        )

    def read(self, source: Source, document: Document, warnings: Warnings) -> Application:
        refusals = Refusals(source, document)
        data = document.data
        if not isinstance(data, dict):
            refusals.add("", "a ZApp is a JSON object", data)
            refusals.raise_if_any()
        version = data.get("version")
        if version not in VERSIONS or isinstance(version, bool):
            refusals.add(
                "/version",
                f"is not a ZApp format version Marina reads ({', '.join(map(str, VERSIONS))})",
                version,
            )
        if not isinstance(data.get("services"), list):
            refusals.add("/services", "a ZApp needs a list of services", data.get("services"))
        refusals.raise_if_any()
        for key, value in data.items():
            here = pointer_of(key)
            if key == "will_end" and value:
                warnings.add(
                    here,
                    value,
                    "approximated",
                    "Marina restarts processes that end; a batch ZApp runs again and again",
                )
            elif key == "disable_autorestart" and value:
                warnings.add(
                    here, value, "not-carried", "Marina always restarts a process that exits"
                )
            elif key in ("priority", "requires_binary", "size"):
                warnings.add(
                    here, value, "not-carried", "Zoe scheduling metadata Marina does not keep"
                )
            elif key not in TOP:
                warnings.unknown(here, value, "a ZApp")
        services = [
            _service(i, s, data, warnings, refusals) for i, s in enumerate(data["services"])
        ]
        refusals.raise_if_any()
        name = data.get("name")
        title = name if isinstance(name, str) and name.strip() else Path(source.file).stem
        description = data.get("description")
        return Application(
            name=title,
            name_pointer="/name" if isinstance(name, str) else None,
            title=title,
            description=description
            if isinstance(description, str)
            else f"Imported from the Zoe application {title}.",
            services=services,
        )


def _service(
    index: int, spec: Any, app: Parsed, warnings: Warnings, refusals: Refusals
) -> ServiceDraft:
    base = pointer_of("services", index)
    if not isinstance(spec, dict):
        refusals.add(base, "must be an object", spec)
        return ServiceDraft(name=f"service-{index}", pointer=base)
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        refusals.add(f"{base}/name", "is required", name)
        name = f"service-{index}"
    draft = ServiceDraft(name=name, pointer=base)
    for key, value in spec.items():
        here = f"{base}{pointer_of(key)}"
        if key in ("networks", "volumes") and value:
            why = (
                "there are no networks: every pod reaches every service"
                if key == "networks"
                else "Marina keeps no volumes: what the container writes is lost when "
                "a replica restarts"
            )
            warnings.add(here, value, "not-carried", why)
        elif key == "work_dir":
            warnings.add(
                here,
                value,
                "not-carried",
                "the local engine starts commands in the package's folder",
            )
        elif key == "monitor" and value:
            warnings.add(
                here,
                value,
                "approximated",
                "Zoe ends the application when this service ends; Marina restarts it",
            )
        elif key not in SERVICE:
            warnings.unknown(here, value, "a ZApp service")
    image = spec.get("image", spec.get("docker_image"))
    key = "image" if "image" in spec else "docker_image"
    if not isinstance(image, str) or not image or any(c.isspace() for c in image):
        refusals.add(f"{base}/{key}", "is required: the image reference", image)
    else:
        draft.image = image
    draft.command = as_words(spec.get("command"), f"{base}/command", refusals)
    environment = spec.get("environment") or []
    if not isinstance(environment, list):
        refusals.add(f"{base}/environment", "must be a list of [name, value] pairs", environment)
        environment = []
    for i, pair in enumerate(environment):
        here = f"{base}/environment/{i}"
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            refusals.add(here, "must be a [name, value] pair", pair)
            continue
        value = "" if pair[1] is None else str(pair[1])
        found = sorted(set(PLACEHOLDER.findall(value)))
        if found:
            warnings.add(
                f"{here}/1",
                pair[1],
                "not-carried",
                "Zoe fills "
                + ", ".join("{" + f + "}" for f in found)
                + " when it runs the application; Marina keeps the text as is",
            )
        draft.env[pair[0]] = value
        draft.env_pointers[pair[0]] = f"{here}/0"
    if "replicas" in spec:
        set_replicas(draft, spec["replicas"], f"{base}/replicas", warnings, refusals)
    total, essential = spec.get("total_count"), spec.get("essential_count")
    if isinstance(total, int) and isinstance(essential, int) and total > essential:
        warnings.add(
            f"{base}/total_count",
            total,
            "approximated",
            f"Zoe may grow it from {essential} to {total}; on Marina scale it with scalePodUp",
        )
    order = spec.get("startup_order", 0)
    draft.order = order if isinstance(order, int) and not isinstance(order, bool) else 0
    resources = spec.get("required_resources") or {}
    if isinstance(resources, dict):
        for key, value in resources.items():
            here = f"{base}/required_resources{pointer_of(key)}"
            if key not in ("memory", "cores"):
                warnings.add(here, value, "not-carried", "Marina schedules cores and memory only")
                continue
            setter = set_memory if key == "memory" else set_cores
            if isinstance(value, dict):
                if "min" in value:
                    setter(draft, value["min"], f"{here}/min", warnings)
                if "max" in value and value.get("max") != value.get("min"):
                    warnings.add(
                        f"{here}/max",
                        value["max"],
                        "not-carried",
                        "Marina reserves the minimum and does not cap",
                    )
            elif (key == "memory" and value == 0) or (key == "cores" and value == 0):
                continue
            else:
                setter(draft, value, here, warnings)
    if isinstance(spec.get("labels"), list) and spec["labels"]:
        warnings.add(
            f"{base}/labels", spec["labels"], "not-carried", "Zoe placement labels are not carried"
        )
    elif isinstance(spec.get("labels"), dict):
        set_labels(draft, spec["labels"], f"{base}/labels", warnings)
    for i, port in enumerate(spec.get("ports") or []):
        here = f"{base}/ports/{i}"
        if not isinstance(port, dict):
            refusals.add(here, "must be an object", port)
            continue
        for key in port:
            if key not in PORT:
                warnings.unknown(f"{here}{pointer_of(key)}", port[key], "a ZApp port")
        number = as_port(port.get("port_number"))
        if number is None:
            refusals.add(
                f"{here}/port_number", "must be a port from 1 to 65535", port.get("port_number")
            )
            continue
        protocol = str(port.get("protocol", port.get("proto", "tcp"))).lower()
        if protocol in ("udp", "sctp"):
            warnings.add(
                f"{here}/protocol",
                protocol,
                "not-carried",
                f"{protocol} ports are not carried: Marina serves TCP",
            )
            continue
        for key in ("path", "url_template"):
            if key in port:
                warnings.add(
                    f"{here}/{key}",
                    port[key],
                    "not-carried",
                    "endpoint URLs are not shown by Marina",
                )
        draft.ports.append(PortDraft(number, number if port.get("expose") else None, here))
    return draft
