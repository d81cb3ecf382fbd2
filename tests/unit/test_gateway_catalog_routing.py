"""The catalog's side of gateway routing by host name: certificates from a
pod's secrets checked and published per host, and the URLs users are shown."""

from __future__ import annotations

import datetime

from catalog.model import validate_pod_spec
from catalog.routing import (
    certificate_problems,
    certificates_for,
    environment_urls,
    routes_for,
    service_urls,
)
from tests.integration.test_gateway_tls import certificate


def pod(pair: dict[str, str], **service: object) -> dict[str, object]:
    return {
        "name": "shop",
        "containers": [
            {
                "name": "web",
                "image": "python:3.11",
                "command": ["true"],
                "ports": [{"containerPort": 8000}],
                "secrets": {"CERT": pair["cert"], "KEY": pair["key"]},
            }
        ],
        "services": [
            {
                "name": "shop",
                "port": 443,
                "targetPort": 8000,
                "scope": "public",
                "hosts": ["shop.example.test"],
                "tls": {"certificate": "CERT", "key": "KEY"},
                **service,
            }
        ],
    }


def fields(problems: list) -> dict[str, str]:
    return {p.field: p.rule for p in problems}


def test_a_pod_with_its_own_certificate_passes():
    assert validate_pod_spec(pod(certificate("shop.example.test"))) == []


def test_each_certificate_problem_names_its_field():
    other = certificate("other.example.test")
    found = fields(validate_pod_spec(pod(other)))
    assert "shop.example.test" in found["pod.services[0].tls.certificate"]
    mixed = {"cert": certificate("shop.example.test")["cert"], "key": other["key"]}
    assert fields(validate_pod_spec(pod(mixed))) == {
        "pod.services[0].tls.key": "does not belong to the certificate"
    }
    broken = {"cert": "-----BEGIN CERTIFICATE-----\nnope\n", "key": other["key"]}
    assert "PEM" in fields(validate_pod_spec(pod(broken)))["pod.services[0].tls.certificate"]
    missing = fields(validate_pod_spec(pod(other, tls={"certificate": "NOPE", "key": "KEY"})))
    assert missing == {"pod.services[0].tls.certificate": "names no secret of the pod's containers"}


def test_host_names_and_tls_are_checked():
    pair = certificate("shop.example.test")
    assert "pod.services[0].hosts" in fields(validate_pod_spec(pod(pair, hosts=["Shop.Example"])))
    assert "pod.services[0].hosts" in fields(validate_pod_spec(pod(pair, scope="internal")))
    assert "pod.services[0].tls" in fields(
        validate_pod_spec(pod(pair, tls={"certificate": "CERT"}))
    )
    # A template's placeholders are checked once filled.
    template = pod({"cert": "${tlsCertificate}", "key": "${tlsKey}"}, hosts=["${shopHost}"])
    assert validate_pod_spec(template) == []


def test_wildcards_and_expiry():
    wildcard = certificate("*.example.test")
    assert certificate_problems(["a.example.test"], wildcard["cert"], wildcard["key"]) == []
    assert certificate_problems(["a.b.example.test"], wildcard["cert"], wildcard["key"])
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365)
    [(field, rule)] = certificate_problems(
        ["x.example.test"], wildcard["cert"], wildcard["key"], now=later
    )
    assert field == "certificate" and rule.startswith("expired on")


def test_certificates_are_published_per_host_first_service_by_name():
    good, other = certificate("shop.example.test"), certificate("shop.example.test")
    service = pod(good)["services"][0]  # type: ignore[index]
    taken = {**service, "name": "a-first"}
    bad = {**service, "name": "bad", "hosts": ["bad.example.test"]}
    published = certificates_for(
        "c1",
        [
            (service, {"CERT": good["cert"], "KEY": good["key"]}),
            (taken, {"CERT": other["cert"], "KEY": other["key"]}),
            (bad, {"CERT": good["cert"], "KEY": good["key"]}),  # does not name its host
        ],
    )
    assert published == {"/marina/gateway/certs/c1/shop.example.test": other}


def test_routes_carry_hosts_and_tls():
    service = {**pod(certificate("shop.example.test"))["services"][0], "ip": "10.0.0.1"}  # type: ignore[index, dict-item]
    public = routes_for("c1", service, ["127.0.0.9"])["/marina/gateway/routes/c1/shop"]
    assert public["hosts"] == ["shop.example.test"] and public["tls"] is True


def test_urls_name_the_hosts_then_each_ready_gateway_of_the_cluster():
    shop = pod(certificate("shop.example.test"))
    objects = [
        {
            "?": {"name": "gw-1"},
            "role": "gateway",
            "state": "ready",
            "cluster": "k",
            "address": "127.0.0.7",
        },
        {
            "?": {"name": "gw-2"},
            "role": "gateway",
            "state": "deploying",
            "cluster": "k",
            "address": "127.0.0.8",
        },
        {"?": {"name": "shop"}, "cluster": "k", "replicas": {"desired": 1}, "spec": shop},
    ]
    assert environment_urls(objects) == [
        {
            "pod": "shop",
            "service": "shop",
            "urls": ["https://shop.example.test:443/", "https://127.0.0.7:443/"],
        }
    ]


def test_path_prefixes_within_the_hosts():
    pair = certificate("shop.example.test")
    spec = pod(pair, paths=["/api", "/static/v1"])
    assert validate_pod_spec(spec) == []
    for bad in (["api"], ["/a b"], [], ["/x"] * 33, "/api"):
        assert "pod.services[0].paths" in fields(validate_pod_spec(pod(pair, paths=bad))), bad
    # Paths narrow host names: without hosts they mean nothing.
    no_hosts = {k: v for k, v in pod(pair, paths=["/api"])["services"][0].items()}  # type: ignore[index]
    del no_hosts["hosts"], no_hosts["tls"]
    spec = {**pod(pair), "services": [no_hosts]}
    assert "pod.services[0].paths" in fields(validate_pod_spec(spec))

    service = {**pod(pair, paths=["/static/v1", "/api"])["services"][0], "ip": "10.0.0.1"}  # type: ignore[index, dict-item]
    public = routes_for("c1", service, ["127.0.0.9"])["/marina/gateway/routes/c1/shop"]
    assert public["paths"] == ["/api", "/static/v1"] and public["hosts"] == ["shop.example.test"]
    assert service_urls(service, ["127.0.0.7"]) == [
        "https://shop.example.test:443/api",
        "https://shop.example.test:443/static/v1",
        "https://127.0.0.7:443/api",
        "https://127.0.0.7:443/static/v1",
    ]
