"""Certificates for the embedded etcd: only Marina's own processes reach it.

etcd runs with client-certificate authentication on its client and peer
ports, so a process that can connect to loopback (a tenant's pod shares the
host network on the local engine) but cannot read these files gets nothing
from it. The files live in a directory only their owner can enter; they are
made once and reused, so a restarted `marina up` and its node agents keep
working with the ones already issued.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class TLSFiles:
    """A CA bundle and one certificate with its key, as PEM files."""

    ca: Path
    cert: Path
    key: Path

    def args(self, prefix: str = "--etcd-") -> list[str]:
        """The command-line options etcdctl and Marina's own commands take."""
        return [f"{prefix}cacert", str(self.ca), f"{prefix}cert", str(self.cert),
                f"{prefix}key", str(self.key)]  # fmt: skip


@dataclass(frozen=True)
class EtcdPKI:
    """Everything etcd and its clients need, under one private directory."""

    server: TLSFiles
    peer: TLSFiles
    client: TLSFiles


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common: str,
    *,
    server: bool,
    client: bool,
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def ensure_etcd_pki(directory: Path) -> EtcdPKI:
    """The CA and the server, peer and client certificates, made if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca_path, ca_key_path = directory / "ca.pem", directory / "ca-key.pem"
    pki = EtcdPKI(
        *(
            TLSFiles(ca_path, directory / f"{role}.pem", directory / f"{role}-key.pem")
            for role in ("server", "peer", "client")
        )
    )
    roles = {"server": pki.server, "peer": pki.peer, "client": pki.client}
    if all(p.exists() for f in roles.values() for p in (f.cert, f.key)) and ca_path.exists():
        return pki
    if ca_path.exists() and ca_key_path.exists():
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("marina-etcd-ca"))
            .issuer_name(_name("marina-etcd-ca"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(ca_key_path, _key_pem(ca_key))
        _write_private(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM))
    for role, files in roles.items():
        cert, key = _issue(
            # etcd's JSON gateway dials etcd with the server's certificate, so it is a client too.
            ca_key,
            ca_cert,
            f"marina-{role}",
            server=role != "client",
            client=True,
        )
        _write_private(files.key, key)
        _write_private(files.cert, cert)
    return pki
