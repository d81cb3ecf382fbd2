"""Per-project quotas through the real API: refused with a 429 naming the quota."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.marina import Marina
from tests.support import wait_for

QUOTAS = {"ENVIRONMENTS": "3", "NODES": "6", "PODS": "2", "TASKS": "4"}


@pytest.fixture(scope="module")
def marina(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
) -> Iterator[Marina]:
    for name, value in QUOTAS.items():
        monkeypatch_module.setenv(f"MARINA_QUOTA_{name}", value)
    server = Marina(tmp_path_factory.mktemp("quotas") / "state").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_quotas_are_enforced_per_project(marina):
    tenant = marina.ok("POST", "/v1/tokens", {"project": "small"})["token"]
    envs = [
        marina.call("POST", "/v1/environments", {"name": f"e{i}"}, token=tenant) for i in range(4)
    ]
    assert [status for status, _ in envs] == [201, 201, 201, 429]
    assert envs[3][1]["quota"] == "environments"
    # Another project keeps its own quota.
    assert marina.call("POST", "/v1/environments", {"name": "admin's"})[0] == 201

    env = envs[0][1]["id"]
    cluster = {"package": "kubernetes-cluster", "properties": {"name": "k", "nodeCount": 8}}
    status, payload = marina.call("POST", f"/v1/environments/{env}/services", cluster, token=tenant)
    assert status in (400, 429)
    cluster["properties"]["nodeCount"] = 2
    status, payload = marina.call("POST", f"/v1/environments/{env}/services", cluster, token=tenant)
    assert status == 201, payload
    actions = marina.call("GET", f"/v1/environments/{env}/actions", token=tenant)[1]["actions"]
    scale = next(a["id"] for a in actions if a["name"] == "scaleNodes")
    status, payload = marina.call(
        "POST", f"/v1/environments/{env}/actions/{scale}", {"count": 5}, token=tenant
    )
    assert status == 429 and payload["quota"] == "nodes"

    pod = {
        "containers": [{"name": "c", "image": "x", "command": ["run"]}],
    }
    for i, expected in enumerate((201, 201, 429)):
        status, payload = marina.call(
            "POST",
            f"/v1/environments/{env}/services",
            {"package": "kubernetes-pod", "properties": {**pod, "name": f"p{i}"}},
            token=tenant,
        )
        assert status == expected, payload
    assert payload["quota"] == "pods"

    export = next(a["id"] for a in actions if a["name"] == "exportConfig")
    first = None
    for _ in range(6):  # finished tasks make room for new ones
        status, payload = marina.call(
            "POST", f"/v1/environments/{env}/actions/{export}", {}, token=tenant
        )
        assert status == 202, payload
        first = first or payload["task_id"]
        wait_for(
            lambda t=payload["task_id"]: (
                marina.call("GET", f"/v1/tasks/{t}", token=tenant)[1]["state"]
                in ("succeeded", "failed")
            ),
            timeout=60,
            what="the export",
        )
    assert marina.call("GET", f"/v1/tasks/{first}", token=tenant)[0] == 404
