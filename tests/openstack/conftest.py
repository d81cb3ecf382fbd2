"""The control plane's start-up times in pytest's summary (its fixtures are in tests/conftest.py,
so that every suite shares one control plane)."""

import pytest

from tests.openstack.fixtures import STARTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for timings in STARTS:
        steps = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in timings.items())
        terminalreporter.write_line(f"OpenStack control plane started: {steps}")
