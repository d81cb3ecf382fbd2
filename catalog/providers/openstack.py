"""The OpenStack provider: a cluster's nodes are servers of a cloud.

Per cluster, one network, subnet and router (or the user's network by name),
one security group per role, a server group with anti-affinity for the
masters; per node, a port made before its server (so its address, and a
gateway's or the first master's floating IP, are in its certificates) and the
server, booted with the role's cloud-init user data (`bringup.py`). Ports of
nodes that run pods allow the pod range, which the nodes route between them
(`podnet.py`). Every resource is named after its cluster and node and tagged
with them, so a run cut off anywhere finds what it made and makes nothing
twice; removing the last node removes the cluster's resources; `sweep`
removes whatever carries Marina's tag and belongs to no known cluster.
Before a server is made, every node of the cluster still to be made must fit
the project's quotas, so a deploy that cannot fit fails before its first
server, not halfway.

Nodes never run Marina's node agent here: the engine on them is the
Kubernetes engine, whose Nodes the workers become. This is the only module
that imports openstacksdk; its errors become Marina's here, cause chained.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import openstack.config
import openstack.connection
from openstack import exceptions as sdk_errors

from catalog import environments as envs
from catalog import keys
from catalog.documents import NodeObject, is_cluster
from catalog.errors import ActionFailed, MarinaError
from catalog.providers.base import ProviderCapability
from catalog.providers.bringup import (
    POD_CIDR,
    Authority,
    ClusterPKI,
    GatewayEtcd,
    NodePlan,
    issue,
    make_cluster_pki,
    render_user_data,
)
from catalog.providers.local import Workers
from catalog.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

TAG = "marina"
"""Every resource Marina makes carries it: the orphan sweep looks for it."""
ROLES = ("master", "minion", "gateway")
ROLE_NEEDS = {"master": (1024, 10), "minion": (1024, 10), "gateway": (512, 1)}
"""Smallest flavor per role: RAM in MiB, root disk in GiB."""
NODE_PORTS = (30000, 32767)
POD_ROLES = ("master", "minion")
"""The roles whose servers run pods: their ports let the pod range through."""
NEW_GROUP_EGRESS_RULES = 2
"""Rules neutron gives every new security group (egress, IPv4 and IPv6)."""


@dataclass(frozen=True)
class OpenStackSettings:
    cloud: str
    """The cloud's name in clouds.yaml (found as every OpenStack tool finds it)."""
    config_files: tuple[Path, ...] = ()
    """clouds.yaml files to read instead of the usual places."""
    image: str = "marina-node"
    """The node image (name or id), built from `elements/`."""
    flavors: Mapping[str, str] = field(
        default_factory=lambda: {"master": "m1.small", "minion": "m1.small", "gateway": "m1.tiny"}
    )
    """Flavor (name or id) per role."""
    network: str | None = None
    """An existing network to use; otherwise each cluster gets its own."""
    external_network: str | None = None
    """Where routers and floating IPs come from (default: the first external network)."""
    cidr: str = "10.240.0.0/24"
    """The subnet of a cluster's own network."""
    keypair: str | None = None
    """A keypair put on every server, for whoever needs to log in."""
    build_timeout: float = 600.0
    """How long a server may stay in BUILD before its task fails (and the server goes)."""
    master_policy: str = "anti-affinity"
    """The masters' server group policy: `soft-anti-affinity` where the cloud has
    fewer hosts than masters."""
    etcd_url: str = ""
    """Marina's etcd as gateways reach it."""
    register_workers: bool = False
    """Register workers' Nodes as their kubelets would (servers that boot nothing: a test cloud)."""
    join_timeout: float = 900.0
    """How long a worker's kubelet may take to register its Node."""
    etcd_ca_dir: Path | None = None
    """Marina's etcd PKI directory (`catalog/pki.py`): gateways' client certificates' CA."""


Rule = tuple[str | None, int | None, int | None, str | None, str | None]
"""An ingress rule: protocol, port range, remote group, remote prefix."""


