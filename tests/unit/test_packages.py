"""Packages: manifests, archives and the attacks an upload may carry."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from catalog.errors import ValidationFailed
from catalog.packages import Limits, load_folder, load_zip, resolve_properties

ROOT = Path(__file__).resolve().parents[2] / "packages"

MANIFEST = b"""format: marina/1
name: demo
version: "1.0.0"
description: A demo.
class: KubernetesPod
properties:
  type: object
  properties:
    size: {type: integer, minimum: 1, default: 2}
    mode: {type: string, enum: [a, b]}
  required: [mode]
"""


def make_zip(entries: dict[str, bytes], *, links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            mode = stat.S_IFLNK | 0o777 if name in links else stat.S_IFREG | 0o644
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def problems_of(data: bytes, **kw) -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        load_zip(data, **kw)
    return [f"{p.field}: {p.rule}" for p in info.value.problems]


@pytest.mark.parametrize("name", ["kubernetes-cluster", "kubernetes-pod", "guestbook"])
def test_shipped_packages_load(name):
    package = load_folder(ROOT / name)
    assert package.name == name
    assert package.manifest["description"]


def test_zip_with_a_top_folder_loads():
    package = load_zip(make_zip({"demo/manifest.yaml": MANIFEST, "demo/run.sh": b"echo"}))
    assert package.name == "demo" and package.files == {"run.sh": b"echo"}


def test_every_manifest_problem_is_reported_at_once():
    bad = (
        b"format: other\nname: Bad_Name\nversion: 1\nclass: Nope\nextra: 1\n"
        b"properties: {type: string}\n"
    )
    found = problems_of(make_zip({"manifest.yaml": bad}))
    fields = {f.split(":")[0] for f in found}
    assert {"format", "name", "version", "description", "class", "properties", "extra"} <= fields


@pytest.mark.parametrize(
    ("entries", "links", "fragment"),
    [
        ({"manifest.yaml": MANIFEST, "../evil": b"x"}, (), "climbs out"),
        ({"manifest.yaml": MANIFEST, "/etc/passwd": b"x"}, (), "absolute path"),
        ({"manifest.yaml": MANIFEST, "link": b"/etc/passwd"}, ("link",), "symbolic link"),
        ({"manifest.yaml": MANIFEST, "big": b"0" * 600_000}, (), "at most"),
    ],
)
def test_unsafe_entries_are_refused(entries, links, fragment):
    assert any(fragment in p for p in problems_of(make_zip(entries, links=links)))


def test_zip_bomb_and_entry_count_limits():
    bomb = make_zip({"manifest.yaml": MANIFEST, "bomb": b"\0" * 400_000})
    assert any("compresses suspiciously" in p for p in problems_of(bomb))
    many = make_zip({"manifest.yaml": MANIFEST, **{f"f{i}": b"x" for i in range(20)}})
    assert any("entries" in p for p in problems_of(many, limits=Limits(max_entries=10)))


def test_yaml_aliases_are_refused():
    laughs = MANIFEST + b'a: &a ["lol","lol"]\nb: [*a,*a]\n'
    assert any("not allowed" in p for p in problems_of(make_zip({"manifest.yaml": laughs})))


def test_not_a_zip_and_missing_manifest():
    assert any("not a zip" in p for p in problems_of(b"hello"))
    assert any("missing" in p for p in problems_of(make_zip({"readme": b"x"})))


def test_properties_get_defaults_and_are_checked():
    package = load_zip(make_zip({"manifest.yaml": MANIFEST}))
    assert resolve_properties(package, {"mode": "a"}) == {"mode": "a", "size": 2}
    with pytest.raises(ValidationFailed) as info:
        resolve_properties(package, {"size": 0, "mode": "c"})
    fields = {p.field for p in info.value.problems}
    assert fields == {"size", "mode"}
    with pytest.raises(ValidationFailed) as info:
        resolve_properties(package, {})
    assert [p.field for p in info.value.problems] == ["mode"]


def test_template_problems_name_the_pod_field(tmp_path):
    manifest = (ROOT / "guestbook" / "manifest.yaml").read_text()
    (tmp_path / "manifest.yaml").write_text(
        manifest.replace("scope: internal", "scope: galaxy").replace(
            "links: {store: store}", "links: {store: nothing}"
        )
    )
    (tmp_path / "store.py").write_text("")
    with pytest.raises(ValidationFailed) as info:
        load_folder(tmp_path)
    found = {p.field: p.rule for p in info.value.problems}
    assert "template.pods[0].services[0].scope" in found
    assert "template.pods[1].links.store" in found
    assert any("does not have" in rule for rule in found.values())  # web.py missing


def test_entries_without_a_file_type_are_plain_files():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.yaml", MANIFEST)  # mode 0600, no S_IFREG bits
    assert load_zip(buffer.getvalue()).name == "demo"


def test_device_entries_are_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.yaml", MANIFEST)
        info = zipfile.ZipInfo("dev")
        info.external_attr = (stat.S_IFCHR | 0o600) << 16
        archive.writestr(info, b"")
    assert any("not a regular file" in p for p in problems_of(buffer.getvalue()))
