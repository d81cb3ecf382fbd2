"""The network plugin's routing half (`catalog/providers/podnet.py`), run as a node runs it.

A network namespace of its own stands for the node: a veth carries its
address on the cluster's subnet, and `ip` makes its routes there. The Nodes
come from the Kubernetes API test server through the real kubectl, which runs
in the host's namespace (where the server listens) by way of nsenter; every
other part of the program runs in the node's namespace. Nodes come and go
between passes, and the routes follow; a route the program did not make stays.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from catalog.providers import podnet
from tests.kubeapi.harness import KubeApi

pytestmark = pytest.mark.timeout(300)

PODNET = Path(podnet.__file__)
CLUSTER = "10.244.0.0/16"


def add_node(kube: KubeApi, name: str, address: str, cidr: str | None) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDR": cidr} if cidr else {},
        "status": {"addresses": [{"type": "InternalIP", "address": address}]},
    }
    request = urllib.request.Request(
        f"{kube.url}/api/v1/nodes",
        data=json.dumps(node).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 201


def delete_node(kube: KubeApi, name: str) -> None:
    request = urllib.request.Request(f"{kube.url}/api/v1/nodes/{name}", method="DELETE")
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


@pytest.fixture
def node_netns() -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """A network namespace standing for a node at 10.240.0.5/24; runs commands in it."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    name = f"marina-podnet-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)

    def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", name, *command],
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    try:
        run("ip", "link", "set", "lo", "up")
        run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        run("ip", "addr", "add", "10.240.0.5/24", "dev", "eth0")
        run("ip", "link", "set", "eth0", "up")
        run("ip", "link", "set", "peer0", "up")
        yield run
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_podnet_keeps_the_cni_range_and_routes_in_step_with_the_nodes(
    new_kube_api: Callable[[], KubeApi],
    node_netns: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    if shutil.which("kubectl") is None or shutil.which("nsenter") is None:
        pytest.skip("needs kubectl and nsenter")
    kube = new_kube_api()
    # kubectl reaches the server on the host's loopback: it alone runs there.
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(
        f"#!/bin/sh\nexec nsenter --net=/proc/{os.getpid()}/ns/net -- "
        f'{shutil.which("kubectl")} "$@"\n'
    )
    kubectl.chmod(0o755)
    cni = tmp_path / "net.d" / "10-marina.conflist"

    def sync() -> list[str]:
        done = node_netns(
            sys.executable, str(PODNET), "--once", "--node", "c1-minion-1",
            "--kubeconfig", str(kube.kubeconfig), "--cluster-cidr", CLUSTER,
            "--cni-config", str(cni), "--kubectl", str(kubectl), check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return [line.removeprefix("marina-podnet: ") for line in done.stdout.splitlines()]

    def routes() -> dict[str, str]:
        shown = node_netns("ip", "-4", "route", "show").stdout.splitlines()
        return {
            line.split()[0]: line.split()[line.split().index("via") + 1]
            for line in shown
            if " via " in line
        }

    node_netns("ip", "route", "add", "10.99.0.0/24", "via", "10.240.0.9")  # not podnet's
    add_node(kube, "c1-minion-1", "10.240.0.5", "10.244.1.0/24")
    add_node(kube, "master-0", "10.240.0.4", "10.244.0.0/24")
    add_node(kube, "c1-minion-2", "10.240.0.6", "10.244.2.0/24")
    add_node(kube, "c1-minion-3", "10.240.0.7", None)  # no range given yet

    changes = sync()
    assert "cni 10.244.1.0/24" in changes
    config = json.loads(cni.read_text())
    bridge = config["plugins"][0]
    assert bridge["type"] == "bridge"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]
    assert routes() == {
        "10.244.0.0/24": "10.240.0.4",
        "10.244.2.0/24": "10.240.0.6",
        "10.99.0.0/24": "10.240.0.9",
    }
    assert sync() == []  # nothing changed, nothing done

    # A node goes, another gets its range: the routes follow.
    delete_node(kube, "c1-minion-2")
    delete_node(kube, "c1-minion-3")
    add_node(kube, "c1-minion-3", "10.240.0.7", "10.244.3.0/24")
    changes = sync()
    assert "route 10.244.2.0/24 removed" in changes
    assert "route 10.244.3.0/24 via 10.240.0.7" in changes
    assert routes() == {
        "10.244.0.0/24": "10.240.0.4",
        "10.244.3.0/24": "10.240.0.7",
        "10.99.0.0/24": "10.240.0.9",
    }


def test_podnet_without_the_api_fails_the_pass_and_changes_nothing(
    node_netns: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    # The node's own namespace has no API server: kubectl fails, the pass says so.
    if shutil.which("kubectl") is None:
        pytest.skip("needs kubectl")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "
        "'http://127.0.0.1:9'}}]\ncontexts: [{name: c, context: {cluster: c}}]\n"
        "current-context: c\n"
    )
    done = node_netns(
        sys.executable, str(PODNET), "--once", "--node", "n", "--kubeconfig", str(kubeconfig),
        "--cluster-cidr", CLUSTER, "--cni-config", str(tmp_path / "cni.conflist"),
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "not synced" in done.stderr
    assert not (tmp_path / "cni.conflist").exists()
