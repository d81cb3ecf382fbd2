"""Every translator against the corpus in tests/data/translators/.

Each corpus file has a sibling `<file>.expected.json` with the format, the
package name, the pods in start order and every warning, checked exactly.
Each produced package must load back through Marina's own package loader,
instantiate into an environment, and render Kubernetes objects that validate
strictly against the official schemas. Files under `bad/` must be refused
with the problems (and lines) their expected file names.

MARINA_WRITE_EXPECTED=1 rewrites the expected files from the translators'
output, for review in the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from catalog.environments import instantiate
from catalog.export import manifests_of
from catalog.packages import Package, load_folder, load_zip, resolve_properties, validate_manifest
from catalog.translators import TRANSLATORS, Source, SourceRejected, Translation, translate
from catalog.translators.building import package_zip

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "translators"
WRITE = os.environ.get("MARINA_WRITE_EXPECTED") == "1"


def corpus(folder: str) -> list[Path]:
    return sorted(
        p
        for p in (CORPUS / folder).iterdir()
        if p.is_file()
        and p.suffix in (".yml", ".yaml", ".pmx", ".json")
        and not p.name.endswith(".expected.json")
    )


GOOD = [p for fmt in TRANSLATORS for p in corpus(fmt)]
BAD = corpus("bad")


def source_of(path: Path) -> Source:
    return Source(path.name, path.read_bytes(), path.parent)


def expected_of(path: Path) -> Path:
    return path.with_name(path.name + ".expected.json")


def summary(translation: Translation) -> dict[str, Any]:
    manifest = translation.package.manifest
    pods = manifest["template"]["pods"]
    readiness = {
        p["name"]: c["readiness"] for p in pods for c in p["containers"] if "readiness" in c
    }
    return {
        "format": translation.format,
        "package": manifest["name"],
        "services": translation.services,
        "pods": [p["name"] for p in pods],
        # Only where a source carries readiness checks, which every other file lacks.
        **({"readiness": readiness} if readiness else {}),
        "warnings": [
            {k: v for k, v in w.as_dict().items() if k != "file"} for w in translation.warnings
        ],
    }


def check_expected(path: Path, actual: dict[str, Any]) -> None:
    target = expected_of(path)
    if WRITE:
        target.write_text(json.dumps(actual, indent=2) + "\n")
    expected = json.loads(target.read_text())
    assert actual == expected


def kubernetes_objects(package: Package) -> list[dict[str, Any]]:
    doc: dict[str, Any] = {"id": "e" * 32, "name": "corpus", "objects": {}, "order": []}
    cluster_package = load_folder(ROOT / "packages" / "kubernetes-cluster")
    for pkg, props in ((cluster_package, {"name": "k1"}), (package, {})):
        for obj in instantiate(pkg, resolve_properties(pkg, props), doc, name=None):
            doc["objects"][obj["?"]["id"]] = obj
            doc["order"].append(obj["?"]["id"])
    cluster = next(o for o in doc["objects"].values() if o["?"]["type"] == "KubernetesCluster")
    return [manifest for _, manifest in manifests_of(doc, cluster)]


@pytest.mark.parametrize("path", GOOD, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_file_translates_with_exactly_its_expected_warnings(path: Path) -> None:
    translation = translate(source_of(path))
    assert translation.format == path.parent.name
    check_expected(path, summary(translation))
    # Every warning names this file and a pointer into it.
    assert all(w.file == path.name and w.pointer.startswith("/") for w in translation.warnings)


@pytest.mark.parametrize("path", GOOD, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_package_passes_marina_validation_and_renders_valid_kubernetes(path: Path) -> None:
    translation = translate(source_of(path), fmt=path.parent.name)
    package = translation.package
    assert validate_manifest(package.manifest, package.files) == []
    loaded = load_zip(package_zip(package), source=path.name)
    assert loaded.manifest == package.manifest and loaded.files == package.files
    objects = kubernetes_objects(loaded)
    version = kubernetes_validate.latest_version()
    for manifest in objects:
        kubernetes_validate.validate(manifest, version, strict=True)
    deployments = [m for m in objects if m["kind"] == "Deployment"]
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(
        p["name"] for p in package.manifest["template"]["pods"]
    )


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_input_is_refused_naming_the_problem_and_line(path: Path) -> None:
    with pytest.raises(SourceRejected) as caught:
        translate(source_of(path))
    error = caught.value
    assert error.status == 400
    actual = {"problems": [p.as_dict() for p in error.problems]}
    check_expected(path, actual)
    assert all(p.as_dict()["line"] for p in error.problems), "every problem has a line"


def test_corpus_is_as_large_as_promised() -> None:
    assert len(corpus("compose")) >= 20
    assert len(corpus("pmx")) >= 10
    assert len(corpus("zapp")) >= 5
    assert all(expected_of(p).is_file() for p in GOOD + BAD)


@pytest.mark.parametrize("fmt", sorted(TRANSLATORS))
def test_every_translator_declares_itself(fmt: str) -> None:
    translator = TRANSLATORS[fmt]
    assert translator.format == fmt
    assert translator.title and translator.suffixes
    examples = corpus(fmt)
    data = translator.parse(source_of(examples[0])).data
    assert translator.recognises(data)
    others = [t for t in TRANSLATORS.values() if t is not translator]
    assert not any(t.recognises(data) for t in others)


@pytest.mark.parametrize("fmt", sorted(TRANSLATORS))
def test_format_is_detected_from_content_without_a_telling_name(fmt: str) -> None:
    path = corpus(fmt)[0]
    translation = translate(Source("upload", path.read_bytes(), path.parent))
    assert translation.format == fmt


@pytest.mark.parametrize("fmt", sorted(TRANSLATORS))
def test_malformed_file_is_refused_with_its_line(fmt: str) -> None:
    text = b'{"name": "x",\n "version": 3,\n "services": [\n' if fmt == "zapp" else b"a: 1\nb: [\n"
    with pytest.raises(SourceRejected) as caught:
        translate(Source(f"broken.{fmt}", text), fmt=fmt)
    problem = caught.value.problems[0].as_dict()
    assert problem["line"] in (3, 4) and "not valid" in str(problem["rule"])


@pytest.mark.parametrize("fmt", sorted(TRANSLATORS))
def test_too_many_services_are_refused(fmt: str) -> None:
    count = 101
    if fmt == "compose":
        text = "services:\n" + "".join(f"  s{i}: {{image: busybox}}\n" for i in range(count))
    elif fmt == "pmx":
        text = "name: many\nimages:\n" + "".join(
            f"- {{name: s{i}, source: busybox}}\n" for i in range(count)
        )
    else:
        text = json.dumps(
            {
                "name": "many",
                "version": 3,
                "services": [{"name": f"s{i}", "image": "busybox"} for i in range(count)],
            }
        )
    with pytest.raises(SourceRejected) as caught:
        translate(Source("many", text.encode()), fmt=fmt)
    assert [str(p) for p in caught.value.problems] == ["line 1: /: has 101 services; at most 100"]


@pytest.mark.parametrize("fmt", sorted(TRANSLATORS))
def test_unknown_fields_are_warnings_not_crashes(fmt: str) -> None:
    if fmt == "compose":
        text = "services:\n  a:\n    image: busybox\n    command: sleep 1\n    frobnicate: 3\n"
        pointer = "/services/a/frobnicate"
    elif fmt == "pmx":
        text = (
            "name: t\nimages:\n- name: a\n  source: busybox\n  command: sleep 1\n  frobnicate: 3\n"
        )
        pointer = "/images/0/frobnicate"
    else:
        text = json.dumps(
            {
                "name": "t",
                "version": 3,
                "services": [
                    {"name": "a", "image": "busybox", "command": "sleep 1", "frobnicate": 3}
                ],
            }
        )
        pointer = "/services/0/frobnicate"
    translation = translate(Source("t", text.encode()), fmt=fmt)
    assert [(w.pointer, w.kind, w.code) for w in translation.warnings] == [
        (pointer, "number", "unknown-field")
    ]
