"""Application packages: a folder or a zip with `manifest.yaml` and resources.

Loading checks everything and reports every problem at once. A zip is read
entry by entry within limits (count, sizes, compression ratio) and refused if
any name is absolute, climbs out with `..`, or is a link or a device; YAML is
read without aliases, so a "billion laughs" document cannot expand.
"""

from __future__ import annotations

import base64
import functools
import io
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import jsonschema
import re2
import yaml
from jsonschema import ValidationError

from catalog import keys
from catalog.documents import (
    Json,
    JsonObject,
    JsonSchema,
    Manifest,
    PackageChange,
    PackageDocument,
    PackageSummary,
)
from catalog.errors import Conflict, NotFound, Problem, ValidationFailed
from catalog.validation import DNS_LABEL, MAX_DEPTH, VERSION, walk

if TYPE_CHECKING:  # only in annotations: `marina package lint` and `import` load no etcd client
    from catalog.store import Store

FORMAT = "marina/1"
CLASSES = ("KubernetesCluster", "KubernetesPod", "KubernetesApplication")
NAME_RE = DNS_LABEL
VERSION_RE = VERSION


@dataclass(frozen=True)
class Limits:
    max_entries: int = 500
    """Files in one package."""
    max_file_bytes: int = 512 * 1024
    """Uncompressed size of one file."""
    max_total_bytes: int = 1024 * 1024
    """Uncompressed size of the whole package (it is stored in etcd)."""
    max_ratio: int = 100
    """Largest uncompressed/compressed ratio of one zip entry."""
    max_manifest_bytes: int = 64 * 1024
    """Size of manifest.yaml."""


LIMITS = Limits()


@dataclass
class Package:
    manifest: Manifest
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def class_name(self) -> str:
        return str(self.manifest["class"])

    def to_document(self) -> PackageDocument:
        return {
            "manifest": self.manifest,
            "files": {p: base64.b64encode(d).decode() for p, d in sorted(self.files.items())},
        }

    @classmethod
    def from_document(cls, doc: PackageDocument) -> Package:
        return cls(doc["manifest"], {p: base64.b64decode(d) for p, d in doc["files"].items()})

    def summary(self) -> PackageSummary:
        m = self.manifest
        return {
            "name": m["name"],
            "version": m["version"],
            "description": m["description"],
            "class": m["class"],
            "title": m.get("title", m["name"]),
            "properties": m["properties"],
            "ui": m.get("ui", {}),
        }


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases outright."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.YAMLError(f"aliases are not allowed (line {event.start_mark.line + 1})")
        node = super().compose_node(parent, index)
        if getattr(node, "anchor", None):
            raise yaml.YAMLError("anchors are not allowed")
        return node


