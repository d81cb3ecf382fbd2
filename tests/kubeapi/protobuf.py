"""The few protobuf bodies kubectl sends, decoded to the JSON objects they stand for.

client-go's typed clients send protobuf for built-in kinds (`kubectl drain`'s
Eviction, `kubectl create namespace`). The envelope is `k8s\\0` and a
runtime.Unknown message; the fields read here are the ones those commands
set, numbered as in k8s.io/api's generated.proto. Anything else is refused
with 415, as a server that cannot decode it would.
"""

from __future__ import annotations

from typing import Any

MAGIC = b"k8s\x00"
Fields = dict[int, list[Any]]


class Undecodable(ValueError):
    pass


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise Undecodable("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def fields(data: bytes) -> Fields:
    """Field number -> values (ints for varints, bytes for length-delimited)."""
    out: Fields = {}
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 2:
            size, at = _varint(data, at)
            value, at = data[at : at + size], at + size
        elif wire == 1:
            value, at = data[at : at + 8], at + 8
        elif wire == 5:
            value, at = data[at : at + 4], at + 4
        else:
            raise Undecodable(f"wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _text(found: Fields, number: int) -> str | None:
    values = found.get(number)
    return values[-1].decode() if values else None


def _object_meta(data: bytes) -> dict[str, Any]:
    found = fields(data)
    meta: dict[str, Any] = {}
    for number, name in ((1, "name"), (2, "generateName"), (3, "namespace")):
        text = _text(found, number)
        if text:
            meta[name] = text
    for number, name in ((11, "labels"), (12, "annotations")):
        entries = [fields(entry) for entry in found.get(number, [])]
        if entries:
            meta[name] = {_text(e, 1) or "": _text(e, 2) or "" for e in entries}
    return meta


def _delete_options(data: bytes) -> dict[str, Any]:
    found = fields(data)
    options: dict[str, Any] = {}
    if found.get(1):
        grace = found[1][-1]
        options["gracePeriodSeconds"] = grace - (1 << 64) if grace >= 1 << 63 else grace
    policy = _text(found, 4)
    if policy:
        options["propagationPolicy"] = policy
    return options


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded Eviction or Namespace."""
    if not body.startswith(MAGIC):
        raise Undecodable("not a Kubernetes protobuf envelope")
    unknown = fields(body[len(MAGIC) :])
    type_meta = fields(unknown.get(1, [b""])[-1])
    api_version, kind = _text(type_meta, 1) or "", _text(type_meta, 2) or ""
    raw = fields(unknown.get(2, [b""])[-1])
    if (api_version, kind) == ("policy/v1", "Eviction"):
        out: dict[str, Any] = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": _object_meta(raw.get(1, [b""])[-1]),
        }
        if raw.get(2):
            out["deleteOptions"] = _delete_options(raw[2][-1])
        return out
    if (api_version, kind) == ("v1", "Namespace"):
        return {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": _object_meta(raw.get(1, [b""])[-1]),
        }
    raise Undecodable(f"{api_version} {kind} is not decoded here")