def group_rules(ids: Mapping[str, str]) -> dict[str, list[Rule]]:
    """Each role's ingress rules (beyond the gateways' public ports), given the
    groups' ids by role: only what the role needs."""
    m, w, g = ids["master"], ids["minion"], ids["gateway"]

    def tcp(low: int, high: int, remote: str) -> Rule:
        return ("tcp", low, high, remote, None)

    # Pods reach each other, and the API through its service, from the pod range.
    from_pods: Rule = (None, None, None, None, POD_CIDR)
    return {
        # The API from every node and gateway; etcd and kubelets between masters.
        "master": [tcp(6443, 6443, m), tcp(6443, 6443, w), tcp(6443, 6443, g),
                   tcp(2379, 2380, m), tcp(10250, 10250, m), from_pods],
        # Kubelets from masters, NodePorts from gateways; pods from the pod range
        # and from nodes (a master reaches its webhooks' and metrics' pods, and a
        # NodePort's traffic is forwarded from worker to worker).
        "minion": [tcp(10250, 10250, m), tcp(*NODE_PORTS, g), from_pods,
                   (None, None, None, m, None), (None, None, None, w, None)],
        "gateway": [],  # public ports: sync_public_ports
    }  # fmt: skip


def _tags(cluster: str, role: str | None = None, node: str | None = None) -> list[str]:
    tags = [TAG, f"marina-cluster={cluster}"]
    if role:
        tags.append(f"marina-role={role}")
    if node:
        tags.append(f"marina-node={node}")
    return tags


def _translate(what: str, error: Exception) -> MarinaError:
    if isinstance(error, sdk_errors.ResourceTimeout):
        return ActionFailed(what, str(error), retryable=True)
    if isinstance(error, sdk_errors.HttpException):
        status = error.status_code
        detail = error.details or error.message
        retry = status is None or status >= 500 or status == 409
        return ActionFailed(what, f"OpenStack answered {status}: {detail}", retryable=retry)
    return ActionFailed(what, f"OpenStack: {error}", retryable=True)


