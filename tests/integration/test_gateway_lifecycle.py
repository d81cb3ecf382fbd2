"""Starting and stopping a gateway cleanly, and surviving its HAProxy's death."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_gateway import route, serves, status
from tests.integration.test_gateway_parts import part_serving
from tests.support import Etcd, Gateway, fresh_address, wait_for


def haproxy_pids(gw: Gateway) -> list[int]:
    """The processes that serve, not the standbys waiting on a FIFO."""
    out = subprocess.run(
        ["pgrep", "-f", f"haproxy -f {gw.state_dir}/[^ ]*\\.cfg( |$)"],
        capture_output=True,
        text=True,
    ).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def connects(host: str, port: int) -> bool:
    import socket

    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("etcd_state", ["up", "stopped", "frozen"])
def test_sigterm_stops_agent_and_haproxy_whatever_etcd_does(
    own_etcd: Etcd, cluster: str, backends, gateways, etcd_state: str
):
    a = backends("a")
    gw = gateways(own_etcd.url, cluster)
    own_etcd.put(f"/marina/gateway/routes/{cluster}/web", route(30001, a))
    wait_for(serves(gw, 30001, "a"), what="route before stopping")
    pids = haproxy_pids(gw)
    assert pids
    etcd_proc = own_etcd._etcd.proc
    assert etcd_proc is not None
    if etcd_state == "stopped":
        own_etcd.stop()
    elif etcd_state == "frozen":
        etcd_proc.send_signal(signal.SIGSTOP)
    try:
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        # A bound well above the second it takes, far below the etcd
        # timeouts (5 s) and retries a hung stop used to wait on.
        assert gw.proc.wait(timeout=3) == 0
        assert not any(alive(p) for p in pids)
        assert not connects(gw.address, 30001)
    finally:
        if etcd_state == "frozen":
            etcd_proc.send_signal(signal.SIGCONT)
        if etcd_state == "stopped":
            own_etcd.start()


def test_refuses_to_start_beside_an_orphaned_haproxy(etcd, cluster, backends, tmp_path: Path):
    """The agent of one gateway is killed, its HAProxy keeps serving; another
    gateway started on the same address must not share the ports with it."""
    a = backends("a")
    address = fresh_address()
    first = Gateway(etcd.url, cluster, address, tmp_path / "one", "--port-range", "30000-30063")
    second = Gateway(etcd.url, cluster, address, tmp_path / "two", "--port-range", "30000-30063")
    try:
        first.start()
        etcd.put(f"/marina/gateway/routes/{cluster}/web", route(30002, a))
        wait_for(serves(first, 30002, "a"), what="first gateway serving")
        orphans = haproxy_pids(first)
        first.kill()
        second.start()
        assert second.proc is not None
        assert second.proc.wait(timeout=20) == 1
        message = second.log.read_text()
        assert "refusing to start" in message
        assert f"on {address} is held by pid {orphans[0]}" in message
        assert "haproxy" in message
        assert haproxy_pids(second) == []
        # The orphan still serves alone; a restarted first agent adopts it.
        assert serves(first, 30002, "a")()
        first.start()
        b = backends("b")
        etcd.put(f"/marina/gateway/routes/{cluster}/web", route(30002, b))
        wait_for(serves(first, 30002, "b"), what="the restarted agent applying changes")
    finally:
        second.stop()
        first.stop()


def test_refuses_a_second_agent_on_the_same_state_directory(etcd, cluster, gateways):
    gw = gateways(etcd.url, cluster)
    wait_for(lambda: status(etcd, gw), what="first agent reporting")
    twin = Gateway(etcd.url, cluster, gw.address, gw.state_dir, "--port-range", "30000-30063")
    twin.log = gw.state_dir.parent / "twin.log"
    twin.start()
    assert twin.proc is not None
    assert twin.proc.wait(timeout=20) == 1
    assert f"another marina-gateway (pid {gw.proc.pid})" in twin.log.read_text()  # type: ignore[union-attr]
    assert gw.proc is not None and gw.proc.poll() is None


def test_killed_haproxy_is_restarted_with_what_it_served(etcd, cluster, backends, gateways):
    a, b = backends("a"), backends("b")
    gw = gateways(etcd.url, cluster)
    key = f"/marina/gateway/routes/{cluster}/web"
    etcd.put(key, route(30003, a))
    wait_for(serves(gw, 30003, "a"), what="route")
    # A runtime change: not in the files of the last reload.
    etcd.put(key, route(30003, b))
    wait_for(serves(gw, 30003, "b"), what="backend change")
    wait_for(lambda: status(etcd, gw).get("runtime_updates", 0) >= 1, what="runtime update")
    [pid] = haproxy_pids(gw)
    os.kill(pid, signal.SIGKILL)
    st = wait_for(
        lambda: status(etcd, gw).get("haproxy_restarts") == 1 and status(etcd, gw),
        what="the restart reported",
    )
    assert f"haproxy pid {pid} was killed by SIGKILL" in st["last_incident"]
    assert "restarted from the last good configuration" in st["last_incident"]
    wait_for(serves(gw, 30003, "b"), what="serving again after the kill")
    assert pid not in haproxy_pids(gw)
    assert len(haproxy_pids(gw)) == 1


def test_a_killed_static_shard_is_restarted_alone(etcd, cluster, backends, gateways):
    from tests.support import free_port

    a = backends("a")
    gw = gateways(etcd.url, cluster)
    port = free_port(gw.address)
    etcd.put(f"/marina/gateway/routes/{cluster}/in", route(30004, a))
    etcd.put(f"/marina/gateway/routes/{cluster}/out", route(port, a))
    wait_for(serves(gw, port, "a"), what="route on its own port")
    wait_for(serves(gw, 30004, "a"), what="range route")
    shard = part_serving(gw, port)
    [pid] = [int(p) for p in (gw.state_dir / f"{shard}.pid").read_text().split()]
    range_pids = (gw.state_dir / "range.pid").read_text()
    os.kill(pid, signal.SIGKILL)

    st = wait_for(
        lambda: str(pid) in (status(etcd, gw).get("last_incident") or "") and status(etcd, gw),
        what="the restart reported",
    )
    assert st["haproxy_restarts"] == 1
    assert st["last_incident"].startswith(f"haproxy pid {pid} was killed by SIGKILL")
    assert st["last_incident"].endswith(f"({shard})")
    wait_for(serves(gw, port, "a"), what="serving again")
    assert (gw.state_dir / "range.pid").read_text() == range_pids
