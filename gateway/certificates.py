"""TLS certificates for routes with host names, from etcd.

Key `/marina/gateway/certs/<cluster>/<host>` holds `{"cert": PEM chain,
"key": PEM key}` (Marina writes them from an application's secrets). Each is
parsed and checked here, then written out again from the parsed objects, so
nothing but well-formed PEM blocks reaches HAProxy's files or its runtime API
(where an empty line would end the payload). A certificate that fails is
reported with the reason and never loaded; the other hosts keep theirs.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.routes import valid_host_pattern

CERTS_PREFIX = "/marina/gateway/certs/"


def certs_prefix(cluster: str) -> str:
    return f"{CERTS_PREFIX}{cluster}/"


@dataclass(frozen=True)
class Certificate:
    host: str
    pem: str
    """Certificate chain and key, as HAProxy reads them from one file."""


@dataclass(frozen=True)
class BadCertificate:
    host: str
    reason: str


def parse_certificate(host: str, raw: bytes) -> Certificate | BadCertificate:
    if not valid_host_pattern(host):
        return BadCertificate(host, "the key must be a host name (or *.name)")
    try:
        doc = json.loads(raw)
        cert_pem, key_pem = doc["cert"], doc["key"]
        chain = x509.load_pem_x509_certificates(cert_pem.encode())
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return BadCertificate(host, f"not a PEM certificate and key: {exc}")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.PEM
    if key.public_key().public_bytes(encoding, public) != chain[0].public_key().public_bytes(
        encoding, public
    ):
        return BadCertificate(host, "the key does not belong to the certificate")
    now = datetime.datetime.now(datetime.UTC)
    if chain[0].not_valid_after_utc < now:
        return BadCertificate(host, f"expired on {chain[0].not_valid_after_utc:%Y-%m-%d}")
    pem = b"".join(c.public_bytes(encoding) for c in chain) + key.private_bytes(
        encoding, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Certificate(host, pem.decode("ascii"))


def file_name(host: str) -> str:
    """A certificate's file name: host names are safe, but for the wildcard."""
    return host.replace("*", "_wildcard_") + ".pem"


def find_certificate(host: str, certs: dict[str, Certificate]) -> Certificate | None:
    """The certificate for a route's host: its own, else a wildcard's."""
    if host in certs:
        return certs[host]
    if not host.startswith("*.") and "." in host:
        return certs.get("*." + host.split(".", 1)[1])
    return None


def ensure_default(path: Path) -> None:
    """A self-signed certificate for clients that name no known host."""
    if path.exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "marina-gateway.invalid")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tmp.chmod(0o600)
    tmp.replace(path)
