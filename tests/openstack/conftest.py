"""The control-plane fixtures, for the tests in this folder."""

import pytest

from tests.openstack.fixtures import STARTS, openstack_cloud, os_admin, os_conn

__all__ = ["openstack_cloud", "os_admin", "os_conn"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for timings in STARTS:
        steps = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in timings.items())
        terminalreporter.write_line(f"OpenStack control plane started: {steps}")
