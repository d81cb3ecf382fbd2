"""What `marina up` keeps alive by itself, and what reaches running nodes.

The embedded etcd killed with SIGKILL is started again and everything finds
it again: the API, the worker, the node agents, the application. A package
upgraded in the catalog reaches the replicas started after it.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import zipfile

import pytest

from tests.e2e.marina import Marina
from tests.support import http_get, wait_for

pytestmark = pytest.mark.slow


def _package(version: str, page: str) -> bytes:
    manifest = f"""\
format: marina/1
name: pages
title: Pages
version: "{version}"
description: A static page served from the package's own files.
class: KubernetesApplication
properties:
  type: object
  additionalProperties: false
  properties:
    port: {{type: integer, default: 30431}}
template:
  pods:
    - name: pages
      replicas: 1
      containers:
        - name: pages
          image: python:3.11-slim
          command:
            - sh
            - -c
            - exec python3 -m http.server --bind "$POD_IP" --directory "${{package}}" 8080
          ports: [{{containerPort: 8080}}]
          cores: 0.1
          memory: 32
      services:
        - {{name: pages, port: "${{port}}", targetPort: 8080, scope: public}}
"""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("pages/manifest.yaml", manifest)
        archive.writestr("pages/page.txt", page)
    return buffer.getvalue()


def _etcd_pid(marina: Marina) -> int:
    found = subprocess.run(
        ["pgrep", "-f", f"etcd --name marina --data-dir {marina.state_dir / 'etcd'}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert len(found) == 1, found
    return int(found[0])


@pytest.fixture(scope="module")
def pages(marina: Marina) -> tuple[str, str]:
    status, payload = marina.call("POST", "/v1/catalog/packages", raw=_package("1.0.0", "one"))
    assert status == 201, payload
    env = marina.ok("POST", "/v1/environments", {"name": "pages"})["id"]
    marina.ok(
        "POST",
        f"/v1/environments/{env}/services",
        {"package": "kubernetes-cluster", "properties": {"name": "k", "nodeCount": 1}},
    )
    marina.ok("POST", f"/v1/environments/{env}/services", {"package": "pages", "properties": {}})
    for action in ("k:deploy", "Pages:deploy"):
        task = marina.run(env, action)
        assert task["state"] == "succeeded", (task.get("error"), task.get("result"))
    url = wait_for(lambda: marina.objects(env)["pages"]["endpoints"], timeout=30, what="endpoint")
    return str(env), str(url[0]).rstrip("/") + "/page.txt"


def test_an_upgraded_package_reaches_the_replicas_started_after_it(marina, pages):
    env, url = pages
    wait_for(lambda: http_get(url)[1] == "one", timeout=30, what="version 1 served")
    status, payload = marina.call("POST", "/v1/catalog/packages", raw=_package("1.0.1", "two"))
    assert status in (200, 201), payload
    task = marina.run(env, "pages:restartContainers")
    assert task["state"] == "succeeded", task
    wait_for(lambda: http_get(url)[1] == "two", timeout=30, what="version 2 served")


def test_a_killed_embedded_etcd_is_started_again_and_found_by_everyone(marina, pages):
    env, url = pages
    wait_for(lambda: http_get(url)[0] == 200, timeout=30, what="the page")
    before = _etcd_pid(marina)
    os.kill(before, signal.SIGKILL)
    wait_for(
        lambda: marina.call("GET", f"/v1/environments/{env}")[0] == 200,
        timeout=30,
        what="the API to answer again",
    )
    assert _etcd_pid(marina) != before
    assert http_get(url)[0] == 200
    # Node agents reconnected: an action that needs them goes through, no node is lost.
    task = marina.run(env, "pages:scalePodUp", timeout=120)
    assert task["state"] == "succeeded", task
    states = {
        name: obj["state"]
        for name, obj in marina.objects(env).items()
        if obj["?"]["type"].endswith("Node")
    }
    assert states and set(states.values()) == {"ready"}, states
    assert marina.objects(env)["pages"]["replicas"] == {"desired": 2, "ready": 2}
