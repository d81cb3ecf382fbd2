"""marina-podnet: the network plugin's routing half, run on every OpenStack node.

Not imported by Marina: `bringup.py` ships this file's text to masters and
workers in their cloud-init user data, where it runs as `marina-podnet.service`
with the node's own kubeconfig. kube-controller-manager gives each Node a pod
range (`--allocate-node-cidrs`); this program follows the Nodes with kubectl
and keeps, on its node, the bridge CNI configuration for the node's own range
and one route per other Node (its range via its InternalIP), adding and
deleting routes as Nodes come and go. Its routes carry their own protocol
number, so it never touches a route it did not make. Neutron lets the pod
addresses through because the provider lists the cluster's pod range in every
port's allowed address pairs.

Only the standard library: the node image has Python for cloud-init, nothing more.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

PROTOCOL = "77"
"""The route protocol number marking this program's routes (`ip route ... proto 77`)."""


def pod_ranges(nodes: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Node name -> (pod range, InternalIP) for every Node that has both."""
    found: dict[str, tuple[str, str]] = {}
    for item in nodes.get("items") or []:
        name = item.get("metadata", {}).get("name")
        cidr = item.get("spec", {}).get("podCIDR")
        addresses = item.get("status", {}).get("addresses", []) or []
        internal = [a.get("address") for a in addresses if a.get("type") == "InternalIP"]
        if name and cidr and internal and internal[0]:
            found[name] = (str(ipaddress.ip_network(cidr)), str(ipaddress.ip_address(internal[0])))
    return found


def cni_config(subnet: str) -> str:
    """The bridge plugin with host-local addresses from the node's pod range."""
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "marina",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    # Pods keep their addresses towards other pods; only traffic
                    # leaving the cluster is masqueraded (masquerade() below).
                    "ipMasq": False,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]]},
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def our_routes() -> dict[str, str]:
    """Destination -> gateway of the routes this program made."""
    routes = {}
    for line in _ip("-4", "route", "show", "proto", PROTOCOL).splitlines():
        words = line.split()
        if "via" in words:
            routes[str(ipaddress.ip_network(words[0]))] = words[words.index("via") + 1]
    return routes


def masquerade(own: str, cluster: str) -> None:
    """Pods' traffic to anywhere outside the cluster's pod range leaves as the node."""
    if shutil.which("iptables") is None:
        print("marina-podnet: no iptables: pods reach only the cluster", file=sys.stderr)
        return
    rule = ["POSTROUTING", "-s", own, "!", "-d", cluster, "-j", "MASQUERADE"]
    check = subprocess.run(["iptables", "-t", "nat", "-C", *rule], capture_output=True)
    if check.returncode != 0:
        subprocess.run(["iptables", "-t", "nat", "-A", *rule], check=True)


def sync(nodes: dict[str, Any], *, node: str, cluster: str, cni_path: str) -> list[str]:
    """One pass: the node's CNI configuration and its routes; what changed, as lines."""
    ranges = pod_ranges(nodes)
    changes = []
    own = ranges.get(node)
    if own is not None:
        text = cni_config(own[0])
        try:
            with open(cni_path) as current:
                same = current.read() == text
        except FileNotFoundError:
            same = False
        if not same:
            os.makedirs(os.path.dirname(cni_path), exist_ok=True)
            with open(cni_path + ".new", "w") as out:
                out.write(text)
            os.replace(cni_path + ".new", cni_path)
            changes.append(f"cni {own[0]}")
        masquerade(own[0], cluster)
    wanted = {cidr: via for name, (cidr, via) in ranges.items() if name != node}
    have = our_routes()
    for cidr, via in sorted(wanted.items()):
        if have.get(cidr) != via:
            _ip("route", "replace", cidr, "via", via, "proto", PROTOCOL)
            changes.append(f"route {cidr} via {via}")
    for cidr in sorted(set(have) - set(wanted)):
        _ip("route", "del", cidr, "proto", PROTOCOL)
        changes.append(f"route {cidr} removed")
    return changes


def list_nodes(kubectl: str, kubeconfig: str) -> dict[str, Any]:
    out = subprocess.run(
        [kubectl, "--kubeconfig", kubeconfig, "get", "nodes", "-o", "json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    nodes: dict[str, Any] = json.loads(out)
    return nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marina-podnet")
    parser.add_argument("--node", required=True, help="this node's Node name")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--cluster-cidr", required=True, help="every pod range together")
    parser.add_argument("--cni-config", default="/etc/cni/net.d/10-marina.conflist")
    parser.add_argument("--kubectl", default="kubectl")
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    args = parser.parse_args(argv)
    while True:
        try:
            nodes = list_nodes(args.kubectl, args.kubeconfig)
            for change in sync(
                nodes, node=args.node, cluster=args.cluster_cidr, cni_path=args.cni_config
            ):
                print(f"marina-podnet: {change}", flush=True)
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            print(f"marina-podnet: not synced: {error}", file=sys.stderr, flush=True)
            if args.once:
                return 1
        if args.once:
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
