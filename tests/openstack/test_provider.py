"""The OpenStack provider against a real control plane (or `MARINA_TEST_CLOUD`).

Each test deploys nodes of a cluster of its own through the provider, and
checks what the cloud then holds: servers, ports, floating IPs, security
groups, and nothing once the cluster is removed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import ipaddress
import itertools
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from catalog import environments as envs
from catalog.documents import ClusterObject, EnvironmentDocument
from catalog.environments import make_node
from catalog.errors import ActionFailed
from catalog.ids import ObjectId, ProjectId
from catalog.pki import ensure_etcd_pki
from catalog.providers.bringup import (
    POD_CIDR,
    Authority,
    GatewayEtcd,
    NodePlan,
    issue,
    make_cluster_pki,
    render_user_data,
)
from catalog.providers.openstack import OpenStackProvider, OpenStackSettings
from catalog.store import Store
from tests.kubeapi.validation import schema_causes
from tests.openstack.fixtures import TestCloud, sdk_warnings_ignored
from tests.support import Etcd

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:openstack"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack"),
]

REPO = Path(__file__).resolve().parents[2]
_clusters = itertools.count(1)


@pytest.fixture
def cluster_name() -> str:
    return f"t{os.getpid() % 10000}x{next(_clusters)}"


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    ensure_etcd_pki(tmp_path / "pki")
    return tmp_path / "pki"


def settings(cloud: TestCloud, pki_dir: Path, etcd: Etcd, **changes: Any) -> OpenStackSettings:
    base = OpenStackSettings(
        cloud=cloud.cloud,
        config_files=(cloud.clouds_yaml,) if cloud.clouds_yaml else (),
        etcd_url=etcd.url,
        etcd_ca_dir=pki_dir,
        build_timeout=300,
    )
    return dataclasses.replace(base, **changes)


class Deployer:
    """The provider with a store, driven from synchronous tests."""

    def __init__(self, settings: OpenStackSettings, etcd: Etcd) -> None:
        self.settings = settings
        self.etcd = etcd

    def run(self, method: str, cluster: str, role: str, index: int, *, node: Any = None) -> Any:
        async def call() -> Any:
            async with Store(self.etcd.url) as store:
                provider = OpenStackProvider(store, self.settings)
                try:
                    made = node or make_node(ObjectId("cluster"), role, index)
                    return await getattr(provider, method)(cluster, made)
                finally:
                    provider.close()

        return asyncio.run(call())

    def provider_call(self, fn: str, *args: Any) -> Any:
        async def call() -> Any:
            async with Store(self.etcd.url) as store:
                provider = OpenStackProvider(store, self.settings)
                try:
                    result = getattr(provider, fn)(*args)
                    return await result if asyncio.iscoroutine(result) else result
                finally:
                    provider.close()

        return asyncio.run(call())


@pytest.fixture
def deployer(
    openstack_cloud: TestCloud, pki_dir: Path, etcd: Etcd, cluster_name: str
) -> Iterator[Deployer]:
    d = Deployer(settings(openstack_cloud, pki_dir, etcd), etcd)
    yield d
    d.provider_call("remove_cluster", cluster_name)  # whatever a failing test left


def tagged(conn: Any, cluster: str) -> dict[str, list[str]]:
    """What the cloud holds for `cluster`, by kind (names, or addresses)."""
    tag = f"marina-cluster={cluster}"
    return {
        kind: names
        for kind, names in {
            "servers": [s.name for s in conn.compute.servers(tags=tag)],
            "ports": [p.name for p in conn.network.ports(tags=tag)],
            "floating IPs": [i.floating_ip_address for i in conn.network.ips(tags=tag)],
            "networks": [n.name for n in conn.network.networks(tags=tag)],
            "routers": [r.name for r in conn.network.routers(tags=tag)],
            "security groups": [g.name for g in conn.network.security_groups(tags=tag)],
            "server groups": [
                g.name
                for g in conn.compute.server_groups()
                if g.name.startswith(f"marina-{cluster}-")
            ],
        }.items()
        if names
    }


def user_data_of(conn: Any, admin: Any, server_name: str) -> str:
    server = next(s for s in conn.compute.servers() if s.name == server_name)
    found = admin.compute.get_server(server.id)
    data = found.user_data
    assert data, "the server has no user data"
    return base64.b64decode(data).decode()


# -- user data: no cloud needed ------------------------------------------------------


def test_user_data_of_each_role_is_valid_cloud_config_with_only_its_secrets(
    tmp_path: Path,
) -> None:
    pki = make_cluster_pki()
    etcd_ca = ensure_etcd_pki(tmp_path / "pki")
    ca = Authority(etcd_ca.client.ca.read_text(), (tmp_path / "pki" / "ca-key.pem").read_text())
    gateway_etcd = GatewayEtcd("https://192.0.2.1:23790", ca.cert, issue(ca, "gw", client=True))
    documents = {}
    for role, public in (("master", ["203.0.113.9"]), ("minion", []), ("gateway", ["203.0.113.7"])):
        plan = NodePlan(
            cluster="c1",
            name=f"{role}-1",
            role=role,
            address="10.240.0.5",
            api_address="10.240.0.5" if role == "master" else "10.240.0.4",
            public_addresses=public,
            masters=[("master-1", "10.240.0.4")] if role != "master" else [],
        )
        text = render_user_data(plan, pki, gateway_etcd=gateway_etcd)
        path = tmp_path / f"{role}.yaml"
        path.write_text(text)
        check = subprocess.run(
            ["cloud-init", "schema", "--config-file", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.returncode == 0, f"{role}: {check.stdout}{check.stderr}"
        documents[role] = text

    def has(role: str, secret: str) -> bool:
        files = yaml.safe_load(documents[role].split("\n", 1)[1])["write_files"]
        return any(secret.strip() in f["content"] for f in files)

    # Masters sign: they hold the CAs' keys. Nobody else does.
    for secret in (pki.kubernetes.key, pki.etcd.key, pki.front_proxy.key, pki.service_account_key):
        assert has("master", secret)
        assert not has("minion", secret)
        assert not has("gateway", secret)
    assert "etcd/peer.key" in documents["master"]
    assert "etcd/peer.key" not in documents["minion"]
    assert "/etc/kubernetes/pki" not in documents["gateway"]
    # Marina's etcd: only gateways get a client certificate, never its CA key.
    assert has("gateway", gateway_etcd.client.key)
    assert not has("gateway", ca.key)
    assert "marina-gateway" not in documents["minion"]
    assert "MARINA_CLUSTER=c1" in documents["gateway"]
    # A real kubelet's Node carries the labels the Kubernetes engine knows it by.
    kubelet = next(
        f["content"]
        for f in yaml.safe_load(documents["minion"].split("\n", 1)[1])["write_files"]
        if f["path"] == "/etc/default/kubelet"
    )
    assert "--node-labels=marina.io/cluster=c1,marina.io/node=minion-1" in kubelet
    assert "--hostname-override=c1-minion-1" in kubelet
    kubelet_cert = next(
        f["content"]
        for f in yaml.safe_load(documents["minion"].split("\n", 1)[1])["write_files"]
        if f["path"] == "/var/lib/kubelet/pki/kubelet.crt"
    )
    subject = x509.load_pem_x509_certificate(kubelet_cert.encode()).subject.rfc4514_string()
    assert "CN=system:node:c1-minion-1" in subject  # the name the node authorizer matches
    # The API server's certificate names the floating IP and every address.
    cert_pem = next(
        f["content"]
        for f in yaml.safe_load(documents["master"].split("\n", 1)[1])["write_files"]
        if f["path"].endswith("/apiserver.crt")
    )
    sans = x509.load_pem_x509_certificate(cert_pem.encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    ips = {str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)}
    assert {"203.0.113.9", "10.240.0.5", "10.96.0.1"} <= ips
    # RKE's order on the first master: etcd, control plane, the network plugin,
    # then the add-ons: DNS, kube-proxy and metrics (objects the official
    # schemas accept, strictly).
    steps = [s[-1] for s in yaml.safe_load(documents["master"].split("\n", 1)[1])["runcmd"]]
    order = [
        next(i for i, s in enumerate(steps) if what in s)
        for what in ("phase etcd local", "phase control-plane", "marina-podnet.service",
                     "addon coredns", "apply -f /etc/marina/addons")
    ]  # fmt: skip
    assert order == sorted(order)
    addons = written(documents["master"], "/etc/marina/addons/metrics-server.yaml")
    assert addons is not None
    objects = list(yaml.safe_load_all(addons))
    assert {"Deployment", "Service", "APIService"} <= {o["kind"] for o in objects}
    for obj in objects:
        assert schema_causes(obj) == [], obj["kind"]
    # Workers run the network plugin for their own Node; gateways run no pods.
    assert "--node c1-minion-1" in documents["minion"]
    assert "marina-podnet" not in documents["gateway"]


def test_up_refuses_openstack_without_the_kubernetes_engine_or_a_cloud(tmp_path: Path) -> None:
    def up(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "catalog.cli", "--state-dir", str(tmp_path), "up", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )

    local = up("--provider", "openstack", "--cloud", "mycloud")
    assert local.returncode != 0
    assert "--provider openstack needs --engine kubernetes" in local.stderr
    no_cloud = up("--provider", "openstack", "--engine", "kubernetes")
    assert no_cloud.returncode != 0
    assert "--provider openstack needs --cloud NAME" in no_cloud.stderr
    image_here = up("--image", "marina-node")
    assert image_here.returncode != 0
    assert "--image: for --provider openstack only" in image_here.stderr
    bad_flavor = up(
        "--provider", "openstack", "--engine", "kubernetes", "--cloud", "c", "--flavor", "big"
    )
    assert bad_flavor.returncode != 0
    assert "--flavor big: must be ROLE=FLAVOR" in bad_flavor.stderr


def test_an_unknown_cloud_is_refused_naming_it(tmp_path: Path, etcd: Etcd) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds: {}\n")

    async def connect() -> None:
        async with Store(etcd.url) as store:
            provider = OpenStackProvider(
                store, OpenStackSettings(cloud="nowhere", config_files=(clouds,))
            )
            provider.connection()

    with pytest.raises(ActionFailed, match="cloud 'nowhere'"):
        asyncio.run(connect())


def test_openstacksdk_errors_become_marinas_with_the_reason(tmp_path: Path, etcd: Etcd) -> None:
    from openstack import exceptions

    async def fail(error: Exception) -> None:
        async with Store(etcd.url) as store:
            provider = OpenStackProvider(store, OpenStackSettings(cloud="unused"))

            def call() -> None:
                raise error

            await provider._run("deployInstance", call)

    cases = [
        (exceptions.ConflictException("port in use", http_status=409), "409", True),
        (exceptions.ForbiddenException("Quota exceeded", http_status=403), "Quota exceeded", False),
        (exceptions.ResourceTimeout("still BUILD"), "still BUILD", True),
    ]
    for error, reason, retryable in cases:
        with pytest.raises(ActionFailed) as failed:
            asyncio.run(fail(error))
        assert reason in str(failed.value)
        assert failed.value.retryable is retryable
        assert failed.value.__cause__ is error


# -- against the cloud ---------------------------------------------------------------


def test_deploy_scale_and_remove_leave_nothing(
    deployer: Deployer, os_conn: Any, os_admin: Any, cluster_name: str
) -> None:
    c = cluster_name
    nodes = [make_node(ObjectId("cluster"), role, 1) for role in ("master", "minion", "gateway")]
    with sdk_warnings_ignored():
        _, compute_needs, network_needs = deployer.provider_call("cluster_needs", c, nodes)
    master = deployer.run("deploy_instance", c, "master", 1)
    worker = deployer.run("deploy_instance", c, "minion", 1)
    gateway = deployer.run("deploy_instance", c, "gateway", 1)
    # What the quota check counted before is what the cloud now holds.
    held = tagged(os_conn, c)
    groups = list(os_conn.network.security_groups(tags=f"marina-cluster={c}"))
    rules = [
        r for g in groups for r in os_conn.network.security_group_rules(security_group_id=g.id)
    ]
    assert compute_needs["instances"] == len(held["servers"]) == 3
    assert compute_needs["server groups"] == len(held["server groups"]) == 1
    assert network_needs == {
        "port": len(held["ports"]),
        "floatingip": len(held["floating IPs"]),
        "network": 1,
        "subnet": len(list(os_conn.network.subnets(tags=f"marina-cluster={c}"))),
        "router": len(held["routers"]),
        "security_group": len(groups),
        "security_group_rule": len(rules),
    }
    assert ipaddress.ip_address(master) in ipaddress.ip_network("10.240.0.0/24")
    assert ipaddress.ip_address(worker) in ipaddress.ip_network("10.240.0.0/24")
    held = tagged(os_conn, c)
    # A gateway's address is its floating IP, on the cloud's external network.
    assert gateway in held["floating IPs"]
    assert ipaddress.ip_address(gateway) not in ipaddress.ip_network("10.240.0.0/24")
    assert sorted(held["servers"]) == sorted(
        f"marina-{c}-{n}" for n in ("master-1", "minion-1", "gateway-1")
    )
    assert len(held["floating IPs"]) == 2  # the gateway's and the API's
    assert held["networks"] == [f"marina-{c}"]
    assert sorted(held["security groups"]) == sorted(
        f"marina-{c}-{r}" for r in ("master", "minion", "gateway")
    )
    group = next(g for g in os_conn.compute.server_groups() if g.name == f"marina-{c}-masters")
    master_id = next(s.id for s in os_conn.compute.servers() if s.name == f"marina-{c}-master-1")
    assert group.member_ids == [master_id]
    for server in os_conn.compute.servers(tags=f"marina-cluster={c}"):
        assert server.status == "ACTIVE"
        assert "marina" in server.tags
    # Pods' addresses pass neutron's anti-spoofing on the nodes that run pods.
    for node, pairs in (("master-1", [POD_CIDR]), ("minion-1", [POD_CIDR]), ("gateway-1", [])):
        port = next(p for p in os_conn.network.ports() if p.name == f"marina-{c}-{node}")
        assert [a["ip_address"] for a in port.allowed_address_pairs] == pairs, node
    groups = {g.name: g for g in os_conn.network.security_groups(tags=f"marina-cluster={c}")}

    def from_pods(role: str) -> bool:
        rules = os_conn.network.security_group_rules(
            security_group_id=groups[f"marina-{c}-{role}"].id
        )
        return any(r.remote_ip_prefix == POD_CIDR and r.protocol is None for r in rules)

    assert from_pods("master") and from_pods("minion") and not from_pods("gateway")
    # The worker's user data runs the network plugin for its Node.
    minion_data = user_data_of(os_conn, os_admin, f"marina-{c}-minion-1")
    assert f"--node {c}-minion-1" in minion_data
    assert "systemctl enable --now marina-podnet.service" in minion_data
    # Each server booted with its own role's user data.
    assert "kubeadm init phase etcd local" in user_data_of(
        os_conn, os_admin, f"marina-{c}-master-1"
    )
    assert "marina-gateway" in user_data_of(os_conn, os_admin, f"marina-{c}-gateway-1")

    # Public ports open on the gateways' group, and close again.
    deployer.provider_call("sync_public_ports", c, {8080, 8443})
    gw_group = next(g for g in os_conn.network.security_groups() if g.name == f"marina-{c}-gateway")

    def public_ports() -> set[int]:
        rules = os_conn.network.security_group_rules(security_group_id=gw_group.id)
        return {r.port_range_min for r in rules if r.remote_ip_prefix == "0.0.0.0/0"}

    assert public_ports() == {8080, 8443}
    deployer.provider_call("sync_public_ports", c, {8443})
    assert public_ports() == {8443}

    # Scale up, then down: a server comes and goes with its port.
    deployer.run("deploy_instance", c, "minion", 2)
    assert f"marina-{c}-minion-2" in tagged(os_conn, c)["servers"]
    deployer.run("remove_node", c, "minion", 2)
    held = tagged(os_conn, c)
    assert f"marina-{c}-minion-2" not in held["servers"]
    assert f"marina-{c}-minion-2" not in held["ports"]

    for role in ("gateway", "minion", "master"):
        deployer.run("remove_node", c, role, 1)
    assert tagged(os_conn, c) == {}


def test_kill_mid_deploy_resumes_without_duplicates(
    deployer: Deployer,
    openstack_cloud: TestCloud,
    etcd: Etcd,
    pki_dir: Path,
    os_conn: Any,
    cluster_name: str,
) -> None:
    c = cluster_name
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.openstack.deploying",
            openstack_cloud.cloud,
            str(openstack_cloud.clouds_yaml or ""),
            etcd.url,
            str(pki_dir),
            c,
            "gateway",
            "1",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Killed once its server exists and is still building (or its port, at worst).
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if tagged(os_conn, c).get("servers"):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout and proc.stdout.close()
    proc.stderr and proc.stderr.close()
    assert tagged(os_conn, c).get("ports"), "the run was killed before it made anything"

    address = deployer.run("deploy_instance", c, "gateway", 1)
    held = tagged(os_conn, c)
    assert held["servers"] == [f"marina-{c}-gateway-1"]
    assert held["ports"] == [f"marina-{c}-gateway-1"]
    assert held["floating IPs"] == [address]
    deployer.run("remove_node", c, "gateway", 1)
    assert tagged(os_conn, c) == {}


def test_orphan_sweep_removes_clusters_nobody_knows(
    deployer: Deployer, os_conn: Any, cluster_name: str
) -> None:
    c = cluster_name
    deployer.run("deploy_instance", c, "minion", 1)
    assert tagged(os_conn, c)["servers"]
    kept = deployer.provider_call("sweep", {c})
    assert c not in kept
    assert tagged(os_conn, c)["servers"]  # a known cluster stays
    # A removal cut off before its last step leaves only the masters' server group.
    os_conn.compute.create_server_group(name=f"marina-{c}-gone-masters", policy="anti-affinity")
    swept = deployer.provider_call("sweep", set())
    assert c in swept and f"{c}-gone" in swept
    assert tagged(os_conn, c) == {}
    assert not [g for g in os_conn.compute.server_groups() if g.name.startswith(f"marina-{c}-")]


def test_missing_image_or_flavor_fails_before_anything_is_made(
    openstack_cloud: TestCloud, pki_dir: Path, etcd: Etcd, os_conn: Any, cluster_name: str
) -> None:
    c = cluster_name
    cases: list[tuple[dict[str, Any], str]] = [
        ({"image": "no-such-image"}, "image 'no-such-image' does not exist"),
        ({"flavors": {"minion": "m1.nope"}}, "flavor 'm1.nope' for minion nodes does not exist"),
        ({"flavors": {"minion": "m1.tiny"}}, "512 MiB of RAM; minion nodes need 1024"),
    ]
    for changes, reason in cases:
        deployer = Deployer(settings(openstack_cloud, pki_dir, etcd, **changes), etcd)
        with pytest.raises(ActionFailed) as failed:
            deployer.run("deploy_instance", c, "minion", 1)
        assert reason in str(failed.value)
        assert not failed.value.retryable
    assert tagged(os_conn, c) == {}


def test_quota_too_small_fails_at_once_saying_what_is_short(
    deployer: Deployer, os_conn: Any, os_admin: Any, cluster_name: str
) -> None:
    project = os_conn.current_project_id
    before = os_conn.compute.get_quota_set(project)
    used = os_conn.compute.get_limits().absolute.instances_used
    os_admin.compute.update_quota_set(project, instances=used)
    try:
        with pytest.raises(ActionFailed) as failed:
            deployer.run("deploy_instance", cluster_name, "minion", 1)
    finally:
        os_admin.compute.update_quota_set(project, instances=before.instances)
    assert f"compute instances: {used} of {used} in use, 1 more needed" in str(failed.value)
    assert tagged(os_conn, cluster_name) == {}


def test_server_in_error_fails_the_task_with_novas_fault(
    deployer: Deployer, os_conn: Any, os_admin: Any, cluster_name: str
) -> None:
    # A root disk beyond any host's: the scheduler finds no host.
    flavor = os_admin.compute.create_flavor(
        name=f"marina-{cluster_name}-huge", ram=2048, vcpus=1, disk=10_000_000
    )
    try:
        huge = Deployer(
            dataclasses.replace(deployer.settings, flavors={"minion": flavor.name}),
            deployer.etcd,
        )
        with pytest.raises(ActionFailed) as failed:
            huge.run("deploy_instance", cluster_name, "minion", 1)
        assert "is in ERROR" in str(failed.value)
        assert "No valid host" in str(failed.value)
        huge.run("remove_node", cluster_name, "minion", 1)
        assert tagged(os_conn, cluster_name) == {}
    finally:
        os_admin.compute.delete_flavor(flavor)


def kubeadm_config(user_data: str) -> dict[str, Any]:
    """A master's ClusterConfiguration, from its user data."""
    files = yaml.safe_load(user_data.split("\n", 1)[1])["write_files"]
    text = next(f["content"] for f in files if f["path"] == "/etc/marina/kubeadm.yaml")
    return next(d for d in yaml.safe_load_all(text) if d["kind"] == "ClusterConfiguration")


