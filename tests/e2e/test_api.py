"""The REST API's contract: authentication, projects, validation, results, files."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest

from tests.e2e.marina import Marina


@pytest.fixture(scope="module")
def env(marina: Marina) -> str:
    env_id = marina.ok("POST", "/v1/environments", {"name": "api"})["id"]
    marina.ok(
        "POST",
        f"/v1/environments/{env_id}/services",
        {"package": "kubernetes-cluster", "properties": {"name": "k"}},
    )
    return str(env_id)


def fields(payload: dict) -> set[str]:
    return {p["field"] for p in payload.get("problems", [])}


def test_tokens_are_required(marina):
    assert marina.call("GET", "/v1/environments", token="")[0] == 401
    status, payload = marina.call("GET", "/v1/environments", token="mar_wrong")
    assert status == 401 and payload["error"] == "unauthorized"


def test_openapi_document_lists_the_routes(marina):
    status, doc = marina.call("GET", "/v1/openapi.json", token="")
    assert status == 200 and doc["openapi"].startswith("3.")
    for path in (
        "/v1/environments",
        "/v1/environments/{env_id}/actions/{action_id}",
        "/v1/tasks/{task_id}/log",
        "/v1/catalog/packages",
    ):
        assert path in doc["paths"]


def test_bad_input_is_a_400_naming_the_field(marina, env):
    status, payload = marina.call("POST", "/v1/environments", {"name": ""})
    assert status == 400 and fields(payload) == {"name"}
    status, payload = marina.call("POST", "/v1/environments", raw=b"{not json")
    assert status == 400 and fields(payload) == {"body"}
    status, payload = marina.call("POST", "/v1/environments", [1, 2])
    assert status == 400
    status, payload = marina.call(
        "POST",
        f"/v1/environments/{env}/services",
        {
            "package": "kubernetes-cluster",
            "properties": {"name": "k2", "nodeCount": 0, "flavor": 3, "bogus": 1},
        },
    )
    assert status == 400
    assert {"nodeCount", "flavor"} <= fields(payload)
    assert any("bogus" in p["rule"] for p in payload["problems"])
    status, payload = marina.call(
        "POST", f"/v1/environments/{env}/services", {"package": "no-such-package"}
    )
    assert status == 404
    status, payload = marina.call(
        "POST",
        f"/v1/environments/{env}/services",
        {
            "package": "kubernetes-pod",
            "properties": {"name": "p", "containers": [{"name": "Bad Name"}]},
        },
    )
    assert status == 400
    assert {"pod p.containers[0].name", "pod p.containers[0].image"} <= fields(payload)


def test_action_arguments_are_checked_before_queueing(marina, env):
    action = marina.action_id(env, "k:scaleNodes")
    status, payload = marina.call(
        "POST", f"/v1/environments/{env}/actions/{action}", {"count": "three"}
    )
    assert status == 400 and fields(payload) == {"count"}
    status, payload = marina.call("POST", f"/v1/environments/{env}/actions/{action}", {})
    assert status == 400 and fields(payload) == {"count"}
    status, _ = marina.call("POST", f"/v1/environments/{env}/actions/{action[:-11]}_nope", {})
    assert status == 404
    listed = marina.ok("GET", f"/v1/environments/{env}/actions")["actions"]
    scale = next(a for a in listed if a["name"] == "scaleNodes")
    assert scale["schema"]["required"] == ["count"] and scale["title"]


def test_projects_see_only_their_own(marina, env):
    token = marina.ok("POST", "/v1/tokens", {"project": "other"})["token"]
    status, payload = marina.call("GET", "/v1/environments", token=token)
    assert status == 200 and payload["environments"] == []
    assert marina.call("GET", f"/v1/environments/{env}", token=token)[0] == 404
    action = marina.action_id(env, "k:exportConfig")
    assert (
        marina.call("POST", f"/v1/environments/{env}/actions/{action}", {}, token=token)[0] == 404
    )
    assert marina.call("POST", "/v1/tokens", {"project": "x"}, token=token)[0] == 401
    status, payload = marina.call("POST", "/v1/tokens", {"project": "Bad Project"})
    assert status == 400 and fields(payload) == {"project"}


def test_export_config_result_and_download(marina, env):
    action = marina.action_id(env, "k:exportConfig")
    task_id = marina.ok("POST", f"/v1/environments/{env}/actions/{action}", {})["task_id"]
    task = marina.wait_task(task_id)
    assert task["state"] == "succeeded" and task["files"]
    result = marina.ok("GET", f"/v1/environments/{env}/actions/{task_id}")
    assert result["isException"] is False and result["result"]["outcome"] == "changed"
    status, data = marina.call("GET", f"/v1/tasks/{task_id}/files/{task['files'][0]}")
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert "apply.sh" in archive.getnames()
    log = marina.ok("GET", f"/v1/tasks/{task_id}/log")["log"]
    assert any("exported" in line["message"] for line in log)
    assert marina.call("GET", f"/v1/tasks/{task_id}/files/nope")[0] == 404


def test_an_action_on_an_undeployed_cluster_fails_with_a_reason(marina, env):
    task = marina.run(env, "k:scaleNodesUp")
    assert task["state"] == "failed"
    assert "not deployed" in task["error"]
    result = marina.ok("GET", f"/v1/environments/{env}/actions/{task['id']}")
    assert result["isException"] is True


def test_package_upload_is_validated(marina):
    status, payload = marina.call("POST", "/v1/catalog/packages", raw=b"not a zip")
    assert status == 400 and "not a zip" in payload["message"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "hello/manifest.yaml",
            "format: marina/1\nname: hello\n"
            "version: '0.1.0'\ndescription: Hi.\nclass: KubernetesPod\n"
            "properties: {type: object, properties: {}}\n",
        )
    status, payload = marina.call("POST", "/v1/catalog/packages", raw=buffer.getvalue())
    assert status == 201 and payload["name"] == "hello"
    names = {p["name"] for p in marina.ok("GET", "/v1/catalog/packages")["packages"]}
    assert {"hello", "guestbook", "kubernetes-cluster", "kubernetes-pod"} <= names
    token = marina.ok("POST", "/v1/tokens", {"project": "uploader"})["token"]
    assert marina.call("POST", "/v1/catalog/packages", raw=buffer.getvalue(), token=token)[0] == 401


def test_unknown_routes_and_methods_answer_json(marina):
    status, payload = marina.call("GET", "/v1/nothing-here")
    assert status == 404 and payload["error"] == "http"
    status, payload = marina.call("PUT", "/v1/environments")
    assert status == 405


def test_deleting_an_environment(marina):
    env = marina.ok("POST", "/v1/environments", {"name": "short-lived"})["id"]
    marina.ok(
        "POST",
        f"/v1/environments/{env}/services",
        {"package": "kubernetes-cluster", "properties": {"name": "gone"}},
    )
    status, payload = marina.call("DELETE", f"/v1/environments/{env}")
    assert status == 202
    late, _ = marina.call("POST", f"/v1/environments/{env}/services", {"package": "guestbook"})
    assert late in (201, 404, 409)  # before, during or after the teardown; never a 500
    task = marina.wait_task(payload["task_id"])
    assert task["state"] == "succeeded", task
    assert marina.call("GET", f"/v1/environments/{env}")[0] == 404
    assert env not in {e["id"] for e in marina.ok("GET", "/v1/environments")["environments"]}


def test_an_export_imports_as_a_new_environment(marina):
    env = marina.ok("POST", "/v1/environments", {"name": "original"})["id"]
    marina.ok(
        "POST",
        f"/v1/environments/{env}/services",
        {"package": "kubernetes-cluster", "properties": {"name": "k", "nodeCount": 3}},
    )
    marina.ok(
        "POST",
        f"/v1/environments/{env}/services",
        {
            "package": "kubernetes-pod",
            "properties": {
                "name": "api",
                "replicas": 2,
                "containers": [
                    {
                        "name": "api",
                        "image": "example/api:1",
                        "command": ["run-api"],
                        "secrets": {"TOKEN": "t0p"},
                        "ports": [{"containerPort": 9000}],
                    }
                ],
                "services": [{"name": "api", "port": 9000, "scope": "internal"}],
            },
        },
    )
    shown = marina.ok("GET", f"/v1/environments/{env}")
    api_pod = next(o for o in shown["objects"] if o["?"]["name"] == "api")
    assert api_pod["spec"]["containers"][0]["secrets"] == {"TOKEN": "******"}
    task = marina.run(env, "k:exportConfig")
    status, data = marina.call("GET", f"/v1/tasks/{task['id']}/files/{task['files'][0]}")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        snapshot = json.loads(archive.extractfile("marina.json").read())
    status, imported = marina.call(
        "POST", "/v1/environments/import", {"name": "copy", "snapshot": snapshot}
    )
    assert status == 201, imported
    names = {o["?"]["name"]: o for o in imported["objects"]}
    assert imported["name"] == "copy" and imported["id"] != env
    assert names["k"]["properties"]["nodeCount"] == 3
    assert names["api"]["replicas"]["desired"] == 2
    assert names["api"]["?"]["id"] != api_pod["?"]["id"]
    status, payload = marina.call("POST", "/v1/environments/import", {"format": "other"})
    assert status == 400 and fields(payload) == {"format"}
