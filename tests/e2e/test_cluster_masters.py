"""`masterCount` on the local provider, through a real `marina up`: the API,
the CLI and an import refuse more than one master, naming the field; the
OpenStack side is in tests/openstack/test_provider_e2e.py."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.marina import Marina


def fields(payload: dict) -> set[str]:
    return {p["field"] for p in payload.get("problems", [])}


def rules(payload: dict) -> dict[str, str]:
    return {p["field"]: p["rule"] for p in payload.get("problems", [])}


def test_the_api_plans_one_master_and_refuses_more_on_the_local_provider(marina: Marina) -> None:
    env = marina.ok("POST", "/v1/environments", {"name": "masters"})["id"]
    services = f"/v1/environments/{env}/services"
    status, payload = marina.call(
        "POST", services, {"package": "kubernetes-cluster", "properties": {"masterCount": 2}}
    )
    assert status == 400 and fields(payload) == {"masterCount"}, payload
    assert "is not one of [1, 3, 5]" in rules(payload)["masterCount"]
    for dry_run in ("?dry_run=1", ""):
        status, payload = marina.call(
            "POST",
            services + dry_run,
            {"package": "kubernetes-cluster", "properties": {"name": "k", "masterCount": 3}},
        )
        assert status == 400, payload
        assert rules(payload) == {"masterCount": "the local provider runs one master"}
    assert marina.ok("GET", services) == []  # nothing was added
    made = marina.ok(
        "POST", services, {"package": "kubernetes-cluster", "properties": {"name": "k"}}
    )
    assert made[0]["properties"]["masterCount"] == 1
    assert [o["?"]["name"] for o in made if o["?"]["type"] == "MasterNode"] == ["master-0"]


def test_the_cli_names_the_field_and_the_rule(marina: Marina) -> None:
    env = marina.ok("POST", "/v1/environments", {"name": "masters-cli"})["id"]
    added = subprocess.run(
        [
            sys.executable, "-m", "catalog.cli", "--state-dir", str(marina.state_dir),
            "app", "add", env, "kubernetes-cluster", "--set", "name=c", "--set", "masterCount=3",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert added.returncode != 0
    assert "masterCount" in added.stderr and "the local provider runs one master" in added.stderr
    assert "Traceback" not in added.stderr


def test_an_import_carries_the_masters_or_refuses_them(marina: Marina) -> None:
    snapshot = {
        "format": "marina-export/1",
        "environment": "from-a-cloud",
        "cluster": {"name": "k", "masterCount": 3, "nodeCount": 1},
        "objects": [],
    }
    status, payload = marina.call("POST", "/v1/environments/import", snapshot)
    assert status == 400 and rules(payload) == {
        "masterCount": "the local provider runs one master"
    }, payload
    status, payload = marina.call(
        "POST", "/v1/environments/import", {**snapshot, "cluster": {"name": "k", "masterCount": 1}}
    )
    assert status == 201, payload
    cluster = next(o for o in payload["objects"] if o["?"]["type"] == "KubernetesCluster")
    assert cluster["properties"]["masterCount"] == 1
    status, payload = marina.call(
        "POST", "/v1/environments/import", {**snapshot, "cluster": {"name": "k", "masterCount": 4}}
    )
    assert status == 400 and fields(payload) == {"masterCount"}, payload
