"""The `murano` command (python-muranoclient's shell) with a Marina token."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.marina import Marina

MURANO = Path(sys.executable).with_name("murano")


def murano(marina: Marina, *args: str) -> str:
    done = subprocess.run(
        [
            str(MURANO),
            "--os-auth-token",
            marina.token,
            "--murano-url",
            marina.api,
            "--os-no-client-auth",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def test_environment_session_apps_edit_deploy(marina: Marina, tmp_path: Path) -> None:
    murano(marina, "environment-create", "cli-shop")
    listed = marina.ok("GET", "/v1/environments")["environments"]
    env = next(e["id"] for e in listed if e["name"] == "cli-shop")
    assert env in murano(marina, "environment-list")
    session = murano(marina, "environment-session-create", env).split("|")[-2].strip()
    patch = tmp_path / "patch.json"
    cluster = {"?": {"type": "KubernetesCluster"}, "name": "k1", "gatewayCount": 1}
    patch.write_text(json.dumps([{"op": "add", "path": "/-", "value": cluster}]))
    murano(marina, "environment-apps-edit", "--session-id", session, env, str(patch))
    assert marina.ok("GET", f"/v1/environments/{env}")["services"] == []  # not deployed yet
    shown = murano(marina, "environment-deploy", env, "--session-id", session)
    assert "k1" in shown and "tenant_id" in shown
    assert [s["name"] for s in marina.ok("GET", f"/v1/environments/{env}")["services"]] == ["k1"]
    (task,) = marina.ok("GET", f"/v1/environments/{env}/tasks")["tasks"]
    assert task["id"] in murano(marina, "deployment-list", env)
