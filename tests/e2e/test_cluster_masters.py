"""`masterCount` on the local provider, through a real `marina up`: the API,
the CLI and an import refuse more than one master, naming the field; the
OpenStack side is in tests/openstack/test_provider_e2e.py."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from catalog import keys
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


def test_a_murano_sessions_cluster_of_three_masters_fails_its_deploy_making_nothing(
    marina: Marina,
) -> None:
    """A session's additions are checked when they are deployed: the cluster's
    deploy refuses what the provider cannot do, before any node is made."""
    env = marina.ok("POST", "/v1/environments", {"name": "masters-session"})["id"]
    session = marina.ok("POST", f"/v1/environments/{env}/configure")["id"]
    cluster = {"?": {"type": "KubernetesCluster"}, "name": "k", "masterCount": 3, "nodeCount": 1}
    request = urllib.request.Request(
        f"{marina.api}/v1/environments/{env}/services",
        data=json.dumps(cluster).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {marina.token}",
            "X-Configuration-Session": session,
        },
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.status == 200
    marina.ok("POST", f"/v1/environments/{env}/sessions/{session}/deploy")
    (task,) = marina.ok("GET", f"/v1/environments/{env}/tasks")["tasks"]
    done = marina.wait_task(task["id"])
    assert done["state"] == "failed", done
    assert "the local driver cannot run 3 masters (masterCount): it runs one" in done["error"]
    nodes = [o for o in marina.objects(env).values() if o["?"]["type"].endswith("Node")]
    assert len(nodes) == 5 and all(n["state"] == "pending" for n in nodes)
    assert marina.etcd_keys(keys.NODES) == []
