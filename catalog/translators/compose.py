"""docker-compose files (the Compose Specification, and the 2.x/3.x files
that carry a `version`) to drafts.

Variables (`${VAR:-default}`) are resolved once, at import, from a `.env`
beside the file when there is one, and every resolution is reported: the
package keeps values, not the shell they came from. A bind mount of a
folder or file beside the compose file is copied into the package, and
commands that name its files are pointed at the package's copy, so a file
that runs `python3 /app/web.py` from a mounted `./app` runs on Marina too.
"""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any

from catalog.packages import LIMITS
from catalog.translators.base import (
    Application,
    Document,
    Drafted,
    LinkDraft,
    Parsed,
    PortDraft,
    Refusals,
    ServiceDraft,
    Source,
    Warnings,
    pointer_of,
)
from catalog.translators.building import (
    MAX_PORTS,
    as_env_value,
    as_port,
    as_words,
    set_cores,
    set_labels,
    set_memory,
    set_replicas,
)
from catalog.translators.reading import load_yaml

VERSION = re.compile(r"[23](\.\d+)?")
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)

HANDLED = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "ports", "expose",
    "links", "depends_on", "deploy", "scale", "cpus", "mem_limit", "mem_reservation",
    "healthcheck", "volumes", "labels", "restart",
}  # fmt: skip
NOT_CARRIED = {
    "privileged": "Marina runs every container unprivileged, in its own sandbox",
    "cap_add": "containers get no extra capabilities on Marina",
    "cap_drop": "capabilities are not configurable on Marina",
    "container_name": "container names come from the service name",
    "hostname": "a replica's host name is its own name on Marina",
    "domainname": "a replica's host name is its own name on Marina",
    "user": "containers run as their sandbox's own user on Marina",
    "working_dir": "the local engine starts commands in the package's folder",
    "networks": "every pod reaches every service of its environment; there are no networks",
    "network_mode": "every pod reaches every service of its environment; there are no networks",
    "external_links": "links can only name services of the same file",
    "extra_hosts": "Marina does not edit containers' hosts files",
    "dns": "DNS settings are not configurable on Marina",
    "dns_search": "DNS settings are not configurable on Marina",
    "dns_opt": "DNS settings are not configurable on Marina",
    "secrets": "give secret values as the container's secrets in Marina",
    "configs": "configs are not carried; mount files from beside the compose file instead",
    "volumes_from": "Marina keeps no volumes",
    "tmpfs": "Marina keeps no volumes",
    "devices": "containers get no host devices on Marina",
    "logging": "Marina keeps each container's output as its log",
    "stdin_open": "containers have no terminal on Marina",
    "tty": "containers have no terminal on Marina",
    "ulimits": "limits are set by Marina's sandbox",
    "sysctls": "kernel settings are not configurable on Marina",
    "security_opt": "security options are set by Marina's sandbox",
    "cpu_shares": "Marina reserves cores (cpus, deploy.resources), it does not weigh shares",
    "cpu_quota": "Marina reserves cores (cpus, deploy.resources)",
    "cpu_period": "Marina reserves cores (cpus, deploy.resources)",
    "cpuset": "Marina places replicas itself",
    "memswap_limit": "Marina reserves memory only",
    "mem_swappiness": "Marina reserves memory only",
    "oom_score_adj": "Marina reserves memory only",
    "oom_kill_disable": "Marina reserves memory only",
    "shm_size": "Marina keeps no volumes",
    "init": "the local engine supervises the command itself",
    "stop_signal": "replicas are stopped with SIGTERM, then SIGKILL",
    "stop_grace_period": "replicas get 5 seconds to stop",
    "platform": "the image is not pulled by Marina",
    "pull_policy": "the image is not pulled by Marina",
    "profiles": "every service of the file is imported",
    "pid": "each replica has its own processes",
    "ipc": "each replica has its own processes",
    "read_only": "the sandbox decides what a container may write",
    "extends": "services are imported as written; extends is not followed",
    "annotations": "annotations are not carried",
    "runtime": "Marina's engines choose how containers run",
    "isolation": "Marina's engines choose how containers run",
    "userns_mode": "Marina's sandbox chooses the user namespace",
    "cgroup_parent": "Marina's engines choose the control groups",
    "gpus": "Marina schedules cores and memory only",
    "mac_address": "addresses are Marina's to give",
    "group_add": "containers run as their sandbox's own user on Marina",
    "develop": "development watch rules are not carried",
    "attach": "Marina keeps each container's output as its log",
}
HEALTHCHECK = {
    "test", "interval", "timeout", "retries", "start_period", "start_interval", "disable",
}  # fmt: skip
DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:h|ms|m|s|us|µs|ns))+")
LOOPBACK = re.compile(r"(?<![\w.-])(localhost|127\.0\.0\.1)(?![\w-]|\.\w)")
SPEC_TOP = {"version", "name", "services", "networks", "volumes", "configs", "secrets", "include"}


