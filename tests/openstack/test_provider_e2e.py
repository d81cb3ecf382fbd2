"""`marina up --provider openstack --engine kubernetes`, end to end.

The cluster's nodes are servers of the test cloud: three masters
(`masterCount`), a worker and a gateway. Fake servers boot nothing, so the
Kubernetes API test server stands for the cluster they form: each worker
joins it as its kubelet would, with its server's address as the Node's
InternalIP. The guestbook then goes through Marina's actions (the cluster's
deploy, the guestbook's deploy, scaleNodesUp, scaleNodes), and deleting the
environment leaves nothing in the cloud.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from catalog.providers.openstack import OpenStackProvider, OpenStackSettings
from tests.e2e.marina import Marina
from tests.kubeapi.harness import KubeApi
from tests.openstack.fixtures import TestCloud
from tests.openstack.test_provider import (
    cert_ips,
    kubeadm_config,
    tagged,
    user_data_of,
    written,
)
from tests.support import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:openstack"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack"),
]
SERVER_TASK = 600


def registered_nodes(kube: KubeApi) -> dict[str, str]:
    """Marina node name -> InternalIP of the Nodes on the API server."""
    with urllib.request.urlopen(f"{kube.url}/api/v1/nodes", timeout=30) as answer:
        nodes = json.load(answer)["items"]
    return {
        n["metadata"]["labels"]["marina.io/node"]: next(
            a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"
        )
        for n in nodes
        if "marina.io/node" in n["metadata"].get("labels", {})
    }


def test_guestbook_on_openstack_nodes_through_marinas_actions(
    openstack_cloud: TestCloud,
    os_conn: Any,
    os_admin: Any,
    new_kube_api: Callable[[], KubeApi],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = new_kube_api()
    if openstack_cloud.clouds_yaml:
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(openstack_cloud.clouds_yaml))
    args = (
        "--engine", "kubernetes", "--kubeconfig", str(kube.kubeconfig),
        "--provider", "openstack", "--cloud", openstack_cloud.cloud, "--register-workers",
    )  # fmt: skip
    # Three masters apart need three hosts (the test cloud's); a smaller cloud gets one.
    hosts = len(list(os_admin.compute.hypervisors()))
    masters = [f"master-{i}" for i in range(3 if hosts >= 3 else 1)]
    marina = Marina(tmp_path / "state", args=args).start()
    cluster_key = ""
    try:
        env = marina.ok("POST", "/v1/environments", {"name": "osgb"})["id"]
        properties = {
            "name": "os",
            "masterCount": len(masters),
            "nodeCount": 1,
            "gatewayCount": 1,
            "nodeCores": 1,
        }
        marina.ok(
            "POST",
            f"/v1/environments/{env}/services",
            {"package": "kubernetes-cluster", "properties": properties},
        )
        marina.ok("POST", f"/v1/environments/{env}/services", {"package": "guestbook"})
        for action in ("os:deploy", "Guestbook:deploy"):
            task = marina.run(env, action, timeout=SERVER_TASK)
            assert task["state"] == "succeeded", task
        cluster_key = next(
            o["key"] for o in marina.ok("GET", f"/v1/environments/{env}")["objects"] if "key" in o
        )
        held = tagged(os_conn, cluster_key)
        assert sorted(held["servers"]) == sorted(
            f"marina-{cluster_key}-{n}" for n in (*masters, "minion-1", "gateway-1")
        )
        servers = {
            name.removeprefix(f"marina-{cluster_key}-"): address
            for name, address in _fixed_addresses(os_conn, cluster_key).items()
        }
        check_masters(os_conn, os_admin, cluster_key, masters, servers)
        assert registered_nodes(kube) == {"minion-1": servers["minion-1"]}
        web = marina.objects(env)["web"]
        assert web["replicas"]["ready"] >= 1, web
        # The guestbook's public port opens on the gateways' group (and only it).
        wait_for(
            lambda: public_ports(os_conn, cluster_key) == {30080},
            timeout=120,
            what="the public port on the gateways' security group",
        )

        task = marina.run(env, "os:scaleNodesUp", timeout=SERVER_TASK)
        assert task["state"] == "succeeded" and task["outcome"] == "changed", task
        servers = {
            name.removeprefix(f"marina-{cluster_key}-"): address
            for name, address in _fixed_addresses(os_conn, cluster_key).items()
        }
        assert "minion-2" in servers
        assert registered_nodes(kube) == {
            "minion-1": servers["minion-1"],
            "minion-2": servers["minion-2"],
        }

        # Back to one worker: minion-2 is drained, its server and port go.
        task = marina.run(env, "os:scaleNodes", {"count": 1}, timeout=SERVER_TASK)
        assert task["state"] == "succeeded" and task["outcome"] == "changed", task
        held = tagged(os_conn, cluster_key)
        assert f"marina-{cluster_key}-minion-2" not in held["servers"]
        assert f"marina-{cluster_key}-minion-2" not in held["ports"]
        assert registered_nodes(kube) == {"minion-1": servers["minion-1"]}

        task = marina.ok("DELETE", f"/v1/environments/{env}")["task_id"]
        assert marina.wait_task(task, timeout=SERVER_TASK)["state"] == "succeeded"
        assert tagged(os_conn, cluster_key) == {}
        assert registered_nodes(kube) == {}
    finally:
        marina.stop()
        if cluster_key:  # whatever a failure left in the cloud
            settings = OpenStackSettings(
                cloud=openstack_cloud.cloud,
                config_files=(openstack_cloud.clouds_yaml,) if openstack_cloud.clouds_yaml else (),
            )
            provider = OpenStackProvider(None, settings)  # type: ignore[arg-type]
            provider.remove_cluster(cluster_key)
            provider.close()


def check_masters(
    conn: Any, admin: Any, cluster: str, masters: list[str], servers: dict[str, str]
) -> None:
    """The masters in their anti-affinity group, each on a host of its own, one
    etcd: the first begins it, each later one joins the ones before it; every
    master's API certificate names every master's address."""
    group = next(g for g in conn.compute.server_groups() if g.name == f"marina-{cluster}-masters")
    assert group.policy == "anti-affinity"
    ids = {s.name: s.id for s in conn.compute.servers(tags=f"marina-cluster={cluster}")}
    assert sorted(group.member_ids) == sorted(ids[f"marina-{cluster}-{m}"] for m in masters)
    hosts = {admin.compute.get_server(ids[f"marina-{cluster}-{m}"]).compute_host for m in masters}
    assert len(hosts) == len(masters)
    peers = {m: f"https://{servers[m]}:2380" for m in masters}
    for k, master in enumerate(masters):
        data = user_data_of(conn, admin, f"marina-{cluster}-{master}")
        etcd = kubeadm_config(data)["etcd"]["local"]["extraArgs"]
        assert etcd["initial-cluster"] == ",".join(f"{m}={peers[m]}" for m in masters[: k + 1])
        assert etcd["initial-cluster-state"] == ("new" if k == 0 else "existing")
        join = written(data, "/etc/marina/etcd-join.sh")
        assert (join is None) == (k == 0), master
        if join is not None:
            assert f"name={master}" in join and f"peer={peers[master]}" in join
        apiserver = written(data, "/etc/kubernetes/pki/apiserver.crt")
        assert apiserver is not None
        assert {servers[m] for m in masters} <= cert_ips(apiserver), master


def public_ports(conn: Any, cluster: str) -> set[int]:
    group = next(g for g in conn.network.security_groups() if g.name == f"marina-{cluster}-gateway")
    rules = conn.network.security_group_rules(security_group_id=group.id)
    return {r.port_range_min for r in rules if r.remote_ip_prefix == "0.0.0.0/0"}


def _fixed_addresses(conn: Any, cluster: str) -> dict[str, str]:
    """Server name -> its fixed address, for the cluster's servers."""
    found = {}
    for server in conn.compute.servers(tags=f"marina-cluster={cluster}"):
        for port in conn.network.ports(device_id=server.id):
            found[server.name] = port.fixed_ips[0]["ip_address"]
    return found
