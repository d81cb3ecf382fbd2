"""A web application served by host name over TLS, its certificate taken from
the application's secrets: checked when the pod is added, written for the
gateways by the catalog, served by SNI, gone with the application; its URLs
in the environment view and `marina env show`."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509

from gateway.etcd import prefix_end
from tests.e2e.marina import Marina, running
from tests.integration.test_gateway_tls import certificate
from tests.support import Etcd, wait_for

HOST = "shop.example.test"
PORT = 8443


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    server = Etcd(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def marina(tmp_path_factory: pytest.TempPathFactory, etcd: Etcd) -> Iterator[Marina]:
    """`marina up` on an etcd the test reads too, to see the certificate keys."""
    yield from running(tmp_path_factory.mktemp("marina") / "state", etcd=etcd.url)


def shop(pair: dict[str, str], *, hosts: list[str] | None = None) -> dict[str, Any]:
    """A pod answering HTTP on its POD_IP, public on PORT for HOST over TLS,
    its certificate and key two of its secrets."""
    return {
        "package": "kubernetes-pod",
        "properties": {
            "name": "shop",
            "containers": [
                {
                    "name": "web",
                    "image": "python:3.11",
                    "cores": 0.1,
                    "command": ["sh", "-c", "exec python3 -m http.server 8000 --bind $POD_IP"],
                    "ports": [{"containerPort": 8000}],
                    "secrets": {"TLS_CERT": pair["cert"], "TLS_KEY": pair["key"]},
                }
            ],
            "services": [
                {
                    "name": "shop",
                    "port": PORT,
                    "targetPort": 8000,
                    "scope": "public",
                    "hosts": hosts or [HOST],
                    "tls": {"certificate": "TLS_CERT", "key": "TLS_KEY"},
                }
            ],
        },
    }


def sni(address: str, host: str) -> tuple[int, int]:
    """The serial of the certificate offered for `host`, and the HTTP status."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # self-signed; the serial says whose it is
    with (
        socket.create_connection((address, PORT), timeout=2) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        reply = tls.recv(64)
    return x509.load_der_x509_certificate(der).serial_number, int(reply.split()[1])


def serial(pair: dict[str, str]) -> int:
    return x509.load_pem_x509_certificate(pair["cert"].encode()).serial_number


def cert_keys(etcd: Etcd) -> dict[str, Any]:
    prefix = b"/marina/gateway/certs/"
    reply = etcd.call(
        "/v3/kv/range",
        {
            "key": base64.b64encode(prefix).decode(),
            "range_end": base64.b64encode(prefix_end(prefix)).decode(),
        },
    )
    return {
        base64.b64decode(kv["key"]).decode(): json.loads(base64.b64decode(kv["value"]))
        for kv in reply.get("kvs", [])
    }


def test_certificate_from_the_applications_secret_served_by_sni(marina: Marina, etcd: Etcd):
    env = marina.ok("POST", "/v1/environments", {"name": "tls"})["id"]
    marina.ok(
        "POST",
        f"/v1/environments/{env}/services",
        {"package": "kubernetes-cluster", "properties": {"name": "c", "nodeCount": 1}},
    )
    # A certificate that does not name the host, or a key of another one:
    # refused, each problem naming its field.
    status, reply = marina.call(
        "POST", f"/v1/environments/{env}/services", shop(certificate("other.example.test"))
    )
    assert status == 400, reply
    assert "services[0].tls.certificate" in json.dumps(reply)
    assert HOST in json.dumps(reply)
    mixed = {"cert": certificate(HOST)["cert"], "key": certificate(HOST)["key"]}
    status, reply = marina.call("POST", f"/v1/environments/{env}/services", shop(mixed))
    assert status == 400 and "services[0].tls.key" in json.dumps(reply), reply
    assert "does not belong to the certificate" in json.dumps(reply)

    pair = certificate(HOST)
    marina.ok("POST", f"/v1/environments/{env}/services", shop(pair))
    task = marina.run(env, "c:deploy", timeout=180)
    assert task["state"] == "succeeded", task
    started = marina.run(env, "shop:scalePod", {"replicas": 1}, timeout=180)
    assert started["state"] == "succeeded", started

    # The catalog wrote the application's certificate for the host.
    [(key, doc)] = wait_for(lambda: list(cert_keys(etcd).items()), what="certificate key")
    assert key.endswith(f"/{HOST}") and doc == pair
    # The environment view lists the URLs: the host name, then each gateway.
    shown = marina.ok("GET", f"/v1/environments/{env}")
    [entry] = [u for u in shown["urls"] if u["service"] == "shop"]
    assert entry["urls"][0] == f"https://{HOST}:{PORT}/"
    gateway_urls = wait_for(
        lambda: [
            u
            for u in marina.ok("GET", f"/v1/environments/{env}")["urls"][0]["urls"]
            if HOST not in u
        ],
        timeout=30,
        what="a gateway URL",
    )
    address = gateway_urls[0].split("//")[1].rsplit(":", 1)[0]
    assert gateway_urls[0] == f"https://{address}:{PORT}/"
    # The gateway serves the application's certificate by SNI.
    assert wait_for(lambda: sni(address, HOST) == (serial(pair), 200), timeout=30, what="TLS")
    # `marina env show` shows the same URLs.
    command = [sys.executable, "-m", "catalog.cli", "--state-dir", str(marina.state_dir)]
    shown_cli = subprocess.run(
        [*command, "env", "show", env],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown_cli.returncode == 0, shown_cli.stderr
    assert f"https://{HOST}:{PORT}/" in shown_cli.stdout

    # The application goes: so does its certificate.
    shop_id = marina.objects(env)["shop"]["?"]["id"]
    status, reply = marina.call("DELETE", f"/v1/environments/{env}/objects/{shop_id}")
    assert status < 300, reply
    if isinstance(reply, dict) and reply.get("task_id"):
        assert marina.wait_task(reply["task_id"])["state"] == "succeeded"
    wait_for(lambda: cert_keys(etcd) == {}, timeout=30, what="certificate removed")
    # The environment goes with its nodes (and gateways).
    deleted = marina.ok("DELETE", f"/v1/environments/{env}")
    assert marina.wait_task(deleted["task_id"], timeout=120)["state"] == "succeeded"
