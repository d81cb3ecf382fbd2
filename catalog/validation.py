"""Rules every name and document from outside must pass, in one place.

Names are checked with full matches only: `re.match` with `$` accepts a
trailing newline, which then reaches haproxy.cfg or a file path. Documents
are checked for depth and for text that cannot be encoded as UTF-8 without
recursion, so a hostile body cannot exhaust the interpreter's stack.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from catalog.errors import Problem, ValidationFailed

DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
"""Pod, container, service and package names: they become host names and paths."""
PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
ENVIRONMENT_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,80}")
VERSION = re.compile(r"\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?")
ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HOST = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
ID = re.compile(r"[0-9a-f]{32}")

MAX_DEPTH = 32
"""Deepest nesting of any JSON or YAML document Marina accepts."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def full(pattern: re.Pattern[str], value: object) -> bool:
    """Whether `value` is a string that `pattern` matches whole."""
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def is_package_path(path: object) -> bool:
    """A relative path inside a package: no root, no drive, no `..`, no NUL or backslash."""
    if not isinstance(path, str) or not path or len(path) > 255:
        return False
    if "\0" in path or "\\" in path or re.match(r"[A-Za-z]:", path) or not encodable(path):
        return False
    pure = PurePosixPath(path)
    return not pure.is_absolute() and ".." not in pure.parts and "" not in path.split("/")


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def walk(value: Any, *, where: str = "") -> Iterator[tuple[str, Any, int]]:
    """Every (path, value, depth) in a JSON document, iteratively."""
    stack: list[tuple[str, Any, int]] = [(where, value, 0)]
    while stack:
        path, item, depth = stack.pop()
        yield path, item, depth
        if isinstance(item, dict):
            for key, child in item.items():
                stack.append((f"{path}.{key}" if path else str(key), child, depth + 1))
        elif isinstance(item, list):
            for i, child in enumerate(item):
                stack.append((f"{path}[{i}]", child, depth + 1))


def document_problems(
    value: Any, *, what: str, prefix: str = "", max_depth: int = MAX_DEPTH
) -> list[Problem]:
    """Text that is not valid Unicode, and nesting deeper than `max_depth`; fields
    are named by their path under `prefix`, the document itself as `what`."""
    problems: list[Problem] = []
    for path, item, depth in walk(value, where=prefix):
        if depth > max_depth:
            problems.append(Problem(path or what, f"nests deeper than {max_depth} levels"))
            break
        if isinstance(item, str) and not encodable(item):
            problems.append(Problem(path or what, "is not valid Unicode (a lone surrogate?)"))
        if isinstance(item, dict):
            for key in item:
                if isinstance(key, str) and not encodable(key):
                    problems.append(
                        Problem(path or what, "has a key that is not valid Unicode", repr(key))
                    )
    return problems


def nesting(text: str) -> int:
    """The deepest bracket nesting of JSON text, strings skipped, without parsing it."""
    deepest = depth = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(raw: bytes, *, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """JSON from outside: depth checked before parsing, text checked after."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(what, [Problem(what, f"is not UTF-8: {exc.reason}")]) from None
    if nesting(text) > max_depth:
        raise ValidationFailed(what, [Problem(what, f"nests deeper than {max_depth} levels")])
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValidationFailed(what, [Problem(what, f"is not JSON: {exc}")]) from None
    problems = document_problems(value, what=what, max_depth=max_depth)
    if problems:
        raise ValidationFailed(what, problems)
    return value
