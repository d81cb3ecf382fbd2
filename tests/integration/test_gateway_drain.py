"""Connection draining: a request in flight on a backend that leaves its
route, or on a route whose process is reloaded or retired, is finished,
not cut; new requests go where the route now points."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from tests.integration.test_gateway import route, serves, status
from tests.support import Gateway, free_port, http_get, wait_for


class SlowBackend:
    """Answers `/slow` only once released, anything else at once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.holding = threading.Event()  # a /slow request is being held
        self.release = threading.Event()
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = backend.name.encode()
                if self.path == "/slow":
                    backend.holding.set()
                    backend.release.wait(30)
                    body = f"{backend.name} finished".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # health checks connect and hang up

        self.server = Server(("127.0.0.1", 0), Handler)
        self.host, self.port = "127.0.0.1", int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow() -> Iterator[Callable[[str], SlowBackend]]:
    started: list[SlowBackend] = []

    def make(name: str) -> SlowBackend:
        started.append(SlowBackend(name))
        return started[-1]

    yield make
    for backend in started:
        backend.stop()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def in_flight(pool: ThreadPoolExecutor, gw: Gateway, port: int, held: SlowBackend) -> Future:
    """A request to `/slow` that `held` is holding when this returns."""
    answer = pool.submit(http_get, f"http://{gw.address}:{port}/slow", timeout=30)
    wait_for(held.holding.is_set, what="the slow request to reach its backend")
    return answer


def test_a_request_in_flight_on_a_leaving_backend_finishes(
    etcd, cluster, backends, gateways, slow, pool
):
    fast = backends("fast")
    leaving = slow("leaving")
    gw = gateways(etcd.url, cluster)
    key = f"/marina/gateway/routes/{cluster}/web"
    etcd.put(key, route(30030, leaving))
    wait_for(serves(gw, 30030, "leaving"), what="the route")
    before = wait_for(
        lambda: status(etcd, gw).get("routes") == 1 and status(etcd, gw), what="the status"
    )
    answer = in_flight(pool, gw, 30030, leaving)
    # The backend leaves: its server slot is re-pointed at runtime.
    etcd.put(key, route(30030, fast))
    wait_for(serves(gw, 30030, "fast"), what="new requests on the new backend")
    assert not answer.done()
    leaving.release.set()
    assert answer.result(timeout=20) == (200, "leaving finished")
    after = wait_for(
        lambda: (
            status(etcd, gw).get("runtime_updates", 0) > before["runtime_updates"]
            and status(etcd, gw)
        ),
        what="the runtime update reported",
    )
    assert after["reloads"] == before["reloads"], "a backend change needs no reload"


def test_a_request_in_flight_on_a_backend_put_in_maintenance_finishes(
    etcd, cluster, backends, gateways, slow, pool
):
    fast = backends("fast")
    leaving = slow("leaving")
    gw = gateways(etcd.url, cluster)
    key = f"/marina/gateway/routes/{cluster}/web"
    etcd.put(key, route(30031, fast, leaving))
    wait_for(serves(gw, 30031, "fast"), what="the route")
    # Round robin: one of two requests reaches the slow backend.
    answers = [
        pool.submit(http_get, f"http://{gw.address}:30031/slow", timeout=30) for _ in range(2)
    ]
    wait_for(leaving.holding.is_set, what="a request held by the leaving backend")
    etcd.put(key, route(30031, fast))  # its slot goes to maintenance
    wait_for(
        lambda: all(http_get(gw.url(30031), timeout=2) == (200, "fast") for _ in range(4)),
        what="only the remaining backend taking requests",
    )
    leaving.release.set()
    assert sorted(a.result(timeout=20) for a in answers) == [
        (200, "fast"),
        (200, "leaving finished"),
    ]


def test_a_request_in_flight_survives_the_reload_and_the_removal_of_its_route(
    etcd, cluster, backends, gateways, slow, pool
):
    held = slow("held")
    other = backends("other")
    gw = gateways(etcd.url, cluster)
    port, next_port = free_port(gw.address), free_port(gw.address)
    key = f"/marina/gateway/routes/{cluster}/web"
    etcd.put(key, route(port, held))
    wait_for(serves(gw, port, "held"), what="a route on a port of its own")
    reloaded = in_flight(pool, gw, port, held)
    # A new port in the same part reloads the process that holds the request.
    etcd.put(f"/marina/gateway/routes/{cluster}/next", route(next_port, other))
    wait_for(serves(gw, next_port, "other"), what="the reload")
    assert not reloaded.done()
    etcd.delete(key)  # the route goes, and with it the port
    wait_for(lambda: status(etcd, gw).get("routes") == 1, what="the route removed")
    assert not reloaded.done()
    held.release.set()
    assert reloaded.result(timeout=20) == (200, "held finished")