class ComposeTranslator:
    format: str = "compose"
    title: str = "docker-compose file"
    suffixes: tuple[str, ...] = (".yml", ".yaml")

    def parse(self, source: Source) -> Document:
        return load_yaml(source)

    def recognises(self, data: Any) -> bool:
        return isinstance(data, dict) and isinstance(data.get("services"), dict)

    def read(self, source: Source, document: Document, warnings: Warnings) -> Application:
        refusals = Refusals(source, document)
        data = document.data
        if not isinstance(data, dict):
            refusals.add("", "must be a mapping with services", data)
            refusals.raise_if_any()
        version = data.get("version")
        if version is not None and not VERSION.fullmatch(str(version)):
            refusals.add(
                "/version", "is not a compose file version Marina reads (2, 2.x, 3 or 3.x)", version
            )
        if "services" not in data:
            looks_v1 = any(isinstance(v, dict) and "image" in v for v in data.values())
            refusals.add(
                "",
                "is a version 1 compose file (services at the top level); put them under services:"
                if looks_v1
                else "has no services",
            )
        elif not isinstance(data["services"], dict):
            refusals.add(
                "/services", "must map service names to their definitions", data["services"]
            )
        refusals.raise_if_any()
        variables = _dotenv(source, warnings)
        data = _interpolate(data, "", variables, warnings, refusals)
        refusals.raise_if_any()
        for key, value in data.items():
            pointer = pointer_of(key)
            if key.startswith("x-"):
                warnings.add(pointer, value, "extension", "is an extension field; not carried")
            elif key in ("networks", "volumes", "configs", "secrets") and value:
                warnings.add(pointer, value, "not-carried", f"top-level {key} are not carried over")
            elif key == "include":
                warnings.add(
                    pointer, value, "not-carried", "included files are not read; import each"
                )
            elif key not in SPEC_TOP:
                warnings.unknown(pointer, value, "a compose file")
        services = [
            _service(name, spec, data["services"], source, warnings, refusals)
            for name, spec in data["services"].items()
        ]
        refusals.raise_if_any()
        stem = Path(source.file).name
        name = data.get("name")
        default_name = stem.rsplit(".", 1)[0]
        if default_name in ("docker-compose", "compose") and source.directory is not None:
            default_name = source.directory.name
        return Application(
            name=name if isinstance(name, str) else default_name,
            name_pointer="/name" if isinstance(name, str) else None,
            title=name if isinstance(name, str) else default_name,
            description=f"Imported from the compose file {stem} ({len(services)} services).",
            services=services,
        )


