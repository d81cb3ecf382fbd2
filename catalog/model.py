"""The object model: pod specifications, templates and Murano-style objects.

Objects live in their environment's document as JSON with a Murano `?`
header (`id`, `type`, `name`, `_actions`). Pod specifications are checked
here, wherever they come from (a pod package's properties or an application
template), so a bad one is refused before anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from catalog.documents import ApplicationTemplate, JsonObject, Readiness
from catalog.errors import Problem
from catalog.routing import HOST_NAME, MAX_NAMES, PATH_PREFIX, certificate_problems
from catalog.validation import DNS_LABEL
from catalog.validation import ENV_VAR as ENV_NAME

# Every pattern here is applied with fullmatch: `$` would accept a trailing newline.
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
LABEL_KEY = re.compile(r"([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
SCOPES = ("public", "cloud", "internal", "host")
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_REPLICAS = 50
READINESS_TIMES = {
    "interval_s": (1, 3600, 10),
    "timeout_s": (1, 3600, 5),
    "failure_threshold": (1, 100, 3),
    "start_period_s": (0, 3600, 0),
}
"""A readiness check's whole-number settings: lowest, highest, default. Whole
seconds, as Kubernetes probes take them, so both engines run the same check."""
MAX_READINESS_WORDS = 256
NUMERIC_FIELDS = frozenset(
    {"replicas", "port", "targetPort", "containerPort", "memory", "cores", *READINESS_TIMES}
)
"""Fields where an unfilled `${x}` of a template stands for a number."""


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def validate_pod_spec(spec: Any, *, where: str = "pod") -> list[Problem]:
    """Every problem with one pod specification."""
    if not isinstance(spec, dict):
        return [Problem(where, "must be an object", spec)]
    problems: list[Problem] = []
    name = spec.get("name")
    if not isinstance(name, str) or not DNS_LABEL.fullmatch(name):
        problems.append(Problem(f"{where}.name", "must be a DNS label (a-z, 0-9, '-')", name))
    replicas = spec.get("replicas", 1)
    if (
        not isinstance(replicas, int)
        or isinstance(replicas, bool)
        or not (0 <= replicas <= MAX_REPLICAS)
    ):
        problems.append(
            Problem(f"{where}.replicas", f"must be an integer 0-{MAX_REPLICAS}", replicas)
        )
    labels = spec.get("labels", {})
    if not isinstance(labels, dict):
        problems.append(Problem(f"{where}.labels", "must be a mapping", labels))
    else:
        for key, value in labels.items():
            if not LABEL_KEY.fullmatch(str(key)):
                problems.append(
                    Problem(f"{where}.labels", "keys must be Kubernetes label keys", key)
                )
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.fullmatch(value):
                problems.append(
                    Problem(f"{where}.labels.{key}", "must be a Kubernetes label value", value)
                )
    containers = spec.get("containers")
    ports: set[int] = set()
    if not isinstance(containers, list) or not containers:
        problems.append(Problem(f"{where}.containers", "must be a non-empty list", containers))
    else:
        seen: set[str] = set()
        for i, container in enumerate(containers):
            problems += _validate_container(container, f"{where}.containers[{i}]", seen, ports)
    services = spec.get("services", [])
    if not isinstance(services, list):
        problems.append(Problem(f"{where}.services", "must be a list", services))
    else:
        for i, service in enumerate(services):
            problems += _validate_service(service, f"{where}.services[{i}]", ports)
            problems += _validate_tls(service, f"{where}.services[{i}]", containers)
    links = spec.get("links", {})
    if not isinstance(links, dict) or not all(
        isinstance(k, str)
        and ENV_NAME.fullmatch(k)
        and isinstance(v, str)
        and DNS_LABEL.fullmatch(v)
        for k, v in links.items()
    ):
        problems.append(
            Problem(
                f"{where}.links",
                "must map link aliases (letters, digits, '_') to service names",
                links,
            )
        )
    known = {"name", "replicas", "labels", "containers", "services", "links", "cluster"}
    problems += [
        Problem(f"{where}.{k}", "is not a known pod field") for k in spec if k not in known
    ]
    return problems


def _validate_container(
    container: Any, where: str, seen: set[str], ports: set[int]
) -> list[Problem]:
    if not isinstance(container, dict):
        return [Problem(where, "must be an object", container)]
    problems = []
    name = container.get("name")
    if not isinstance(name, str) or not DNS_LABEL.fullmatch(name):
        problems.append(Problem(f"{where}.name", "must be a DNS label", name))
    elif name in seen:
        problems.append(Problem(f"{where}.name", "is used by another container", name))
    else:
        seen.add(name)
    image = container.get("image")
    if (
        not isinstance(image, str)
        or not image
        or len(image) > 255
        or any(c.isspace() for c in image)
    ):
        problems.append(Problem(f"{where}.image", "must be an image reference", image))
    for key in ("command", "args"):
        if key in container and not _is_str_list(container[key]):
            problems.append(Problem(f"{where}.{key}", "must be a list of strings", container[key]))
    if not container.get("command"):
        problems.append(Problem(f"{where}.command", "is required to run on the local engine"))
    env = container.get("env", {})
    if not isinstance(env, dict):
        problems.append(Problem(f"{where}.env", "must be a mapping", env))
    else:
        for key, value in env.items():
            if not ENV_NAME.fullmatch(str(key)):
                problems.append(Problem(f"{where}.env", "names must be letters, digits, '_'", key))
            if not isinstance(value, str):
                problems.append(Problem(f"{where}.env.{key}", "must be a string", value))
    for i, port in enumerate(
        container.get("ports", []) if isinstance(container.get("ports", []), list) else [None]
    ):
        number = port.get("containerPort") if isinstance(port, dict) else None
        if not _is_port(number):
            problems.append(
                Problem(
                    f"{where}.ports[{i}].containerPort",
                    "must be an integer from 1 to 65535",
                    number,
                )
            )
        else:
            assert isinstance(number, int)
            ports.add(number)
    cores = container.get("cores", 0.1)
    if not isinstance(cores, int | float) or isinstance(cores, bool) or not 0 < cores <= 64:
        problems.append(Problem(f"{where}.cores", "must be a number above 0, at most 64", cores))
    memory = container.get("memory", 64)
    if not isinstance(memory, int) or isinstance(memory, bool) or not 1 <= memory <= 262144:
        problems.append(Problem(f"{where}.memory", "must be MiB from 1 to 262144", memory))
    secrets = container.get("secrets", {})
    if not isinstance(secrets, dict) or not all(
        isinstance(k, str) and ENV_NAME.fullmatch(k) and isinstance(v, str)
        for k, v in secrets.items()
    ):
        problems.append(
            Problem(f"{where}.secrets", "must map variable names to string values", "<hidden>")
        )
    elif isinstance(env, dict) and set(secrets) & set(env):
        problems.append(
            Problem(
                f"{where}.secrets",
                "names a variable that env sets too",
                sorted(set(secrets) & set(env)),
            )
        )
    if "readiness" in container:
        problems += _validate_readiness(container["readiness"], f"{where}.readiness")
    known = {
        "name", "image", "command", "args", "env", "ports", "cores", "memory", "secrets",
        "readiness",
    }  # fmt: skip
    problems += [
        Problem(f"{where}.{k}", "is not a known container field")
        for k in container
        if k not in known
    ]
    return problems


def _validate_readiness(check: Any, where: str) -> list[Problem]:
    if not isinstance(check, dict):
        return [Problem(where, "must be an object with a command", check)]
    problems = []
    command = check.get("command")
    if isinstance(command, str):
        if not command.strip() or len(command) > 4096:
            problems.append(
                Problem(f"{where}.command", "must be a shell command of 1-4096 characters", command)
            )
    elif (
        not _is_str_list(command)
        or not command
        or not command[0]
        or len(command) > MAX_READINESS_WORDS
    ):
        problems.append(
            Problem(
                f"{where}.command",
                f"must be a list of 1-{MAX_READINESS_WORDS} strings (the first a program), "
                "or a string that sh -c runs",
                command,
            )
        )
    for key, (low, high, _) in READINESS_TIMES.items():
        value = check.get(key, low)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            unit = "seconds" if key.endswith("_s") else "failures"
            problems.append(
                Problem(f"{where}.{key}", f"must be a whole number of {unit}, {low}-{high}", value)
            )
    problems += [
        Problem(f"{where}.{k}", "is not a known readiness field")
        for k in check
        if k != "command" and k not in READINESS_TIMES
    ]
    return problems


def readiness_of(container: Mapping[str, object]) -> Readiness | None:
    """A valid container's readiness check with every default filled in and the
    command as a list (a string runs through `sh -c`); None when it has none."""
    check = container.get("readiness")
    if not isinstance(check, dict):
        return None
    command = check["command"]
    times = {key: int(check.get(key, default)) for key, (_, _, default) in READINESS_TIMES.items()}
    return {
        "command": ["sh", "-c", command] if isinstance(command, str) else list(command),
        "interval_s": times["interval_s"],
        "timeout_s": times["timeout_s"],
        "failure_threshold": times["failure_threshold"],
        "start_period_s": times["start_period_s"],
    }


def _validate_service(service: Any, where: str, ports: set[int]) -> list[Problem]:
    if not isinstance(service, dict):
        return [Problem(where, "must be an object", service)]
    problems = []
    name = service.get("name")
    if not isinstance(name, str) or not DNS_LABEL.fullmatch(name):
        problems.append(Problem(f"{where}.name", "must be a DNS label", name))
    if not _is_port(service.get("port")):
        problems.append(
            Problem(f"{where}.port", "must be an integer from 1 to 65535", service.get("port"))
        )
    target = service.get("targetPort", service.get("port"))
    if not _is_port(target):
        problems.append(
            Problem(f"{where}.targetPort", "must be an integer from 1 to 65535", target)
        )
    elif ports and target not in ports:
        problems.append(
            Problem(f"{where}.targetPort", "must be one of the containers' ports", target)
        )
    if service.get("scope", "internal") not in SCOPES:
        problems.append(
            Problem(f"{where}.scope", f"must be one of {', '.join(SCOPES)}", service.get("scope"))
        )
    hosts = service.get("hosts")
    if hosts is not None and (
        service.get("scope") != "public"
        or not isinstance(hosts, list)
        or not 0 < len(hosts) <= MAX_NAMES
        or not all(
            isinstance(h, str) and (HOST_NAME.fullmatch(h) or PLACEHOLDER.fullmatch(h))
            for h in hosts
        )
    ):
        problems.append(
            Problem(
                f"{where}.hosts",
                f"must be a list of 1 to {MAX_NAMES} lower-case host names (`*.` for any "
                "one more label) on a public service",
                hosts,
            )
        )
    paths = service.get("paths")
    if paths is not None and (
        not hosts
        or not isinstance(paths, list)
        or not 0 < len(paths) <= MAX_NAMES
        or not all(isinstance(p, str) and PATH_PREFIX.fullmatch(p) for p in paths)
    ):
        problems.append(
            Problem(
                f"{where}.paths",
                f"must be a list of 1 to {MAX_NAMES} path prefixes (`/` then letters, digits, "
                "`.`, `_`, `~`, `/` or `-`) on a service with hosts",
                paths,
            )
        )
    tls = service.get("tls")
    if tls is not None and (
        not hosts
        or not isinstance(tls, dict)
        or set(tls) != {"certificate", "key"}
        or not all(isinstance(v, str) and ENV_NAME.fullmatch(v) for v in tls.values())
    ):
        problems.append(
            Problem(
                f"{where}.tls",
                "must be {certificate: SECRET, key: SECRET}, naming two of the pod's "
                "container secrets, on a service with hosts",
                tls,
            )
        )
    problems += [
        Problem(f"{where}.{k}", "is not a known service field")
        for k in service
        if k not in ("name", "port", "targetPort", "scope", "hosts", "paths", "tls")
    ]
    return problems


def _validate_tls(service: Any, where: str, containers: Any) -> list[Problem]:
    """A TLS service's certificate and key: secrets of its pod, a PEM pair
    that belongs together and names every host."""
    tls = service.get("tls") if isinstance(service, dict) else None
    if not isinstance(tls, dict) or not isinstance(service.get("hosts"), list):
        return []
    secrets: dict[str, Any] = {}
    for container in containers if isinstance(containers, list) else []:
        if isinstance(container, dict) and isinstance(container.get("secrets"), dict):
            secrets.update(container["secrets"])
    values: dict[str, str] = {}
    problems = []
    for field in ("certificate", "key"):
        name = tls.get(field)
        if not isinstance(name, str):
            continue
        if not isinstance(secrets.get(name), str):
            problems.append(
                Problem(f"{where}.tls.{field}", "names no secret of the pod's containers", name)
            )
        elif not PLACEHOLDER.search(secrets[name]):  # a template is checked once filled
            values[field] = secrets[name]
    if problems or len(values) < 2:
        return problems
    return [
        Problem(f"{where}.tls.{field}", rule, tls[field])
        for field, rule in certificate_problems(
            service["hosts"], values["certificate"], values["key"]
        )
    ]


def substitute(value: Any, properties: JsonObject, extra: JsonObject) -> Any:
    """Fill `${name}` from properties (and `extra`); a lone placeholder keeps its type."""
    scope = {**properties, **extra}
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole:
            return scope.get(whole.group(1), value)
        return PLACEHOLDER.sub(lambda m: str(scope.get(m.group(1), m.group(0))), value)
    if isinstance(value, list):
        return [substitute(v, properties, extra) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, properties, extra) for k, v in value.items()}
    return value


def validate_template(template: dict[str, Any], files: dict[str, bytes]) -> list[Problem]:
    """Problems with an application template, placeholders taken as valid."""
    pods = template.get("pods")
    if not isinstance(pods, list) or not pods:
        return [Problem("template.pods", "must be a non-empty list", pods)]
    problems: list[Problem] = []
    names: set[str] = set()
    services: set[str] = set()
    for i, pod in enumerate(pods):
        sample = substitute(pod, {}, {"package": "/package"})
        sample = _placeholders_as_samples(sample)
        problems += validate_pod_spec(sample, where=f"template.pods[{i}]")
        if isinstance(pod, dict):
            if pod.get("name") in names:
                problems.append(
                    Problem(f"template.pods[{i}].name", "is used twice", pod.get("name"))
                )
            names.add(str(pod.get("name")))
            for service in pod.get("services", []) or []:
                if isinstance(service, dict):
                    services.add(str(service.get("name")))
            for container in pod.get("containers", []) or []:
                for word in (container.get("command") or []) if isinstance(container, dict) else []:
                    if isinstance(word, str) and word.startswith("${package}/"):
                        path = word[len("${package}/") :]
                        if path not in files:
                            problems.append(
                                Problem(
                                    f"template.pods[{i}].containers",
                                    "runs a file the package does not have",
                                    path,
                                )
                            )
    for i, pod in enumerate(pods):
        for alias, target in ((pod.get("links") or {}) if isinstance(pod, dict) else {}).items():
            if target not in services:
                problems.append(
                    Problem(
                        f"template.pods[{i}].links.{alias}",
                        "names no service of this template",
                        target,
                    )
                )
    return problems


def _placeholders_as_samples(value: Any) -> Any:
    """Unfilled `${x}` where a number belongs checks as the number 1."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(item, str) and PLACEHOLDER.fullmatch(item) and key in NUMERIC_FIELDS:
                out[key] = 1 if key != "port" else 30000
            else:
                out[key] = _placeholders_as_samples(item)
        return out
    if isinstance(value, list):
        return [_placeholders_as_samples(v) for v in value]
    return value


def render_pods(
    template: ApplicationTemplate, properties: JsonObject, *, package_dir: str
) -> list[JsonObject]:
    """The pod specifications an application instantiates."""
    return [substitute(pod, properties, {"package": package_dir}) for pod in template["pods"]]
