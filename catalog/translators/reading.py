"""Reading foreign files safely, keeping the line of every field.

Compose files use anchors and aliases legitimately (`x-` blocks merged with
`<<`), so aliases cannot simply be refused as in package manifests. PyYAML's
composer keeps an alias as a second reference to one node, so composing costs
what the text costs; the expansion happens here, node by node, against a
budget, and a "billion laughs" document is refused when it runs out. Duplicate
keys, which loaders silently resolve to the last one, are refused too.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import yaml

from catalog.translators.base import (
    Document,
    Parsed,
    Refusals,
    Source,
    SourceRejected,
    pointer_of,
)

MAX_BYTES = 512 * 1024
"""Size of a source file."""
MAX_NODES = 50_000
"""Values in a source once aliases are expanded."""
MAX_DEPTH = 32
"""Deepest nesting of a source."""

MERGE_TAG = "tag:yaml.org,2002:merge"


def _text(source: Source) -> str:
    refusals = Refusals(source)
    if len(source.text) > MAX_BYTES:
        refusals.add("", f"is {len(source.text)} bytes; at most {MAX_BYTES}")
        refusals.raise_if_any()
    try:
        return source.text.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        refusals.add("", f"is not UTF-8 text (byte {exc.start})")
        refusals.raise_if_any()
        raise AssertionError("unreachable") from exc


def load_yaml(source: Source) -> Document:
    text = _text(source)
    refusals = Refusals(source)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        refusals.document = Document(None, {"": line} if line else {})
        refusals.add("", f"is not valid YAML: {exc.problem or exc.context}")
        refusals.raise_if_any()
        raise
    except yaml.YAMLError as exc:
        refusals.add("", f"is not valid YAML: {exc}")
        refusals.raise_if_any()
        raise
    except RecursionError:
        refusals.add("", "is nested too deeply")
        refusals.raise_if_any()
        raise
    finally:
        loader.dispose()
    if node is None:
        refusals.add("", "is empty")
        raise SourceRejected(source.file, refusals.problems)
    document = Document(None)
    walker = _Walker(loader, document, Refusals(source, document))
    document.data = walker.value(node, "", 0)
    return document


class _Stop(Exception):
    """Raised inside the walk once a refusal is recorded."""


class _Walker:
    def __init__(self, loader: yaml.SafeLoader, document: Document, refusals: Refusals) -> None:
        self.loader, self.document, self.refusals = loader, document, refusals
        self.count = 0

    def value(self, node: yaml.Node, pointer: str, depth: int) -> Any:
        try:
            return self._value(node, pointer, depth)
        except _Stop:
            self.refusals.raise_if_any()
            raise

    def _refuse(self, node: yaml.Node, pointer: str, rule: str) -> None:
        self.refusals.add(pointer, rule, line=node.start_mark.line + 1)
        raise _Stop

    def _value(self, node: yaml.Node, pointer: str, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            self._refuse(
                node,
                pointer,
                f"expands to more than {MAX_NODES} values (aliases repeated too often?)",
            )
        if depth > MAX_DEPTH:
            self._refuse(node, pointer, f"is nested deeper than {MAX_DEPTH} levels")
        self.document.lines.setdefault(pointer, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            try:
                value = self.loader.construct_object(node)
            except yaml.YAMLError as exc:
                self._refuse(node, pointer, f"cannot be read: {getattr(exc, 'problem', exc)}")
            if isinstance(value, datetime.date | datetime.datetime):
                return value.isoformat()
            if isinstance(value, bytes):
                self._refuse(node, pointer, "is binary data")
            return value
        if isinstance(node, yaml.SequenceNode):
            if node.tag not in ("tag:yaml.org,2002:seq",):
                self._refuse(node, pointer, f"has an unsupported tag {node.tag}")
            return [
                self._value(item, pointer_of_child(pointer, i), depth + 1)
                for i, item in enumerate(node.value)
            ]
        assert isinstance(node, yaml.MappingNode)
        if node.tag not in ("tag:yaml.org,2002:map",):
            self._refuse(node, pointer, f"has an unsupported tag {node.tag}")
        out: Parsed = {}
        merged: Parsed = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for merge in sources:
                    if not isinstance(merge, yaml.MappingNode):
                        self._refuse(merge, pointer, "merges (<<) something that is not a mapping")
                    for key, item in self._value(merge, pointer, depth).items():
                        merged.setdefault(key, item)  # earlier merges win, as YAML says
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._refuse(key_node, pointer, "has a key that is not text")
            key = self.loader.construct_object(key_node)
            key = key if isinstance(key, str) else str(key)
            child = pointer_of_child(pointer, key)
            if key in out:
                self._refuse(key_node, child, "is given twice")
            out[key] = self._value(value_node, child, depth + 1)
        for key, item in merged.items():
            out.setdefault(key, item)
        return out


def pointer_of_child(pointer: str, key: str | int) -> str:
    return pointer + pointer_of(key)


def load_json(source: Source) -> Document:
    """JSON, read through the YAML reader for lines and duplicate keys; JSON
    that YAML cannot read (tabs, say) through JSON's own parser, without lines."""
    text = _text(source)
    refusals = Refusals(source)
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> Parsed:
        out: Parsed = {}
        for key, value in items:
            if key in out:
                duplicates.append(key)
            out[key] = value
        return out

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        refusals.document = Document(None, {"": exc.lineno})
        refusals.add("", f"is not valid JSON: {exc.msg}")
        refusals.raise_if_any()
        raise
    except RecursionError:
        refusals.add("", "is nested too deeply")
        refusals.raise_if_any()
        raise
    try:
        return load_yaml(source)
    except SourceRejected:
        pass
    if duplicates:
        refusals.add("", f"gives the key {duplicates[0]!r} twice in one object")
    if _depth(data) > MAX_DEPTH:
        refusals.add("", f"is nested deeper than {MAX_DEPTH} levels")
    refusals.raise_if_any()
    return Document(data)


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
    return deepest
