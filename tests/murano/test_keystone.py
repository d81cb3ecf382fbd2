"""Keystone tokens (`marina up --keystone-url`), against the real Keystone of
the OpenStack control plane: the Python API with a project user's token and
the `murano` command logging in with `--os-auth-url`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.marina import Marina
from tests.openstack.controlplane import PROJECT
from tests.openstack.fixtures import TestCloud

MURANO = Path(sys.executable).with_name("murano")


@pytest.fixture(scope="module")
def cloud(openstack_cloud: TestCloud) -> TestCloud:
    if openstack_cloud.plane is None:
        pytest.skip("needs the control plane started here (its user's password)")
    return openstack_cloud


@pytest.fixture(scope="module")
def keystone_marina(tmp_path_factory: pytest.TempPathFactory, cloud: TestCloud) -> Iterator[Marina]:
    assert cloud.plane is not None
    server = Marina(
        tmp_path_factory.mktemp("marina-keystone") / "state",
        args=("--keystone-url", cloud.plane.keystone_url),
    ).start()
    yield server
    server.stop()


def test_keystone_tokens_map_to_projects(
    keystone_marina: Marina, cloud: TestCloud, murano_for: Any
) -> None:
    conn = cloud.connect()
    try:
        token = conn.auth_token
    finally:
        conn.close()
    from muranoclient.common import exceptions as exc
    from muranoclient.v1.client import Client

    mc = Client(keystone_marina.api, token=token, timeout=60)
    env = mc.environments.create({"name": "from-keystone"})
    assert mc.environments.get(env.id).tenant_id == PROJECT
    # The same project through a Marina token; another project does not see it.
    own = keystone_marina.ok("POST", "/v1/tokens", {"project": PROJECT})["token"]
    status, shown = keystone_marina.call("GET", f"/v1/environments/{env.id}", token=own)
    assert status == 200 and shown["project"] == PROJECT
    other = keystone_marina.ok("POST", "/v1/tokens", {"project": "elsewhere"})["token"]
    assert keystone_marina.call("GET", f"/v1/environments/{env.id}", token=other)[0] == 404
    with pytest.raises(exc.HTTPUnauthorized):
        Client(keystone_marina.api, token="gAAAAA-not-a-token").environments.list()


def test_murano_command_logs_in_at_keystone(keystone_marina: Marina, cloud: TestCloud) -> None:
    assert cloud.plane is not None
    command = [
        str(MURANO),
        "--os-auth-url",
        cloud.plane.keystone_url,
        "--os-username",
        PROJECT,
        "--os-password",
        cloud.plane.user_password,
        "--os-project-name",
        PROJECT,
        "--os-user-domain-id",
        "default",
        "--os-project-domain-id",
        "default",
        "--murano-url",
        keystone_marina.api,
    ]
    created = subprocess.run(
        [*command, "environment-create", "cli-keystone"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    listed = subprocess.run(
        [*command, "environment-list"], capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    assert "cli-keystone" in listed.stdout
