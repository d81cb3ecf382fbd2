"""Drafts to a Marina package: one set of rules for every format.

- Names become DNS labels (lower case, anything else `-`, starting with a
  letter as Kubernetes Service names must); names that collide afterwards get
  a numbered suffix, and both cases are reported.
- Every container port gets an internal service (the lowest one named after
  the pod, the others `<pod>-<port>`); a published port is a public service on
  the gateways, whose port is a package property.
- A link becomes the Docker-link variables through the linked pod's services.
  A Marina link carries one port, so the alias points at the lowest port (as
  Docker's `ALIAS_PORT` does) and every other port gets an alias of its own,
  `ALIAS_<port>`; the warning names them. The linked container's environment
  is copied as `ALIAS_ENV_*`, as Docker links did.
- Pods are listed in start order (links and `depends_on` first): an
  application's deploy starts them in that order and waits for each to be
  ready, and a pod's link variables need its targets' service addresses.
- A container with an image but no command cannot run on the local engine
  (which runs commands, not images); it gets a command that says so and
  exits, its pod starts with 0 replicas, and a warning tells what to set.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import zipfile
from dataclasses import dataclass
from typing import Any

import yaml

from catalog.documents import JsonSchema, Manifest
from catalog.packages import FORMAT, Package, validate_manifest
from catalog.translators.base import (
    MAX_SERVICES,
    Application,
    Document,
    Drafted,
    Parsed,
    PortDraft,
    Refusals,
    ServiceDraft,
    Source,
    TranslationWarning,
    Warnings,
    pointer_of,
)

NAME_LIMIT = 40
"""Pod names; service names add at most `-public-65535`."""
MAX_REPLICAS = 50
MAX_CORES = 64.0
MAX_MEMORY = 262144
MAX_PORTS = 100
"""Ports of one service, ranges expanded."""
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LABEL_KEY = re.compile(r"([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@dataclass
class Translation:
    """A translated package and everything that did not carry over."""

    format: str
    package: Package
    warnings: list[TranslationWarning]
    services: int
    """Services in the source."""

    def as_dict(self) -> dict[str, object]:
        return {
            "format": self.format,
            "package": {**self.package.summary(), "manifest": self.package.manifest},
            "warnings": [w.as_dict() for w in self.warnings],
        }


# -- value helpers shared by the translators --------------------------------------


def dns_label(text: str, *, limit: int = 63, letter_first: bool = True) -> str:
    """Lower case, anything else `-`; Service names must also start with a letter."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if letter_first and name and not name[0].isalpha():
        name = "s-" + name
    return name[:limit].strip("-") or "service"


def env_alias(alias: str) -> str:
    """A link alias as Docker turns it into variable names."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", alias).upper()
    return name if name and not name[0].isdigit() else "_" + name


def as_port(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    return None


def as_words(value: Any, pointer: str, refusals: Refusals) -> list[str] | None:
    """A command in string form (split as a shell would) or list form."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            refusals.add(pointer, f"cannot be split into words: {exc}", value)
            return None
    if isinstance(value, list) and all(
        isinstance(w, str | int | float) and not isinstance(w, bool) for w in value
    ):
        return [str(w) for w in value]
    refusals.add(pointer, "must be a string or a list of strings", value)
    return None