def _service(
    name: str,
    spec: Any,
    services: Parsed,
    source: Source,
    warnings: Warnings,
    refusals: Refusals,
) -> ServiceDraft:
    base = pointer_of("services", name)
    draft = ServiceDraft(name=name, pointer=base)
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        refusals.add(base, "must be a mapping", spec)
        return draft
    for key, value in spec.items():
        pointer = f"{base}{pointer_of(key)}"
        if key.startswith("x-"):
            warnings.add(pointer, value, "extension", "is an extension field; not carried")
        elif key in NOT_CARRIED:
            warnings.add(pointer, value, "not-carried", NOT_CARRIED[key])
        elif key not in HANDLED:
            warnings.unknown(pointer, value, "a compose service")
    image = spec.get("image")
    if image is not None:
        if isinstance(image, str) and image and not any(c.isspace() for c in image):
            draft.image = image
        else:
            refusals.add(f"{base}/image", "must be an image reference", image)
    if "build" in spec:
        named = f"named {draft.image!r}" if draft.image else "with no image named"
        warnings.add(
            f"{base}/build",
            spec["build"],
            "not-carried",
            f"Marina does not build images; build and push it ({named}) yourself",
        )
    if draft.image is None and "build" not in spec:
        refusals.add(base, "needs an image (or a build)")
    draft.entrypoint = as_words(spec.get("entrypoint"), f"{base}/entrypoint", refusals)
    draft.command = as_words(spec.get("command"), f"{base}/command", refusals)
    _environment(draft, spec, source, warnings, refusals)
    _ports(draft, spec, warnings, refusals)
    _links(draft, spec, refusals)
    _depends_on(draft, spec, services, warnings, refusals)
    _deploy(draft, spec, warnings, refusals)
    _volumes(draft, spec, source, warnings)
    if isinstance(spec.get("labels"), dict | list):
        set_labels(draft, _pairs(spec["labels"]), f"{base}/labels", warnings)
    elif "labels" in spec:
        refusals.add(f"{base}/labels", "must be a mapping or a list", spec["labels"])
    if "healthcheck" in spec:
        _healthcheck(draft, spec["healthcheck"], warnings, refusals)
    restart = spec.get("restart")
    if restart is not None and restart not in ("always", "unless-stopped"):
        warnings.add(
            f"{base}/restart", restart, "approximated", "Marina restarts every container that exits"
        )
    return draft


def duration_seconds(value: Any) -> float | None:
    """A compose duration (`1m30s`, `10s`, `500ms`, `1.5h`, `0`) in seconds, else None."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text == "0":
        return 0.0
    if not DURATION.fullmatch(text):
        return None
    return sum(float(n) * DURATION_UNITS[u] for n, u in DURATION_PART.findall(text))


def _healthcheck(draft: ServiceDraft, check: Any, warnings: Warnings, refusals: Refusals) -> None:
    """A health check becomes the container's readiness check: ready once it passes."""
    base = f"{draft.pointer}/healthcheck"
    if not isinstance(check, dict):
        refusals.add(base, "must be a mapping", check)
        return
    for key, value in check.items():
        if key not in HEALTHCHECK:
            warnings.unknown(f"{base}{pointer_of(key)}", value, "a health check")
    test = check.get("test")
    if check.get("disable") is True or test in (["NONE"], "NONE"):
        return  # no check: ready when the ports accept connections, as Marina does anyway
    if test in (None, "", []):
        warnings.add(
            base,
            check,
            "not-carried",
            "runs the image's own health check, which Marina cannot read; give a test "
            "(until then a replica is ready when its ports accept connections)",
        )
        return
    command: list[str] | str
    if isinstance(test, str):
        command = test
    elif (
        isinstance(test, list)
        and len(test) >= 2
        and all(isinstance(w, str) for w in test)
        and test[0] in ("CMD", "CMD-SHELL")
        and test[1]
    ):
        command = test[1:] if test[0] == "CMD" else " ".join(test[1:])
    else:
        refusals.add(
            f"{base}/test",
            "must be a shell command, or a list that starts with CMD, CMD-SHELL or NONE "
            "followed by the command",
            test,
        )
        return
    command = to_own_address(command, f"{base}/test", test, warnings)
    readiness: Drafted = {"command": command}
    for key, field, default in (
        ("interval", "interval_s", 30.0),
        ("timeout", "timeout_s", 30.0),
    ):
        seconds = default
        if key in check:
            given = duration_seconds(check[key])
            if given is None:
                warnings.add(
                    f"{base}/{key}",
                    check[key],
                    "not-carried",
                    f"is not a duration (like 1m30s, 10s or 500ms); compose's {default:g}s is used",
                )
            else:
                seconds = given
        readiness[field] = _whole_seconds(seconds, f"{base}/{key}", check.get(key), warnings)
    retries = check.get("retries", 3)
    if isinstance(retries, int) and not isinstance(retries, bool) and 1 <= retries <= 100:
        readiness["failure_threshold"] = retries
    else:
        warnings.add(
            f"{base}/retries",
            retries,
            "not-carried",
            "is not a whole number of retries from 1 to 100; compose's 3 is used",
        )
        readiness["failure_threshold"] = 3
    if "start_interval" in check:
        warnings.add(
            f"{base}/start_interval",
            check["start_interval"],
            "not-carried",
            f"Marina runs the check every {readiness['interval_s']}s from the start, "
            "not faster while the container starts",
        )
    # start_period needs nothing: failures before the first pass never count, a
    # replica is simply not ready yet, and Marina runs the first check at once.
    draft.readiness = readiness


