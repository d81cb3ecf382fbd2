"""Strict validation of every written object, as an API server would refuse it.

Two layers, both reported as one 422 Invalid Status with every cause:
the official JSON schemas shipped by `kubernetes-validate` (unknown fields,
wrong types, unsupported enum values), checked for the oldest and the newest
Kubernetes version it carries so that an object only a newer cluster accepts
is refused; then the semantic rules of the real server that a schema cannot
say (name formats, selectors matching templates, port ranges, immutable
fields).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv
import referencing
from referencing.jsonschema import DRAFT202012

from tests.kubeapi import quotas

Obj = dict[str, Any]

SCHEMA_VERSIONS = (kv.all_versions()[0], kv.all_versions()[-1])
"""The oldest and the newest schemas kubernetes-validate ships, e.g. 1.25 and 1.37."""

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")
NODE_PORT_RANGE = (30000, 32767)
CONFIG_MAP_LIMIT = 1024 * 1024

SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*"
    "[a-z0-9])?)*')"
)
LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_MESSAGE = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


class Cause(dict[str, str]):
    """One `details.causes` entry: reason, message, field."""

    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(reason=reason, message=message, field=field)


def quoted(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else json.dumps(value, sort_keys=True)


def invalid(field: str, value: Any, detail: str) -> Cause:
    return Cause("FieldValueInvalid", field, f"Invalid value: {quoted(value)}: {detail}")


def required(field: str, detail: str = "") -> Cause:
    return Cause("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))


def forbidden(field: str, detail: str) -> Cause:
    return Cause("FieldValueForbidden", field, f"Forbidden: {detail}")


def field_path(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


@functools.cache
def _definitions_document(version: str) -> dict[str, Any]:
    document: dict[str, Any] = kv.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version
    )
    return document


@functools.cache
def _registry(version: str) -> referencing.Registry[Any]:
    document = _definitions_document(version)
    resource = referencing.Resource.from_contents(document, default_specification=DRAFT202012)
    return resource @ referencing.Registry()


@functools.cache
def _validator(version: str, api_version: str, kind: str) -> jsonschema.Validator:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = kv.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/{kind.lower()}-{group_version}.json",
        version,
    )
    cls = jsonschema.validators.Draft202012Validator
    return cls(schema, registry=_registry(version))


def definitions(version: str) -> dict[str, Any]:
    """The schema definitions of `version` (for the OpenAPI documents)."""
    return _definitions_document(version)["$defs"]  # type: ignore[no-any-return]


def schema_causes(obj: Obj, *, partial: bool = False) -> list[Cause]:
    """Every schema violation of `obj`, for each version in SCHEMA_VERSIONS, once;
    `partial` (an applied configuration) does not have to hold required fields."""
    causes: dict[tuple[str, str], Cause] = {}
    for version in SCHEMA_VERSIONS:
        validator = _validator(version, obj["apiVersion"], obj["kind"])
        # status is the server's own report, in the newest version's terms
        checked = (
            obj
            if version == SCHEMA_VERSIONS[-1]
            else {k: v for k, v in obj.items() if k != "status"}
        )
        for error in validator.iter_errors(checked):
            if partial and error.validator == "required":
                continue
            for cause in _to_causes(error, version):
                causes.setdefault((cause["field"], cause["message"].split(" (in ")[0]), cause)
    return list(causes.values())


def _leaves(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    if error.validator in ("oneOf", "anyOf") and error.context:
        # IntOrString and friends: the type error of one branch says enough.
        best = jsonschema.exceptions.best_match(error.context)
        yield from _leaves(best) if best is not None else iter([error])
    else:
        yield error


def _to_causes(error: jsonschema.ValidationError, version: str) -> Iterator[Cause]:
    for leaf in _leaves(error):
        path = list(leaf.absolute_path)
        field = field_path(path)
        note = f" (in the Kubernetes {version} schema)"
        if leaf.validator == "additionalProperties":
            known = set(leaf.schema.get("properties", {}))
            for extra in sorted(set(leaf.instance) - known):
                name = field_path([*path, extra])
                yield Cause("FieldValueInvalid", name, f'unknown field "{name}"{note}')
        elif leaf.validator == "required":
            for name in leaf.validator_value:
                if name not in leaf.instance:
                    yield required(field_path([*path, name]))
        elif leaf.validator == "type":
            expected = leaf.validator_value
            if isinstance(expected, list):
                expected = [t for t in expected if t != "null"]
                expected = expected[0] if len(expected) == 1 else expected
            yield Cause(
                "FieldValueTypeInvalid",
                field,
                f"Invalid value: {quoted(leaf.instance)}: must be of type {expected}",
            )
        elif leaf.validator == "enum":
            values = ", ".join(quoted(v) for v in leaf.validator_value if v is not None)
            yield Cause(
                "FieldValueNotSupported",
                field,
                f"Unsupported value: {quoted(leaf.instance)}: supported values: {values}{note}",
            )
        else:
            yield invalid(field, leaf.instance, leaf.message + note)


# Semantic rules ----------------------------------------------------------------------------


def name_causes(obj: Obj, *, namespaced: bool) -> list[Cause]:
    meta = obj.get("metadata") or {}
    causes: list[Cause] = []
    name = meta.get("name")
    kind = obj.get("kind")
    if not name:
        causes.append(required("metadata.name", "name or generateName is required"))
    else:
        if kind in ("Namespace",):
            ok, message = DNS1123_LABEL.fullmatch(name) and len(name) <= 63, LABEL_MESSAGE
        elif kind == "Service":
            ok, message = DNS1035_LABEL.fullmatch(name) and len(name) <= 63, DNS1035_MESSAGE
        else:
            ok, message = DNS1123_SUBDOMAIN.fullmatch(name) and len(name) <= 253, SUBDOMAIN_MESSAGE
        if not ok:
            causes.append(invalid("metadata.name", name, message))
    if namespaced and not meta.get("namespace"):
        causes.append(required("metadata.namespace"))
    causes += label_causes(meta.get("labels"), "metadata.labels")
    return causes


def label_causes(labels: Any, field: str) -> list[Cause]:
    causes: list[Cause] = []
    for key, value in (labels or {}).items():
        prefix, _, name = key.rpartition("/")
        if (prefix and not DNS1123_SUBDOMAIN.fullmatch(prefix)) or not (
            LABEL_NAME.fullmatch(name) and len(name) <= 63
        ):
            causes.append(
                invalid(
                    field,
                    key,
                    "name part must consist of alphanumeric "
                    "characters, '-', '_' or '.', and must start and end with "
                    "an alphanumeric character",
                )
            )
        if not isinstance(value, str) or not LABEL_VALUE.fullmatch(value) or len(value) > 63:
            causes.append(
                invalid(
                    f"{field}",
                    value,
                    "a valid label must be an empty string "
                    "or consist of alphanumeric characters, '-', '_' or '.', "
                    "and must start and end with an alphanumeric character",
                )
            )
    return causes


def selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels, matchExpressions) selects `labels`."""
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_spec_causes(spec: Obj, field: str) -> list[Cause]:
    causes: list[Cause] = []
    containers = spec.get("containers") or []
    if not containers:
        causes.append(required(f"{field}.containers"))
    volumes = {v.get("name") for v in spec.get("volumes") or []}
    seen: set[str] = set()
    for i, container in enumerate([*containers, *(spec.get("initContainers") or [])]):
        where = f"{field}.containers[{i}]"
        name = container.get("name")
        if not name:
            causes.append(required(f"{where}.name"))
        elif not DNS1123_LABEL.fullmatch(name) or len(name) > 63:
            causes.append(invalid(f"{where}.name", name, LABEL_MESSAGE))
        elif name in seen:
            causes.append(
                Cause("FieldValueDuplicate", f"{where}.name", f"Duplicate value: {quoted(name)}")
            )
        seen.add(name or "")
        if not container.get("image"):
            causes.append(required(f"{where}.image"))
        for section in ("requests", "limits"):
            for name, value in ((container.get("resources") or {}).get(section) or {}).items():
                try:
                    quotas.quantity(value)
                except ValueError as exc:
                    causes.append(invalid(f"{where}.resources.{section}[{name}]", value, str(exc)))
        for j, port in enumerate(container.get("ports") or []):
            number = port.get("containerPort")
            if not isinstance(number, int) or not 0 < number < 65536:
                causes.append(
                    invalid(
                        f"{where}.ports[{j}].containerPort",
                        number,
                        "must be between 1 and 65535, inclusive",
                    )
                )
        for j, mount in enumerate(container.get("volumeMounts") or []):
            if mount.get("name") not in volumes:
                causes.append(
                    Cause(
                        "FieldValueNotFound",
                        f"{where}.volumeMounts[{j}].name",
                        f"Not found: {quoted(mount.get('name'))}",
                    )
                )
            if not str(mount.get("mountPath", "")).startswith("/"):
                causes.append(
                    invalid(
                        f"{where}.volumeMounts[{j}].mountPath",
                        mount.get("mountPath"),
                        "must be an absolute path",
                    )
                )
    return causes


