"""Faults under the catalog: etcd stops and comes back while Marina runs."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.marina import Marina
from tests.support import http_get, wait_for

pytestmark = pytest.mark.slow


def test_etcd_restart_is_survived(own_etcd, tmp_path):
    marina = Marina(tmp_path / "state", etcd=own_etcd.url).start()
    try:
        env, url = marina.deploy_guestbook(
            "faults", {"name": "k", "nodeCount": 1, "gatewayCount": 1}, {"publicPort": 31080}
        )
        wait_for(lambda: http_get(url)[0] == 200, timeout=30, what="the guestbook")
        own_etcd.stop()
        status, payload = marina.call("GET", f"/v1/environments/{env}")
        assert status == 503 and payload["error"] == "store_unavailable"
        # The application keeps serving while etcd is away: replicas and gateways
        # run on what they last knew.
        for _ in range(20):
            assert http_get(url)[0] == 200
        own_etcd.start()
        # Everything reconnects by itself: an action after the outage goes through,
        # and no node was declared lost.
        wait_for(
            lambda: marina.call("GET", f"/v1/environments/{env}")[0] == 200,
            timeout=30,
            what="the API to answer again",
        )
        task = marina.run(env, "web:scalePodUp", timeout=120)
        assert task["state"] == "succeeded", task
        states = {
            n: o["state"] for n, o in marina.objects(env).items() if o["?"]["type"].endswith("Node")
        }
        assert set(states.values()) == {"ready"}, states
        wait_for(
            lambda: marina.objects(env)["web"]["replicas"] == {"desired": 2, "ready": 2},
            timeout=30,
            what="two ready replicas",
        )
    finally:
        # With an external etcd, stopping Marina leaves the nodes running: delete them.
        if marina.proc is not None and marina.proc.poll() is None:
            for listed in marina.ok("GET", "/v1/environments")["environments"]:
                status, payload = marina.call("DELETE", f"/v1/environments/{listed['id']}")
                if status == 202:
                    marina.wait_task(payload["task_id"], timeout=120)
        marina.stop()
    leftovers = subprocess.run(
        ["pgrep", "-f", str(marina.state_dir)], capture_output=True, text=True
    ).stdout.split()
    assert not leftovers, f"processes left behind: {leftovers}"
