"""TLS on shared ports: certificates from etcd, chosen by SNI, loaded and
replaced through HAProxy's runtime API without a reload, a bad one isolated."""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import ssl
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.test_gateway import route, status
from tests.support import Etcd, Gateway, free_port, wait_for


def certificate(host: str) -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return {
        "cert": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    }


def serial_of(doc: dict[str, str]) -> int:
    return x509.load_pem_x509_certificate(doc["cert"].encode()).serial_number


def _context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the certificates are self-signed
    return context


def served(gw: Gateway, port: int, host: str) -> tuple[str, int, int, str]:
    """(common name, serial) of the certificate offered for `host` by SNI,
    and the status and body of a request for it."""
    with (
        socket.create_connection((gw.address, port), timeout=2) as raw,
        _context().wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        cert = x509.load_der_x509_certificate(der)
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := tls.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return str(cn), cert.serial_number, int(head.split()[1]), body.decode()


def put_cert(etcd: Etcd, cluster: str, host: str, doc: object) -> None:
    etcd.put(f"/marina/gateway/certs/{cluster}/{host}", json.dumps(doc))


def test_sni_picks_each_hosts_certificate_and_a_bad_one_is_isolated(
    etcd, cluster, backends, gateways
):
    a, b, c = backends("a"), backends("b"), backends("c")
    gw = gateways(etcd.url, cluster)
    port = free_port(gw.address)
    certs = {h: certificate(h) for h in ("a.example", "b.example")}
    for host, doc in certs.items():
        put_cert(etcd, cluster, host, doc)
    put_cert(etcd, cluster, "c.example", {"cert": "-----BEGIN CERTIFICATE-----\nnope", "key": ""})
    key = f"/marina/gateway/routes/{cluster}"
    etcd.put(f"{key}/a", route(port, a, hosts=["a.example"], tls=True))
    etcd.put(f"{key}/b", route(port, b, hosts=["b.example"], tls=True))
    etcd.put(f"{key}/c", route(port, c, hosts=["c.example"], tls=True))
    wait_for(lambda: served(gw, port, "a.example")[2:] == (200, "a"), what="a.example over TLS")
    assert served(gw, port, "a.example")[:2] == ("a.example", serial_of(certs["a.example"]))
    assert served(gw, port, "b.example") == ("b.example", serial_of(certs["b.example"]), 200, "b")
    # The bad certificate is reported; its host gets the default certificate.
    cn, _, code, body = served(gw, port, "c.example")
    assert (cn, code, body) == ("marina-gateway.invalid", 200, "c")
    st = wait_for(lambda: status(etcd, gw).get("certificates") and status(etcd, gw), what="report")
    [problem] = st["certificates"]
    assert problem["host"] == "c.example" and "not a PEM certificate" in problem["problem"]
    # A good certificate for c arrives: loaded at runtime, no reload.
    reloads = status(etcd, gw)["reloads"]
    fixed = certificate("c.example")
    put_cert(etcd, cluster, "c.example", fixed)
    wait_for(
        lambda: served(gw, port, "c.example")[:2] == ("c.example", serial_of(fixed)),
        what="c.example's new certificate",
    )
    wait_for(lambda: status(etcd, gw).get("certificates") == [], what="problem cleared")
    assert status(etcd, gw)["reloads"] == reloads


def test_certificate_replaced_under_load_without_a_failed_request(
    etcd, cluster, backends, gateways
):
    a = backends("a")
    gw = gateways(etcd.url, cluster)
    port = free_port(gw.address)
    first = certificate("a.example")
    put_cert(etcd, cluster, "a.example", first)
    etcd.put(f"/marina/gateway/routes/{cluster}/a", route(port, a, hosts=["a.example"], tls=True))
    wait_for(lambda: served(gw, port, "a.example")[1] == serial_of(first), what="first cert")
    reloads = wait_for(lambda: status(etcd, gw).get("reloads"), what="status")
    results = {"ok": 0, "failed": 0, "serials": set()}
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                _, serial, code, body = served(gw, port, "a.example")
            except (OSError, http.client.HTTPException, IndexError):
                results["failed"] += 1
                continue
            results["serials"].add(serial)  # type: ignore[attr-defined]
            results["ok" if (code, body) == (200, "a") else "failed"] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        replacements = [certificate("a.example") for _ in range(3)]
        for doc in replacements:
            # Requests before, during and after each replacement.
            seen = results["ok"]
            wait_for(lambda s=seen: results["ok"] >= s + 30, what="requests under way")
            put_cert(etcd, cluster, "a.example", doc)
            wait_for(
                lambda d=doc: served(gw, port, "a.example")[1] == serial_of(d),
                what="replacement served",
            )
        seen = results["ok"]
        wait_for(lambda: results["ok"] >= seen + 30, what="requests after the last one")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert results["failed"] == 0
    assert results["ok"] > 120
    assert serial_of(replacements[-1]) in results["serials"]  # type: ignore[operator]
    assert status(etcd, gw)["reloads"] == reloads
