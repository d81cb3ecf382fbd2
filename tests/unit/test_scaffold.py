"""`catalog.scaffold`: a new package is sound by the upload's own checks, and
lint names every problem, the form's field order included."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import yaml

from catalog.errors import ValidationFailed
from catalog.packages import load_folder
from catalog.scaffold import init_package, lint


def test_a_new_package_lints_clean_and_loads(tmp_path: Path) -> None:
    folder = tmp_path / "shop-front"
    init_package("shop-front", folder)
    assert lint(folder) == []
    package = load_folder(folder)
    assert package.name == "shop-front"
    assert package.manifest["ui"]["order"] == list(package.manifest["properties"]["properties"])


@pytest.mark.parametrize("name", ["Shop", "-shop", "shop_front", "", "a" * 64])
def test_init_refuses_names_the_catalog_would(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        init_package(name, tmp_path / "x")
    assert [p.field for p in caught.value.problems] == ["name"]
    assert not (tmp_path / "x").exists()


def test_ui_order_names_only_the_schema_properties_once(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    init_package("shop", folder)
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    manifest["ui"]["order"] = ["greeting", "colour", "greeting"]
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    problems = {(p.field, p.rule) for p in lint(folder)}
    assert problems == {
        ("ui.order[1]", "names no property of the properties schema"),
        ("ui.order[2]", "names a property a second time"),
    }
    manifest["ui"]["order"] = "greeting"
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    assert [p.field for p in lint(folder)] == ["ui.order"]


def test_lint_reads_a_zip_and_names_a_missing_path(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    init_package("shop", folder)
    archive = tmp_path / "shop.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.write(folder / "manifest.yaml", "manifest.yaml")  # app.py left out
    assert [(p.field, p.rule, p.value) for p in lint(archive)] == [
        ("template.pods[0].containers", "runs a file the package does not have", "app.py")
    ]
    assert [p.rule for p in lint(tmp_path / "nothing")] == ["does not exist"]
