"""The control plane's processes never outlive it: a group that ignores
SIGTERM is killed, forks included, and a killed parent leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.openstack.processes import Service, stop_all

# A start script that forks a child (as RabbitMQ's does) and, like uwsgi and
# nova, shrugs off SIGTERM.
STUBBORN = "trap '' TERM; sleep 300 & echo $! > {pidfile}; wait"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; its parent has not reaped it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_stop_kills_a_group_that_ignores_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    service = Service(
        "stubborn",
        ["bash", "-c", STUBBORN.format(pidfile=pidfile)],
        env={"PATH": os.environ["PATH"]},
        log=tmp_path / "stubborn.log",
    ).start()
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    child = int(pidfile.read_text())
    leader = service.process.pid if service.process else 0

    stop_all([service], grace=0.5)

    assert not alive(leader)
    assert not alive(child)


def test_a_killed_parent_leaves_no_process_behind(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    parent = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from pathlib import Path
        from tests.openstack.processes import Service
        Service("stubborn", ["bash", "-c", {STUBBORN.format(pidfile=pidfile)!r}],
                env={{"PATH": os.environ["PATH"]}}, log=Path({str(tmp_path / "log")!r})).start()
        print("started", flush=True)
        time.sleep(300)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
        child = int(pidfile.read_text())
        assert alive(child)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert wait_for(lambda: not alive(child)), "the service outlived its parent"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.parametrize("grace", [0.0, 2.0])
def test_stopping_twice_is_harmless(tmp_path: Path, grace: float) -> None:
    service = Service(
        "short", ["sleep", "300"], env={"PATH": os.environ["PATH"]}, log=tmp_path / "log"
    ).start()
    stop_all([service], grace=grace)
    stop_all([service], grace=grace)
    assert service.process is None
