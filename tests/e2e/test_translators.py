"""The guestbook written as a compose file: imported, deployed, serving.

The compose file (tests/data/translators/compose/23-guestbook.yml) mounts
the guestbook's own code from ./guestbook-app; the test puts the two files of
packages/guestbook there, imports with `marina import` against a real
`marina up`, deploys on the local engine and signs the guestbook through its
public URL, which only works when the front end found the store through the
link variables.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.marina import Marina
from tests.support import http_get, wait_for

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "tests" / "data" / "translators" / "compose" / "23-guestbook.yml"


def cli(marina: Marina, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "catalog.cli", "--state-dir", str(marina.state_dir), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_guestbook_compose_file_imports_deploys_and_serves(marina: Marina, tmp_path: Path):
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    (tmp_path / "guestbook-app").mkdir()
    for name in ("web.py", "store.py"):
        shutil.copy(ROOT / "packages" / "guestbook" / name, tmp_path / "guestbook-app" / name)

    imported = cli(marina, "import", str(tmp_path / "docker-compose.yml"), "--strict")
    # Only the bind mounts are reported (as packaged), so --strict refuses it...
    assert imported.returncode == 1, imported.stderr
    assert imported.stderr.count("[packaged]") == 2
    imported = cli(marina, "import", str(tmp_path / "docker-compose.yml"))
    assert imported.returncode == 0, imported.stderr
    assert "imported guestbook-compose: compose, 2 services, 2 warnings" in imported.stdout
    again = cli(marina, "import", str(tmp_path / "docker-compose.yml"))
    assert again.returncode == 1 and "exists" in again.stderr

    env = marina.ok("POST", "/v1/environments", {"name": "compose"})["id"]
    marina.ok(
        "POST",
        f"/v1/environments/{env}/services",
        {"package": "kubernetes-cluster", "properties": {"name": "k1", "nodeCount": 1}},
    )
    marina.ok(
        "POST",
        f"/v1/environments/{env}/services",
        {"package": "guestbook-compose", "properties": {"web_public_port": 30093}},
    )
    for action in ("k1:deploy", "guestbook-compose:deploy"):
        task = marina.run(env, action)
        assert task["state"] == "succeeded", task
    url = wait_for(
        lambda: next((e for e in marina.objects(env)["web"]["endpoints"] if ":30093" in e), None),
        timeout=30,
        what="the public endpoint",
    )
    wait_for(lambda: http_get(url)[0] == 200, timeout=30, what="the guestbook")
    _, page = http_get(url)
    assert "Compose guestbook" in page
    form = urllib.parse.urlencode({"message": "signed through compose"}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=form), timeout=5) as reply:
        assert reply.status in (200, 303)
    assert "signed through compose" in http_get(url)[1]


def test_api_import_answers_the_package_and_its_warnings(marina: Marina):
    data = COMPOSE.read_bytes()
    status, payload = marina.call(
        "POST",
        "/v1/packages/import?filename=docker-compose.yml&name=gb-upload&dry_run=true",
        raw=data,
    )
    assert status == 200, payload
    assert payload["saved"] is False and payload["format"] == "compose"
    assert payload["package"]["name"] == "gb-upload"
    # Uploaded alone, the file's bind mounts cannot be read: said, not dropped.
    assert [(w["pointer"], w["code"]) for w in payload["warnings"]] == [
        ("/services/store/volumes/0", "not-carried"),
        ("/services/web/volumes/0", "not-carried"),
    ]
    names = [p["name"] for p in marina.ok("GET", "/v1/catalog/packages")["packages"]]
    assert "gb-upload" not in names

    status, payload = marina.call(
        "POST", "/v1/packages/import?filename=x.yml&name=gb-upload", raw=data
    )
    assert status == 201 and payload["saved"] is True
    status, payload = marina.call(
        "POST", "/v1/packages/import?filename=x.yml&name=gb-upload", raw=data
    )
    assert status == 409, payload


def test_api_import_refuses_a_bad_file_naming_the_line(marina: Marina):
    bad = ROOT / "tests" / "data" / "translators" / "bad" / "duplicate-key.yml"
    status, payload = marina.call(
        "POST", "/v1/packages/import?filename=duplicate-key.yml", raw=bad.read_bytes()
    )
    assert status == 400
    assert payload["error"] == "bad_source"
    assert payload["problems"] == [
        {"field": "/services/web", "rule": "is given twice", "value": None, "line": 5}
    ]
    status, payload = marina.call(
        "POST", "/v1/packages/import?filename=x.yml", raw=b"services: {}\n", token="mar_wrong"
    )
    assert status == 401
    assert json.dumps(payload)


# Waits for a connection to each port in turn, leaving a file behind each: the
# test decides when the container moves on, so nothing hangs on timing.
GATED = """
import os, socket, time
for port, mark in ((os.environ["SLOW_PORT"], "slow"), (os.environ["READY_PORT"], "ready")):
    while True:
        try:
            socket.create_connection(("127.0.0.1", int(port)), 1).close()
            break
        except OSError:
            time.sleep(0.2)
    open(os.path.join(os.environ["HOME"], mark), "w").close()