def as_env_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def memory_mib(value: Any) -> int | None:
    """Bytes (a number) or a byte string (`512M`, `1.5g`, `256mb`) in MiB, rounded up."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        size = float(value)
    elif isinstance(value, str) and (match := MEMORY.fullmatch(value.strip())):
        size = float(match.group(1)) * UNITS[match.group(2).lower()]
    else:
        return None
    return max(1, -(-int(size) // 1024**2))


def as_cores(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def set_replicas(
    draft: ServiceDraft, value: Any, pointer: str, warnings: Warnings, refusals: Refusals
) -> None:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        refusals.add(pointer, "must be a whole number of replicas", value)
        return
    if value > MAX_REPLICAS:
        warnings.add(
            pointer,
            value,
            "approximated",
            f"{value} replicas is above Marina's {MAX_REPLICAS}; {MAX_REPLICAS} kept",
        )
        value = MAX_REPLICAS
    draft.replicas = value


def set_cores(draft: ServiceDraft, value: Any, pointer: str, warnings: Warnings) -> None:
    cores = as_cores(value)
    if cores is None:
        warnings.add(pointer, value, "not-carried", "is not a number of cores above 0; ignored")
    elif cores > MAX_CORES:
        warnings.add(
            pointer, value, "approximated", f"more than {MAX_CORES:g} cores; {MAX_CORES:g} kept"
        )
        draft.cores = MAX_CORES
    else:
        draft.cores = round(cores, 3)


def set_memory(draft: ServiceDraft, value: Any, pointer: str, warnings: Warnings) -> None:
    mib = memory_mib(value)
    if mib is None:
        warnings.add(pointer, value, "not-carried", "is not a memory size; ignored")
    elif mib > MAX_MEMORY:
        warnings.add(
            pointer, value, "approximated", f"more than {MAX_MEMORY} MiB; {MAX_MEMORY} MiB kept"
        )
        draft.memory = MAX_MEMORY
    else:
        draft.memory = mib


def set_labels(draft: ServiceDraft, labels: Parsed, pointer: str, warnings: Warnings) -> None:
    for key, value in labels.items():
        text = as_env_value(value) if value is not None else ""
        if (
            text is None
            or not LABEL_KEY.fullmatch(key)
            or key == "marina.pod"
            or len(text) > 63
            or not LABEL_VALUE.fullmatch(text)
        ):
            warnings.add(
                pointer_of_child(pointer, key),
                value,
                "not-carried",
                "is not a valid Kubernetes label (key, or value of at most 63 "
                "letters, digits, '-', '_', '.'); dropped",
            )
        else:
            draft.labels[key] = text


def pointer_of_child(pointer: str, key: str | int) -> str:
    return pointer + pointer_of(key)


# -- the package ----------------------------------------------------------------


def build_package(
    app: Application,
    *,
    fmt: str,
    source: Source,
    document: Document,
    warnings: Warnings,
    name: str | None,
) -> Translation:
    refusals = Refusals(source, document)
    drafts = app.services
    if not drafts:
        refusals.add("", "describes no service")
    if len(drafts) > MAX_SERVICES:
        refusals.add("", f"has {len(drafts)} services; at most {MAX_SERVICES}")
    refusals.raise_if_any()
    seen: dict[str, ServiceDraft] = {}
    for draft in drafts:
        if draft.name in seen:
            refusals.add(
                draft.pointer, f"names the service {draft.name!r} a second time", draft.name
            )
        seen[draft.name] = draft
    refusals.raise_if_any()

    package_name = _package_name(app, name, warnings, refusals)
    pods = _pod_names(drafts, warnings)
    _check_references(drafts, seen, refusals)
    refusals.raise_if_any()
    ordered = _start_order(drafts, seen, refusals)
    refusals.raise_if_any()

    services, properties = _services(drafts, pods, warnings, refusals)
    refusals.raise_if_any()
    template_pods = []
    files: dict[str, bytes] = {}
    for draft in ordered:
        pod = pods[draft.name]
        files.update(draft.files)
        template_pods.append(_pod(draft, pod, package_name, services, seen, warnings))
    refusals.raise_if_any()

    manifest: Manifest = {
        "format": FORMAT,
        "name": package_name,
        "title": app.title.strip()[:200] or package_name,
        "version": "1.0.0",
        "description": (app.description.strip() or f"Imported from {source.file}")[:2000],
        "class": "KubernetesApplication",
        "tags": ["imported", fmt],
        "properties": {
            "type": "object",
            "additionalProperties": False,
            "properties": properties,
        },
        "ui": {"order": list(properties)},
        "template": {"pods": template_pods},
    }
    original = source.file.replace("\\", "/").rsplit("/", 1)[-1] or "source"
    files[f"import/{original}"] = source.text
    files["import/warnings.json"] = json.dumps(
        [w.as_dict() for w in warnings.items], indent=2
    ).encode()
    problems = validate_manifest(manifest, files)
    for problem in problems:
        refusals.add("", f"translates to an invalid package: {problem}", problem.value)
    refusals.raise_if_any()
    return Translation(fmt, Package(manifest, files), list(warnings.items), len(drafts))


def _package_name(
    app: Application, name: str | None, warnings: Warnings, refusals: Refusals
) -> str:
    if name is not None:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name):
            refusals.add("", "the package name asked for must be a DNS label (a-z, 0-9, '-')", name)
        return name
    # The title keeps the name as written, so nothing is lost here.
    return dns_label(app.name, letter_first=False)


def _pod_names(drafts: list[ServiceDraft], warnings: Warnings) -> dict[str, str]:
    pods: dict[str, str] = {}
    taken: set[str] = set()
    # Names that are already labels keep them; sanitised ones yield on collision.
    for draft in sorted(drafts, key=lambda d: dns_label(d.name, limit=NAME_LIMIT) != d.name):
        label = dns_label(draft.name, limit=NAME_LIMIT)
        chosen = _unique(label, taken)
        if chosen != label:
            warnings.add(
                draft.pointer,
                {},
                "renamed",
                f"service {draft.name!r} becomes {label!r}, which another service has; "
                f"renamed {chosen!r}",
            )
        elif chosen != draft.name.lower():
            warnings.add(
                draft.pointer,
                {},
                "renamed",
                f"service {draft.name!r} becomes the DNS label {chosen!r}",
            )
        pods[draft.name] = chosen
        taken.add(chosen)
    return pods


def _unique(label: str, taken: set[str]) -> str:
    chosen, n = label, 1
    while chosen in taken:
        n += 1
        suffix = f"-{n}"
        chosen = label[: 63 - len(suffix)].rstrip("-") + suffix
    return chosen


def _check_references(
    drafts: list[ServiceDraft], seen: dict[str, ServiceDraft], refusals: Refusals
) -> None:
    for draft in drafts:
        aliases: set[str] = set()
        for link in draft.links:
            if link.target not in seen:
                refusals.add(
                    link.pointer,
                    f"links to {link.target!r}, which is not a service here",
                    link.target,
                )
            elif link.target == draft.name:
                refusals.add(link.pointer, "links a service to itself", link.target)
            alias = env_alias(link.alias)
            if alias in aliases:
                refusals.add(link.pointer, f"uses the link alias {link.alias!r} twice", link.alias)
            aliases.add(alias)
        for target, pointer in draft.after:
            if target not in seen:
                refusals.add(pointer, f"depends on {target!r}, which is not a service here", target)
            elif target == draft.name:
                refusals.add(pointer, "makes a service depend on itself", target)


def _start_order(
    drafts: list[ServiceDraft], seen: dict[str, ServiceDraft], refusals: Refusals
) -> list[ServiceDraft]:
    """Targets of links and depends_on first; otherwise by rank, then source order."""
    needs = {
        d.name: {link.target for link in d.links} | {target for target, _ in d.after}
        for d in drafts
    }
    rank = {d.name: (d.order, i) for i, d in enumerate(drafts)}
    done: list[ServiceDraft] = []
    placed: set[str] = set()
    while len(done) < len(drafts):
        ready = [d for d in drafts if d.name not in placed and needs[d.name] <= placed]
        if not ready:
            stuck = sorted((d for d in drafts if d.name not in placed), key=lambda d: rank[d.name])
            refusals.add(
                stuck[0].pointer,
                "services depend on each other in a cycle: " + ", ".join(d.name for d in stuck),
            )
            return done
        first = min(ready, key=lambda d: rank[d.name])
        done.append(first)
        placed.add(first.name)
    return done


@dataclass
class _Service:
    name: str
    port: int | str
    target: int
    scope: str
    linkable: bool = True
    """One per container port, serving it at that port: what links point at."""


def _services(
    drafts: list[ServiceDraft],
    pods: dict[str, str],
    warnings: Warnings,
    refusals: Refusals,
) -> tuple[dict[str, list[_Service]], JsonSchema]:
    """Each pod's services, and the package properties (replicas, public ports)."""
    out: dict[str, list[_Service]] = {}
    properties: JsonSchema = {}
    taken: set[str] = set()
    published: dict[int, str] = {}
    for draft in drafts:
        pod = pods[draft.name]
        properties[f"{pod.replace('-', '_')}_replicas"] = {
            "type": "integer",
            "title": f"{pod} replicas",
            "minimum": 0,
            "maximum": MAX_REPLICAS,
            "default": draft.replicas if (draft.command or draft.entrypoint) else 0,
        }
        numbers = sorted({p.number for p in draft.ports})
        if len(numbers) > MAX_PORTS:
            refusals.add(draft.pointer, f"has {len(numbers)} ports; at most {MAX_PORTS}")
            continue
        services: list[_Service] = []
        by_number: dict[int, _Service] = {}
        for number in numbers:
            wanted = pod if number == numbers[0] else f"{pod}-{number}"
            service = _Service(_named(wanted, taken, draft, warnings), number, number, "internal")
            by_number[number] = service
            services.append(service)
        publics = 0
        for port in draft.ports:
            if port.published is None:
                continue
            if port.published in published:
                refusals.add(
                    port.pointer,
                    f"publishes host port {port.published}, which "
                    f"{published[port.published]} publishes too",
                    port.published,
                )
                continue
            published[port.published] = draft.name
            same = by_number[port.number]
            if port.published == port.number and same.scope == "internal":
                service = same
            else:
                wanted = f"{pod}-public" if publics == 0 else f"{pod}-public-{port.published}"
                service = _Service(
                    _named(wanted, taken, draft, warnings), 0, port.number, "public", linkable=False
                )
                services.append(service)
            publics += 1
            service.scope = "public"
            prop = f"{service.name.replace('-', '_')}_port"
            properties[prop] = {
                "type": "integer",
                "title": f"Public port of {service.name} on the gateways",
                "minimum": 1,
                "maximum": 65535,
                "default": port.published,
            }
            service.port = f"${{{prop}}}"
        out[draft.name] = services
    return out, properties


