"""pytest fixtures: one OpenStack control plane per test session.

`MARINA_TEST_CLOUD=name` (with `MARINA_TEST_ADMIN_CLOUD=name` for what needs
an admin, from the usual clouds.yaml) runs the same tests against a real
cloud instead of starting one here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.openstack.controlplane import (
    ADMIN_CLOUD,
    REPO,
    USER_CLOUD,
    ControlPlane,
    ControlPlaneError,
)

LOGS = REPO / "artifacts" / "openstack-logs"
STARTS: list[dict[str, float]] = []
"""How long each start of this session took, step by step (shown in pytest's summary)."""

TAG = "marina-test"
"""Every resource a test makes carries this tag, so a leftover is found by it."""


@dataclass(frozen=True)
class TestCloud:
    """Where the tests' clouds are described, and their names."""

    __test__ = False  # not a test class, despite its name

    cloud: str
    admin_cloud: str
    clouds_yaml: Path | None
    plane: ControlPlane | None

    def connect(self, *, admin: bool = False) -> Any:
        import openstack.config
        import openstack.connection

        files = [str(self.clouds_yaml)] if self.clouds_yaml else None
        with sdk_warnings_ignored():
            config = openstack.config.OpenStackConfig(config_files=files)
            region = config.get_one(cloud=self.admin_cloud if admin else self.cloud)
            return openstack.connection.Connection(config=region)


@contextlib.contextmanager
def sdk_warnings_ignored() -> Iterator[None]:
    """openstacksdk deprecates what its own proxies still call: its warnings, not ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="openstack")
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module="openstack")
        yield


@pytest.fixture(scope="session")
def openstack_cloud() -> Iterator[TestCloud]:
    external = os.environ.get("MARINA_TEST_CLOUD")
    if external:
        admin = os.environ.get("MARINA_TEST_ADMIN_CLOUD", external)
        yield TestCloud(cloud=external, admin_cloud=admin, clouds_yaml=None, plane=None)
        return
    # Not under pytest's base temporary directory: concurrent pytest runs
    # prune old ones, and this one lives as long as the session.
    workdir = Path(tempfile.mkdtemp(prefix="marina-openstack-"))
    plane = ControlPlane(workdir)
    try:
        try:
            with sdk_warnings_ignored():
                plane.start()
        except Exception as error:
            raise ControlPlaneError(f"{error}\n(the services' logs: {LOGS})") from error
        STARTS.append(dict(plane.timings))
        yield TestCloud(
            cloud=USER_CLOUD, admin_cloud=ADMIN_CLOUD, clouds_yaml=plane.clouds_yaml, plane=plane
        )
    finally:
        plane.stop()
        # The services' logs outlive the run, for whoever reads a failure.
        shutil.rmtree(LOGS, ignore_errors=True)
        if plane.logs.is_dir():
            shutil.copytree(plane.logs, LOGS)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def os_conn(openstack_cloud: TestCloud) -> Iterator[Any]:
    """openstacksdk as the tests' project user."""
    conn = openstack_cloud.connect()
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def os_admin(openstack_cloud: TestCloud) -> Iterator[Any]:
    """openstacksdk as an administrator (flavors, quotas)."""
    conn = openstack_cloud.connect(admin=True)
    yield conn
    conn.close()
