"""The Kubernetes engine publishes what the local engine does for a public
service with host names and TLS: the route's `hosts` and `tls`, and each
host's certificate from the pod's Secrets, replaced when the Secret changes
(which rolls the pod, as new secrets restart replicas on the local engine)
and gone with `tls`, the service or the pod."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from catalog.engines.base import ClusterKey, PodId, PodSpec
from catalog.engines.kubernetes import (
    HOSTS_ANNOTATION,
    PATHS_ANNOTATION,
    TLS_ANNOTATION,
    KubernetesEngine,
)
from catalog.routing import certificates_for, routes_for
from gateway.etcd import prefix_end
from tests.integration.test_gateway_tls import certificate
from tests.kubeapi.fixtures import fresh_name, fresh_node_address
from tests.kubeapi.harness import KubeApi
from tests.support import Etcd
from tests.unit.test_kubernetes_engine import with_engine

SHOP, BLOG = "shop.example.test", "blog.example.test"


def web(pairs: dict[str, dict[str, str]], *, tls: bool = True) -> PodSpec:
    """A pod with two public services on port 443, one per host (blog's under
    two path prefixes), each with its certificate among the container's secrets."""
    secrets = {
        f"{n.upper()}_{part.upper()}": pair[part] for n, pair in pairs.items() for part in pair
    }
    return {
        "id": PodId("web"),
        "name": "web",
        "environment": "unit",
        "package": None,
        "containers": [
            {
                "name": "main",
                "image": "python:3.11-slim",
                "command": ["python3", "-m", "http.server"],
                "secrets": secrets,
                "ports": [{"containerPort": 8000}],
            }
        ],
        "labels": {},
        "links": {},
        "env": {},
        "services": [
            {
                "name": name,
                "port": 443,
                "targetPort": 8000,
                "scope": "public",
                "hosts": [host],
                **({"paths": ["/blog", "/feed"]} if name == "blog" else {}),
                **(
                    {"tls": {"certificate": f"{name.upper()}_CERT", "key": f"{name.upper()}_KEY"}}
                    if tls
                    else {}
                ),
            }
            for name, host in (("shop", SHOP), ("blog", BLOG))
        ],
        "replicas": 1,
    }


def gateway_keys(etcd: Etcd, cluster: str) -> dict[str, Any]:
    found = {}
    for kind in ("routes", "certs"):
        prefix = f"/marina/gateway/{kind}/{cluster}/".encode()
        reply = etcd.call(
            "/v3/kv/range",
            {
                "key": base64.b64encode(prefix).decode(),
                "range_end": base64.b64encode(prefix_end(prefix)).decode(),
            },
        )
        for kv in reply.get("kvs", []):
            found[base64.b64decode(kv["key"]).decode()] = json.loads(base64.b64decode(kv["value"]))
    return found


def test_hosts_and_certificates_published_as_on_the_local_engine(
    kube_api: KubeApi, etcd: Etcd, tmp_path: Path
) -> None:
    cluster = ClusterKey(fresh_name("hosts"))
    config = kube_api.kubeconfig
    node, address = f"{KubernetesEngine.namespace(cluster)}-minion-1", fresh_node_address()
    kube_api.add_node(node, address)
    pairs = {"shop": certificate(SHOP), "blog": certificate(BLOG)}

    async def apply(engine: KubernetesEngine, spec: PodSpec) -> list[dict[str, Any]]:
        await engine.apply_pod(cluster, spec)
        return await engine._services(engine.namespace(cluster), "web")

    def generation() -> int:
        async def read(engine: KubernetesEngine) -> int:
            return int((await engine._require(cluster, PodId("web")))["metadata"]["generation"])

        found: int = with_engine(config, etcd, tmp_path, read)
        return found

    try:
        services = with_engine(config, etcd, tmp_path, lambda e: apply(e, web(pairs)))
        annotations = {s["metadata"]["name"]: s["metadata"]["annotations"] for s in services}
        assert annotations["shop"][HOSTS_ANNOTATION] == SHOP
        assert json.loads(annotations["shop"][TLS_ANNOTATION]) == {
            "certificate": "SHOP_CERT",
            "key": "SHOP_KEY",
        }
        published = gateway_keys(etcd, cluster)
        # The same route fields and certificate keys the local engine writes,
        # with the NodePort on the node as the backend.
        shop = published[f"/marina/gateway/routes/{cluster}/shop"]
        node_port = next(
            s["spec"]["ports"][0]["nodePort"] for s in services if s["metadata"]["name"] == "shop"
        )
        backends = shop.pop("backends")
        assert {"host": address, "port": node_port} in backends  # every ready node's
        assert shop == {
            "port": 443,
            "mode": "http",
            "scope": "public",
            "hosts": [SHOP],
            "tls": True,
        }
        spec = web(pairs)
        local_route = routes_for(cluster, {**spec["services"][0], "ip": "127.68.0.1"}, [])
        assert {**local_route[f"/marina/gateway/routes/{cluster}/shop"], "backends": []} == {
            **shop,
            "backends": [],
        }
        secrets = spec["containers"][0]["secrets"]
        expected = certificates_for(cluster, [(s, secrets) for s in spec["services"]])
        assert {k: v for k, v in published.items() if "/certs/" in k} == expected
        assert published[f"/marina/gateway/certs/{cluster}/{BLOG}"] == pairs["blog"]
        # Path prefixes ride along as well.
        assert annotations["blog"][PATHS_ANNOTATION] == "/blog,/feed"
        assert published[f"/marina/gateway/routes/{cluster}/blog"]["paths"] == ["/blog", "/feed"]
        assert "paths" not in shop

        # Applied again unchanged, the pod is left alone; a new certificate in
        # the Secret replaces the key and rolls the pod (its variables are new).
        first = generation()
        with_engine(config, etcd, tmp_path, lambda e: apply(e, web(pairs)))
        assert generation() == first
        renewed = {**pairs, "shop": certificate(SHOP)}
        with_engine(config, etcd, tmp_path, lambda e: apply(e, web(renewed)))
        assert generation() == first + 1
        assert (
            gateway_keys(etcd, cluster)[f"/marina/gateway/certs/{cluster}/{SHOP}"]
            == (renewed["shop"])
        )
        # Without tls: plain host routes, and no certificates.
        services = with_engine(config, etcd, tmp_path, lambda e: apply(e, web(renewed, tls=False)))
        assert all(TLS_ANNOTATION not in s["metadata"]["annotations"] for s in services)
        published = gateway_keys(etcd, cluster)
        assert not [k for k in published if "/certs/" in k]
        assert published[f"/marina/gateway/routes/{cluster}/blog"]["tls"] is False
        # TLS again; then blog's service goes, and its route and certificate with it.
        with_engine(config, etcd, tmp_path, lambda e: apply(e, web(renewed)))
        assert len([k for k in gateway_keys(etcd, cluster) if "/certs/" in k]) == 2
        shop_only = web(renewed)
        shop_only["services"] = shop_only["services"][:1]
        with_engine(config, etcd, tmp_path, lambda e: apply(e, shop_only))
        assert sorted(gateway_keys(etcd, cluster)) == [
            f"/marina/gateway/certs/{cluster}/{SHOP}",
            f"/marina/gateway/routes/{cluster}/shop",
        ]
        # The pod goes: its routes and certificates go with it.
        with_engine(config, etcd, tmp_path, lambda e: e.delete_pod(cluster, PodId("web")))
        assert gateway_keys(etcd, cluster) == {}
    finally:
        with_engine(config, etcd, tmp_path, lambda e: e.delete_cluster(cluster))
        kube_api.remove_node(node)
