"""Label and field selectors in their query-string form, as list and watch take them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
Matcher = Callable[[Obj], bool]

_SET = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")


class SelectorError(ValueError):
    pass


def _split(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def _label_test(key: str, op: str, values: frozenset[str]) -> Callable[[dict[str, str]], bool]:
    def test(labels: dict[str, str]) -> bool:
        if op in ("=", "=="):
            return labels.get(key) in values
        if op == "!=":
            return labels.get(key) not in values
        if op == "in":
            return labels.get(key) in values
        if op == "notin":
            return labels.get(key) not in values
        if op == "exists":
            return key in labels
        return key not in labels

    return test


def label_matcher(text: str | None) -> Matcher:
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in _split(text or ""):
        eq = _EQ.match(term)
        if eq:
            key, op, value = eq.groups()
            tests.append(_label_test(key, op, frozenset([value])))
            continue
        match = _SET.match(term)
        if not match:
            raise SelectorError(f"unable to parse requirement: {term.strip()!r}")
        negate, key, op, values = match.groups()
        if op:
            wanted = frozenset(v.strip() for v in values.split(",") if v.strip())
            tests.append(_label_test(key, op, wanted))
        else:
            tests.append(_label_test(key, "absent" if negate else "exists", frozenset()))

    def matches(obj: Obj) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(test(labels) for test in tests)

    return matches


FIELDS: dict[str, Callable[[Obj], Any]] = {
    "metadata.name": lambda o: o["metadata"].get("name"),
    "metadata.namespace": lambda o: o["metadata"].get("namespace", ""),
    "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName", ""),
    "spec.unschedulable": lambda o: str((o.get("spec") or {}).get("unschedulable", False)).lower(),
    "status.phase": lambda o: (o.get("status") or {}).get("phase", ""),
    "type": lambda o: o.get("type", ""),
}


def _field_test(getter: Callable[[Obj], Any], negate: bool, value: str) -> Matcher:
    return lambda obj: (str(getter(obj)) == value) != negate


def field_matcher(text: str | None) -> Matcher:
    tests: list[Callable[[Obj], bool]] = []
    for term in _split(text or ""):
        match = _EQ.match(term)
        if not match:
            raise SelectorError(f"invalid field selector: {term.strip()!r}")
        key, op, value = match.groups()
        if key not in FIELDS:
            raise SelectorError(f'field label not supported: "{key}"')
        tests.append(_field_test(FIELDS[key], op == "!=", value))
    return lambda obj: all(test(obj) for test in tests)
