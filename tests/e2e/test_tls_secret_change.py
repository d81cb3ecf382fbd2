"""A certificate renewed by changing the application's secrets, on the local
engine: `setSecrets` gives the pod's container the new certificate and key,
the catalog replaces the host's certificate key, and the gateway serves the
new certificate by SNI while requests keep being answered. A malformed
certificate is refused naming its field, and the one before keeps serving.
The values never show in the task."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.marina import Marina
from tests.e2e.test_gateway_certificates import HOST, serial, shop, sni
from tests.integration.test_gateway_tls import certificate
from tests.support import wait_for

CERTS = "/marina/gateway/certs/"


def load(address: str, stop: threading.Event, seen: list[Any]) -> None:
    """TLS requests for HOST one after another until told to stop (at most
    five minutes): the serial served and the status, or the error."""
    deadline = time.monotonic() + 300
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            seen.append(sni(address, HOST))
        except OSError as exc:
            seen.append(repr(exc))


def test_a_new_certificate_in_the_secrets_is_served_without_a_failed_request(
    marina: Marina, tmp_path: Path
):
    env = marina.ok("POST", "/v1/environments", {"name": "renew"})["id"]
    marina.ok(
        "POST",
        f"/v1/environments/{env}/services",
        {"package": "kubernetes-cluster", "properties": {"name": "c", "nodeCount": 1}},
    )
    old = certificate(HOST)
    marina.ok("POST", f"/v1/environments/{env}/services", shop(old))
    assert marina.run(env, "c:deploy", timeout=180)["state"] == "succeeded"
    assert marina.run(env, "shop:scalePod", {"replicas": 1}, timeout=180)["state"] == "succeeded"
    gateway = wait_for(
        lambda: [u for u in marina.ok("GET", f"/v1/environments/{env}")["urls"][0]["urls"]][1:],
        timeout=30,
        what="a gateway URL",
    )[0]
    address = gateway.split("//")[1].rsplit(":", 1)[0]
    assert wait_for(lambda: sni(address, HOST) == (serial(old), 200), timeout=30, what="TLS")

    # The certificate is renewed through the pod's secrets, under load.
    new = certificate(HOST)
    seen: list[Any] = []
    stop = threading.Event()
    thread = threading.Thread(target=load, args=(address, stop, seen))
    thread.start()
    try:
        action = marina.action_id(env, "shop:setSecrets")
        args = {"container": "web", "secrets": {"TLS_CERT": new["cert"], "TLS_KEY": new["key"]}}
        task_id = marina.ok("POST", f"/v1/environments/{env}/actions/{action}", args)["task_id"]
        task = marina.wait_task(task_id, timeout=180)
        assert task["state"] == "succeeded" and task["outcome"] == "changed", task
        wait_for(lambda: seen and seen[-1] == (serial(new), 200), timeout=30, what="new cert")
        mark = len(seen)
        wait_for(lambda: len(seen) > mark + 5, timeout=30, what="more requests")
    finally:
        stop.set()
        thread.join()
    failed = [s for s in seen if not isinstance(s, tuple) or s[1] != 200]
    assert not failed and len(seen) > 10, failed[:5]
    # Old, then new, never anything else; and the new one stays.
    serials = [s[0] for s in seen]
    switch = serials.index(serial(new))
    assert set(serials[:switch]) == {serial(old)} and set(serials[switch:]) == {serial(new)}
    # The task shows which secrets changed, never their values.
    shown = json.dumps(marina.ok("GET", f"/v1/tasks/{task_id}"))
    assert "BEGIN" not in shown and '"TLS_CERT": "******"' in shown
    assert marina.etcd_keys(CERTS) == [f"{CERTS}{marina_cluster(marina, env)}/{HOST}"]

    # A malformed certificate, from the command line as a user renews one: the
    # task fails naming the field; nothing changes.
    values = tmp_path / "renewed.yaml"
    broken = "-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n"
    values.write_text(yaml.safe_dump({"container": "web", "secrets": {"TLS_CERT": broken}}))
    command = [sys.executable, "-m", "catalog.cli", "--state-dir", str(marina.state_dir)]
    dry = subprocess.run(
        [*command, "action", "run", env, "shop:setSecrets", "--values", str(values), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    assert '"TLS_CERT": "******"' in dry.stdout and "not one" not in dry.stdout, dry.stdout
    ran = subprocess.run(
        [*command, "action", "run", env, "shop:setSecrets", "--values", str(values), "--wait"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode != 0, ran.stdout
    assert "pod.services[0].tls.certificate" in ran.stdout + ran.stderr, (ran.stdout, ran.stderr)
    assert "not one" not in ran.stdout + ran.stderr
    [refused] = [
        t for t in marina.ok("GET", f"/v1/environments/{env}/tasks")["tasks"]
        if t["method"] == "setSecrets" and t["state"] == "failed"
    ]  # fmt: skip
    assert "not one" not in json.dumps(marina.ok("GET", f"/v1/tasks/{refused['id']}"))
    assert sni(address, HOST) == (serial(new), 200)
    # A certificate for another host would leave HOST without one: refused too.
    other = certificate("other.example.test")
    refused = marina.run(
        env,
        "shop:setSecrets",
        {"container": "web", "secrets": {"TLS_CERT": other["cert"], "TLS_KEY": other["key"]}},
    )
    assert refused["state"] == "failed" and HOST in refused["error"], refused
    assert "pod.services[0].tls.certificate" in refused["error"]
    assert sni(address, HOST) == (serial(new), 200)
    # Text that looks like a template is no certificate either.
    template = {"TLS_CERT": "${certificate}"}
    refused = marina.run(env, "shop:setSecrets", {"container": "web", "secrets": template})
    assert refused["state"] == "failed", refused
    assert "pod.services[0].tls.certificate: must be a PEM certificate" in refused["error"]
    # Setting what is already set changes nothing.
    again = {"TLS_CERT": new["cert"], "TLS_KEY": new["key"]}
    same = marina.run(env, "shop:setSecrets", {"container": "web", "secrets": again})
    assert same["state"] == "succeeded" and same["outcome"] == "noop", same
    assert sni(address, HOST) == (serial(new), 200)

    deleted = marina.ok("DELETE", f"/v1/environments/{env}")
    assert marina.wait_task(deleted["task_id"], timeout=120)["state"] == "succeeded"
    wait_for(lambda: marina.etcd_keys(CERTS) == [], timeout=30, what="certificates removed")


def marina_cluster(marina: Marina, env: str) -> str:
    """The cluster key the gateway keys are written under."""
    return str(marina.objects(env)["c"]["key"])