def _whole_seconds(seconds: float, pointer: str, given: Any, warnings: Warnings) -> int:
    whole = min(max(1, math.ceil(seconds)), 3600)
    if whole != seconds and given is not None:
        warnings.add(
            pointer,
            given,
            "approximated",
            f"Marina's readiness checks count whole seconds from 1 to 3600: {whole}s is used",
        )
    return whole


def to_own_address(
    command: list[str] | str, pointer: str, test: Any, warnings: Warnings
) -> list[str] | str:
    """A check of localhost asks the replica's own address ($POD_IP) instead.

    Docker gives each container its own localhost; on Marina's local engine
    replicas share the machine's and listen on their own address, which
    Kubernetes gives as POD_IP too.
    """
    if isinstance(command, str):
        if not LOOPBACK.search(command):
            return command
        if "'" in command:
            warnings.add(
                pointer,
                test,
                "approximated",
                "checks localhost, which on the local engine is the machine's, not the "
                "replica's: use $POD_IP (left as written: it quotes with ')",
            )
            return command
        rewritten = LOOPBACK.sub("$POD_IP", command)
    else:
        if not any(LOOPBACK.search(w) for w in command):
            return command
        rewritten = "exec " + " ".join(_quoted_with_address(w) for w in command)
    warnings.add(
        pointer,
        test,
        "approximated",
        "checks localhost, which on the local engine is the machine's, not the replica's: "
        f"the check asks the replica's own address instead ({rewritten})",
    )
    return rewritten


def _quoted_with_address(word: str) -> str:
    parts = LOOPBACK.split(word)
    # split() keeps the matched names at odd places: those become "$POD_IP".
    return "".join(
        '"$POD_IP"' if i % 2 else shlex.quote(part) for i, part in enumerate(parts) if part
    )


def _pairs(value: Any) -> Parsed:
    if isinstance(value, dict):
        return dict(value)
    out: Parsed = {}
    for item in value:
        key, sep, rest = str(item).partition("=")
        out[key] = rest if sep else None
    return out


def _environment(
    draft: ServiceDraft,
    spec: Parsed,
    source: Source,
    warnings: Warnings,
    refusals: Refusals,
) -> None:
    base = draft.pointer
    files = spec.get("env_file")
    if files is not None:
        entries = files if isinstance(files, list) else [files]
        for i, entry in enumerate(entries):
            pointer = f"{base}/env_file" + (f"/{i}" if isinstance(files, list) else "")
            path = entry.get("path") if isinstance(entry, dict) else entry
            required = entry.get("required", True) if isinstance(entry, dict) else True
            if not isinstance(path, str):
                refusals.add(pointer, "must be a file path", entry)
                continue
            if source.directory is None:
                warnings.add(
                    pointer,
                    entry,
                    "not-carried",
                    f"{path} cannot be read: the compose file arrived alone "
                    "(import it with `marina import`, which reads files beside it)",
                )
                continue
            file = (source.directory / path).resolve()
            if not file.is_file():
                if required:
                    refusals.add(
                        pointer, f"names {path}, which does not exist beside the file", path
                    )
                else:
                    warnings.add(pointer, entry, "not-carried", f"{path} does not exist (optional)")
                continue
            try:
                text = file.read_bytes()[: LIMITS.max_file_bytes].decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                refusals.add(pointer, f"cannot be read: {exc}", path)
                continue
            draft.env.update(_env_file(text))
    env = spec.get("environment")
    if env is None:
        return
    if not isinstance(env, dict | list):
        refusals.add(f"{base}/environment", "must be a mapping or a list", env)
        return
    for i, (key, value) in enumerate(_pairs(env).items()):
        pointer = f"{base}/environment" + (pointer_of(key) if isinstance(env, dict) else f"/{i}")
        if value is None:
            warnings.add(
                pointer,
                value,
                "not-carried",
                f"{key} takes its value from the shell that runs compose; give it a value",
            )
            continue
        given = as_env_value(value)
        if given is None:
            refusals.add(pointer, "must be a string, a number or a boolean", value)
            continue
        draft.env[key] = given
        draft.env_pointers[key] = pointer


