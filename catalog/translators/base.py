"""The translator protocol, the drafts translators fill in, and their warnings.

A translator reads one foreign description (Panamax template, Zoe
application, docker-compose file) into `Application` drafts and says, as a
`TranslationWarning`, everything it could not carry over. It never builds the
package itself: `building` turns drafts into a Marina package the same way for
every format, so names, links, ports and resources follow one set of rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from catalog.errors import Problem, ValidationFailed

Parsed: TypeAlias = dict[str, Any]
"""A mapping as read from the source file (YAML or JSON), not checked yet."""
Drafted: TypeAlias = dict[str, Any]
"""A piece of the package being written (a pod, a container, a readiness
check), with `${property}` placeholders where values become properties."""

MAX_SERVICES = 100
"""Services in one description; more is refused, not truncated."""


def pointer_of(*parts: str | int) -> str:
    """An RFC 6901 JSON pointer from path parts."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def kind_of(value: Any) -> str:
    """The JSON kind of a value, as warnings name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


@dataclass(frozen=True)
class TranslationWarning:
    """Something of the source that is not carried over as it was."""

    file: str
    pointer: str
    """JSON pointer to the field in the source."""
    kind: str
    """The JSON kind of the field's value (`string`, `mapping`, ...)."""
    code: str
    """What happened: `not-carried`, `approximated`, `renamed`, `unknown-field`, ..."""
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {
            "file": self.file,
            "pointer": self.pointer,
            "kind": self.kind,
            "code": self.code,
            "reason": self.reason,
        }

    def __str__(self) -> str:
        return f"{self.file}#{self.pointer}: {self.reason} [{self.code}]"


class Warnings:
    """The warnings of one translation, in the order they were found."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[TranslationWarning] = []

    def add(self, pointer: str, value: Any, code: str, reason: str) -> None:
        self.items.append(TranslationWarning(self.file, pointer, kind_of(value), code, reason))

    def unknown(self, pointer: str, value: Any, what: str) -> None:
        self.add(pointer, value, "unknown-field", f"is not a known field of {what}; ignored")


@dataclass(frozen=True)
class SourceProblem(Problem):
    """A broken rule in a source file, with the line it is on."""

    line: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "line": self.line}

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.field}: {self.rule}"


class SourceRejected(ValidationFailed):
    """A description Marina cannot translate: nothing is saved."""

    code = "bad_source"

    def __init__(self, file: str, problems: list[SourceProblem]) -> None:
        self.file = file
        super().__init__(file, list(problems))


@dataclass
class Source:
    """The file being imported."""

    file: str
    """Its name, as warnings and errors show it."""
    text: bytes
    directory: Path | None = None
    """Where files it names (env_file, bind mounts) are read; None for an upload."""


@dataclass
class Document:
    """A parsed source: plain JSON-like data and the line of every pointer."""

    data: Any
    lines: dict[str, int] = field(default_factory=dict)

    def line(self, pointer: str) -> int | None:
        """The line of `pointer`, or of its nearest ancestor that has one."""
        while True:
            if pointer in self.lines:
                return self.lines[pointer]
            if not pointer:
                return None
            pointer = pointer.rsplit("/", 1)[0]


class Refusals:
    """Problems that make a source untranslatable, gathered then raised once."""

    def __init__(self, source: Source, document: Document | None = None) -> None:
        self.source, self.document = source, document
        self.problems: list[SourceProblem] = []

    def add(self, pointer: str, rule: str, value: Any = None, *, line: int | None = None) -> None:
        if line is None and self.document is not None:
            line = self.document.line(pointer)
        self.problems.append(SourceProblem(pointer or "/", rule, value, line))

    def raise_if_any(self) -> None:
        if self.problems:
            raise SourceRejected(self.source.file, self.problems)


@dataclass
class PortDraft:
    number: int
    """The container port."""
    published: int | None
    """The host port it is published on (a public service), None when internal."""
    pointer: str


@dataclass
class LinkDraft:
    target: str
    """The source name of the linked service."""
    alias: str
    pointer: str


@dataclass
class ServiceDraft:
    """One service of the source, in terms Marina can build from."""

    name: str
    """Its name in the source (sanitised later)."""
    pointer: str
    image: str | None = None
    entrypoint: list[str] | None = None
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    env_pointers: dict[str, str] = field(default_factory=dict)
    """Where each variable was given, when the source says."""
    ports: list[PortDraft] = field(default_factory=list)
    links: list[LinkDraft] = field(default_factory=list)
    after: list[tuple[str, str]] = field(default_factory=list)
    """Services (source names, with the pointer saying so) that must start first."""
    replicas: int = 1
    cores: float | None = None
    memory: int | None = None
    """MiB."""
    order: int = 0
    """A start-order rank from the source (Zoe's startup_order); ties keep source order."""
    labels: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    """Package files this service needs (from bind mounts)."""
    mounts: dict[str, str] = field(default_factory=dict)
    """Container path -> package path, to rewrite commands that name mounted files."""
    readiness: Drafted | None = None
    """A Marina readiness check (`command` a list, or a string for `sh -c`, and
    the whole-second settings the source gave)."""


@dataclass
class Application:
    """What a translator read: the services and the package's metadata."""

    name: str
    """Suggested package name (sanitised later)."""
    name_pointer: str | None
    title: str
    description: str
    services: list[ServiceDraft]


class Translator(Protocol):
    """One foreign format. Every translator passes tests/conformance/test_translators.py."""

    format: str
    """The name used by `--format` and the API (`compose`, `pmx`, `zapp`)."""
    title: str
    suffixes: tuple[str, ...]
    """File name endings that mean this format."""

    def parse(self, source: Source) -> Document:
        """The source's data with line numbers; `SourceRejected` if malformed."""

    def recognises(self, data: Any) -> bool:
        """Whether parsed data looks like this format (for detection)."""

    def read(self, source: Source, document: Document, warnings: Warnings) -> Application:
        """The application's drafts; `SourceRejected` when it cannot be translated."""