while True:
    time.sleep(60)
"""


def test_compose_health_check_holds_a_replica_back_until_it_passes(marina: Marina):
    slow, ready = socket.socket(), socket.socket()
    with slow, ready:
        # Bound, not listening: connections are refused until the test listens.
        slow.bind(("127.0.0.1", 0))
        ready.bind(("127.0.0.1", 0))
        compose = {
            "name": "gated-app",
            "services": {
                "gated": {
                    "image": "example/gated:1",
                    "command": ["python3", "-c", GATED],
                    "environment": {
                        "SLOW_PORT": str(slow.getsockname()[1]),
                        "READY_PORT": str(ready.getsockname()[1]),
                    },
                    "healthcheck": {
                        # Fails, then hangs past its timeout, then passes.
                        "test": [
                            "CMD-SHELL",
                            'test -f "$$HOME/ready" || { test -f "$$HOME/slow" && sleep 60.25; }',
                        ],
                        "interval": "1s",
                        "timeout": "2s",
                    },
                }
            },
        }
        status, payload = marina.call(
            "POST",
            "/v1/packages/import?filename=docker-compose.yml&name=gated-app",
            raw=yaml.safe_dump(compose).encode(),
        )
        assert status == 201, payload
        assert payload["warnings"] == []
        env = marina.ok("POST", "/v1/environments", {"name": "gated"})["id"]
        marina.ok(
            "POST",
            f"/v1/environments/{env}/services",
            {"package": "kubernetes-cluster", "properties": {"name": "k1", "nodeCount": 1}},
        )
        marina.ok("POST", f"/v1/environments/{env}/services", {"package": "gated-app"})
        assert marina.run(env, "k1:deploy")["state"] == "succeeded"
        task = marina.ok(
            "POST",
            f"/v1/environments/{env}/actions/{marina.action_id(env, 'gated-app:deploy')}",
            {},
        )["task_id"]

        def replica() -> dict[str, Any]:
            status = marina.objects(env)["gated"].get("status") or {}
            return next(iter(status.get("replicas", [])), {})

        def reason_is(text: str) -> Callable[[], bool]:
            return lambda: replica().get("reason") == text

        wait_for(reason_is("readiness probe failed: exit code 1"), timeout=90, what="a failure")
        assert replica()["ready"] is False
        assert marina.objects(env)["gated"]["replicas"]["ready"] == 0
        slow.listen()
        wait_for(reason_is("readiness probe timed out after 2s"), timeout=60, what="a timeout")
        assert replica()["ready"] is False
        ready.listen()
        wait_for(lambda: replica().get("ready"), timeout=60, what="ready")
        assert replica()["reason"] == ""
        marina.wait_task(task)
        # The probe that hung was killed at its timeout: none of its sleeps is left.
        assert not _processes_running("sleep 60.25")


def _processes_running(command: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"^{command}$"], capture_output=True, text=True)
    return found.stdout.split()