def deployment_causes(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector:
        causes.append(required("spec.selector"))
    elif not (selector.get("matchLabels") or selector.get("matchExpressions")):
        causes.append(
            invalid("spec.selector", selector, "empty selector is invalid for deployment")
        )
    elif not selector_matches(selector, labels):
        causes.append(
            invalid(
                "spec.template.metadata.labels",
                labels,
                "`selector` does not match template `labels`",
            )
        )
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        causes.append(invalid("spec.replicas", replicas, "must be greater than or equal to 0"))
    restart = (template.get("spec") or {}).get("restartPolicy", "Always")
    if restart != "Always":
        causes.append(
            Cause(
                "FieldValueNotSupported",
                "spec.template.spec.restartPolicy",
                f'Unsupported value: {quoted(restart)}: supported values: "Always"',
            )
        )
    causes += label_causes(labels, "spec.template.metadata.labels")
    causes += pod_spec_causes(template.get("spec") or {}, "spec.template.spec")
    if old is not None and (old.get("spec") or {}).get("selector") != selector:
        causes.append(invalid("spec.selector", selector, "field is immutable"))
    return causes


def service_causes(obj: Obj, old: Obj | None, taken_node_ports: set[int]) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    ports = spec.get("ports") or []
    kind = spec.get("type", "ClusterIP")
    if not ports and kind != "ExternalName" and spec.get("clusterIP") != "None":
        causes.append(required("spec.ports"))
    names: set[str] = set()
    for i, port in enumerate(ports):
        where = f"spec.ports[{i}]"
        if len(ports) > 1 and not port.get("name"):
            causes.append(required(f"{where}.name"))
        if port.get("name") in names:
            causes.append(
                Cause(
                    "FieldValueDuplicate",
                    f"{where}.name",
                    f"Duplicate value: {quoted(port.get('name'))}",
                )
            )
        names.add(port.get("name", ""))
        number = port.get("port")
        if not isinstance(number, int) or not 0 < number < 65536:
            causes.append(
                invalid(f"{where}.port", number, "must be between 1 and 65535, inclusive")
            )
        node_port = port.get("nodePort")
        if node_port is not None:
            if kind not in ("NodePort", "LoadBalancer"):
                causes.append(
                    forbidden(f"{where}.nodePort", f"may not be used when `type` is '{kind}'")
                )
            elif not NODE_PORT_RANGE[0] <= node_port <= NODE_PORT_RANGE[1]:
                causes.append(
                    invalid(
                        f"{where}.nodePort",
                        node_port,
                        "provided port is not in "
                        "the valid range. The range of valid ports is 30000-32767",
                    )
                )
            elif node_port in taken_node_ports:
                causes.append(
                    invalid(f"{where}.nodePort", node_port, "provided port is already allocated")
                )
    if old is not None:
        old_ip = (old.get("spec") or {}).get("clusterIP")
        new_ip = spec.get("clusterIP")
        if new_ip and old_ip and new_ip != old_ip:
            causes.append(invalid("spec.clusterIPs[0]", new_ip, "may not change once set"))
    causes += label_causes(spec.get("selector"), "spec.selector")
    return causes


def config_causes(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    size = 0
    for section in ("data", "binaryData", "stringData"):
        for key, value in (obj.get(section) or {}).items():
            if not CONFIG_KEY.fullmatch(key) or len(key) > 253:
                causes.append(
                    invalid(
                        f"{section}[{key}]",
                        key,
                        "a valid config key must consist "
                        "of alphanumeric characters, '-', '_' or '.'",
                    )
                )
            size += len(key) + len(str(value))
    if obj["kind"] == "ConfigMap" and size > CONFIG_MAP_LIMIT:
        causes.append(
            Cause("FieldValueTooLong", "", f"Too long: must have at most {CONFIG_MAP_LIMIT} bytes")
        )
    return causes


def pdb_causes(obj: Obj) -> list[Cause]:
    spec = obj.get("spec") or {}
    if "minAvailable" in spec and "maxUnavailable" in spec:
        return [invalid("spec", spec, "minAvailable and maxUnavailable cannot be both set")]
    return []


def pod_update_causes(obj: Obj, old: Obj) -> list[Cause]:
    new_spec, old_spec = dict(obj.get("spec") or {}), dict(old.get("spec") or {})
    for spec in (new_spec, old_spec):
        spec.pop("nodeName", None)  # binding sets it
        spec.pop("activeDeadlineSeconds", None)
        spec.pop("tolerations", None)
        spec["containers"] = [{"image": c.get("image"), **c} for c in spec.get("containers") or []]
    images_only = [{k: v for k, v in c.items() if k != "image"} for c in new_spec["containers"]]
    old_images_only = [{k: v for k, v in c.items() if k != "image"} for c in old_spec["containers"]]
    new_spec.pop("containers")
    old_spec.pop("containers")
    if new_spec != old_spec or images_only != old_images_only:
        return [
            forbidden(
                "spec",
                "pod updates may not change fields other than "
                "`spec.containers[*].image`, `spec.initContainers[*].image`, "
                "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions "
                "to existing tolerations) or `spec.terminationGracePeriodSeconds` "
                "(allow it to be set to 1 if it was previously negative)",
            )
        ]
    return []
