"""Child processes that cannot outlive the process that started them."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
_forking = {"parent": os.getpid()}
# Recorded in the parent just before every fork, so the child knows whom it
# must outlive even if that parent dies before the child asks.
os.register_at_fork(before=lambda: _forking.update(parent=os.getpid()))


def die_with_parent() -> None:
    """Run in the child before exec: SIGKILL it when its parent goes away.

    A parent that died between the fork and `prctl` sends no signal: the
    child checks for that and ends at once instead of living on orphaned.
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != _forking["parent"]:
        os._exit(1)
    os.setpgid(0, 0)


def processes_naming(path: str) -> list[int]:
    """Processes (not this one) whose command line names something under `path`."""
    marker = path.rstrip("/") + "/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(arg.startswith(marker) for arg in argv):
            found.append(int(entry))
    return found


def kill_all(pids: list[int]) -> None:
    """SIGKILL, for what must not outlive its owner (an orphaned sandbox)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