def _env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines; `#` comments, blank lines, `export ` and quotes allowed."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key.strip()] = value
    return out


def _dotenv(source: Source, warnings: Warnings) -> dict[str, str]:
    if source.directory is None or not (source.directory / ".env").is_file():
        return {}
    return _env_file((source.directory / ".env").read_text("utf-8", errors="replace"))


def _interpolate(
    value: Any, pointer: str, variables: dict[str, str], warnings: Warnings, refusals: Refusals
) -> Any:
    if isinstance(value, dict):
        return {
            k: _interpolate(v, pointer + pointer_of(k), variables, warnings, refusals)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _interpolate(v, f"{pointer}/{i}", variables, warnings, refusals)
            for i, v in enumerate(value)
        ]
    if not isinstance(value, str) or "$" not in value:
        return value
    notes: list[str] = []

    def one(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        found = variables.get(name)
        empty_counts = bool(op and op.startswith(":"))
        unset = found is None or (empty_counts and found == "")
        if op and op.endswith("-"):
            if unset:
                notes.append(f"{name} is not set: its default {arg!r} is used")
                return arg
            return found or ""
        if op and op.endswith("+"):
            return "" if unset else arg
        if op and op.endswith("?"):
            if unset:
                refusals.add(pointer, f"needs the variable {name}: {arg or 'it is not set'}", value)
                return ""
            return found or ""
        if found is None:
            notes.append(f"{name} is not set: it is taken as empty")
            return ""
        return found

    result = VARIABLE.sub(one, value)
    if notes:
        warnings.add(pointer, value, "approximated", "resolved at import: " + "; ".join(notes))
    return result


def _ports(draft: ServiceDraft, spec: Parsed, warnings: Warnings, refusals: Refusals) -> None:
    base = draft.pointer
    for key in ("ports", "expose"):
        items = spec.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            refusals.add(f"{base}/{key}", "must be a list", items)
            continue
        for i, item in enumerate(items):
            pointer = f"{base}/{key}/{i}"
            if key == "expose":
                _expose(draft, item, pointer, warnings, refusals)
            elif isinstance(item, dict):
                _long_port(draft, item, pointer, warnings, refusals)
            else:
                _short_port(draft, item, pointer, warnings, refusals)
        if len({p.number for p in draft.ports}) > MAX_PORTS:
            refusals.add(f"{base}/{key}", f"declares more than {MAX_PORTS} ports")
            draft.ports = []
            return


def _range(text: str, pointer: str, refusals: Refusals) -> list[int]:
    low, sep, high = text.partition("-")
    first, last = as_port(low), as_port(high) if sep else as_port(low)
    if first is None or last is None or last < first:
        refusals.add(pointer, "is not a port or a port range", text)
        return []
    if last - first >= MAX_PORTS:
        refusals.add(pointer, f"is a range of {last - first + 1} ports; at most {MAX_PORTS}", text)
        return []
    return list(range(first, last + 1))


def _expose(
    draft: ServiceDraft, item: Any, pointer: str, warnings: Warnings, refusals: Refusals
) -> None:
    text, _, proto = str(item).partition("/")
    if proto and proto.lower() != "tcp":
        warnings.add(
            pointer, item, "not-carried", f"{proto} ports are not carried: Marina serves TCP"
        )
        return
    draft.ports += [PortDraft(n, None, pointer) for n in _range(text, pointer, refusals)]


def _short_port(
    draft: ServiceDraft, item: Any, pointer: str, warnings: Warnings, refusals: Refusals
) -> None:
    text, _, proto = str(item).partition("/")
    if proto and proto.lower() != "tcp":
        warnings.add(
            pointer, item, "not-carried", f"{proto} ports are not carried: Marina serves TCP"
        )
        return
    host_ip = ""
    if text.startswith("["):
        host_ip, _, text = text[1:].partition("]")
        text = text.removeprefix(":")
    parts = text.split(":")
    if len(parts) == 3:
        host_ip, host, container = parts
    elif len(parts) == 2:
        host, container = parts
    elif len(parts) == 1:
        host, container = "", parts[0]
    else:
        refusals.add(pointer, "is not a port mapping ([HOST_IP:][HOST:]CONTAINER[/PROTOCOL])", item)
        return
    _publish(draft, host, container, host_ip, item, pointer, warnings, refusals)


def _long_port(
    draft: ServiceDraft, item: Parsed, pointer: str, warnings: Warnings, refusals: Refusals
) -> None:
    for key, value in item.items():
        if key not in (
            "target",
            "published",
            "host_ip",
            "protocol",
            "mode",
            "name",
            "app_protocol",
        ):
            warnings.unknown(f"{pointer}{pointer_of(key)}", value, "a port")
    protocol = str(item.get("protocol", "tcp")).lower()
    if protocol != "tcp":
        warnings.add(
            f"{pointer}/protocol",
            protocol,
            "not-carried",
            f"{protocol} ports are not carried: Marina serves TCP",
        )
        return
    if item.get("mode") == "host":
        warnings.add(
            f"{pointer}/mode", "host", "approximated", "published on the gateways, not on each node"
        )
    if "target" not in item:
        refusals.add(pointer, "needs a target port")
        return
    published = item.get("published")
    _publish(
        draft,
        "" if published is None else str(published),
        str(item["target"]),
        str(item.get("host_ip", "")),
        item,
        pointer,
        warnings,
        refusals,
    )


def _publish(
    draft: ServiceDraft,
    host: str,
    container: str,
    host_ip: str,
    item: Any,
    pointer: str,
    warnings: Warnings,
    refusals: Refusals,
) -> None:
    targets = _range(container, pointer, refusals)
    if not targets:
        return
    if not host:
        warnings.add(
            pointer,
            item,
            "approximated",
            "is published on a host port Docker picks; Marina keeps "
            f"port{'s' if len(targets) > 1 else ''} "
            f"{container} internal (give a host port to publish it on the gateways)",
        )
        draft.ports += [PortDraft(n, None, pointer) for n in targets]
        return
    hosts = _range(host, pointer, refusals)
    if not hosts:
        return
    if len(hosts) != len(targets):
        if len(targets) == 1:
            warnings.add(
                pointer,
                item,
                "approximated",
                f"Docker picks one host port of {host}; Marina publishes {hosts[0]}",
            )
            hosts = hosts[:1]
        else:
            refusals.add(pointer, "maps ranges of different lengths", item)
            return
    if host_ip and host_ip not in ("0.0.0.0", "::"):
        warnings.add(
            pointer,
            item,
            "approximated",
            f"gateways publish on their own addresses; the host address {host_ip} is not kept",
        )
    draft.ports += [PortDraft(t, h, pointer) for h, t in zip(hosts, targets, strict=True)]


def _links(draft: ServiceDraft, spec: Parsed, refusals: Refusals) -> None:
    links = spec.get("links")
    if links is None:
        return
    if not isinstance(links, list):
        refusals.add(f"{draft.pointer}/links", "must be a list of SERVICE[:ALIAS]", links)
        return
    for i, item in enumerate(links):
        target, _, alias = str(item).partition(":")
        draft.links.append(LinkDraft(target, alias or target, f"{draft.pointer}/links/{i}"))


def _depends_on(
    draft: ServiceDraft,
    spec: Parsed,
    services: Parsed,
    warnings: Warnings,
    refusals: Refusals,
) -> None:
    """Targets start first, and a deploy waits until each is ready: what
    `service_healthy` asks when the target's health check carried over."""
    value = spec.get("depends_on")
    pointer = f"{draft.pointer}/depends_on"
    if value is None:
        return
    if isinstance(value, list):
        draft.after += [(str(t), f"{pointer}/{i}") for i, t in enumerate(value)]
        return
    if not isinstance(value, dict):
        refusals.add(pointer, "must be a list or a mapping", value)
        return
    for target, options in value.items():
        here = pointer + pointer_of(target)
        draft.after.append((target, here))
        if options is None:
            continue
        if not isinstance(options, dict):
            refusals.add(here, "must be a mapping of condition, restart and required", options)
            continue
        for key, option in options.items():
            if key not in ("condition", "restart", "required"):
                warnings.unknown(f"{here}{pointer_of(key)}", option, "a dependency")
        condition = options.get("condition", "service_started")
        if condition == "service_completed_successfully":
            warnings.add(
                f"{here}/condition",
                condition,
                "approximated",
                f"Marina starts {target} first but restarts it when it exits; it does "
                "not wait for it to finish",
            )
        elif condition == "service_healthy":
            _wait_healthy(target, services.get(target), f"{here}/condition", warnings)
        elif condition != "service_started":
            warnings.add(
                f"{here}/condition",
                condition,
                "not-carried",
                f"is not a compose condition; Marina starts {target} first and waits until "
                "it is ready",
            )
        if options.get("restart") is True:
            warnings.add(
                f"{here}/restart",
                True,
                "not-carried",
                f"Marina does not restart {draft.name} when {target} is updated",
            )
        if options.get("required") is False:
            warnings.add(
                f"{here}/required",
                False,
                "approximated",
                f"Marina starts {target} first and waits for it, as for a required dependency",
            )


def _wait_healthy(target: str, spec: Any, pointer: str, warnings: Warnings) -> None:
    check = spec.get("healthcheck") if isinstance(spec, dict) else None
    if not isinstance(check, dict) or check.get("disable") is True:
        why = "declares no health check (compose refuses that)"
    elif check.get("test") in (["NONE"], "NONE"):
        why = "turns its health check off (compose refuses that)"
    elif check.get("test") in (None, "", []):
        why = "runs its image's health check, which Marina cannot read"
    else:
        return  # its check is its readiness: a deploy waits until it passes
    listens = isinstance(spec, dict) and (spec.get("ports") or spec.get("expose"))
    until = "its ports accept connections" if listens else "it runs (it declares no port)"
    warnings.add(
        pointer,
        "service_healthy",
        "approximated",
        f"{target} {why}: Marina starts it first and waits until {until}",
    )


def _deploy(draft: ServiceDraft, spec: Parsed, warnings: Warnings, refusals: Refusals) -> None:
    base = draft.pointer
    if "scale" in spec:
        set_replicas(draft, spec["scale"], f"{base}/scale", warnings, refusals)
    deploy = spec.get("deploy")
    if "cpus" in spec:
        _limit(draft, "cores", spec["cpus"], f"{base}/cpus", warnings)
    if "mem_limit" in spec:
        _limit(draft, "memory", spec["mem_limit"], f"{base}/mem_limit", warnings)
    if "mem_reservation" in spec:
        set_memory(draft, spec["mem_reservation"], f"{base}/mem_reservation", warnings)
    if deploy is None:
        return
    pointer = f"{base}/deploy"
    if not isinstance(deploy, dict):
        refusals.add(pointer, "must be a mapping", deploy)
        return
    for key, value in deploy.items():
        here = f"{pointer}{pointer_of(key)}"
        if key == "replicas":
            set_replicas(draft, value, here, warnings, refusals)
        elif key == "mode":
            if value != "replicated":
                warnings.add(
                    here,
                    value,
                    "approximated",
                    f"{value} mode is not carried: the pod gets replicas",
                )
        elif key == "resources":
            _resources(draft, value, here, warnings)
        elif key in (
            "restart_policy",
            "update_config",
            "rollback_config",
            "placement",
            "endpoint_mode",
            "labels",
        ):
            warnings.add(
                here,
                value,
                "not-carried",
                "Marina places, restarts and updates replicas its own way",
            )
        else:
            warnings.unknown(here, value, "deploy")


def _resources(draft: ServiceDraft, value: Any, pointer: str, warnings: Warnings) -> None:
    if not isinstance(value, dict):
        warnings.add(pointer, value, "not-carried", "is not a mapping of limits and reservations")
        return
    reservations = value.get("reservations") or {}
    limits = value.get("limits") or {}
    for key in value:
        if key not in ("limits", "reservations"):
            warnings.unknown(f"{pointer}{pointer_of(key)}", value[key], "resources")
    for part, given in (("reservations", reservations), ("limits", limits)):
        if not isinstance(given, dict):
            continue
        for key, item in given.items():
            here = f"{pointer}/{part}{pointer_of(key)}"
            if key not in ("cpus", "memory"):
                warnings.add(here, item, "not-carried", "Marina schedules cores and memory only")
            elif part == "reservations":
                (set_cores if key == "cpus" else set_memory)(draft, item, here, warnings)
            elif key in reservations:
                warnings.add(
                    here,
                    item,
                    "not-carried",
                    "Marina reserves, it does not cap: the reservation is kept, the "
                    "limit is not enforced",
                )
            else:
                _limit(draft, "cores" if key == "cpus" else "memory", item, here, warnings)


def _limit(draft: ServiceDraft, what: str, value: Any, pointer: str, warnings: Warnings) -> None:
    before = len(warnings.items)
    (set_cores if what == "cores" else set_memory)(draft, value, pointer, warnings)
    if len(warnings.items) == before:
        warnings.add(
            pointer,
            value,
            "approximated",
            f"Marina reserves {what}, it does not cap it: this limit is reserved",
        )


def _volumes(draft: ServiceDraft, spec: Parsed, source: Source, warnings: Warnings) -> None:
    volumes = spec.get("volumes")
    if volumes is None:
        return
    if not isinstance(volumes, list):
        warnings.add(f"{draft.pointer}/volumes", volumes, "not-carried", "is not a list of volumes")
        return
    for i, item in enumerate(volumes):
        pointer = f"{draft.pointer}/volumes/{i}"
        if isinstance(item, dict):
            kind, origin, target = item.get("type"), item.get("source"), item.get("target")
            read_only = bool(item.get("read_only"))
        else:
            parts = str(item).split(":")
            origin, target = (parts[0], parts[1]) if len(parts) > 1 else (None, parts[0])
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
            kind = "bind" if origin and origin.startswith((".", "/", "~")) else "volume"
        if kind == "bind" and isinstance(origin, str) and isinstance(target, str):
            _bind(draft, origin, target, read_only, item, pointer, source, warnings)
        else:
            warnings.add(
                pointer,
                item,
                "not-carried",
                f"Marina keeps no volumes: what the container writes to {target} is "
                "lost when a replica restarts",
            )


def _bind(
    draft: ServiceDraft,
    origin: str,
    target: str,
    read_only: bool,
    item: Any,
    pointer: str,
    source: Source,
    warnings: Warnings,
) -> None:
    def refuse(why: str) -> None:
        warnings.add(
            pointer, item, "not-carried", f"the bind mount of {origin} is not carried: {why}"
        )

    if source.directory is None:
        return refuse("the compose file arrived alone (import it with `marina import`)")
    if not origin.startswith("."):
        return refuse("only files beside the compose file can go into the package")
    root = source.directory.resolve()
    path = (root / origin).resolve()
    if not path.is_relative_to(root) or path == root:
        return refuse("it is not below the compose file's folder")
    if not path.exists():
        return refuse("it does not exist")
    found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    found = [p for p in found if "__pycache__" not in p.parts and not p.is_symlink()]
    total = sum(p.stat().st_size for p in found)
    if len(found) > LIMITS.max_entries // 2 or total > LIMITS.max_total_bytes // 2:
        return refuse(f"{len(found)} files of {total} bytes are more than a package holds")
    relative = path.relative_to(root).as_posix()
    for file in found:
        draft.files[f"files/{file.relative_to(root).as_posix()}"] = file.read_bytes()
    draft.mounts[target] = f"files/{relative}"
    writes = "" if read_only else "; what the container writes there is not kept"
    warnings.add(
        pointer,
        item,
        "packaged",
        f"{origin} is copied into the package and {target} points at the copy{writes}",
    )
