"""The OpenStack provider against a real control plane (or `MARINA_TEST_CLOUD`).

Each test deploys nodes of a cluster of its own through the provider, and
checks what the cloud then holds: servers, ports, floating IPs, security
groups, and nothing once the cluster is removed.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import itertools
import os
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

from catalog.environments import make_node
from catalog.errors import ActionFailed
from catalog.ids import ObjectId
from catalog.pki import ensure_etcd_pki
from catalog.providers.bringup import (
    Authority,
    GatewayEtcd,
    NodePlan,
    issue,
    make_cluster_pki,
    render_user_data,
)
from catalog.providers.openstack import OpenStackProvider, OpenStackSettings
from catalog.store import Store
from tests.openstack.fixtures import TestCloud
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

    def run(self, method: str, cluster: str, role: str, index: int) -> Any:
        async def call() -> Any:
            async with Store(self.etcd.url) as store:
                provider = OpenStackProvider(store, self.settings)
                try:
                    node = make_node(ObjectId("cluster"), role, index)
                    return await getattr(provider, method)(cluster, node)
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
    master = deployer.run("deploy_instance", c, "master", 1)
    worker = deployer.run("deploy_instance", c, "minion", 1)
    gateway = deployer.run("deploy_instance", c, "gateway", 1)
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
    swept = deployer.provider_call("sweep", set())
    assert c in swept
    assert tagged(os_conn, c) == {}


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