def written(user_data: str, path: str) -> str | None:
    files = yaml.safe_load(user_data.split("\n", 1)[1])["write_files"]
    return next((f["content"] for f in files if f["path"] == path), None)


def cert_ips(pem: str) -> set[str]:
    sans = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    return {str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)}


def test_three_masters_form_one_etcd_and_control_plane(
    deployer: Deployer, os_conn: Any, os_admin: Any, cluster_name: str, tmp_path: Path
) -> None:
    c = cluster_name
    hosts = len(list(os_admin.compute.hypervisors()))
    if hosts < 3:  # a cloud too small for three masters apart: they may share hosts
        deployer = Deployer(
            dataclasses.replace(deployer.settings, master_policy="soft-anti-affinity"),
            deployer.etcd,
        )
    for index in (0, 1, 2):
        deployer.run("deploy_instance", c, "master", index)
    names = [f"master-{i}" for i in (0, 1, 2)]
    ports = {p.name: p for p in os_conn.network.ports(tags=f"marina-cluster={c}")}
    address = {n: ports[f"marina-{c}-{n}"].fixed_ips[0]["ip_address"] for n in names}
    api_ip = tagged(os_conn, c)["floating IPs"]
    assert len(api_ip) == 1  # the API's, on the first master
    group = next(g for g in os_conn.compute.server_groups() if g.name == f"marina-{c}-masters")
    servers = {s.name: s.id for s in os_conn.compute.servers(tags=f"marina-cluster={c}")}
    assert sorted(group.member_ids) == sorted(servers[f"marina-{c}-{n}"] for n in names)
    placed = {os_admin.compute.get_server(servers[f"marina-{c}-{n}"]).compute_host for n in names}
    assert len(placed) == min(hosts, 3)  # no two masters on one host where it can be helped

    data = {n: user_data_of(os_conn, os_admin, f"marina-{c}-{n}") for n in names}
    for n, text in data.items():
        path = tmp_path / f"{n}.yaml"
        path.write_text(text)
        check = subprocess.run(
            ["cloud-init", "schema", "--config-file", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.returncode == 0, f"{n}: {check.stdout}{check.stderr}"
    peer = {n: f"https://{address[n]}:2380" for n in names}
    for k, n in enumerate(names):
        config = kubeadm_config(data[n])
        etcd = config["etcd"]["local"]["extraArgs"]
        # Each member names itself as every other master names it, and lists
        # the members before it and itself: the cluster it joins once added.
        assert etcd["name"] == n
        assert etcd["initial-advertise-peer-urls"] == peer[n]
        assert etcd["initial-cluster"] == ",".join(f"{m}={peer[m]}" for m in names[: k + 1])
        assert etcd["initial-cluster-state"] == ("new" if k == 0 else "existing")
        assert address[n] in config["etcd"]["local"]["peerCertSANs"]
        # One control plane: the same endpoint, CAs and pod range everywhere.
        assert config["controlPlaneEndpoint"] == f"{address['master-0']}:6443"
        assert config["controllerManager"]["extraArgs"]["allocate-node-cidrs"] == "true"
        assert config["controllerManager"]["extraArgs"]["cluster-cidr"] == POD_CIDR
        for ca in ("/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/etcd/ca.crt"):
            assert written(data[n], ca) == written(data["master-0"], ca)
        # The API server answers at its own address, the endpoint and the floating IP.
        apiserver = written(data[n], "/etc/kubernetes/pki/apiserver.crt")
        assert apiserver is not None
        assert {address[n], address["master-0"], *api_ip} <= cert_ips(apiserver)
        peer_cert = written(data[n], "/etc/kubernetes/pki/etcd/peer.crt")
        assert peer_cert is not None and address[n] in cert_ips(peer_cert)
        # A later master adds itself as a member, through the earlier ones, first.
        join = written(data[n], "/etc/marina/etcd-join.sh")
        if k == 0:
            assert join is None
            continue
        assert join is not None
        assert f"name={n}" in join and f"peer={peer[n]}" in join
        assert "pods=" + shlex.quote(" ".join(f"etcd-{m}" for m in names[:k])) in join
        (tmp_path / f"{n}-join.sh").write_text(join)
        lint = subprocess.run(
            ["shellcheck", str(tmp_path / f"{n}-join.sh")], capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout
        steps = [step[-1] for step in yaml.safe_load(data[n].split("\n", 1)[1])["runcmd"]]
        assert steps.index("/etc/marina/etcd-join.sh") < next(
            i for i, s in enumerate(steps) if "phase etcd local" in s
        )
    deployer.provider_call("remove_cluster", c)
    assert tagged(os_conn, c) == {}


def store_cluster(etcd: Etcd, name: str, roles: dict[str, int]) -> tuple[str, list[Any]]:
    """An environment holding a cluster of `roles` (count per role), as the
    catalog stores it; the cluster's key and its nodes."""

    async def make() -> tuple[str, list[Any]]:
        async with Store(etcd.url) as store:
            doc = await envs.create_environment(store, name=name, project=ProjectId("p"))
            cluster_id = ObjectId(f"{name}-cluster")
            key = envs.cluster_key(doc["id"], name)
            nodes = [
                make_node(cluster_id, role, index + (role != "master"))
                for role, count in roles.items()
                for index in range(count)
            ]

            def add(doc: EnvironmentDocument) -> None:
                cluster: ClusterObject = {
                    "?": envs.header(cluster_id, "KubernetesCluster", name),
                    "properties": {
                        "name": name,
                        "nodeCount": roles.get("minion", 0),
                        "maxNodes": 5,
                        "gatewayCount": roles.get("gateway", 0),
                        "maxGateways": 5,
                        "nodeCores": 1,
                        "nodeMemory": 1024,
                    },
                    "key": key,
                    "state": "new",
                    "nodes": [n["?"]["id"] for n in nodes],
                    "endpoints": [],
                }
                doc["objects"][cluster_id] = cluster
                for node in nodes:
                    doc["objects"][node["?"]["id"]] = node

            await envs.change(store, doc["id"], add)
            return key, nodes

    return asyncio.run(make())


def test_the_whole_cluster_is_checked_against_quotas_before_anything_is_made(
    deployer: Deployer, etcd: Etcd, os_conn: Any, os_admin: Any, cluster_name: str
) -> None:
    key, nodes = store_cluster(etcd, cluster_name, {"master": 1, "minion": 2, "gateway": 1})
    project = os_conn.current_project_id
    compute_before = os_conn.compute.get_quota_set(project)
    network_before = os_admin.network.get_quota(project)
    used = os_conn.compute.get_limits().absolute.instances_used
    ips = os_admin.network.get_quota(project, details=True).floating_ips
    ips_used = ips["used"] + ips["reserved"]
    # Room for the first two nodes, not for the four: one node at a time would start.
    os_admin.compute.update_quota_set(project, instances=used + 2)
    os_admin.network.update_quota(project, floating_ips=ips_used + 1)
    try:
        with pytest.raises(ActionFailed) as failed:
            deployer.run("deploy_instance", key, "master", 0, node=nodes[0])
    finally:
        os_admin.compute.update_quota_set(project, instances=compute_before.instances)
        os_admin.network.update_quota(project, floating_ips=network_before.floating_ips)
        deployer.provider_call("remove_cluster", key)
    reason = str(failed.value)
    assert "quota too small for 1 master, 2 workers, 1 gateway" in reason
    assert f"compute instances: {used} of {used + 2} in use, 4 more needed" in reason
    # The API's floating IP and the gateway's.
    assert f"network floatingips: {ips_used} of {ips_used + 1} in use, 2 more needed" in reason
    assert not failed.value.retryable
    assert tagged(os_conn, key) == {}


def conductor_paused(cloud: TestCloud) -> Any:
    """nova-conductor stopped (SIGSTOP) while the block runs: servers stay in BUILD."""
    plane = cloud.plane
    if plane is None:
        pytest.skip("a real cloud's conductor cannot be paused from here")
    conductor = next(s for s in plane.services if s.name == "nova-conductor")
    assert conductor.process is not None

    @contextlib.contextmanager
    def paused() -> Iterator[None]:
        os.killpg(conductor.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(conductor.process.pid, signal.SIGCONT)

    return paused()


def test_a_server_stuck_in_build_fails_the_task_and_goes(
    deployer: Deployer, openstack_cloud: TestCloud, os_conn: Any, cluster_name: str
) -> None:
    c = cluster_name
    hasty = Deployer(dataclasses.replace(deployer.settings, build_timeout=3), deployer.etcd)
    # With the conductor stopped nova never schedules the server: it stays in BUILD.
    with conductor_paused(openstack_cloud):
        with pytest.raises(ActionFailed) as failed:
            hasty.run("deploy_instance", c, "minion", 1)
        assert "servers" not in tagged(os_conn, c)
    reason = str(failed.value)
    assert f"server marina-{c}-minion-1 still BUILD after 3s; it was deleted" in reason
    assert failed.value.retryable
    # Resumed once nova works again: one server on the port made the first time.
    port = tagged(os_conn, c)["ports"]
    deployer.run("deploy_instance", c, "minion", 1)
    held = tagged(os_conn, c)
    assert held["servers"] == [f"marina-{c}-minion-1"]
    assert held["ports"] == port
    deployer.run("remove_node", c, "minion", 1)
    assert tagged(os_conn, c) == {}


def test_a_conflict_fails_the_task_with_the_reason_and_makes_nothing(
    deployer: Deployer, os_conn: Any, cluster_name: str
) -> None:
    c = cluster_name
    deployer.run("deploy_instance", c, "minion", 1)
    # Someone renames the server: the node's port is still bound to it, and
    # nova refuses a second server on a port in use.
    server = next(s for s in os_conn.compute.servers() if s.name == f"marina-{c}-minion-1")
    os_conn.compute.update_server(server, name=f"someone-{c}")
    with pytest.raises(ActionFailed) as failed:
        deployer.run("deploy_instance", c, "minion", 1)
    reason = str(failed.value)
    assert "OpenStack answered 409" in reason
    assert "in use" in reason
    held = tagged(os_conn, c)
    assert held["servers"] == [f"someone-{c}"]  # no second server
    assert held["ports"] == [f"marina-{c}-minion-1"]  # and no second port
    deployer.provider_call("remove_cluster", c)
    assert tagged(os_conn, c) == {}


def test_a_users_network_without_port_security_takes_ports_without_groups_or_pairs(
    deployer: Deployer, os_conn: Any, cluster_name: str
) -> None:
    c = cluster_name
    network = os_conn.network.create_network(name=f"users-{c}", port_security_enabled=False)
    try:
        os_conn.network.create_subnet(
            network_id=network.id, name=f"users-{c}", ip_version=4, cidr="10.77.0.0/24"
        )
        theirs = Deployer(
            dataclasses.replace(deployer.settings, network=network.name), deployer.etcd
        )
        address = theirs.run("deploy_instance", c, "minion", 1)
        assert ipaddress.ip_address(address) in ipaddress.ip_network("10.77.0.0/24")
        port = next(p for p in os_conn.network.ports() if p.name == f"marina-{c}-minion-1")
        assert port.network_id == network.id
        assert port.security_group_ids == []
        assert port.allowed_address_pairs == []
        assert tagged(os_conn, c)["servers"] == [f"marina-{c}-minion-1"]
        assert "networks" not in tagged(os_conn, c)  # the user's, not Marina's
        theirs.run("remove_node", c, "minion", 1)
        assert tagged(os_conn, c) == {}
        assert os_conn.network.find_network(network.id) is not None  # still theirs
    finally:
        for subnet in list(os_conn.network.subnets(network_id=network.id)):
            os_conn.network.delete_subnet(subnet)
        os_conn.network.delete_network(network)