def _named(wanted: str, taken: set[str], draft: ServiceDraft, warnings: Warnings) -> str:
    chosen = _unique(wanted, taken)
    if chosen != wanted:
        warnings.add(
            draft.pointer,
            {},
            "renamed",
            f"the service name {wanted!r} is taken; {chosen!r} used instead",
        )
    taken.add(chosen)
    return chosen


def _pod(
    draft: ServiceDraft,
    pod: str,
    package: str,
    services: dict[str, list[_Service]],
    drafts: dict[str, ServiceDraft],
    warnings: Warnings,
) -> Drafted:
    env: dict[str, str] = {}
    links: dict[str, str] = {}
    for link in draft.links:
        target = drafts[link.target]
        alias = env_alias(link.alias)
        by_port = {s.target: s.name for s in services[link.target] if s.linkable}
        if not by_port:
            warnings.add(
                link.pointer,
                link.alias,
                "not-carried",
                f"links to {link.target!r}, which declares no port: no {alias}_PORT variables "
                "(declare the ports it listens on, with ports or expose)",
            )
        else:
            ports = sorted(by_port)
            links[alias] = by_port[ports[0]]
            for number in ports[1:]:
                links[f"{alias}_{number}"] = by_port[number]
            if len(ports) > 1:
                others = ", ".join(
                    f"{number} as {alias}_{number} ({alias}_{number}_PORT_{number}_TCP_ADDR, ...)"
                    for number in ports[1:]
                )
                warnings.add(
                    link.pointer,
                    link.alias,
                    "link-ports",
                    f"{alias}_PORT and {alias}_PORT_{ports[0]}_TCP* point at port {ports[0]}, "
                    f"the lowest of {link.target!r}; a Marina link carries one port, so {others}",
                )
        env[f"{alias}_NAME"] = f"/{pod}/{link.alias.lower()}"
        for key, value in target.env.items():
            if ENV_NAME.fullmatch(key):
                env[f"{alias}_ENV_{key}"] = value
    for key, value in draft.env.items():
        if not ENV_NAME.fullmatch(key):
            warnings.add(
                draft.env_pointers.get(key, pointer_of_child(draft.pointer, "environment")),
                key,
                "not-carried",
                f"the variable name {key!r} is not letters, digits and '_'; dropped",
            )
            continue
        env[key] = _rewrite(value, draft.mounts)
    container: Drafted = {
        "name": pod,
        "image": draft.image or f"{package}-{pod}",
    }
    replicas: Any = f"${{{pod.replace('-', '_')}_replicas}}"
    words = draft.entrypoint if draft.entrypoint else draft.command
    if words:
        container["command"] = [_rewrite(w, draft.mounts) for w in words]
        if draft.entrypoint and draft.command:
            container["args"] = [_rewrite(w, draft.mounts) for w in draft.command]
    else:
        image = container["image"]
        container["command"] = [
            "sh",
            "-c",
            f"echo '{pod}: the image {image} runs its own entrypoint, which Marina cannot "
            "run here; give the container a command' >&2; exit 64",
        ]
        warnings.add(
            draft.pointer,
            {},
            "no-command",
            f"gives no command: the local engine runs commands, not images, so {pod} gets one that "
            f"says so and exits, and starts with 0 replicas; set a command and the "
            f"{pod.replace('-', '_')}_replicas property to run it",
        )
    if env:
        container["env"] = env
    numbers = sorted({p.number for p in draft.ports})
    if numbers:
        container["ports"] = [{"containerPort": n} for n in numbers]
    if draft.cores is not None:
        container["cores"] = draft.cores
    if draft.memory is not None:
        container["memory"] = draft.memory
    if draft.readiness is not None:
        command = draft.readiness["command"]
        if isinstance(command, list):
            command = [_rewrite(w, draft.mounts) for w in command]
        container["readiness"] = {**draft.readiness, "command": command}
    spec: Drafted = {
        "name": pod,
        "replicas": replicas,
        "labels": {"app": package, **draft.labels},
        "containers": [container],
    }
    if services[draft.name]:
        spec["services"] = [
            {"name": s.name, "port": s.port, "targetPort": s.target, "scope": s.scope}
            for s in services[draft.name]
        ]
    if links:
        spec["links"] = links
    return spec


def _rewrite(word: str, mounts: dict[str, str]) -> str:
    """Paths under a bind-mounted folder point into the package instead."""
    for inside, packaged in mounts.items():
        prefix = inside.rstrip("/")
        for lead in ("", "="):
            start = lead + prefix
            at = word.find(start)
            if at == -1 or (lead == "" and at != 0):
                continue
            rest = word[at + len(start) :]
            if rest == "" or rest.startswith("/"):
                return word[: at + len(lead)] + "${package}/" + packaged.rstrip("/") + rest
    return word


def port_drafts(
    value: Any,
    pointer: str,
    *,
    published: int | None,
    warnings: Warnings,
) -> list[PortDraft]:
    """Helper for a single container port (number or numeric string)."""
    number = as_port(value)
    if number is None:
        warnings.add(pointer, value, "not-carried", "is not a port number from 1 to 65535; dropped")
        return []
    return [PortDraft(number, published, pointer)]


def package_zip(package: Package) -> bytes:
    """The package as a zip that `catalog.packages.load_zip` reads back."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.yaml", yaml.safe_dump(package.manifest, sort_keys=False))
        for path, data in sorted(package.files.items()):
            archive.writestr(path, data)
    return buffer.getvalue()
