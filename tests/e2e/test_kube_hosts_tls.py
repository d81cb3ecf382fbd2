"""Two web services sharing port 443 by host name, with TLS from the
application's secrets, on `marina up --engine kubernetes`.

A real `marina up` (its embedded etcd, a gateway node's agent with HAProxy)
runs one pod with two containers on the session's API test server, each
behind a public service on port 443 for its own host name (blog's under a
path prefix), each with its
certificate and key among the pod's secrets. The gateway serves each host
with its own certificate by SNI and routes it to its own container; the
environment view lists the URLs; a certificate renewed through the pod's
secrets is served with no failed request, a malformed one refused; the
certificate keys go with the pod.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509

from tests.e2e.marina import Marina, running
from tests.integration.test_gateway_tls import certificate
from tests.kubeapi.harness import KubeApi
from tests.support import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
SHOP, BLOG = "shop.example.test", "blog.example.test"
PORT = 443
CERTS = "/marina/gateway/certs/"
# A container that answers every GET with its own name. Told to stop, it
# serves a second more, as a web server behind a Service must (a kubelet
# stops a pod as its endpoint is withdrawn, with connections on their way).
ANSWER = (
    "import http.server as h, os, signal, threading\n"
    "class H(h.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = os.environ['NAME'].encode()\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "server = h.ThreadingHTTPServer((os.environ['POD_IP'], int(os.environ['PORT'])), H)\n"
    "signal.signal(signal.SIGTERM, lambda *_: threading.Timer(1, server.shutdown).start())\n"
    "server.serve_forever()\n"
)


@pytest.fixture(scope="module")
def marina(kube_api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Marina]:
    state = tmp_path_factory.mktemp("kube-hosts") / "state"
    yield from running(state, "--engine", "kubernetes", "--kubeconfig", str(kube_api.kubeconfig))


def sites(pairs: dict[str, dict[str, str]]) -> dict[str, Any]:
    """One pod, two containers (`shop` on 8000, `blog` on 8001), each public
    on port 443 for its host, its certificate two of the pod's secrets."""
    return {
        "package": "kubernetes-pod",
        "properties": {
            "name": "sites",
            "containers": [
                {
                    "name": name,
                    "image": "python:3.11",
                    "cores": 0.1,
                    "command": ["python3", "-c", ANSWER],
                    "env": {"NAME": name, "PORT": str(port)},
                    "ports": [{"containerPort": port}],
                    "secrets": {
                        f"{name.upper()}_CERT": pairs[name]["cert"],
                        f"{name.upper()}_KEY": pairs[name]["key"],
                    },
                }
                for name, port in (("shop", 8000), ("blog", 8001))
            ],
            "services": [
                {
                    "name": name,
                    "port": PORT,
                    "targetPort": port,
                    "scope": "public",
                    "hosts": [host],
                    **({"paths": ["/blog"]} if name == "blog" else {}),
                    "tls": {"certificate": f"{name.upper()}_CERT", "key": f"{name.upper()}_KEY"},
                }
                for name, host, port in (("shop", SHOP, 8000), ("blog", BLOG, 8001))
            ],
        },
    }


