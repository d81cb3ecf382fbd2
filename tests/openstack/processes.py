"""Child processes that cannot outlive the control plane.

Every service runs in a session of its own, so one signal reaches what it
forks too (uwsgi's workers, nova's service workers, RabbitMQ's Erlang VM
under its start script). Stopping sends SIGTERM to the whole group and
SIGKILL to what is left, since uwsgi and nova do not always exit on SIGTERM.
If the process that started them dies without stopping them, a reaper
process notices its pipe closing and kills every group it was told about.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_REAPER = """
import os, signal, sys
groups = set()
for line in sys.stdin:
    pgid = int(line)
    if pgid > 0:
        groups.add(pgid)
    else:
        groups.discard(-pgid)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
"""


class Reaper:
    """Kills registered process groups once this process is gone."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None

    def watch(self, pgid: int) -> None:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _REAPER],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
        assert self._process.stdin is not None
        self._process.stdin.write(f"{pgid}\n")
        self._process.stdin.flush()

    def forget(self, pgid: int) -> None:
        """The group is gone: never kill what might reuse its number."""
        if self._process is not None and self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.write(f"{-pgid}\n")
            self._process.stdin.flush()

    def close(self) -> None:
        """End the reaper (it kills groups still registered: none, after a clean stop)."""
        if self._process is not None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            self._process.wait(timeout=10)
            self._process = None


_reaper = Reaper()


def close_reaper() -> None:
    _reaper.close()


class CommandFailed(RuntimeError):
    """A set-up command exited non-zero; the message ends with its output."""


def run(command: Sequence[str], *, env: Mapping[str, str], log: Path, timeout: float = 600) -> str:
    """Run a set-up command to completion; its output goes to `log` too."""
    result = subprocess.run(
        list(command),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_die_with_parent,
        check=False,
    )
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise CommandFailed(f"{' '.join(command)} exited {result.returncode}:\n{tail}")
    return result.stdout


class Service:
    """One long-running process of the control plane, logging to a file."""

    def __init__(
        self, name: str, command: Sequence[str], *, env: Mapping[str, str], log: Path
    ) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        _reaper.watch(self.process.pid)
        return self

    def check_running(self) -> None:
        """Raise with the end of its log when the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise CommandFailed(f"{self.name} exited {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def terminate(self) -> None:
        """SIGTERM to the whole group; `finish` makes sure it is gone."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def finish(self, *, deadline: float) -> None:
        """Wait for the group until `deadline` (monotonic), then SIGKILL what is left."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        # Workers outlive their master when it exits first: kill the group
        # whether or not the leader has gone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        _wait_group_gone(process.pid)
        _reaper.forget(process.pid)
        self.process = None

    def stop(self, *, grace: float = 5.0) -> None:
        self.terminate()
        self.finish(deadline=time.monotonic() + grace)


def stop_all(services: list[Service], *, grace: float = 5.0) -> None:
    """Stop every service at once: SIGTERM to all, SIGKILL to what is left after `grace`."""
    for service in services:
        service.terminate()
    deadline = time.monotonic() + grace
    for service in services:
        service.finish(deadline=deadline)


def _living_members(pgid: int) -> list[int]:
    """Processes of the group that still run; zombies wait only for a reaper."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while being read
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _living_members(pgid):
            return
        time.sleep(0.05)
    raise RuntimeError(f"process group {pgid} survived SIGKILL: {_living_members(pgid)}")