class OpenStackProvider:
    name = "openstack"
    capabilities = frozenset(ProviderCapability)

    def __init__(
        self, store: Store, settings: OpenStackSettings, *, workers: Workers | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.workers = workers
        """The Kubernetes engine: workers become its Nodes."""
        self._conn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop whose store the worker threads reach (the cluster's PKI)."""

    # -- the edge -----------------------------------------------------------------

    def connection(self) -> Any:
        if self._conn is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                try:
                    config = openstack.config.OpenStackConfig(
                        config_files=[str(p) for p in self.settings.config_files] or None
                    )
                    region = config.get_one(cloud=self.settings.cloud)
                except (sdk_errors.SDKException, OSError) as error:
                    raise ActionFailed(
                        "connect", f"cloud {self.settings.cloud!r}: {error}"
                    ) from error
                self._conn = openstack.connection.Connection(config=region)
        return self._conn

    async def _run(self, what: str, fn: Callable[[], T]) -> T:
        def call() -> T:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", PendingDeprecationWarning)
                try:
                    return fn()
                except MarinaError:
                    raise
                except sdk_errors.SDKException as error:
                    raise _translate(what, error) from error

        return await asyncio.to_thread(call)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- checks before anything is made ----------------------------------------

    def check_role(self, role: str) -> tuple[Any, Any]:
        """The role's flavor and the image, or why they cannot be used."""
        conn = self.connection()
        problems = []
        wanted = self.settings.flavors.get(role, "")
        flavor = conn.compute.find_flavor(wanted) if wanted else None
        image = conn.image.find_image(self.settings.image)
        if flavor is None:
            problems.append(f"flavor {wanted!r} for {role} nodes does not exist")
        else:
            ram, disk = ROLE_NEEDS[role]
            if flavor.ram < ram:
                problems.append(
                    f"flavor {flavor.name!r} has {flavor.ram} MiB of RAM; {role} nodes need {ram}"
                )
            if flavor.disk < disk:
                problems.append(
                    f"flavor {flavor.name!r} has a {flavor.disk} GiB disk; {role} nodes need {disk}"
                )
        if image is None:
            problems.append(f"image {self.settings.image!r} does not exist")
        elif image.status != "active":
            problems.append(f"image {self.settings.image!r} is {image.status}, not active")
        if problems:
            raise ActionFailed("deployInstance", "; ".join(problems))
        return flavor, image

    def cluster_needs(
        self, cluster: str, nodes: list[NodeObject]
    ) -> tuple[list[NodeObject], dict[str, int], dict[str, int]]:
        """The nodes of `nodes` that have no server yet, and what making them
        takes beyond what the cloud holds for the cluster: compute resources
        (by their names in nova's limits) and network ones (in neutron's quotas)."""
        conn = self.connection()
        net, compute = conn.network, conn.compute
        tag = f"marina-cluster={cluster}"
        servers = {s.name for s in compute.servers(tags=tag)}
        ports = {p.name for p in net.ports(tags=tag)}
        ips = {t for ip in net.ips(tags=tag) for t in ip.tags if t.startswith("marina-node=")}
        coming = [n for n in nodes if f"marina-{cluster}-{n['?']['name']}" not in servers]
        if not coming:
            return [], {}, {}
        flavors = {role: self.check_role(role)[0] for role in {n["role"] for n in coming}}
        masters = sorted((n for n in nodes if n["role"] == "master"), key=lambda n: n["index"])
        api_node = masters[0]["?"]["name"] if masters else None
        need_ips = sum(
            1
            for n in coming
            if f"marina-node={n['?']['name']}" not in ips
            and (n["role"] == "gateway" or n["?"]["name"] == api_node)
        )
        compute_needs = {
            "instances": len(coming),
            "cores": sum(flavors[n["role"]].vcpus for n in coming),
            "RAM (MiB)": sum(flavors[n["role"]].ram for n in coming),
        }
        if (
            any(n["role"] == "master" for n in coming)
            and self._find(compute.server_groups(), f"marina-{cluster}-masters") is None
        ):
            compute_needs["server groups"] = 1
        network_needs = {
            "port": sum(1 for n in coming if f"marina-{cluster}-{n['?']['name']}" not in ports),
            "floatingip": need_ips,
        }
        if not self.settings.network and not self._find(
            net.networks(tags=TAG), f"marina-{cluster}"
        ):
            network_needs.update(network=1, subnet=1, router=1)
        if not list(net.security_groups(tags=tag)):
            rules = group_rules(dict.fromkeys(ROLES, "new"))
            network_needs.update(
                security_group=len(ROLES),
                security_group_rule=sum(map(len, rules.values()))
                + self._new_group_rules() * len(ROLES),
            )
        return coming, compute_needs, network_needs

    def _new_group_rules(self) -> int:
        """How many rules neutron gives every new security group."""
        try:
            return sum(
                1
                for rule in self.connection().network.default_security_group_rules()
                if rule.used_in_non_default_sg
            )
        except sdk_errors.SDKException as error:  # before neutron 2023.2, or not readable
            log.info("neutron's default rules not read (%s): counting its usual two", error)
            return NEW_GROUP_EGRESS_RULES

    def check_quotas(self, cluster: str, nodes: list[NodeObject]) -> None:
        """Fail at once, saying every resource that is short, unless every node of
        `nodes` that has no server yet fits, with what the cluster still lacks
        (its network, groups, server group, the API's floating IP)."""
        coming, compute_needs, network_needs = self.cluster_needs(cluster, nodes)
        if not coming:
            return
        conn = self.connection()
        net, compute = conn.network, conn.compute
        short = []
        limits = compute.get_limits().absolute
        for name, limit, used in (
            ("instances", limits.instances, limits.instances_used),
            ("cores", limits.total_cores, limits.total_cores_used),
            ("RAM (MiB)", limits.total_ram, limits.total_ram_used),
            ("server groups", limits.server_groups, limits.server_groups_used),
        ):
            need = compute_needs.get(name, 0)
            if need and limit is not None and limit >= 0 and (used or 0) + need > limit:
                short.append(f"compute {name}: {used} of {limit} in use, {need} more needed")
        quota = net.get_quota(conn.current_project_id, details=True)
        for name, need in network_needs.items():
            entry = getattr(
                quota,
                {"floatingip": "floating_ips", "security_group": "security_groups",
                 "security_group_rule": "security_group_rules"}.get(name, name + "s"),
                None,
            )  # fmt: skip
            if not need or not isinstance(entry, Mapping):
                continue
            limit, used = entry.get("limit", -1), entry.get("used", 0) + entry.get("reserved", 0)
            if limit >= 0 and used + need > limit:
                short.append(f"network {name}s: {used} of {limit} in use, {need} more needed")
        if short:
            label = {"master": "master", "minion": "worker", "gateway": "gateway"}
            roles = ", ".join(
                f"{count} {label[role]}{'s' if count > 1 else ''}"
                for role in ROLES
                if (count := sum(1 for n in coming if n["role"] == role))
            )
            raise ActionFailed(
                "deployInstance", f"quota too small for {roles}: " + "; ".join(short)
            )

    async def cluster_nodes(self, cluster: str, node: NodeObject) -> list[NodeObject]:
        """The cluster's nodes as its environment holds them, those on their way
        out left aside; `node` alone when no environment holds the cluster."""
        # A cluster's key begins with its environment's id (environments.cluster_key).
        for found in await self.store.list(keys.ENVIRONMENTS + cluster.split("-", 1)[0]):
            doc = found.value
            for obj in doc.get("objects", {}).values():
                if is_cluster(obj) and obj["key"] == cluster:
                    nodes = [
                        n
                        for n in envs.nodes_of(doc, obj)
                        if n["state"] not in ("cordoned", "removing")
                    ]
                    if all(n["?"]["name"] != node["?"]["name"] for n in nodes):
                        nodes.append(node)
                    return nodes
        return [node]

    # -- per cluster --------------------------------------------------------------

    def _find(self, listing: Any, name: str) -> Any:
        """The one resource named `name` in `listing`; duplicates from a cut-off run go."""
        found = [r for r in listing if r.name == name]
        return found[0] if found else None

    def _external(self) -> Any:
        net = self.connection().network
        if self.settings.external_network:
            return net.find_network(self.settings.external_network, ignore_missing=False)
        external = next(iter(net.networks(is_router_external=True)), None)
        if external is None:
            raise ActionFailed("deployInstance", "the cloud has no external network")
        return external

    def ensure_network(self, cluster: str) -> tuple[Any, Any]:
        """The cluster's network and subnet, made (with the router) if missing."""
        net = self.connection().network
        if self.settings.network:
            network = net.find_network(self.settings.network)
            if network is None:
                raise ActionFailed(
                    "deployInstance", f"network {self.settings.network!r} does not exist"
                )
            subnet = net.get_subnet(network.subnet_ids[0])
            return network, subnet
        name = f"marina-{cluster}"
        tags = _tags(cluster)
        network = self._find(net.networks(tags=TAG), name)
        if network is None:
            network = net.create_network(name=name)
            net.set_tags(network, tags)
        subnet = self._find(net.subnets(network_id=network.id), name)
        if subnet is None:
            subnet = net.create_subnet(
                network_id=network.id, name=name, ip_version=4, cidr=self.settings.cidr
            )
            net.set_tags(subnet, tags)
        router = self._find(net.routers(tags=TAG), name)
        if router is None:
            router = net.create_router(
                name=name, external_gateway_info={"network_id": self._external().id}
            )
            net.set_tags(router, tags)
        attached = {
            ip["subnet_id"]
            for port in net.ports(device_id=router.id, network_id=network.id)
            for ip in port.fixed_ips
        }
        if subnet.id not in attached:
            # Positional: the keyword was `subnet_id` before openstacksdk renamed it `subnet`.
            net.add_interface_to_router(router, subnet.id)
        return network, subnet

    def ensure_security_groups(self, cluster: str) -> dict[str, Any]:
        """One group per role, with only the rules the role needs."""
        net = self.connection().network
        groups = {}
        for role in ROLES:
            name = f"marina-{cluster}-{role}"
            group = self._find(net.security_groups(tags=TAG), name)
            if group is None:
                group = net.create_security_group(name=name, description=f"Marina {role} nodes")
                net.set_tags(group, _tags(cluster, role))
            groups[role] = group
        ids = {role: group.id for role, group in groups.items()}
        for role, rules in group_rules(ids).items():
            group = groups[role]
            have = {
                (r.protocol, r.port_range_min, r.port_range_max, r.remote_group_id,
                 r.remote_ip_prefix)
                for r in net.security_group_rules(security_group_id=group.id)
                if r.direction == "ingress"
                and (r.remote_group_id or r.remote_ip_prefix == POD_CIDR)
            }  # fmt: skip
            for rule in rules:
                if rule not in have:
                    protocol, low, high, remote, prefix = rule
                    net.create_security_group_rule(
                        security_group_id=group.id,
                        direction="ingress",
                        ethertype="IPv4",
                        protocol=protocol,
                        port_range_min=low,
                        port_range_max=high,
                        remote_group_id=remote,
                        remote_ip_prefix=prefix,
                    )
        return groups

    def sync_public_ports(self, cluster: str, ports: set[int]) -> None:
        """The gateways' group opens exactly `ports` to the world, both ways."""
        net = self.connection().network
        group = self._find(net.security_groups(tags=TAG), f"marina-{cluster}-gateway")
        if group is None:
            return
        have = {}
        for rule in net.security_group_rules(security_group_id=group.id):
            if rule.direction == "ingress" and rule.remote_ip_prefix == "0.0.0.0/0":
                have[rule.port_range_min] = rule
        for port in ports - set(have):
            net.create_security_group_rule(
                security_group_id=group.id,
                direction="ingress",
                ethertype="IPv4",
                protocol="tcp",
                port_range_min=port,
                port_range_max=port,
                remote_ip_prefix="0.0.0.0/0",
            )
        for port in set(have) - ports:
            net.delete_security_group_rule(have[port])

    def ensure_server_group(self, cluster: str) -> Any:
        compute = self.connection().compute
        name = f"marina-{cluster}-masters"
        group = self._find(compute.server_groups(), name)
        if group is None:
            group = compute.create_server_group(name=name, policy=self.settings.master_policy)
        return group

    # -- per node ------------------------------------------------------------------

    def _server(self, cluster: str, node: str) -> Any:
        compute = self.connection().compute
        name = f"marina-{cluster}-{node}"
        found = [s for s in compute.servers(tags=f"marina-cluster={cluster}") if s.name == name]
        return found[0] if found else None

    def _port(self, cluster: str, node: str, role: str, network: Any, group: Any) -> Any:
        net = self.connection().network
        name = f"marina-{cluster}-{node}"
        # A user's network may have port security off: no anti-spoofing, and
        # neutron takes neither security groups nor address pairs on its ports.
        secure = network.is_port_security_enabled is not False
        # Pods' addresses are not the port's: neutron's anti-spoofing drops
        # their packets unless the pod range is an allowed address pair.
        pairs = [{"ip_address": POD_CIDR}] if role in POD_ROLES and secure else []
        ports = [p for p in net.ports(network_id=network.id, tags=TAG) if p.name == name]
        for extra in ports[1:]:  # a create cut off after neutron made it, then made again
            net.delete_port(extra)
        if ports:
            port = ports[0]
            have = [p["ip_address"] for p in port.allowed_address_pairs or []]
            if secure and have != [p["ip_address"] for p in pairs]:
                port = net.update_port(port, allowed_address_pairs=pairs)
            return port
        port = net.create_port(
            network_id=network.id,
            name=name,
            security_group_ids=[group.id] if secure else [],
            allowed_address_pairs=pairs,
        )
        net.set_tags(port, _tags(cluster, node=node))
        return port

    def _floating_ip(self, cluster: str, node: str, port: Any) -> str:
        net = self.connection().network
        ips = list(net.ips(tags=f"marina-node={node}", port_id=port.id)) or [
            ip
            for ip in net.ips(tags=f"marina-cluster={cluster}")
            if f"marina-node={node}" in ip.tags
        ]
        for extra in ips[1:]:
            net.delete_ip(extra)
        if ips:
            ip = ips[0]
            if ip.port_id != port.id:
                net.update_ip(ip, port_id=port.id)
            return str(ip.floating_ip_address)
        ip = net.create_ip(floating_network_id=self._external().id)
        net.set_tags(ip, _tags(cluster, node=node))
        net.update_ip(ip, port_id=port.id)
        return str(ip.floating_ip_address)

    def _pki(self, cluster: str) -> ClusterPKI:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self._load_pki(cluster), self._loop).result()

    async def _load_pki(self, cluster: str) -> ClusterPKI:
        key = f"{keys.CLUSTERS}{cluster}/pki"
        found = await self.store.get(key)
        if found is not None:
            return ClusterPKI.from_json(found.value)
        pki = make_cluster_pki()
        try:
            await self.store.create(key, pki.to_json())
        except MarinaError:  # another run made it first: use that one
            again = await self.store.get(key)
            assert again is not None
            return ClusterPKI.from_json(again.value)
        return pki

    def _gateway_etcd(self, node: str) -> GatewayEtcd:
        directory = self.settings.etcd_ca_dir
        if directory is None:
            raise ActionFailed("deployInstance", "gateways need Marina's etcd CA (etcd_ca_dir)")
        try:
            ca = Authority(
                (directory / "ca.pem").read_text(), (directory / "ca-key.pem").read_text()
            )
        except OSError as error:
            raise ActionFailed(
                "deployInstance", f"Marina's etcd CA is needed for gateways: {error}"
            ) from error
        client = issue(ca, f"marina-gateway-{node}", client=True)
        return GatewayEtcd(self.settings.etcd_url, ca.cert, client)

    def _create(self, cluster: str, node: NodeObject, nodes: list[NodeObject]) -> str:
        conn = self.connection()
        name, role = node["?"]["name"], node["role"]
        flavor, image = self.check_role(role)
        server = self._server(cluster, name)
        if server is not None and server.status == "ERROR":
            # A failed earlier try: begin again from a fresh server.
            self._delete_server(server)
            server = None
        if server is None:
            # The whole deploy must fit, not only this node, before anything is made.
            self.check_quotas(cluster, nodes)
        network, _ = self.ensure_network(cluster)
        groups = self.ensure_security_groups(cluster)
        port = self._port(cluster, name, role, network, groups[role])
        address = str(port.fixed_ips[0]["ip_address"])
        if role == "master":
            # Every planned master's port first (masterCount): their addresses
            # are then known to each master's certificates, the first's too.
            for other in nodes:
                if other["role"] == "master" and other["?"]["name"] != name:
                    self._port(cluster, other["?"]["name"], "master", network, groups["master"])
        masters = self._masters(cluster, network)  # this one's port included
        public: list[str] = []
        # The first master (the lowest index) holds the API's floating IP.
        if role == "gateway" or (role == "master" and masters[0][0] == name):
            public.append(self._floating_ip(cluster, name, port))
        if server is None:
            api = masters[0][1] if masters else address
            api_public = []
            if role == "master" and masters and masters[0][0] != name:
                api_public = [
                    str(ip.floating_ip_address) for ip in net_ips_of(conn, cluster, masters[0][0])
                ]
            plan = NodePlan(
                cluster=cluster,
                name=name,
                role=role,
                address=address,
                api_address=api,
                public_addresses=public,
                masters=masters,
                api_addresses=api_public,
            )
            user_data = render_user_data(
                plan,
                self._pki(cluster),
                gateway_etcd=self._gateway_etcd(name) if role == "gateway" else None,
            )
            hints = {}
            if role == "master":
                hints["group"] = self.ensure_server_group(cluster).id
            extra = {"key_name": self.settings.keypair} if self.settings.keypair else {}
            server = conn.compute.create_server(
                name=f"marina-{cluster}-{name}",
                flavor_id=flavor.id,
                image_id=image.id,
                networks=[{"port": port.id}],
                user_data=_b64(user_data),
                tags=_tags(cluster, role, name),
                scheduler_hints=hints,
                **extra,
            )
        self._wait_active(server)
        return public[0] if role == "gateway" else address

    def _masters(self, cluster: str, network: Any) -> list[tuple[str, str]]:
        """(name, fixed address) of the masters whose ports exist, first master first."""
        prefix = f"marina-{cluster}-master-"
        found = []
        for port in self.connection().network.ports(network_id=network.id, tags=TAG):
            if port.name.startswith(prefix) and port.fixed_ips:
                found.append(
                    (port.name.removeprefix(f"marina-{cluster}-"), port.fixed_ips[0]["ip_address"])
                )
        return sorted(found, key=lambda m: int(m[0].rsplit("-", 1)[1]))

    def _wait_active(self, server: Any) -> None:
        compute = self.connection().compute
        deadline = time.monotonic() + self.settings.build_timeout
        while True:
            server = compute.get_server(server.id)
            if server.status == "ACTIVE":
                return
            if server.status == "ERROR":
                fault = (server.fault or {}).get("message", "no fault recorded")
                raise ActionFailed("deployInstance", f"server {server.name} is in ERROR: {fault}")
            if time.monotonic() > deadline:
                reason = (
                    f"server {server.name} still {server.status} after "
                    f"{self.settings.build_timeout:.0f}s"
                )
                # A server that never finished building is not trusted later: it
                # goes now, and a resumed deploy makes a fresh one on the same port.
                try:
                    self._delete_server(server)
                except (MarinaError, sdk_errors.SDKException) as error:
                    log.warning("%s; not deleted: %s", reason, error)
                    reason += f"; deleting it failed too: {error}"
                else:
                    reason += "; it was deleted"
                raise ActionFailed("deployInstance", reason, retryable=True)
            time.sleep(1.0)

    def _delete_server(self, server: Any) -> None:
        compute = self.connection().compute
        compute.delete_server(server, ignore_missing=True)
        deadline = time.monotonic() + self.settings.build_timeout
        # Not the SDK's wait_for_delete: nova lists a DELETED server a while longer.
        while compute.find_server(server.id, ignore_missing=True) is not None:
            if time.monotonic() > deadline:
                raise ActionFailed(
                    "removeNode", f"server {server.name} not gone after "
                    f"{self.settings.build_timeout:.0f}s", retryable=True,
                )  # fmt: skip
            time.sleep(1.0)

    def _remove(self, cluster: str, node: str) -> None:
        net = self.connection().network
        for ip in list(net.ips(tags=f"marina-cluster={cluster}")):
            if f"marina-node={node}" in ip.tags:
                net.delete_ip(ip)
        server = self._server(cluster, node)
        if server is not None:
            self._delete_server(server)
        for port in list(net.ports(tags=f"marina-cluster={cluster}")):
            if f"marina-node={node}" in port.tags:
                net.delete_port(port)
        if self._server_names(cluster) == set():
            self.remove_cluster(cluster)

    def _server_names(self, cluster: str) -> set[str]:
        compute = self.connection().compute
        return {s.name for s in compute.servers(tags=f"marina-cluster={cluster}")}

    def remove_cluster(self, cluster: str) -> None:
        """Everything tagged with the cluster, servers first, the network last."""
        conn = self.connection()
        net, compute = conn.network, conn.compute
        tag = f"marina-cluster={cluster}"
        for ip in list(net.ips(tags=tag)):
            net.delete_ip(ip)
        for server in list(compute.servers(tags=tag)):
            self._delete_server(server)
        for port in list(net.ports(tags=tag)):
            net.delete_port(port)
        name = f"marina-{cluster}"
        for router in list(net.routers(tags=tag)):
            for port in list(
                net.ports(device_id=router.id, device_owner="network:router_interface")
            ):
                for ip in port.fixed_ips:
                    net.remove_interface_from_router(router, ip["subnet_id"])
            net.delete_router(router)
        for group in list(net.security_groups(tags=tag)):
            # Rules of one group name another: empty them all before deleting any.
            for rule in list(net.security_group_rules(security_group_id=group.id)):
                if rule.remote_group_id:
                    net.delete_security_group_rule(rule)
        for group in list(net.security_groups(tags=tag)):
            net.delete_security_group(group)
        for subnet in list(net.subnets(tags=tag)):
            net.delete_subnet(subnet)
        for network in list(net.networks(tags=tag)):
            net.delete_network(network)
        for group in list(compute.server_groups()):
            if group.name == f"{name}-masters":
                compute.delete_server_group(group)

    def _clusters_tagged(self) -> set[str]:
        conn = self.connection()
        found: set[str] = set()
        resources = [
            *conn.compute.servers(tags=TAG),
            *conn.network.networks(tags=TAG),
            *conn.network.ports(tags=TAG),
            *conn.network.ips(tags=TAG),
            *conn.network.security_groups(tags=TAG),
            *conn.network.routers(tags=TAG),
        ]
        for resource in resources:
            for tag in resource.tags or []:
                if tag.startswith("marina-cluster="):
                    found.add(tag.removeprefix("marina-cluster="))
        # Server groups take no tags: the masters' is known by its name, and
        # is the last thing a cluster's removal deletes, so may be all it left.
        for group in conn.compute.server_groups():
            if group.name.startswith("marina-") and group.name.endswith("-masters"):
                found.add(group.name.removeprefix("marina-").removesuffix("-masters"))
        return found

    # -- the provider protocol ------------------------------------------------------

    async def deploy_instance(self, cluster: str, node: NodeObject) -> str:
        self._loop = asyncio.get_running_loop()
        nodes = await self.cluster_nodes(cluster, node)
        return await self._run("deployInstance", lambda: self._create(cluster, node, nodes))

    async def setup_etcd(self, cluster: str, node: NodeObject) -> None:
        """Nothing to do from here: masters run the etcd plane from their user data."""

    async def setup_node(self, cluster: str, node: NodeObject) -> None:
        address = node["address"]
        if address is None:
            raise ActionFailed("setupNode", f"{node['?']['name']} has no address yet")
        name = node["?"]["name"]
        workers = self.workers if node["role"] == "minion" else None
        if workers is not None and not await workers.node_joined(cluster, name):
            if self.settings.register_workers:
                await workers.join_node(cluster, name, address, node.get("capacity", {}))
            else:  # its kubelet registers it, labelled as Marina's node (bringup.py)
                deadline = time.monotonic() + self.settings.join_timeout
                while not await workers.node_joined(cluster, name):
                    if time.monotonic() > deadline:
                        raise ActionFailed(
                            "setupNode",
                            f"the kubelet of {name} ({address}) did not register within "
                            f"{self.settings.join_timeout:.0f}s",
                            retryable=True,
                        )
                    await asyncio.sleep(5)
        if node["role"] == "gateway":
            ports = {
                int(r.value["port"]) for r in await self.store.list(f"{keys.ROUTES}{cluster}/")
            }
            await self._run("setupNode", lambda: self.sync_public_ports(cluster, ports))

    async def remove_node(self, cluster: str, node: NodeObject) -> None:
        name = node["?"]["name"]
        if node["role"] == "minion" and self.workers is not None:
            await self.workers.leave_node(cluster, name)
        await self._run("removeNode", lambda: self._remove(cluster, name))
        if not await self._run("removeNode", lambda: self._server_names(cluster)):
            await self.store.delete(f"{keys.CLUSTERS}{cluster}/pki")

    async def node_running(self, cluster: str, node: NodeObject) -> bool:
        def running() -> bool:
            server = self._server(cluster, node["?"]["name"])
            return server is not None and server.status not in ("ERROR", "DELETED")

        return await self._run("nodeRunning", running)

    async def run(self, stop: asyncio.Event, *, iterations: int | None = None) -> None:
        """Keep the gateways' groups in step with the public routes, both ways:
        every cluster once, then the cluster of each route that changes."""
        changes = self.store.watch_many([keys.ROUTES])
        await self._sync_routes(None)
        seen = 0
        try:
            while not stop.is_set() and (iterations is None or seen < iterations):
                following = asyncio.ensure_future(anext(changes))
                stopping = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait(
                    {following, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                stopping.cancel()
                if following not in done:
                    following.cancel()
                    break
                key = following.result()
                cluster = key.removeprefix(keys.ROUTES).split("/", 1)[0] or None
                await self._sync_routes(cluster)
                seen += 1
        finally:
            await changes.aclose()  # type: ignore[attr-defined]

    async def _sync_routes(self, only: str | None) -> None:
        ports: dict[str, set[int]] = {}
        for route in await self.store.list(keys.ROUTES):
            cluster = route.key.removeprefix(keys.ROUTES).split("/", 1)[0]
            ports.setdefault(cluster, set()).add(int(route.value["port"]))
        clusters = [only] if only else sorted(set(ports) | await self._run_clusters())
        for cluster in clusters:
            try:
                wanted = ports.get(cluster, set())
                await self._run("sync ports", partial(self.sync_public_ports, cluster, wanted))
            except MarinaError as error:  # the next change or start tries again
                log.warning("public ports of %s not synced: %s", cluster, error)

    async def _run_clusters(self) -> set[str]:
        try:
            return await self._run("sync ports", self._clusters_tagged)
        except MarinaError as error:
            log.warning("clusters in the cloud not listed: %s", error)
            return set()

    async def sweep(self, known: set[str]) -> list[str]:
        """Remove every cluster tagged by Marina that is not in `known`; their names."""
        orphans = sorted(await self._run("sweep", self._clusters_tagged) - known)
        for cluster in orphans:
            await self._run("sweep", partial(self.remove_cluster, cluster))
            await self.store.delete(f"{keys.CLUSTERS}{cluster}/pki")
        return orphans


def net_ips_of(conn: Any, cluster: str, node: str) -> list[Any]:
    """The floating IPs tagged as `node`'s."""
    return [
        ip
        for ip in conn.network.ips(tags=f"marina-cluster={cluster}")
        if f"marina-node={node}" in ip.tags
    ]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
