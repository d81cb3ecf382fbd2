"""HTTP routing by host name and path prefix on a shared port."""

from __future__ import annotations

import http.client

from tests.integration.test_gateway import route, status
from tests.support import Gateway, free_port, wait_for


def get(gw: Gateway, port: int, host: str, path: str = "/") -> tuple[int, str]:
    conn = http.client.HTTPConnection(gw.address, port, timeout=2)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_routes_share_a_port_by_host_name_and_path(etcd, cluster, backends, gateways):
    shop, blog, api = backends("shop"), backends("blog"), backends("api")
    gw = gateways(etcd.url, cluster)
    port = free_port(gw.address)
    key = f"/marina/gateway/routes/{cluster}"
    etcd.put(f"{key}/shop", route(port, shop, hosts=["shop.example", "*.shop.example"]))
    etcd.put(f"{key}/blog", route(port, blog, hosts=["blog.example"]))
    etcd.put(f"{key}/shop-api", route(port, api, hosts=["shop.example"], paths=["/api"]))
    wait_for(lambda: get(gw, port, "shop.example") == (200, "shop"), what="shop by host name")
    wait_for(lambda: get(gw, port, "shop.example", "/api/v1") == (200, "api"), what="api")
    assert get(gw, port, "blog.example:8080") == (200, "blog")
    assert get(gw, port, "BLOG.example") == (200, "blog")
    assert get(gw, port, "eu.shop.example") == (200, "shop")
    assert get(gw, port, "shop.example", "/apis") == (200, "api")  # a prefix, as path_beg
    assert get(gw, port, "other.example")[0] == 404
    # A change to one host's backends is served; the others stay.
    etcd.put(f"{key}/blog", route(port, shop, hosts=["blog.example"]))
    wait_for(lambda: get(gw, port, "blog.example") == (200, "shop"), what="blog moved")
    assert get(gw, port, "shop.example", "/api") == (200, "api")


def test_conflicting_host_routes_are_reported(etcd, cluster, backends, gateways):
    a, b = backends("a"), backends("b")
    gw = gateways(etcd.url, cluster)
    port = free_port(gw.address)
    key = f"/marina/gateway/routes/{cluster}"
    etcd.put(f"{key}/first", route(port, a, hosts=["app.example"]))
    etcd.put(f"{key}/second", route(port, b, hosts=["app.example", "two.example"]))
    etcd.put(f"{key}/third", route(port, b))
    etcd.put(f"{key}/fourth", route(port, b, hosts=["app.example\n"]))
    etcd.put(f"{key}/fifth", route(30005, b, hosts=["five.example"]))
    etcd.put(f"{key}/sixth", route(port, b, hosts=["six.example"], paths=["/a b"]))
    st = wait_for(
        lambda: len(status(etcd, gw).get("skipped", [])) == 5 and status(etcd, gw),
        what="conflicts reported",
    )
    reasons = {s["service"]: s["reason"] for s in st["skipped"]}
    assert "host app.example path / is already served for 'first'" in reasons["second"]
    assert "shared by routes with host names" in reasons["third"]
    assert "must be a host name" in reasons["fourth"]
    assert "port range" in reasons["fifth"]
    assert "must be a path prefix" in reasons["sixth"]
    wait_for(lambda: get(gw, port, "app.example") == (200, "a"), what="the first route")
    assert get(gw, port, "two.example")[0] == 404
