"""The test control plane behaves as a cloud does, through openstacksdk.

These are what Marina's OpenStack provider relies on: networks and routers,
security groups, servers that reach ACTIVE on a port of their network,
floating IPs, tags, quotas, a server that ends in ERROR, and nothing left
behind once it is all removed.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openstack import exceptions

from tests.openstack.fixtures import TAG, TestCloud

# The first test pays for starting the control plane (two to four minutes).
pytestmark = [
    pytest.mark.timeout(600),
    # openstacksdk deprecates what its own proxies still call, and fields that
    # servers still send (absolute limits' maxPersonality): its warnings, not ours.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:openstack"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack"),
]

SERVER_WAIT = 180


class Made:
    """What a test created, removed in reverse order however the test ends."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def __call__(self, resource: Any, remove: Callable[[], None]) -> Any:
        self._undo.append(remove)
        return resource

    def remove_all(self) -> None:
        errors = []
        while self._undo:
            try:
                self._undo.pop()()
            except Exception as error:  # keep removing the rest; report all at the end
                errors.append(repr(error))
        assert not errors, f"cleanup failed: {errors}"


@pytest.fixture
def made() -> Iterator[Made]:
    tracker = Made()
    yield tracker
    tracker.remove_all()


def wait_until(probe: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def public_network(conn: Any) -> Any:
    return next(conn.network.networks(is_router_external=True))


def make_network(conn: Any, made: Made, name: str, cidr: str) -> tuple[Any, Any, Any]:
    """A tenant network with a subnet, routed to the public network."""
    net = conn.network
    network = made(net.create_network(name=name), lambda: net.delete_network(network))
    net.set_tags(network, [TAG, f"{TAG}-{name}"])
    subnet = made(
        net.create_subnet(network_id=network.id, name=name, ip_version=4, cidr=cidr),
        lambda: net.delete_subnet(subnet),
    )
    router = made(
        net.create_router(name=name, external_gateway_info={"network_id": public_network(conn).id}),
        lambda: net.delete_router(router),
    )
    net.set_tags(router, [TAG])
    net.add_interface_to_router(router, subnet.id)
    made(None, lambda: net.remove_interface_from_router(router, subnet.id))
    return network, subnet, router


def make_server(conn: Any, made: Made, name: str, *, network: Any, flavor: str = "m1.tiny") -> Any:
    compute = conn.compute

    def gone() -> bool:
        try:
            compute.get_server(server.id)
        except exceptions.NotFoundException:
            return True
        return False

    def remove() -> None:
        compute.delete_server(server)
        # Not openstacksdk's wait_for_delete: it stops at status DELETED, while
        # nova still lists the server and counts it against the quota.
        wait_until(gone, timeout=SERVER_WAIT, what=f"server {server.name} to be gone")

    server = made(
        compute.create_server(
            name=name,
            flavor_id=compute.find_flavor(flavor, ignore_missing=False).id,
            image_id=conn.image.find_image("marina-node", ignore_missing=False).id,
            networks=[{"uuid": network.id}],
            tags=[TAG],
        ),
        remove,
    )
    return server


def test_network_subnet_and_router_with_tags(os_conn: Any, made: Made) -> None:
    network, subnet, router = make_network(os_conn, made, "net-a", "10.31.0.0/24")
    net = os_conn.network

    assert {n.id for n in net.networks(tags=f"{TAG}-net-a")} == {network.id}
    assert set(net.get_network(network.id).tags) == {TAG, f"{TAG}-net-a"}
    gateway = net.get_router(router.id).external_gateway_info
    assert gateway["network_id"] == public_network(os_conn).id
    interfaces = list(net.ports(device_id=router.id, network_id=network.id))
    assert [p.fixed_ips[0]["ip_address"] for p in interfaces] == [subnet.gateway_ip]
    assert router.id in {r.id for r in net.routers(tags=TAG)}


def test_security_group_with_rules(os_conn: Any, made: Made) -> None:
    net = os_conn.network
    group = made(
        net.create_security_group(name="workers", description="kubelet and NodePorts"),
        lambda: net.delete_security_group(group),
    )
    net.set_tags(group, [TAG])
    kubelet = net.create_security_group_rule(
        security_group_id=group.id,
        direction="ingress",
        ethertype="IPv4",
        protocol="tcp",
        port_range_min=10250,
        port_range_max=10250,
        remote_group_id=group.id,
    )
    node_ports = net.create_security_group_rule(
        security_group_id=group.id,
        direction="ingress",
        ethertype="IPv4",
        protocol="tcp",
        port_range_min=30000,
        port_range_max=32767,
        remote_ip_prefix="10.31.0.0/24",
    )
    ingress = {
        r.id: r for r in net.security_group_rules(security_group_id=group.id, direction="ingress")
    }
    assert set(ingress) == {kubelet.id, node_ports.id}
    assert ingress[node_ports.id].port_range_max == 32767
    assert ingress[kubelet.id].remote_group_id == group.id

    net.delete_security_group_rule(kubelet)
    remaining = {
        r.id for r in net.security_group_rules(security_group_id=group.id, direction="ingress")
    }
    assert remaining == {node_ports.id}
    assert group.id in {g.id for g in net.security_groups(tags=TAG)}


def test_server_reaches_active_with_a_port_and_a_floating_ip(
    os_conn: Any, os_admin: Any, made: Made
) -> None:
    network, subnet, _ = make_network(os_conn, made, "net-b", "10.32.0.0/24")
    server = make_server(os_conn, made, "node-1", network=network)
    server = os_conn.compute.wait_for_server(server, status="ACTIVE", wait=SERVER_WAIT)

    ports = list(os_conn.network.ports(device_id=server.id))
    assert len(ports) == 1
    port = ports[0]
    assert port.network_id == network.id
    assert port.status == "ACTIVE"
    address = port.fixed_ips[0]["ip_address"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet.cidr)
    bound = os_admin.network.get_port(port.id)
    # Bound on the host nova placed the server on.
    assert bound.binding_host_id == os_admin.compute.get_server(server.id).compute_host
    assert bound.binding_vif_type == "other"

    assert TAG in os_conn.compute.get_server(server.id).tags
    assert server.id in {s.id for s in os_conn.compute.servers(tags=TAG)}

    fip = made(
        os_conn.network.create_ip(floating_network_id=public_network(os_conn).id, port_id=port.id),
        lambda: os_conn.network.delete_ip(fip),
    )
    os_conn.network.set_tags(fip, [TAG])
    assert fip.fixed_ip_address == address
    assert ipaddress.ip_address(fip.floating_ip_address) in ipaddress.ip_network("203.0.113.0/24")

    # Neutron tells nova of the association; nova then lists it with the server.
    def floating_on_server() -> bool:
        addresses = os_conn.compute.get_server(server.id).addresses
        return any(
            a["addr"] == fip.floating_ip_address for entries in addresses.values() for a in entries
        )

    wait_until(floating_on_server, timeout=60, what="the floating IP on the server")


def test_quotas_read_and_enforced(os_conn: Any, os_admin: Any, made: Made) -> None:
    project = os_conn.current_project_id
    compute_quota = os_conn.compute.get_quota_set(project)
    assert compute_quota.instances > 0
    limits = os_conn.compute.get_limits().absolute
    assert limits.instances == compute_quota.instances
    network_quota = os_conn.network.get_quota(project)
    assert network_quota.floating_ips > 0

    used = len(list(os_conn.network.ips(project_id=project)))
    os_admin.network.update_quota(project, floating_ips=used + 1)
    made(
        None,
        lambda: os_admin.network.update_quota(project, floating_ips=network_quota.floating_ips),
    )
    assert os_conn.network.get_quota(project).floating_ips == used + 1

    public = public_network(os_conn).id
    first = made(
        os_conn.network.create_ip(floating_network_id=public),
        lambda: os_conn.network.delete_ip(first),
    )
    with pytest.raises(exceptions.ConflictException, match=r"(?i)quota"):
        second = os_conn.network.create_ip(floating_network_id=public)
        made(second, lambda: os_conn.network.delete_ip(second))

    # Room for exactly the servers there are: one more is over quota. Nova
    # counts a deleted server a moment after it is gone from the API.
    def settled_usage() -> tuple[int] | None:
        in_use = os_conn.compute.get_quota_set(project, usage=True).usage["instances"]
        return (in_use,) if in_use == len(list(os_conn.compute.servers())) else None

    (in_use,) = wait_until(settled_usage, timeout=60, what="instance usage to settle")
    os_admin.compute.update_quota_set(project, instances=in_use)
    made(
        None, lambda: os_admin.compute.update_quota_set(project, instances=compute_quota.instances)
    )
    assert os_conn.compute.get_quota_set(project).instances == in_use
    network, _, _ = make_network(os_conn, made, "net-q", "10.33.0.0/24")
    with pytest.raises(exceptions.ForbiddenException, match=r"(?i)quota exceeded"):
        server = make_server(os_conn, made, "over-quota", network=network)
        pytest.fail(
            f"{server.name} was accepted with {in_use} servers allowed; now "
            f"{os_conn.compute.get_quota_set(project, usage=True).usage} in use, "
            f"servers {[(s.name, s.status) for s in os_conn.compute.servers()]}"
        )


def test_server_that_cannot_fit_ends_in_error(os_conn: Any, os_admin: Any, made: Made) -> None:
    # A root disk far beyond any host's (and nova has no disk quota to refuse
    # it first): the scheduler finds no host.
    flavor = made(
        os_admin.compute.create_flavor(name="marina-test-huge", ram=512, vcpus=1, disk=10_000_000),
        lambda: os_admin.compute.delete_flavor(flavor),
    )
    network, _, _ = make_network(os_conn, made, "net-e", "10.34.0.0/24")
    server = make_server(os_conn, made, "too-big", network=network, flavor=flavor.name)
    server = os_conn.compute.wait_for_server(server, status="ERROR", failures=[], wait=SERVER_WAIT)
    assert server.status == "ERROR"
    assert "No valid host" in server.fault["message"]


def test_nothing_is_left_behind(os_conn: Any, openstack_cloud: TestCloud) -> None:
    """Every test above removed what it made."""
    project = os_conn.current_project_id
    net = os_conn.network
    leftovers = {
        "servers": [s.name for s in os_conn.compute.servers()],
        "networks": [n.name for n in net.networks(project_id=project)],
        "routers": [r.name for r in net.routers(project_id=project)],
        "ports": [p.id for p in net.ports(project_id=project)],
        "floating ips": [f.floating_ip_address for f in net.ips(project_id=project)],
        "security groups": [
            g.name for g in net.security_groups(project_id=project) if g.name != "default"
        ],
        "tagged": [n.name for n in net.networks(tags=TAG)]
        + [s.name for s in os_conn.compute.servers(tags=TAG)],
    }
    assert {kind: found for kind, found in leftovers.items() if found} == {}


def _listening_sockets() -> dict[int, str]:
    """Inode -> local address of every listening TCP socket on this machine."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address = fields[1].split(":")[0]
            if len(address) == 8:
                text = str(ipaddress.IPv4Address(bytes.fromhex(address)[::-1]))
            else:
                words = [bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, 32, 8)]
                text = str(ipaddress.IPv6Address(b"".join(words)))
            found[int(fields[9])] = text
    return found


def _group_sockets(pgid: int) -> set[int]:
    inodes = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
        except (OSError, ValueError, IndexError):
            continue  # the process ended while it was being read
    return inodes


def test_everything_listens_on_loopback_only(openstack_cloud: TestCloud) -> None:
    if openstack_cloud.plane is None:
        pytest.skip("a cloud of someone else's: its addresses are its own business")
    listening = _listening_sockets()
    seen: dict[str, list[str]] = {}
    for service in openstack_cloud.plane.services:
        assert service.process is not None
        for inode in _group_sockets(service.process.pid):
            if inode in listening:
                seen.setdefault(service.name, []).append(listening[inode])
    assert {"mariadb", "rabbitmq", "epmd", "keystone", "nova-api"} <= set(seen)
    outside = {
        name: addresses
        for name, addresses in seen.items()
        if not all(ipaddress.ip_address(a).is_loopback for a in addresses)
    }
    assert outside == {}