def parse_yaml(text: bytes, *, what: str, limit: int, max_depth: int = MAX_DEPTH) -> Any:
    if len(text) > limit:
        raise ValidationFailed(what, [Problem(what, f"must be at most {limit} bytes", len(text))])
    try:
        # The parser is iterative; the composer recurses: measure depth first.
        depth = 0
        for event in yaml.parse(text, Loader=_NoAliasLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > max_depth:
                    line = event.start_mark.line + 1 if event.start_mark else "?"
                    raise ValidationFailed(
                        what, [Problem(what, f"nests deeper than {max_depth} levels (line {line})")]
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as exc:
        raise ValidationFailed(what, [Problem(what, f"is not valid YAML: {exc}")]) from exc


def validate_manifest(manifest: Any, files: dict[str, bytes]) -> list[Problem]:
    """Every problem with a manifest, none if it is sound."""
    if not isinstance(manifest, dict):
        return [Problem("manifest.yaml", "must be a mapping", type(manifest).__name__)]
    problems: list[Problem] = []

    def need(key: str, check: Any, rule: str) -> None:
        value = manifest.get(key)
        if value is None:
            problems.append(Problem(key, "is required"))
        elif not check(value):
            problems.append(Problem(key, rule, value))

    need("format", lambda v: v == FORMAT, f"must be {FORMAT!r}")
    need(
        "name",
        lambda v: isinstance(v, str) and bool(NAME_RE.fullmatch(v)),
        "must be 1-63 lower-case letters, digits or '-', starting and ending alphanumeric",
    )
    need(
        "version",
        lambda v: isinstance(v, str) and bool(VERSION_RE.fullmatch(v)),
        "must be a version such as 1.0.0 (quote it in YAML)",
    )
    need(
        "description",
        lambda v: isinstance(v, str) and 0 < len(v) <= 2000,
        "must be text of 1-2000 characters",
    )
    need("class", lambda v: v in CLASSES, f"must be one of {', '.join(CLASSES)}")
    if "title" in manifest and not (
        isinstance(manifest["title"], str) and len(manifest["title"]) <= 200
    ):
        problems.append(
            Problem("title", "must be text of at most 200 characters", manifest["title"])
        )
    schema = manifest.get("properties")
    if schema is None:
        problems.append(Problem("properties", "is required (a JSON Schema of type object)"))
    else:
        problems += _check_properties_schema(schema)
    ui = manifest.get("ui", {})
    if not isinstance(ui, dict):
        problems.append(Problem("ui", "must be a mapping", ui))
    elif "order" in ui:
        problems += _check_ui_order(ui["order"], schema)
    template = manifest.get("template")
    if manifest.get("class") == "KubernetesApplication":
        if not isinstance(template, dict):
            problems.append(Problem("template", "is required for KubernetesApplication"))
        else:
            from catalog.model import validate_template

            problems += validate_template(template, files)
    unknown = set(manifest) - {
        "format",
        "name",
        "version",
        "description",
        "class",
        "title",
        "properties",
        "ui",
        "template",
        "tags",
    }
    problems += [Problem(key, "is not a known manifest field") for key in sorted(unknown)]
    return problems


def _check_ui_order(order: Any, schema: Any) -> list[Problem]:
    """Forms list fields in this order: it may name only the schema's properties."""
    if not isinstance(order, list) or not all(isinstance(n, str) for n in order):
        return [Problem("ui.order", "must be a list of property names", order)]
    known = (schema.get("properties") or {}) if isinstance(schema, dict) else {}
    problems = [
        Problem(f"ui.order[{i}]", "names no property of the properties schema", name)
        for i, name in enumerate(order)
        if isinstance(known, dict) and name not in known
    ]
    problems += [
        Problem(f"ui.order[{i}]", "names a property a second time", name)
        for i, name in enumerate(order)
        if name in order[:i]
    ]
    return problems


def _check_properties_schema(schema: Any) -> list[Problem]:
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return [Problem("properties", "must be a JSON Schema with type: object", schema)]
    problems = _schema_regex_problems(schema)
    if problems:
        return problems
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = ".".join(str(p) for p in exc.absolute_path)
        return [
            Problem(
                f"properties.{where}" if where else "properties",
                f"is not a valid JSON Schema: {exc.message}",
            )
        ]
    for name, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, dict) and "default" in prop:
            errors = list(SchemaValidator(prop).iter_errors(prop["default"]))
            if errors:
                problems.append(
                    Problem(
                        f"properties.properties.{name}.default",
                        f"does not match its own schema: {errors[0].message}",
                        prop["default"],
                    )
                )
    return problems


# -- user regular expressions ----------------------------------------------------
# A package's schema holds patterns its author wrote; Python's backtracking
# engine can take exponential time on them, on the API's one event loop.
# They are compiled and run with RE2, whose matching time is linear.

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern, _RE2_OPTIONS)


def regex_search(pattern: str, text: str) -> bool:
    return _compiled(pattern).search(text) is not None


def _schema_regex_problems(schema: JsonSchema) -> list[Problem]:
    """Every pattern RE2 cannot run, and references that would leave the schema."""
    problems = []
    for path, node, _ in walk(schema, where="properties"):
        if not isinstance(node, dict):
            continue
        patterns = [(f"{path}.pattern", node["pattern"])] if "pattern" in node else []
        if isinstance(node.get("patternProperties"), dict):
            patterns += [(f"{path}.patternProperties", p) for p in node["patternProperties"]]
        for where, pattern in patterns:
            if not isinstance(pattern, str):
                continue  # check_schema names it
            try:
                _compiled(pattern)
            except re2.error as exc:
                problems.append(
                    Problem(where, f"is not a regular expression RE2 can run: {exc}", pattern)
                )
        for key in ("$ref", "$dynamicRef"):
            ref = node.get(key)
            if isinstance(ref, str) and not ref.startswith("#"):
                problems.append(Problem(f"{path}.{key}", "must point inside the schema", ref))
    return problems


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not regex_search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: JsonSchema, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if regex_search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, allowed: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    known = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [
        key
        for key in instance
        if key not in known and not any(regex_search(p, key) for p in patterns)
    ]
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif allowed is False and extras:
        listed = ", ".join(repr(e) for e in sorted(extras))
        yield ValidationError(f"Additional properties are not allowed ({listed} unexpected)")


