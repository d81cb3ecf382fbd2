"""Confinement of the local engine's replicas: a tenant's pod never owns the host.

Each replica runs under bubblewrap (mount, PID, IPC and UTS namespaces) and,
when Marina runs as root, as an unprivileged uid of its own environment with
no capabilities and `no_new_privs`. It sees a read-only system (`/usr`,
`/etc` and the top-level links into `/usr`), its own package's files
read-only at `/pod/package`, a private writable `/pod/work` and a private
`/tmp`; nothing of Marina's state directory, of other pods or of other
packages is mounted. docs/security.md says what each layer stops and what it
does not.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from catalog import keys
from catalog.errors import Conflict, MarinaError
from catalog.store import Store

POD_ROOT = "/pod"
PACKAGE_MOUNT = f"{POD_ROOT}/package"
WORK_MOUNT = f"{POD_ROOT}/work"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
UID_BASE = 200_000
"""First uid handed to an environment: far above Debian's system and user ranges."""
UID_COUNT = 1_000_000
UIDS = keys.SANDBOX_UIDS
ENVIRONMENT_UIDS = keys.SANDBOX_ENVIRONMENTS
SYSTEM_TOP = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
LIMITS = ("--nproc=4096", "--core=0")
"""A per-uid process cap (a fork bomb stops there) and no core dumps."""


class SandboxUnavailable(MarinaError):
    """bubblewrap (or setpriv) is missing: replicas are not started unconfined."""

    code = "sandbox_unavailable"


@dataclass(frozen=True)
class Confinement:
    """Where one replica's process lives and as whom."""

    work_dir: Path
    """Writable, private to the replica; mounted at /pod/work."""
    package_dir: Path | None
    """The replica's own package files, mounted read-only at /pod/package."""
    uid: int | None
    """The environment's uid (when Marina runs as root); None keeps Marina's."""
    hostname: str = "pod"
    binds: tuple[tuple[Path, str], ...] = ()
    """Extra host directories mounted read-only: (host path, path inside), e.g. volumes."""
    chdir: str | None = None
    """Working directory inside; by default /pod/package if mounted, else /pod/work."""


def tools() -> tuple[str, str, str]:
    """Paths of bwrap, setpriv and prlimit, or `SandboxUnavailable` naming what is missing."""
    found = {name: shutil.which(name) for name in ("bwrap", "setpriv", "prlimit")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise SandboxUnavailable(
            f"{', '.join(missing)} not installed (Debian packages bubblewrap and util-linux): "
            "pods are not run unconfined"
        )
    return found["bwrap"] or "", found["setpriv"] or "", found["prlimit"] or ""


def _system_mounts() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for top in SYSTEM_TOP:
        path = Path("/") / top
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), f"/{top}"]
        elif path.is_dir():
            args += ["--ro-bind", str(path), f"/{top}"]
    return args


def confine(argv: list[str], confinement: Confinement) -> list[str]:
    """The command line that runs `argv` inside the replica's sandbox."""
    bwrap, setpriv, prlimit = tools()
    args = [
        bwrap,
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        confinement.hostname,
        *_system_mounts(),
        "--proc", "/proc",
        "--dev", "/dev",
        "--perms", "1777", "--tmpfs", "/tmp",
        "--perms", "0755", "--dir", POD_ROOT,
        "--bind", str(confinement.work_dir), WORK_MOUNT,
    ]  # fmt: skip
    if confinement.package_dir is not None:
        args += ["--ro-bind", str(confinement.package_dir), PACKAGE_MOUNT]
    for host, inside in confinement.binds:
        args += ["--ro-bind", str(host), inside]
    default_dir = PACKAGE_MOUNT if confinement.package_dir else WORK_MOUNT
    args += ["--chdir", confinement.chdir or default_dir]
    if confinement.uid is None:
        # Not root: a user namespace stands in for the uid switch.
        args += ["--unshare-user", "--cap-drop", "ALL", "--", prlimit, *LIMITS, "--", *argv]
        return args
    uid = str(confinement.uid)
    return [
        *args,
        "--",
        prlimit,
        *LIMITS,
        "--",
        setpriv,
        "--reuid", uid,
        "--regid", uid,
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps", "-all",
        "--bounding-set", "-all",
        "--",
        *argv,
    ]  # fmt: skip


def prepare_work_dir(path: Path, uid: int | None) -> None:
    """The replica's writable directory, owned by its uid and closed to others."""
    path.mkdir(parents=True, exist_ok=True)
    if uid is not None:
        os.chown(path, uid, uid)
    os.chmod(path, 0o700)


async def environment_uid(store: Store, environment: str) -> int:
    """The uid of `environment`'s replicas: claimed once, never shared, never reused."""
    key = f"{ENVIRONMENT_UIDS}{environment}"
    while True:
        found = await store.get(key)
        if found is not None:
            return int(found.value["uid"])
        taken = {int(v.key.rsplit("/", 1)[1]) for v in await store.list(UIDS)}
        uid = next(u for u in range(UID_BASE, UID_BASE + UID_COUNT) if u not in taken)
        try:
            await store.create(f"{UIDS}{uid}", {"environment": environment})
        except Conflict:
            continue  # another agent took that uid first
        try:
            await store.create(key, {"uid": uid})
        except Conflict:
            continue  # another agent gave the environment its uid first; ours stays unused
        return uid
