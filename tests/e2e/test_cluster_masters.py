"""`masterCount` on the local provider, through a real `marina up`: the API,
the CLI, an import and a Murano session refuse more than one master, naming
the field, and a cluster of three stored another way fails its deploy; the
OpenStack side is in tests/openstack/test_provider_e2e.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

from catalog import environments as envs
from catalog import keys
from catalog.documents import EnvironmentDocument
from catalog.pki import TLSFiles
from catalog.store import Store
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


def murano_call(marina: Marina, method: str, path: str, body: Any, session: str) -> Any:
    """A call in a Murano configuration session: (status, payload)."""
    request = urllib.request.Request(
        marina.api + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {marina.token}",
            "X-Configuration-Session": session,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_murano_session_refuses_three_masters_when_added_or_edited(marina: Marina) -> None:
    env = marina.ok("POST", "/v1/environments", {"name": "masters-session"})["id"]
    session = marina.ok("POST", f"/v1/environments/{env}/configure")["id"]
    services = f"/v1/environments/{env}/services"
    cluster = {"?": {"type": "KubernetesCluster"}, "name": "k", "nodeCount": 1}
    status, payload = murano_call(marina, "POST", services, {**cluster, "masterCount": 3}, session)
    assert status == 400 and rules(payload) == {
        "masterCount": "the local provider runs one master"
    }, payload
    status, added = murano_call(marina, "POST", services, cluster, session)
    assert status == 200 and added["masterCount"] == 1, added
    status, payload = murano_call(
        marina, "PUT", services + "/", [{**added, "masterCount": 3}], session
    )
    assert status == 400 and "masterCount" in fields(payload), payload


def test_a_stored_cluster_of_three_masters_fails_its_deploy_making_nothing(
    marina: Marina,
) -> None:
    """A cluster that a Marina on OpenStack stored, deployed by one on the local
    provider (the same etcd): the deploy refuses before any node is made."""
    env = marina.ok("POST", "/v1/environments", {"name": "masters-stored"})["id"]
    marina.ok(
        "POST",
        f"/v1/environments/{env}/services",
        {"package": "kubernetes-cluster", "properties": {"name": "k", "nodeCount": 1}},
    )
    pki = marina.state_dir / "pki"
    tls = TLSFiles(pki / "ca.pem", pki / "client.pem", pki / "client-key.pem")

    def three_masters(doc: EnvironmentDocument) -> None:
        (cluster,) = envs.clusters(doc)
        cluster["properties"]["masterCount"] = 3
        for index in (1, 2):
            node = envs.make_node(cluster["?"]["id"], "master", index)
            doc["objects"][node["?"]["id"]] = node
            doc["order"].append(node["?"]["id"])
            cluster["nodes"].insert(index, node["?"]["id"])

    async def store_three() -> None:
        async with Store(f"https://127.0.0.1:{marina.etcd_port}", tls=tls) as store:
            await envs.change(store, env, three_masters)

    asyncio.run(store_three())
    task = marina.run(env, "k:deploy")
    assert task["state"] == "failed", task
    assert "the local driver cannot run 3 masters (masterCount): it runs one" in task["error"]
    nodes = [o for o in marina.objects(env).values() if o["?"]["type"].endswith("Node")]
    assert len(nodes) == 5 and all(n["state"] == "pending" for n in nodes)
    assert all(n["address"] is None for n in nodes)
    assert not [k for k in marina.etcd_keys(keys.NODES) if env[:12] in k]  # no agent
