"""Names, documents and archives from outside: full matches, depth, Unicode, zips."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from catalog.errors import ValidationFailed
from catalog.model import validate_pod_spec
from catalog.packages import (
    SchemaValidator,
    load_zip,
    parse_yaml,
    validate_against,
    validate_manifest,
    version_key,
)
from catalog.validation import is_package_path, nesting, parse_json

MANIFEST = (
    "format: marina/1\nname: demo\nversion: '1.0.0'\ndescription: A demo.\n"
    "class: KubernetesPod\nproperties: {type: object, properties: {}}\n"
)


def pod(**changes: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "name": "web",
        "containers": [{"name": "web", "image": "x", "command": ["run"]}],
        "services": [{"name": "web", "port": 80, "targetPort": 80}],
    }
    spec.update(changes)
    return spec


def fields(problems: list) -> set[str]:
    return {p.field for p in problems}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "web\n"}, "pod.name"),
        (
            {"containers": [{"name": "web\n", "image": "x", "command": ["r"]}]},
            "pod.containers[0].name",
        ),
        ({"services": [{"name": "web\n", "port": 80}]}, "pod.services[0].name"),
        (
            {"services": [{"name": "web", "port": 80, "hostNetwork": True}]},
            "pod.services[0].hostNetwork",
        ),
        ({"links": {"DB\n": "web"}}, "pod.links"),
        ({"labels": {"app": "x\n"}}, "pod.labels.app"),
    ],
)
def test_names_must_match_whole_and_services_take_known_fields(changes, field):
    assert validate_pod_spec(pod()) == []
    assert field in fields(validate_pod_spec(pod(**changes)))


def test_manifest_name_and_version_with_a_trailing_newline_are_refused():
    manifest = parse_yaml(MANIFEST.encode(), what="m", limit=65536)
    assert validate_manifest(manifest, {}) == []
    assert fields(validate_manifest({**manifest, "name": "demo\n"}, {})) == {"name"}
    assert fields(validate_manifest({**manifest, "version": "1.0.0\n"}, {})) == {"version"}


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../x", "a/../../x", "a\\..\\x", "C:x", "a\0b", "a//b", "", "\ud800"]
)
def test_package_paths_stay_inside(path):
    assert not is_package_path(path)


def test_package_paths_inside_pass():
    assert is_package_path("bin/run.py") and is_package_path("web.py")


def test_json_nested_5000_deep_is_refused_without_recursion():
    raw = b"[" * 5000 + b"]" * 5000
    with pytest.raises(ValidationFailed) as caught:
        parse_json(raw, what="body")
    assert "deeper than" in str(caught.value)
    # brackets inside strings do not count
    assert nesting(json.dumps({"a": "[[[[[[" * 100})) == 1


def test_lone_surrogates_are_refused_naming_the_field():
    with pytest.raises(ValidationFailed) as caught:
        parse_json(b'{"name": "\\ud800", "ok": "x"}', what="body")
    assert [p.field for p in caught.value.problems] == ["name"]
    with pytest.raises(ValidationFailed):
        parse_json(b'{"\\udfff": 1}', what="body")
    with pytest.raises(ValidationFailed):
        parse_json(b'"\xff"', what="body")


def test_deep_yaml_is_refused_before_it_is_composed():
    deep = "properties: " + "{a: " * 974 + "1" + "}" * 974 + "\n"
    with pytest.raises(ValidationFailed) as caught:
        parse_yaml(deep.encode(), what="manifest.yaml", limit=65536)
    assert "deeper than" in str(caught.value)
    deep_block = "".join("  " * i + "a:\n" for i in range(200)) + "  " * 200 + "b: 1\n"
    with pytest.raises(ValidationFailed):
        parse_yaml(deep_block.encode(), what="manifest.yaml", limit=65536)


def _zip(data: bytes = MANIFEST.encode(), *, method: int = zipfile.ZIP_STORED) -> bytearray:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("manifest.yaml"), data, compress_type=method)
    return bytearray(buffer.getvalue())


def _patch_headers(raw: bytearray, *, local: int, central: int, value: int) -> bytes:
    """Set a 2-byte field of the local header and of the central directory entry."""
    lh, cd = raw.find(b"PK\x03\x04"), raw.find(b"PK\x01\x02")
    raw[lh + local : lh + local + 2] = value.to_bytes(2, "little")
    raw[cd + central : cd + central + 2] = value.to_bytes(2, "little")
    return bytes(raw)


def _refused(data: bytes) -> str:
    with pytest.raises(ValidationFailed) as caught:
        load_zip(data)
    return str(caught.value)


def test_zips_that_cannot_be_read_are_refused():
    bad_crc = _zip()
    at = bad_crc.find(b"format")
    bad_crc[at] = ord("F")
    assert "manifest.yaml: cannot be read" in _refused(bytes(bad_crc))

    text = (MANIFEST + "#" + "x" * 2000 + "\n").encode()
    broken = _zip(text, method=zipfile.ZIP_DEFLATED)
    start = broken.find(b"PK\x03\x04") + 30 + len("manifest.yaml")
    broken[start : start + 8] = b"\xff" * 8
    assert "manifest.yaml: cannot be read" in _refused(bytes(broken))

    method_99 = _patch_headers(_zip(), local=8, central=10, value=99)
    assert "compression method" in _refused(method_99)

    encrypted = _patch_headers(_zip(), local=6, central=8, value=1)
    assert "encrypted" in _refused(encrypted)
    assert load_zip(bytes(_zip())).name == "demo"


def test_user_patterns_run_in_linear_time_and_bad_ones_are_refused():
    schema = {"type": "object", "properties": {"x": {"type": "string", "pattern": "^(a+)+$"}}}
    # Python's re takes exponential time here; RE2 answers at once.
    with pytest.raises(ValidationFailed) as caught:
        validate_against(schema, {"x": "a" * 64 + "b"}, what="properties")
    assert [p.field for p in caught.value.problems] == ["x"]
    validate_against(schema, {"x": "aaa"}, what="properties")
    keyed = {
        "type": "object",
        "patternProperties": {"^(a+)+$": {"type": "integer"}},
        "additionalProperties": False,
    }
    assert not SchemaValidator(keyed).is_valid({"a" * 64 + "b": 1})
    assert not SchemaValidator(keyed).is_valid({"aaa": "text"})
    assert SchemaValidator(keyed).is_valid({"aaa": 1})

    manifest = parse_yaml(MANIFEST.encode(), what="m", limit=65536)
    manifest["properties"] = {
        "type": "object",
        "properties": {"x": {"type": "string", "pattern": "(a)\\1"}},
        "patternProperties": {"(?<=a)b": {}},
    }
    assert fields(validate_manifest(manifest, {})) == {
        "properties.properties.x.pattern",
        "properties.patternProperties",
    }


def test_versions_order_numerically_with_prereleases_first():
    assert version_key("1.10.0") > version_key("1.9.0")
    assert version_key("1.0.0-rc1") < version_key("1.0.0")
    assert version_key("2.0.0+build") == version_key("2.0.0")
