"""A cluster's masters: `masterCount` checked and planned into master nodes."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalog.environments import instantiate
from catalog.errors import ValidationFailed
from catalog.export import export_archive
from catalog.packages import Package, load_folder, resolve_properties

ROOT = Path(__file__).resolve().parents[2] / "packages"


def cluster_package() -> Package:
    return load_folder(ROOT / "kubernetes-cluster")


def empty() -> dict[str, Any]:
    return {"id": "e" * 32, "name": "env", "objects": {}, "order": []}


def plan(given: dict[str, Any], *, single_master: str | None = None) -> list[dict[str, Any]]:
    package = cluster_package()
    properties = resolve_properties(package, {"name": "k", **given})
    made = instantiate(package, properties, empty(), name=None, single_master=single_master)  # type: ignore[arg-type]
    return made  # type: ignore[return-value]


def nodes(made: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(name, type, index) of the planned nodes, in the cluster's order."""
    cluster = made[0]
    by_id = {o["?"]["id"]: o for o in made[1:]}
    return [
        (by_id[n]["?"]["name"], by_id[n]["?"]["type"], by_id[n]["index"]) for n in cluster["nodes"]
    ]


def test_one_master_by_default() -> None:
    made = plan({"nodeCount": 1})
    assert made[0]["properties"]["masterCount"] == 1
    assert nodes(made) == [
        ("master-0", "MasterNode", 0),
        ("minion-1", "MinionNode", 1),
        ("gateway-1", "GatewayNode", 1),
    ]


@pytest.mark.parametrize("count", [3, 5])
def test_masters_are_planned_first_in_order(count: int) -> None:
    made = plan({"masterCount": count, "nodeCount": 2, "gatewayCount": 1})
    planned = nodes(made)
    masters = [(f"master-{i}", "MasterNode", i) for i in range(count)]
    assert planned[:count] == masters
    assert [n for n, _, _ in planned[count:]] == ["minion-1", "minion-2", "gateway-1"]


@pytest.mark.parametrize("count", [0, 2, 4, 6, 7, "3"])
def test_an_even_or_other_count_is_refused_naming_the_field(count: Any) -> None:
    with pytest.raises(ValidationFailed) as refused:
        plan({"masterCount": count})
    problems = refused.value.problems
    assert {p.field for p in problems} == {"masterCount"}  # a string: its type as well
    assert any("is not one of [1, 3, 5]" in p.rule and p.value == count for p in problems)


def test_a_package_of_looser_rules_is_still_held_to_an_odd_count(tmp_path: Path) -> None:
    """An uploaded cluster package that allows any count: etcd's rule holds anyway."""
    manifest = yaml.safe_load((ROOT / "kubernetes-cluster" / "manifest.yaml").read_text())
    manifest["properties"]["properties"]["masterCount"] = {"type": "integer", "default": 1}
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    package = load_folder(tmp_path)
    properties = resolve_properties(package, {"name": "k", "masterCount": 2})
    with pytest.raises(ValidationFailed) as refused:
        instantiate(package, properties, empty(), name=None)  # type: ignore[arg-type]
    (problem,) = refused.value.problems
    assert problem.field == "masterCount" and problem.value == 2
    assert "must be 1, 3 or 5" in problem.rule and "odd" in problem.rule


def test_a_provider_of_one_master_refuses_more_with_every_other_problem() -> None:
    assert len(nodes(plan({"masterCount": 1}, single_master="local"))) == 4
    with pytest.raises(ValidationFailed) as refused:
        plan({"masterCount": 3, "nodeCount": 5, "maxNodes": 4}, single_master="local")
    found = {p.field: p for p in refused.value.problems}
    assert set(found) == {"masterCount", "nodeCount"}
    assert found["masterCount"].rule == "the local provider runs one master"
    assert "masterCount: the local provider runs one master" in str(refused.value)


def test_a_stored_cluster_without_the_property_has_one_master() -> None:
    from catalog.environments import master_count

    made = plan({})
    properties = dict(made[0]["properties"])
    del properties["masterCount"]
    assert master_count(properties) == 1  # type: ignore[arg-type]


def test_the_export_snapshot_carries_the_masters() -> None:
    made = plan({"masterCount": 3})
    doc = empty()
    for obj in made:
        doc["objects"][obj["?"]["id"]] = obj
        doc["order"].append(obj["?"]["id"])
    archive, _ = export_archive(doc, made[0], [])  # type: ignore[arg-type]
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("marina.json"))
        snapshot = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
    assert snapshot["cluster"]["masterCount"] == 3