SchemaValidator: Any = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    },
)
"""Draft 2020-12 with every user pattern run by RE2."""


def _finish(
    manifest_raw: bytes | None, files: dict[str, bytes], problems: list[Problem], *, source: str
) -> Package:
    if manifest_raw is None:
        problems.append(Problem("manifest.yaml", "is missing at the top of the package"))
        raise ValidationFailed(f"package {source}", problems)
    try:
        manifest = parse_yaml(manifest_raw, what="manifest.yaml", limit=LIMITS.max_manifest_bytes)
    except ValidationFailed as exc:
        raise ValidationFailed(f"package {source}", problems + exc.problems) from None
    problems += validate_manifest(manifest, files)
    if problems:
        raise ValidationFailed(f"package {source}", problems)
    return Package(manifest, files)


def load_zip(data: bytes, *, source: str = "upload", limits: Limits = LIMITS) -> Package:
    """A package from zip bytes, every entry checked before it is read."""
    problems: list[Problem] = []
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise ValidationFailed(
            f"package {source}", [Problem("archive", f"is not a zip file: {exc}")]
        ) from exc
    entries = archive.infolist()
    if len(entries) > limits.max_entries:
        raise ValidationFailed(
            f"package {source}",
            [Problem("archive", f"has {len(entries)} entries; at most {limits.max_entries}")],
        )
    names = [e.filename for e in entries if not e.is_dir()]
    # A single top folder (as zip tools make) is the package root.
    tops = {n.split("/", 1)[0] for n in names}
    strip = ""
    if len(tops) == 1 and all("/" in n for n in names):
        strip = next(iter(tops)) + "/"
    files: dict[str, bytes] = {}
    total = 0
    for entry in entries:
        name = entry.filename
        mode = entry.external_attr >> 16
        if "\0" in name or "\\" in name:
            problems.append(Problem(name, "has a NUL or backslash in its name"))
            continue
        path = PurePosixPath(name)
        if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
            problems.append(Problem(name, "is an absolute path"))
            continue
        if ".." in path.parts:
            problems.append(Problem(name, "climbs out of the package with '..'"))
            continue
        if stat.S_ISLNK(mode):
            problems.append(Problem(name, "is a symbolic link"))
            continue
        # Archivers that record no file type (mode bits only) make plain files.
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            problems.append(Problem(name, "is not a regular file"))
            continue
        if entry.is_dir():
            continue
        if entry.flag_bits & 0x1:
            problems.append(Problem(name, "is encrypted"))
            continue
        if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            problems.append(
                Problem(
                    name,
                    "uses a compression method other than stored or deflate",
                    entry.compress_type,
                )
            )
            continue
        if entry.file_size > limits.max_file_bytes:
            problems.append(
                Problem(name, f"is {entry.file_size} bytes; at most {limits.max_file_bytes}")
            )
            continue
        if entry.compress_size and entry.file_size / entry.compress_size > limits.max_ratio:
            problems.append(Problem(name, "compresses suspiciously well (a zip bomb?)"))
            continue
        total += entry.file_size
        if total > limits.max_total_bytes:
            problems.append(
                Problem("archive", f"unpacks to more than {limits.max_total_bytes} bytes")
            )
            break
        relative = name[len(strip) :] if strip and name.startswith(strip) else name
        if relative in files:
            problems.append(Problem(name, "appears twice"))
            continue
        try:
            with archive.open(entry) as handle:
                content = handle.read(limits.max_file_bytes + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            # A bad CRC, a broken deflate stream, a truncated entry.
            problems.append(Problem(name, f"cannot be read: {exc}"))
            continue
        if len(content) > limits.max_file_bytes:
            problems.append(Problem(name, "is larger than its header says"))
            continue
        files[relative] = content
    return _finish(files.pop("manifest.yaml", None), files, problems, source=source)


def load_folder(root: Path, *, limits: Limits = LIMITS) -> Package:
    """A package from a folder on disk (links are refused, as in zips)."""
    problems: list[Problem] = []
    files: dict[str, bytes] = {}
    total = 0
    if not root.is_dir():
        raise ValidationFailed(f"package {root}", [Problem(str(root), "is not a folder")])
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if "__pycache__" in path.parts:
            continue
        if path.is_symlink():
            problems.append(Problem(relative, "is a symbolic link"))
        elif path.is_file():
            size = path.stat().st_size
            total += size
            if size > limits.max_file_bytes:
                problems.append(
                    Problem(relative, f"is {size} bytes; at most {limits.max_file_bytes}")
                )
            else:
                files[relative] = path.read_bytes()
    if total > limits.max_total_bytes:
        problems.append(Problem(str(root), f"holds more than {limits.max_total_bytes} bytes"))
    if len(files) > limits.max_entries:
        problems.append(Problem(str(root), f"holds more than {limits.max_entries} files"))
    return _finish(files.pop("manifest.yaml", None), files, problems, source=root.name)


def resolve_properties(package: Package, given: Json) -> JsonObject:
    """The properties an object gets: defaults filled in, then checked."""
    schema = package.manifest["properties"]
    if not isinstance(given, dict):
        raise ValidationFailed("properties", [Problem("properties", "must be an object", given)])
    values = dict(given)
    for name, prop in (schema.get("properties") or {}).items():
        if name not in values and isinstance(prop, dict) and "default" in prop:
            values[name] = prop["default"]
    validate_against(schema, values, what="properties")
    return values


def validate_against(schema: JsonSchema, value: Json, *, what: str) -> None:
    """Raise once, naming every field that breaks `schema`."""
    validator = SchemaValidator(schema)
    problems = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "required":
            missing = re.search(r"'([^']+)' is a required property", error.message)
            where = ".".join(filter(None, [where, missing.group(1) if missing else ""]))
            problems.append(Problem(where or what, "is required"))
        elif error.validator == "additionalProperties":
            problems.append(Problem(where or what, error.message))
        else:
            problems.append(Problem(where or what, error.message, error.instance))
    if problems:
        raise ValidationFailed(what, problems)


PACKAGES = keys.PACKAGES


def version_key(version: str) -> tuple[int, int, int, int, str]:
    """Order of versions: numbers first; a pre-release (1.0.0-rc1) before its release."""
    core, _, rest = version.partition("+")[0].partition("-")
    major, minor, patch = (int(p) for p in core.split("."))
    return major, minor, patch, 0 if rest else 1, rest


class Downgrade(Conflict):
    """An upload older than the stored package, without the flag that allows it."""

    def __init__(self, name: str, stored: str, given: str) -> None:
        super().__init__(
            f"package {name!r}",
            f"version {given} is older than the stored {stored}; "
            "upload with allow_downgrade=true to replace it",
        )
        self.name, self.stored, self.given = name, stored, given


async def save_package(
    store: Store, package: Package, *, allow_downgrade: bool = False
) -> PackageChange:
    """Store a package, replacing the stored one of that name; an older version
    replaces a newer one only when allowed. Says what changed."""
    key = f"{PACKAGES}{package.name}"
    found = await store.get(key)
    stored = str(found.value["manifest"]["version"]) if found is not None else None
    if stored is None:
        change = "added"
    elif version_key(package.version) > version_key(stored):
        change = "upgraded"
    elif version_key(package.version) < version_key(stored):
        if not allow_downgrade:
            raise Downgrade(package.name, stored, package.version)
        change = "downgraded"
    else:
        change = "replaced"
    if found is None:
        await store.create(key, package.to_document())
    else:
        await store.replace(key, package.to_document(), mod_revision=found.mod_revision)
    return {"change": change, "previous_version": stored, "version": package.version}


async def get_package(store: Store, name: str) -> Package:
    found = await store.get(f"{PACKAGES}{name}")
    if found is None:
        raise NotFound("package", name)
    return Package.from_document(found.value)


async def list_packages(store: Store) -> list[PackageSummary]:
    return [Package.from_document(v.value).summary() for v in await store.list(PACKAGES)]


def lint_package(path: Path) -> list[Problem]:
    """Every problem an upload of this folder or zip would report, none if it is
    sound: the same checks, run here without a server."""
    try:
        if path.is_dir():
            load_folder(path)
        else:
            try:
                data = path.read_bytes()
            except OSError as exc:
                return [Problem(str(path), f"cannot be read: {exc.strerror}")]
            load_zip(data, source=path.name)
    except ValidationFailed as exc:
        return list(exc.problems)
    return []
