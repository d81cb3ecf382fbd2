"""Patches and server-side apply, driven by the official schemas' list and map metadata.

JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic merge patch
(merge keys, `$patch`, `$setElementOrder`, `$retainKeys`,
`$deleteFromPrimitiveList` as kubectl sends them) and server-side apply
(field sets per manager in `managedFields`, conflicts, force) all read the
`x-kubernetes-*` annotations of the schemas that `validation` loads.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from tests.kubeapi.validation import SCHEMA_VERSIONS, definitions

Obj = dict[str, Any]
Path = tuple[str, ...]
SERVER_FIELDS = {
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
}


class PatchError(Exception):
    """A patch that cannot be applied (400 BadRequest, or 422 for a failed JSON patch test)."""


class Schema:
    """A node of the schema tree, resolving `$ref`s lazily."""

    def __init__(self, node: Obj | None) -> None:
        self.node = self._resolve(node or {})

    @staticmethod
    def _resolve(node: Obj) -> Obj:
        defs = definitions(SCHEMA_VERSIONS[-1])
        while "$ref" in node:
            node = {
                **defs[node["$ref"].rsplit("/", 1)[1]],
                **{k: v for k, v in node.items() if k != "$ref"},
            }
        for key in ("allOf", "oneOf", "anyOf"):
            for branch in node.get(key) or []:
                if "$ref" in branch:
                    return Schema._resolve(
                        {**branch, **{k: v for k, v in node.items() if k != key}}
                    )
        return node

    def field(self, name: str) -> Schema:
        props = self.node.get("properties") or {}
        if name in props:
            return Schema(props[name])
        extra = self.node.get("additionalProperties")
        return Schema(extra if isinstance(extra, dict) else None)

    def items(self) -> Schema:
        return Schema(self.node.get("items"))

    @property
    def list_type(self) -> str:
        if "x-kubernetes-list-type" in self.node:
            return str(self.node["x-kubernetes-list-type"])
        return "map" if self.node.get("x-kubernetes-patch-merge-key") else "atomic"

    @property
    def list_keys(self) -> list[str]:
        keys = self.node.get("x-kubernetes-list-map-keys")
        if keys:
            return list(keys)
        key = self.node.get("x-kubernetes-patch-merge-key")
        return [key] if key else []

    @property
    def atomic_map(self) -> bool:
        return self.node.get("x-kubernetes-map-type") == "atomic"

    @property
    def patch_strategy(self) -> str:
        return str(self.node.get("x-kubernetes-patch-strategy", ""))

    @property
    def merge_key(self) -> str | None:
        return self.node.get("x-kubernetes-patch-merge-key")


@functools.cache
def _root_name(api_version: str, kind: str) -> str:
    group, _, version = api_version.rpartition("/")
    for name, node in definitions(SCHEMA_VERSIONS[-1]).items():
        for gvk in node.get("x-kubernetes-group-version-kind") or []:
            if (gvk.get("group", ""), gvk["version"], gvk["kind"]) == (group, version, kind):
                return name
    raise KeyError(f"{api_version} {kind}")


def root_schema(api_version: str, kind: str) -> Schema:
    return Schema({"$ref": f"#/$defs/{_root_name(api_version, kind)}"})


# JSON patch and merge patch -----------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, list):
            doc = doc[int(part)]
        elif isinstance(doc, dict):
            doc = doc[part]
        else:
            raise KeyError(part)
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        try:
            kind, parts = op["op"], _pointer(op["path"])
            if kind == "test":
                if _walk(doc, parts) != op["value"]:
                    raise PatchError(f"testing value {op['path']} failed")
                continue
            if kind in ("move", "copy"):
                value = copy.deepcopy(_walk(doc, _pointer(op["from"])))
                if kind == "move":
                    doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
                kind, op = "add", {"value": value}
            parent: Any = _walk(doc, parts[:-1]) if parts else None
            if not parts:
                doc = copy.deepcopy(op["value"])
                continue
            last = parts[-1]
            if kind == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            elif kind == "add":
                if isinstance(parent, list):
                    index = len(parent) if last == "-" else int(last)
                    parent.insert(index, copy.deepcopy(op["value"]))
                else:
                    parent[last] = copy.deepcopy(op["value"])
            elif kind == "replace":
                if isinstance(parent, list):
                    parent[int(last)] = copy.deepcopy(op["value"])
                else:
                    if last not in parent:
                        raise PatchError(
                            f"replace operation does not apply: doc is missing key: {op['path']}"
                        )
                    parent[last] = copy.deepcopy(op["value"])
            else:
                raise PatchError(f"unknown JSON patch operation {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise PatchError(f"the JSON patch does not apply: {op}: {exc}") from exc
    return doc


# Strategic merge patch ----------------------------------------------------------------------


def strategic_merge(target: Any, patch: Any, schema: Schema) -> Any:
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return _strip_directives(copy.deepcopy(patch))
    if patch.get("$patch") == "replace":
        return _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    if patch.get("$patch") == "delete":
        return None
    result = dict(target)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [v for v in result.get(name) or [] if v not in value]
            continue
        sub = schema.field(key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, sub)
        else:
            result[key] = strategic_merge(result.get(key), value, sub)
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            name = key.split("/", 1)[1]
            result[name] = _order(result.get(name) or [], value, schema.field(name).merge_key)
    return result


def _merge_list(current: list[Any], patch: list[Any], schema: Schema) -> list[Any]:
    strategy = schema.patch_strategy
    if "merge" not in strategy:
        return _strip_directives(copy.deepcopy(patch))  # type: ignore[no-any-return]
    key = schema.merge_key
    if key is None:  # a merged list of primitives: union
        out = list(current)
        out += [v for v in patch if v not in out]
        return out
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [_strip_directives(i) for i in patch if i.get("$patch") != "replace"]
    out = [copy.deepcopy(i) for i in current]
    for item in patch:
        index = next((n for n, c in enumerate(out) if c.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
        elif index is None:
            out.append(_strip_directives(copy.deepcopy(item)))
        else:
            out[index] = strategic_merge(out[index], item, schema.items())
    return out


def _order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def rank(item: Any) -> int:
        wanted = item.get(key) if key and isinstance(item, dict) else item
        for n, o in enumerate(order):
            if (o.get(key) if key and isinstance(o, dict) else o) == wanted:
                return n
        return len(order)

    return sorted(items, key=rank)


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


# Server-side apply --------------------------------------------------------------------------


def _element(item: Any, schema: Schema) -> str:
    if schema.list_type == "set":
        return "v:" + json.dumps(item, separators=(",", ":"))
    keys = schema.list_keys
    # `protocol` is the one defaulted key (ports): an applied port without it is the TCP one
    named = {k: item.get(k, "TCP" if k == "protocol" else None) for k in keys}
    return "k:" + json.dumps(
        {k: v for k, v in named.items() if v is not None}, separators=(",", ":")
    )


def field_set(obj: Any, schema: Schema, prefix: Path = ()) -> set[Path]:
    """The leaf fields `obj` sets (and the list items and maps it holds, as '.' entries)."""
    out: set[Path] = set()
    if isinstance(obj, dict) and not schema.atomic_map:
        if prefix:
            out.add((*prefix, "."))
        for key, value in obj.items():
            if not prefix and key in ("apiVersion", "kind", "status"):
                continue
            if prefix == ("f:metadata",) and key in SERVER_FIELDS | {"name", "namespace"}:
                continue
            out |= field_set(value, schema.field(key), (*prefix, f"f:{key}"))
        if obj == {} and prefix:
            out.add(prefix)
        return out
    keyed = schema.list_type == "map" and schema.list_keys
    if isinstance(obj, list) and (schema.list_type == "set" or keyed):
        for item in obj:
            path = (*prefix, _element(item, schema))
            if schema.list_type == "set":
                out.add(path)
            else:
                out.add((*path, "."))
                out |= {p for p in field_set(item, schema.items(), path) if p != (*path, ".")}
        return out
    return {prefix} if prefix else out


def value_at(obj: Any, path: Path, schema: Schema) -> Any:
    """The value `path` names in `obj`, or a marker when it is absent."""
    for part in path:
        if part == ".":
            return "<node>"
        if part.startswith("f:"):
            if not isinstance(obj, dict) or part[2:] not in obj:
                return _ABSENT
            obj, schema = obj[part[2:]], schema.field(part[2:])
        elif part.startswith(("k:", "v:")):
            if not isinstance(obj, list):
                return _ABSENT
            found = [i for i in obj if _element(i, schema) == part]
            if not found:
                return _ABSENT
            obj, schema = found[0], schema.items()
    return obj


_ABSENT = object()


def to_fields_v1(paths: set[Path]) -> Obj:
    root: Obj = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(part, {})
    return root


def from_fields_v1(fields: Obj, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, value in fields.items():
        path = (*prefix, key)
        if value:
            out |= from_fields_v1(value, path)
        else:
            out.add(path)
    return out


def display(path: Path) -> str:
    text = ""
    for part in path:
        if part == ".":
            continue
        if part.startswith("f:"):
            text += "." + part[2:]
        elif part.startswith("k:"):
            keys = json.loads(part[2:])
            text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
        elif part.startswith("v:"):
            text += f"[={part[2:]}]"
    return text


def apply_merge(current: Any, applied: Any, schema: Schema) -> Any:
    """`applied` laid over `current`: maps and keyed lists merge, the rest is replaced."""
    if isinstance(applied, dict) and isinstance(current, dict) and not schema.atomic_map:
        result = dict(current)
        for key, value in applied.items():
            result[key] = apply_merge(current.get(key), value, schema.field(key))
        return result
    if isinstance(applied, list) and isinstance(current, list):
        if schema.list_type == "set":
            return list(current) + [v for v in applied if v not in current]
        if schema.list_type == "map" and schema.list_keys:
            out = list(current)
            for item in applied:
                element = _element(item, schema)
                index = next((n for n, c in enumerate(out) if _element(c, schema) == element), None)
                if index is None:
                    out.append(copy.deepcopy(item))
                else:
                    out[index] = apply_merge(out[index], item, schema.items())
            return out
    return copy.deepcopy(applied)


def remove_fields(obj: Any, paths: set[Path], schema: Schema) -> Any:
    """`obj` without the leaves in `paths` (fields a manager stopped applying)."""
    for path in sorted(paths, key=len, reverse=True):
        if path[-1] == ".":
            path = path[:-1]
        obj = _remove(obj, path, schema)
    return obj


def _remove(obj: Any, path: Path, schema: Schema) -> Any:
    if not path:
        return obj
    part, rest = path[0], path[1:]
    if part.startswith("f:") and isinstance(obj, dict) and part[2:] in obj:
        result = dict(obj)
        if rest:
            result[part[2:]] = _remove(obj[part[2:]], rest, schema.field(part[2:]))
        else:
            del result[part[2:]]
        return result
    if part.startswith(("k:", "v:")) and isinstance(obj, list):
        out = []
        for item in obj:
            if _element(item, schema) != part:
                out.append(item)
            elif rest:
                out.append(_remove(item, rest, schema.items()))
        return out
    return obj


def changed_fields(old: Any, new: Any, schema: Schema) -> set[Path]:
    """Leaves of `new` whose value differs from `old` (what an Update takes ownership of)."""
    return {
        p
        for p in field_set(new, schema)
        if value_at(old, p, schema) != value_at(new, p, schema)
        or (p[-1] == "." and value_at(old, p[:-1], schema) is _ABSENT)
    }


def is_absent(value: Any) -> bool:
    return value is _ABSENT
