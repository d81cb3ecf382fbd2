"""kill -9 of a replica's starter at each moment of the replica's start (real
bubblewrap): no process of the replica outlives it, whatever stage of the
sandbox's set-up it had reached, so a node agent killed while it starts a
replica leaves nothing running on its node.

The starter plays the node agent (`sandbox.confining` and `die_with_parent`,
as `_start_replica` does). The moments are the depths of the replica's process
chain: the starter is killed as soon as one process of that depth runs (the
sandbox's keeper, bwrap, the process bwrap clones to set the sandbox up, the
command's stages), or once the command itself runs.
"""

from __future__ import annotations

import functools
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog import sandbox
from catalog.processes import kill_all, processes_naming
from tests.support import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
REPLICA_UID = 1_250_002
"""Outside the range Marina hands to environments."""
MOMENTS = (1, 2, 3, 4, None)
"""Depths of the chain below the starter at which it is killed; None: once the command runs."""
REPEATS = 6
STARTER = r"""
import subprocess, sys, time
from pathlib import Path
from catalog import sandbox
from catalog.processes import die_with_parent

work, uid, command = Path(sys.argv[1]), (int(sys.argv[2]) or None), sys.argv[3:]
confinement = sandbox.Confinement(work_dir=work, package_dir=None, uid=uid)
sandbox.prepare_work_dir(work, uid)
with open(work.parent / "replica.log", "ab") as log, sandbox.confining(
    command, confinement, env={"PATH": sandbox.SANDBOX_PATH}
) as confined:
    subprocess.Popen(confined.command, pass_fds=confined.fds, env=confined.env, cwd="/",
                     stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                     preexec_fn=die_with_parent)
time.sleep(3600)
"""


@pytest.fixture(autouse=True)
def bubblewrap() -> None:
    try:
        sandbox.tools()
    except sandbox.SandboxUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture()
def leftovers() -> Iterator[list[int]]:
    """Pids of survivors found; ended after the test, whatever it found."""
    found: list[int] = []
    yield found
    kill_all(found)


def _stats(after: int) -> dict[int, tuple[int, list[str]]]:
    """(parent, argv) of the processes started after pid `after` (all, had pids wrapped)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) <= after:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry)] = (parent, argv)
    return found


def _reached(starter: subprocess.Popen[bytes], depth: int | None, command: list[str]) -> bool:
    """Whether a process `depth` levels below `starter` runs, or the command does (or
    the starter ended)."""
    if starter.poll() is not None:
        return True
    stats = _stats(starter.pid)
    if any(argv[: len(command)] == command for _, argv in stats.values()):
        return True
    level = {starter.pid}
    for _ in range(depth or 0):
        level = {pid for pid, (parent, _) in stats.items() if parent in level}
    return depth is not None and bool(level)


def _survivors(replica_dir: Path, token: str) -> list[int]:
    """Every process of the replica: each stage names its command, or its directory."""
    named = set(processes_naming(str(replica_dir)))
    for pid, (_, argv) in _stats(0).items():
        if token in argv and pid != os.getpid():
            named.add(pid)
    return sorted(named)


def _none_left(replica_dir: Path, token: str) -> bool:
    return not _survivors(replica_dir, token)


def test_no_process_of_a_replica_outlives_its_starter_killed_at_any_moment(
    tmp_path: Path, leftovers: list[int]
) -> None:
    uid = REPLICA_UID if os.geteuid() == 0 else 0
    rounds = list(itertools.product(MOMENTS, range(REPEATS)))
    for number, (moment, _) in enumerate(rounds):
        replica_dir = tmp_path / f"replica-{number}"
        token = f"3600.{os.getpid()}{number:03d}"  # the command's own argument: unique
        command = ["sleep", token]
        starter = subprocess.Popen(
            [sys.executable, "-c", STARTER, str(replica_dir / "work"), str(uid), *command],
            cwd=ROOT,
        )
        try:
            wait_for(
                functools.partial(_reached, starter, moment, command),
                timeout=60,
                interval=0,
                what=f"the replica's start to reach depth {moment}",
            )
            assert starter.poll() is None, f"the starter ended: {starter.returncode}"
        finally:
            starter.kill()
            starter.wait()
        try:
            wait_for(
                functools.partial(_none_left, replica_dir, token),
                timeout=15,
                interval=0.05,
                what="the replica's processes to end with their starter",
            )
        except AssertionError:
            leftovers += _survivors(replica_dir, token)
            pytest.fail(f"killed at depth {moment} (round {number}): {leftovers} outlived it")
