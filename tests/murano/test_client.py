"""python-muranoclient's Python API, unchanged, against a real `marina up`."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from muranoclient.common import exceptions as exc

from catalog import keys
from tests.e2e.marina import Marina

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = {"?": {"type": "KubernetesCluster"}, "name": "k1", "nodeCount": 1, "gatewayCount": 1}


def wait_deployments(mc: Any, env_id: str, *, timeout: float = 240) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = mc.deployments.list(env_id)
        if found and all(d.state != "running" for d in found):
            return list(found)
        time.sleep(0.5)
    raise AssertionError(f"deployments of {env_id} still running after {timeout}s")


def test_x_auth_token_and_projects(marina: Marina, mc: Any, murano_for: Any) -> None:
    env = mc.environments.create({"name": "auth-check"})
    other = murano_for(marina.ok("POST", "/v1/tokens", {"project": "elsewhere"})["token"])
    assert env.id in [e.id for e in mc.environments.list()]
    assert env.id not in [e.id for e in other.environments.list()]
    with pytest.raises(exc.HTTPNotFound):
        other.environments.get(env.id)
    with pytest.raises(exc.HTTPUnauthorized):
        murano_for("mar_not-a-token").environments.list()
    mc.environments.delete(env.id)


def test_environment_create_show_rename_delete(marina: Marina, mc: Any) -> None:
    env = mc.environments.create({"name": "shop"})
    shown = mc.environments.get(env.id)
    assert shown.name == "shop"
    assert shown.services == [] and shown.objects == []
    assert (shown.status, shown.tenant_id, shown.version, shown.acquired_by) == (
        "ready",
        "admin",
        0,
        None,
    )
    assert shown.created and shown.updated
    renamed = mc.environments.update(env.id, "shop-2")
    assert renamed.name == "shop-2"
    assert mc.environments.get(env.id).name == "shop-2"
    with pytest.raises(exc.HTTPBadRequest) as refused:
        mc.environments.update(env.id, "")
    assert "name" in str(refused.value)
    with pytest.raises(exc.HTTPBadRequest) as abandoned:
        mc.environments.delete(env.id, abandon=True)
    assert "abandon" in str(abandoned.value)
    mc.environments.delete(env.id)
    deadline = time.monotonic() + 60
    while env.id in [e.id for e in mc.environments.list()]:
        assert time.monotonic() < deadline, "the environment was not deleted"
        time.sleep(0.2)


def test_session_edit_deploy_and_deployments(marina: Marina, mc: Any) -> None:
    env = mc.environments.create({"name": "deployed-by-session"})
    session = mc.sessions.configure(env.id)
    assert mc.sessions.get(env.id, session.id).state == "opened"
    added = mc.services.post(env.id, "/", dict(CLUSTER, gatewayCount=2), session.id)
    service_id = added.to_dict()["?"]["id"]
    assert added.gatewayCount == 2
    # Invisible to everyone else until deployed.
    assert mc.environments.get(env.id).services == []
    assert [s.name for s in mc.services.list(env.id, session.id)] == ["k1"]
    # Edited as `environment-apps-edit` does: the patched list PUT back.
    services = mc.environments.get(env.id, session.id).services
    services[0]["gatewayCount"] = 1
    mc.services.put(env.id, "/", services, session.id)
    assert mc.services.get(env.id, f"/{service_id}", session.id).gatewayCount == 1
    # And through the model's JSON patch.
    mc.environments.update_model(
        env.id, [{"op": "replace", "path": "/services/0/maxNodes", "value": 3}], session.id
    )
    assert mc.services.get(env.id, f"/{service_id}", session.id).maxNodes == 3
    mc.sessions.deploy(env.id, session.id)
    assert mc.sessions.get(env.id, session.id).state == "deployed"
    shown = mc.environments.get(env.id)
    assert shown.version == 1
    assert [(s["name"], s["gatewayCount"], s["maxNodes"]) for s in shown.services] == [("k1", 1, 3)]
    assert [o["?"]["type"] for o in shown.objects].count("GatewayNode") == 1
    (deployment,) = wait_deployments(mc, env.id)
    assert deployment.state == "success", deployment.to_dict()
    assert deployment.started and deployment.finished
    reports = mc.deployments.reports(env.id, deployment.id)
    assert reports and all(r.text for r in reports)
    # The deployment is the task of the cluster's deploy action: its result reads as before.
    assert mc.actions.get_result(env.id, deployment.id)["isException"] is False
    action_id = next(
        a for a in mc.environments.get(env.id).services[0]["?"]["_actions"] if "scaleNodesUp" in a
    )
    task_id = mc.actions.call(env.id, action_id)
    deadline = time.monotonic() + 240
    while (result := mc.actions.get_result(env.id, task_id)) is None:
        assert time.monotonic() < deadline, "scaleNodesUp did not finish"
        time.sleep(0.5)
    assert result["isException"] is False, result
    # A deployed service is not removed by a session (its pods run).
    later = mc.sessions.configure(env.id)
    with pytest.raises(exc.HTTPConflict) as refused:
        mc.services.delete(env.id, f"/{service_id}", later.id)
    assert "deployed" in str(refused.value)


def test_session_remove_delete_and_stale(marina: Marina, mc: Any) -> None:
    env = mc.environments.create({"name": "stale-sessions"})
    first = mc.sessions.configure(env.id)
    second = mc.sessions.configure(env.id)
    added = mc.services.post(env.id, "/", CLUSTER, second.id)
    mc.services.delete(env.id, "/" + added.to_dict()["?"]["id"], second.id)
    assert mc.services.list(env.id, second.id) == []
    mc.sessions.deploy(env.id, first.id)
    assert mc.environments.get(env.id).version == 1
    with pytest.raises(exc.HTTPForbidden) as refused:
        mc.sessions.deploy(env.id, second.id)
    assert "is invalid" in str(refused.value) and second.id in str(refused.value)
    with pytest.raises(exc.HTTPConflict):
        mc.sessions.deploy(env.id, first.id)  # already deployed
    mc.sessions.delete(env.id, second.id)
    with pytest.raises(exc.HTTPNotFound):
        mc.sessions.get(env.id, second.id)
    left = mc.sessions.configure(env.id)
    assert keys.session(env.id, left.id) in marina.etcd_keys(keys.sessions_of(env.id))
    mc.environments.delete(env.id)
    deadline = time.monotonic() + 60
    while env.id in [e.id for e in mc.environments.list()]:
        assert time.monotonic() < deadline, "the environment was not deleted"
        time.sleep(0.2)
    # Its open session and its version go with it.
    assert marina.etcd_keys(keys.sessions_of(env.id)) == []
    assert marina.etcd_keys(keys.environment_version(env.id)) == []


def test_session_refusals(mc: Any) -> None:
    env = mc.environments.create({"name": "refusals"})
    session = mc.sessions.configure(env.id)
    with pytest.raises(exc.HTTPBadRequest) as bad_patch:
        mc.environments.update_model(
            env.id, [{"op": "replace", "path": "/services/7/name", "value": "x"}], session.id
        )
    assert "/services/7/name" in str(bad_patch.value)
    with pytest.raises(exc.HTTPBadRequest) as unknown:
        mc.services.post(env.id, "/", {"?": {"type": "io.murano.apps.Nothing"}}, session.id)
    assert "?.type" in str(unknown.value)
    with pytest.raises(exc.HTTPBadRequest) as invalid:
        mc.services.post(env.id, "/", dict(CLUSTER, nodeCount=99), session.id)
    assert "nodeCount" in str(invalid.value)
    assert mc.services.list(env.id, session.id) == []
    mc.environments.delete(env.id)


def test_static_actions_are_refused_in_murano_shape(mc: Any) -> None:
    result = mc.static_actions.call(
        {
            "className": "KubernetesCluster",
            "methodName": "describe",
            "packageName": "kubernetes-cluster",
            "classVersion": "=0",
            "parameters": {},
        }
    )
    with pytest.raises(exc.HTTPNotFound) as refused:
        result.get_result()
    assert "declares no static action 'describe'" in str(refused.value)


def _pod_package(name: str) -> bytes:
    folder = ROOT / "packages" / "kubernetes-pod"
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    manifest["name"] = name
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.yaml", yaml.safe_dump(manifest))
        for path in folder.rglob("*"):
            if path.is_file() and path.name != "manifest.yaml":
                archive.writestr(str(path.relative_to(folder)), path.read_bytes())
    return buffer.getvalue()


def test_packages(marina: Marina, mc: Any) -> None:
    # Murano's multipart upload (what `packages.create` sends) of a Marina package.
    reply = requests.post(
        marina.api + "/v1/catalog/packages",
        headers={"X-Auth-Token": marina.token},
        data={"__metadata__": "{}"},
        files={"spare.zip": ("spare.zip", _pod_package("spare-pod"), "application/zip")},
        timeout=60,
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["id"] == "spare-pod"
    names = [p.id for p in mc.packages.filter(limit=1)]
    assert names == sorted(names) and {"guestbook", "kubernetes-pod", "spare-pod"} <= set(names)
    shown = mc.packages.get("spare-pod")
    assert (shown.enabled, shown.is_public, shown.class_definitions) == (
        True,
        True,
        ["KubernetesPod"],
    )
    with zipfile.ZipFile(io.BytesIO(mc.packages.download("spare-pod"))) as archive:
        assert yaml.safe_load(archive.read("manifest.yaml"))["name"] == "spare-pod"
    mc.packages.toggle_active("spare-pod")
    assert mc.packages.get("spare-pod").enabled is False
    assert "spare-pod" not in [p.id for p in mc.packages.list()]
    assert "spare-pod" in [p.id for p in mc.packages.list(include_disabled=True)]
    mc.packages.toggle_public("spare-pod")
    assert mc.packages.get("spare-pod").is_public is False
    with pytest.raises(exc.HTTPBadRequest) as refused:
        mc.packages.update("spare-pod", {"name": "other"})
    assert "/name" in str(refused.value)
    assert mc.categories.list() == []
    mc.packages.delete("spare-pod")
    with pytest.raises(exc.HTTPNotFound):
        mc.packages.get("spare-pod")


def test_murano_package_import_names_what_is_not_supported(mc: Any, tmp_path: Path) -> None:
    manifest = {
        "Format": "MuranoPL/1.0",
        "Type": "Application",
        "FullName": "io.example.Web",
        "Name": "Web",
        "Description": "A MuranoPL application",
        "Author": "Example",
        "Classes": {"io.example.Web": "Web.yaml"},
        "UI": "ui.yaml",
        "Logo": "logo.png",
    }
    path = tmp_path / "web.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.yaml", yaml.safe_dump(manifest))
        archive.writestr("Classes/Web.yaml", "Name: io.example.Web\n")
        archive.writestr("UI/ui.yaml", "Version: 2\n")
        archive.writestr("logo.png", b"\x89PNG")
    with open(path, "rb") as handle, pytest.raises(exc.HTTPBadRequest) as refused:
        mc.packages.create({}, {"web.zip": handle})
    assert "Classes/Web.yaml" in str(refused.value)
    assert "MuranoPL" in str(refused.value)
    assert "io.example.Web" not in [p.id for p in mc.packages.list()]
