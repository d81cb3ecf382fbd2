"""etcd as `marina up` runs it: TLS with client certificates on both ports.

Whoever lacks a certificate of Marina's CA gets nothing; Marina's store and
the gateway, given theirs, work as on a plain etcd, and find etcd again after
it restarts.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog.errors import StoreUnavailable
from catalog.pki import ensure_etcd_pki
from catalog.store import Store
from tests.support import Etcd, http_get, wait_for

RANGE = json.dumps({"key": "AA=="}).encode()


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    base = tmp_path_factory.mktemp("tls-etcd")
    server = Etcd(base / "data", pki=base / "pki").start()
    yield server
    server.stop()


def test_certificate_files_are_private_and_reused(tmp_path: Path):
    first = ensure_etcd_pki(tmp_path / "pki")
    assert (tmp_path / "pki").stat().st_mode & 0o777 == 0o700
    for path in (tmp_path / "pki").iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    before = first.client.cert.read_bytes()
    again = ensure_etcd_pki(tmp_path / "pki")
    assert again.client.cert.read_bytes() == before


def test_plain_http_gets_nothing(tls_etcd: Etcd):
    plain = tls_etcd.url.replace("https://", "http://") + "/v3/kv/range"
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(urllib.request.Request(plain, data=RANGE), timeout=5).close()


def test_tls_without_a_client_certificate_is_refused(tls_etcd: Etcd):
    assert tls_etcd.tls is not None
    context = ssl.create_default_context(cafile=str(tls_etcd.tls.ca))
    request = urllib.request.Request(tls_etcd.url + "/v3/kv/range", data=RANGE)
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(request, timeout=5, context=context).close()


def test_a_certificate_of_another_ca_is_refused(tls_etcd: Etcd, tmp_path: Path):
    stranger = ensure_etcd_pki(tmp_path / "other-pki").client
    assert tls_etcd.tls is not None
    context = ssl.create_default_context(cafile=str(tls_etcd.tls.ca))
    context.load_cert_chain(str(stranger.cert), str(stranger.key))
    request = urllib.request.Request(tls_etcd.url + "/v3/kv/range", data=RANGE)
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(request, timeout=5, context=context).close()


def test_the_peer_port_wants_a_certificate_too(tls_etcd: Etcd):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        socket.create_connection(("127.0.0.1", tls_etcd.peer_port), timeout=5) as raw,
        context.wrap_socket(raw) as conn,
    ):
        conn.sendall(b"GET /members HTTP/1.1\r\nHost: x\r\n\r\n")
        if not conn.recv(1024):
            raise ConnectionError("closed")


def test_the_store_needs_its_certificate(tls_etcd: Etcd, cluster: str):
    async def scenario() -> None:
        async with Store(tls_etcd.url, tls=tls_etcd.tls) as store:
            await store.put(f"/t/{cluster}/tls", {"n": 1})
            assert (await store.get(f"/t/{cluster}/tls")).value == {"n": 1}
        async with Store(tls_etcd.url, timeout=2) as anonymous:
            with pytest.raises(StoreUnavailable):
                await anonymous.get(f"/t/{cluster}/tls")

    asyncio.run(scenario())


def test_the_store_finds_etcd_again_after_a_restart(tmp_path: Path, cluster: str):
    server = Etcd(tmp_path / "data", pki=tmp_path / "pki").start()

    async def scenario() -> None:
        async with Store(server.url, tls=server.tls, timeout=2) as store:
            await store.put(f"/t/{cluster}/r", {"n": 1})
            await asyncio.to_thread(server.stop)
            with pytest.raises(StoreUnavailable):
                await store.get(f"/t/{cluster}/r")
            await asyncio.to_thread(server.start)
            for _ in range(100):
                try:
                    found = await store.get(f"/t/{cluster}/r")
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.2)
            else:
                raise AssertionError("the store never reached the restarted etcd")
            assert found is not None and found.value == {"n": 1}

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_a_gateway_with_its_certificate_serves_routes(tls_etcd, cluster, backends, gateways):
    assert tls_etcd.tls is not None
    backend = backends("tls")
    gw = gateways(tls_etcd.url, cluster, *tls_etcd.tls.args())
    tls_etcd.put(
        f"/marina/gateway/routes/{cluster}/web",
        {"port": 30007, "mode": "http", "backends": [{"host": backend.host, "port": backend.port}]},
    )
    wait_for(
        lambda: http_get(f"http://{gw.address}:30007/")[1] == "tls",
        timeout=20,
        what="the route served",
    )
    assert tls_etcd.get(f"/marina/gateway/status/{gw.ident}")["last_error"] is None


def test_a_gateway_refuses_incomplete_tls_options(tls_etcd, tmp_path):
    import subprocess
    import sys

    assert tls_etcd.tls is not None
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--etcd", tls_etcd.url, "--cluster", "c",
         "--address", "127.0.0.1", "--etcd-cacert", str(tls_etcd.tls.ca)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "go together" in done.stderr
