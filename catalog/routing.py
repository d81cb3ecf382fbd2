"""Services to gateway routes, in the contract the gateway agents read.

Internal services are served at their own address by the gateway on the
cluster's master (`<cluster>.internal` routes, TCP); public services by every
gateway node (`<cluster>` routes, HTTP). A replica is a backend while its
node reports it ready and it is not being drained.

A public service may name `hosts` and take `tls` from two of its pod's
secrets (`{"certificate": VAR, "key": VAR}`): the certificate is checked here
and written for each host to `/marina/gateway/certs/<cluster>/<host>`, where
the gateways load it by SNI. Both engines publish through this module (the
local one from its pod records, the Kubernetes one from its Services and
Secrets), so a route and its certificates read the same whichever runs.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from catalog import keys
from catalog.documents import ServiceUrls

if TYPE_CHECKING:  # the CLI reads this module's rules without the etcd client
    from catalog.store import Store

ROUTES = keys.ROUTES
HOST_NAME = re.compile(
    r"(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
)
PATH_PREFIX = re.compile(r"/[A-Za-z0-9._~/-]{0,199}")
"""A path prefix the gateways take: a leading slash and URL path characters
that need no quoting (the contract's rule)."""
MAX_NAMES = 32
"""The most host names, or path prefixes, one route may have (the contract's rule)."""


class CertificateKeys(TypedDict):
    cert: str
    key: str


class Backend(TypedDict):
    host: str
    port: int


class Route(TypedDict):
    """A route as the gateway contract spells it (docs/architecture.md)."""

    port: int
    mode: str
    backends: list[Backend]
    scope: NotRequired[str]
    address: NotRequired[str]
    hosts: NotRequired[list[str]]
    paths: NotRequired[list[str]]
    tls: NotRequired[bool]


def route_keys(cluster: str, service: Mapping[str, Any]) -> list[str]:
    keys = [f"{ROUTES}{cluster}.internal/{service['name']}"]
    if service.get("scope") == "public":
        keys.append(f"{ROUTES}{cluster}/{service['name']}")
    return keys


def routes_for(cluster: str, service: Mapping[str, Any], hosts: list[str]) -> dict[str, Route]:
    backends: list[Backend] = [{"host": h, "port": service["targetPort"]} for h in sorted(hosts)]
    routes: dict[str, Route] = {
        f"{ROUTES}{cluster}.internal/{service['name']}": {
            "port": service["port"],
            "mode": "tcp",
            "address": service["ip"],
            "scope": "internal",
            "backends": backends,
        }
    }
    if service.get("scope") == "public":
        routes[f"{ROUTES}{cluster}/{service['name']}"] = public_route(service, backends)
    return routes


def public_route(service: Mapping[str, Any], backends: list[Backend]) -> Route:
    """A public service's route on the gateways: HTTP on its port, by host
    name (and path prefix, and with TLS) when it names hosts."""
    route: Route = {
        "port": service["port"],
        "mode": "http",
        "scope": "public",
        "backends": backends,
    }
    if service.get("hosts"):
        route["hosts"] = sorted(service["hosts"])
        if service.get("paths"):
            route["paths"] = sorted(service["paths"])
        route["tls"] = bool(service.get("tls"))
    return route


# -- certificates -------------------------------------------------------------------


def certificate_problems(
    hosts: Iterable[str], cert_pem: str, key_pem: str, *, now: datetime.datetime | None = None
) -> list[tuple[str, str]]:
    """What is wrong with a certificate and key for `hosts`, as (which of
    `certificate`/`key`, rule) pairs; empty when they serve every host."""
    problems: list[tuple[str, str]] = []
    try:
        chain = x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError as exc:
        return [("certificate", f"must be a PEM certificate ({exc})")]
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        return [("key", f"must be an unencrypted PEM private key ({exc})")]
    leaf = chain[0]
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mine = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public != mine:
        problems.append(("key", "does not belong to the certificate"))
    now = now or datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc < now:
        problems.append(("certificate", f"expired on {leaf.not_valid_after_utc:%Y-%m-%d}"))
    names = certificate_names(leaf)
    missing = [h for h in sorted(hosts) if not _covers(names, h)]
    if missing:
        problems.append(
            (
                "certificate",
                f"does not name {', '.join(missing)} (its names: "
                f"{', '.join(sorted(names)) or 'none'})",
            )
        )
    return problems


def certificate_names(cert: x509.Certificate) -> set[str]:
    """The DNS names a certificate is for: its SAN, else its common name."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return {n.lower() for n in san.value.get_values_for_type(x509.DNSName)}
    except x509.ExtensionNotFound:
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return {str(cn[0].value).lower()} if cn else set()


def _covers(names: set[str], host: str) -> bool:
    if host in names:
        return True
    if host.startswith("*."):
        return False
    _, _, rest = host.partition(".")
    return bool(rest) and f"*.{rest}" in names


def service_certificate(
    service: Mapping[str, Any], secrets: Mapping[str, str]
) -> CertificateKeys | None:
    """The certificate and key a TLS service names among its pod's secrets."""
    tls = service.get("tls")
    if not isinstance(tls, Mapping):
        return None
    cert, key = secrets.get(str(tls.get("certificate"))), secrets.get(str(tls.get("key")))
    if cert is None or key is None:
        return None
    return {"cert": cert, "key": key}


def certificates_for(
    cluster: str, services: Iterable[tuple[Mapping[str, Any], Mapping[str, str]]]
) -> dict[str, CertificateKeys]:
    """Certificate key -> value for every host of the TLS services (each with
    its pod's secrets) whose certificate passes the checks; a host claimed
    twice goes to the first service by name."""
    wanted: dict[str, CertificateKeys] = {}
    for service, secrets in sorted(services, key=lambda s: str(s[0].get("name"))):
        pair = service_certificate(service, secrets)
        hosts = list(service.get("hosts") or [])
        if service.get("scope") != "public" or pair is None or not hosts:
            continue
        if certificate_problems(hosts, pair["cert"], pair["key"]):
            continue  # refused when the pod was checked; never handed to a gateway
        for host in hosts:
            wanted.setdefault(keys.gateway_cert(cluster, host), pair)
    return wanted


async def publish_certificates(
    store: Store,
    cluster: str,
    services: Iterable[tuple[Mapping[str, Any], Mapping[str, str]]],
) -> None:
    """Make the cluster's certificate keys those of `certificates_for`: a
    changed secret replaces its key, a service gone (or without `tls` now)
    takes its keys along."""
    wanted = certificates_for(cluster, services)
    published = {v.key: v.value for v in await store.list(f"{keys.GATEWAY_CERTS}{cluster}/")}
    for key, value in wanted.items():
        if published.get(key) != value:
            await store.put(key, value)
    for key in published.keys() - wanted.keys():
        await store.delete(key)


# -- URLs ----------------------------------------------------------------------------


def service_urls(service: Mapping[str, Any], gateways: Iterable[str]) -> list[str]:
    """Where users reach a public service: each host name on its port (at
    each of its path prefixes), and each gateway address (a host-name
    service through a gateway answers only to its names, so its address URLs
    are listed for a Host header or a hosts-file entry)."""
    if service.get("scope") != "public":
        return []
    port = service.get("port")
    scheme = "https" if service.get("tls") else "http"
    paths = sorted(service.get("paths") or ["/"])
    urls = [
        f"{scheme}://{host}:{port}{path}"
        for host in sorted(service.get("hosts") or [])
        if not host.startswith("*.")
        for path in paths
    ]
    for address in sorted(set(gateways)):
        shown = f"[{address}]" if _is_ipv6(address) else address
        urls += [f"{scheme}://{shown}:{port}{path}" for path in paths]
    return urls


def _is_ipv6(address: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address)
    except ValueError:
        return False


def environment_urls(objects: Iterable[Mapping[str, Any]]) -> list[ServiceUrls]:
    """Each public service of an environment's pods with its URLs: host
    names first, then every ready gateway of the pod's cluster."""
    objects = list(objects)
    gateways: dict[str, list[str]] = {}
    for node in objects:
        if node.get("role") == "gateway" and node.get("state") == "ready" and node.get("address"):
            gateways.setdefault(str(node.get("cluster")), []).append(str(node["address"]))
    found: list[ServiceUrls] = []
    for pod in objects:
        spec = pod.get("spec")
        if "replicas" not in pod or not isinstance(spec, Mapping):
            continue
        for service in spec.get("services") or []:
            if service.get("scope") != "public":
                continue
            found.append(
                {
                    "pod": pod["?"]["name"],
                    "service": service["name"],
                    "urls": service_urls(service, gateways.get(str(pod.get("cluster")), [])),
                }
            )
    return found