def served(address: str, host: str, path: str = "/") -> tuple[int, int, str]:
    """The serial of the certificate the gateway offers for `host` by SNI,
    and the status and body of a GET of `path` there."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # self-signed; the serial says whose it is
    with (
        socket.create_connection((address, PORT), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := tls.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return x509.load_der_x509_certificate(der).serial_number, status, body.decode()


def load(address: str, host: str, stop: threading.Event, seen: list[Any]) -> None:
    """Requests for `host` one after another until told to stop (at most five
    minutes): what `served` answers, or the error."""
    deadline = time.monotonic() + 300
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            seen.append(served(address, host))
        except OSError as exc:
            seen.append(repr(exc))


def serial(pair: dict[str, str]) -> int:
    return x509.load_pem_x509_certificate(pair["cert"].encode()).serial_number


@pytest.fixture
def env(marina: Marina) -> Iterator[str]:
    """An environment, deleted with its Nodes whatever the test found."""
    created = str(marina.ok("POST", "/v1/environments", {"name": "kube-hosts"})["id"])
    yield created
    deleted = marina.ok("DELETE", f"/v1/environments/{created}")
    assert marina.wait_task(deleted["task_id"], timeout=180)["state"] == "succeeded"
    assert marina.etcd_keys(CERTS) == []


def test_two_hosts_share_443_with_their_own_certificates(marina: Marina, env: str):
    marina.ok(
        "POST",
        f"/v1/environments/{env}/services",
        {
            "package": "kubernetes-cluster",
            "properties": {"name": "kh", "nodeCount": 1, "gatewayCount": 1, "nodeCores": 1},
        },
    )
    pairs = {"shop": certificate(SHOP), "blog": certificate(BLOG)}
    marina.ok("POST", f"/v1/environments/{env}/services", sites(pairs))
    deployed = marina.run(env, "kh:deploy", timeout=300)
    assert deployed["state"] == "succeeded", deployed
    started = marina.run(env, "sites:scalePod", {"replicas": 1}, timeout=180)
    assert started["state"] == "succeeded", started

    # The catalog wrote each host's certificate for the gateways.
    written = wait_for(
        lambda: sorted(k.rsplit("/", 1)[1] for k in marina.etcd_keys(CERTS)) or None,
        timeout=30,
        what="certificate keys",
    )
    assert written == [BLOG, SHOP]
    # The environment view lists each service's URLs: its host name, then the gateway.
    urls = wait_for(
        lambda: (
            {
                u["service"]: u["urls"]
                for u in marina.ok("GET", f"/v1/environments/{env}")["urls"]
                if len(u["urls"]) == 2
            }
            or None
        ),
        timeout=30,
        what="URLs with a gateway",
    )
    assert sorted(urls) == ["blog", "shop"]
    assert urls["shop"][0] == f"https://{SHOP}:{PORT}/"
    assert urls["blog"][0] == f"https://{BLOG}:{PORT}/blog"  # its path prefix
    address = urls["shop"][1].split("//")[1].rsplit(":", 1)[0]
    assert urls["shop"][1] == f"https://{address}:{PORT}/"
    assert urls["blog"][1] == f"https://{address}:{PORT}/blog"

    # One port, two hosts: each gets its own certificate by SNI and its own container.
    assert wait_for(
        lambda: served(address, SHOP) == (serial(pairs["shop"]), 200, "shop"),
        timeout=60,
        what="shop served over TLS",
    )
    assert served(address, BLOG, "/blog/2026") == (serial(pairs["blog"]), 200, "blog")
    assert served(address, BLOG, "/")[:2] == (serial(pairs["blog"]), 404)  # outside its paths
    # A host no service names is not routed to either.
    assert served(address, "other.example.test")[1] == 404

    # shop's certificate renewed through the pod's secrets, under load: the
    # gateway takes the new one with no failed request, blog keeps its own.
    renewed = certificate(SHOP)
    seen: list[Any] = []
    stop = threading.Event()
    thread = threading.Thread(target=load, args=(address, SHOP, stop, seen))
    thread.start()
    try:
        secrets = {"SHOP_CERT": renewed["cert"], "SHOP_KEY": renewed["key"]}
        task = marina.run(env, "sites:setSecrets", {"container": "shop", "secrets": secrets})
        assert task["state"] == "succeeded" and task["outcome"] == "changed", task
        wait_for(lambda: seen and seen[-1] == (serial(renewed), 200, "shop"), timeout=60)
        mark = len(seen)
        wait_for(lambda: len(seen) > mark + 5, timeout=30, what="more requests")
    finally:
        stop.set()
        thread.join()
    failed = [s for s in seen if not isinstance(s, tuple) or s[1:] != (200, "shop")]
    assert not failed, failed[:5]
    serials = [s[0] for s in seen]
    switch = serials.index(serial(renewed))
    assert switch > 0  # requests ran before the change, and (above) after it
    assert set(serials[:switch]) == {serial(pairs["shop"])}
    assert set(serials[switch:]) == {serial(renewed)}
    assert served(address, BLOG, "/blog") == (serial(pairs["blog"]), 200, "blog")
    # A malformed one is refused naming its field; the renewed one keeps serving.
    broken = {"SHOP_KEY": "-----BEGIN PRIVATE KEY-----\nnot one\n-----END PRIVATE KEY-----\n"}
    refused = marina.run(env, "sites:setSecrets", {"container": "shop", "secrets": broken})
    assert refused["state"] == "failed", refused
    assert "pod.services[0].tls.key" in refused["error"], refused["error"]
    assert served(address, SHOP) == (serial(renewed), 200, "shop")

    # The pod goes: so do its certificates.
    sites_id = marina.objects(env)["sites"]["?"]["id"]
    status, reply = marina.call("DELETE", f"/v1/environments/{env}/objects/{sites_id}")
    assert status < 300, reply
    if isinstance(reply, dict) and reply.get("task_id"):
        assert marina.wait_task(reply["task_id"], timeout=120)["state"] == "succeeded"
    wait_for(lambda: marina.etcd_keys(CERTS) == [], timeout=30, what="certificates removed")
