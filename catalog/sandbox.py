"""Confinement of the local engine's replicas: a tenant's pod never owns the host.

Each replica runs under bubblewrap (mount, PID, IPC and UTS namespaces) and,
when Marina runs as root, as an unprivileged uid of its own environment with
no capabilities and `no_new_privs`. It sees a read-only system (`/usr`,
`/etc` and the top-level links into `/usr`), its own package's files
read-only at `/pod/package`, a private writable `/pod/work` and a private
`/tmp`; nothing of Marina's state directory, of other pods or of other
packages is mounted. docs/security.md says what each layer stops and what it
does not.

A readiness check runs inside a running replica's sandbox, as an exec probe
does inside a Kubernetes container: `joining` enters the sandbox's own
namespaces with nsenter and drops to the replica's uid, limits and
capabilities as the replica did, so the check sees the replica's `/tmp`,
`/pod/work` and processes and reaches nothing the replica cannot.

Nothing of a sandbox outlives the process that started it, at any moment of its
start: bwrap sets its own parent-death signal in the sandbox's init only once
the sandbox is set up, so `KEEPER` runs bwrap as the init of a PID namespace
that dies with the keeper, and the kernel then ends every process in it, at
any depth and whatever its credentials.

bwrap, prlimit, nsenter and setpriv run as root: a container's variables
(`LD_PRELOAD` among them, and its secrets) never reach them, nor any command
line. They are written to a descriptor that `LAUNCHER`, run after the drop to
the replica's uid, reads into the command's environment alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

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
JOINED = (("mnt", "--mount"), ("pid", "--pid"), ("ipc", "--ipc"), ("uts", "--uts"),
          ("cgroup", "--cgroup"))  # fmt: skip
"""A replica's namespaces that a check joins, and nsenter's option for each."""
NS_GET_USERNS = 0xB701
"""ioctl(2) on a namespace: the user namespace that owns it (ioctl_ns(2))."""
TOOLS_ENV = {"PATH": SANDBOX_PATH}
"""The whole environment of the tools that run as root: nothing of a tenant's."""
LAUNCHER_PYTHON = "/usr/bin/python3"
"""The system's Python (under /usr, so inside every sandbox) runs `LAUNCHER`."""
KEEPER = r"""
import ctypes, os, select, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
def fail(what, error):
    print(f"marina sandbox: {what}: {os.strerror(error)}", file=sys.stderr, flush=True)
    os._exit(125)
if os.geteuid() != 0:
    # Unprivileged: a user namespace of its own (its uid and gid mapped to themselves)
    # grants the right to make the PID namespace; bwrap nests the sandbox's in it.
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        fail("cannot create a user namespace", ctypes.get_errno())
    for name, line in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(line)
if libc.unshare(0x20000000) != 0:  # CLONE_NEWPID: the next child is its init
    fail("cannot create a PID namespace", ctypes.get_errno())
me = os.pidfd_open(os.getpid())
bwrap = os.fork()
if bwrap == 0:
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    # Its parent is outside its namespace (getppid() is 0): the pidfd tells
    # whether the keeper ended before prctl, when no signal comes.
    if select.select([me], [], [], 0)[0]:
        os._exit(1)
    # bwrap gets the environment the keeper was given, not Python's (which may
    # have added LC_CTYPE to coerce a C locale).
    with open("/proc/self/environ", "rb") as f:
        env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    try:
        os.execve(sys.argv[1], sys.argv[1:], env)
    except OSError as exc:
        fail(sys.argv[1], exc.errno or 0)
os.closerange(3, 1 << 16)  # bwrap's descriptors are bwrap's
status = os.waitpid(bwrap, 0)[1]
if os.WIFSIGNALED(status):
    if os.WTERMSIG(status) != signal.SIGKILL:
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(128 + os.WTERMSIG(status))
os._exit(os.WEXITSTATUS(status))
"""
"""The first stage of every sandbox, in the process its starter made (its
parent-death signal set, see `catalog.processes.die_with_parent`): it makes a
PID namespace whose init is bwrap, tied to the keeper by PR_SET_PDEATHSIG with
the fork race checked, and ends as bwrap does (its exit code or signal). The
sandbox bwrap sets up is nested in that namespace, so when the keeper ends, at
any moment, bwrap ends and the kernel ends every process of the sandbox with
it: bwrap's own parent-death signal reaches the sandbox's init only after the
set-up, and one ended earlier used to leave that init running. Its argv:
bwrap's."""
LAUNCHER = r"""
import errno, os, sys
with os.fdopen(int(sys.argv[1]), "rb") as f:
    env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if v)
def run():
    # As glibc's execvp (setpriv's, the shells'): the command's own $PATH searched, a
    # file without #! run by /bin/sh, 127 when nothing was found, else 126.
    name, args = os.fsencode(sys.argv[4]), sys.argv[4:]
    error, denied = OSError(errno.ENOENT, os.strerror(errno.ENOENT)), None
    try:
        os.chdir(sys.argv[3])
        env[b"PWD"] = os.fsencode(sys.argv[3])  # as bwrap --chdir sets it
        search = env.get(b"PATH", b"/bin:/usr/bin").split(b":") if b"/" not in name else [b""]
        for path in [os.path.join(d, name) for d in search] if name else []:
            try:
                os.execve(path, args, env)
            except OSError as exc:
                error = exc
                if exc.errno == errno.ENOEXEC:
                    os.execve(b"/bin/sh", [b"/bin/sh", path, *args[1:]], env)
            if error.errno == errno.EACCES:
                denied = error
            elif error.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ESTALE, errno.ENODEV):
                break
    except OSError as exc:
        error = exc
    error = denied or error
    print(f"{sys.argv[4]}: {error.strerror}", file=sys.stderr, flush=True)
    os._exit(127 if error.errno == errno.ENOENT else 126)
if sys.argv[2] == "exec":
    run()
import ctypes, signal, time
os.closerange(3, 1 << 16)  # the namespaces' descriptors stay with Marina
libc = ctypes.CDLL(None)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: what the check leaves behind comes here
libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: nsenter killed, the tree ends too
class End(Exception):
    pass
def end(*_):
    raise End
def descendants():
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            pass
    found, grow = set(), {os.getpid()}
    while grow:
        grow = {pid for pid, parent in parents.items() if parent in grow} - found
        found |= grow
    return found
signal.signal(signal.SIGTERM, end)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
main = os.fork()
if main == 0:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    run()
status = None
try:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    while status is None:
        pid, code = os.waitpid(-1, 0)
        if pid == main:
            status = code
except End:
    pass
signal.signal(signal.SIGTERM, signal.SIG_IGN)
while kids := descendants():
    for kid in kids:
        try:
            os.kill(kid, signal.SIGKILL)
        except OSError:
            pass
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    time.sleep(0.01)
if status is None:
    os._exit(128 + signal.SIGTERM)
if os.WIFSIGNALED(status):
    if os.WTERMSIG(status) != signal.SIGKILL:
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""
"""The last stage of every sandboxed command, as the replica's uid: it takes the
command's variables from a descriptor (closed before the command runs) and, in
`exec` mode, becomes the command, so that its exit code or signal is the
command's own; in `reap` mode (a joined check) it forks the command, reaps what
it leaves and, when it ends (or on SIGTERM), kills every process it started,
however orphaned, and nothing else. A command that cannot be executed ends it
with 127 (not found) or 126, as setpriv and the shells do. Its argv: the
descriptor, the mode, the working directory, then the command. `-I -S` keeps its
start-up short and deaf to the variables it hands on."""


class InvalidVariable(MarinaError):
    """A container's variable that no environment can hold."""

    code = "invalid_variable"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"variable {name!r}: a name must be non-empty without '=' or NUL, a value without NUL"
        )
        self.name = name


class SandboxUnavailable(MarinaError):
    """bubblewrap (or setpriv) is missing: replicas are not started unconfined."""

    code = "sandbox_unavailable"


class SandboxGone(MarinaError):
    """The replica's sandbox that a check would join is not (or not yet) running."""

    code = "sandbox_gone"


class SandboxStarting(SandboxGone):
    """The sandbox is still being set up (or just ending): its command is not running."""

    code = "sandbox_starting"


class Launch(NamedTuple):
    """How to start a sandboxed command: a replica (`confining`) or a check (`joining`)."""

    command: list[str]
    fds: tuple[int, ...]
    """To pass to the command (`pass_fds`); closed when the context is left."""
    env: dict[str, str]
    """The command's own environment (`TOOLS_ENV`): nothing of the container's."""


class Tools(NamedTuple):
    bwrap: str
    setpriv: str
    prlimit: str
    nsenter: str


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


def tools() -> Tools:
    """Paths of bwrap, setpriv, prlimit and nsenter, or `SandboxUnavailable` naming what is
    missing (the system's python3 too: it runs `LAUNCHER`)."""
    found = {name: shutil.which(name) for name in Tools._fields}
    missing = [name for name, path in found.items() if path is None]
    if not os.access(LAUNCHER_PYTHON, os.X_OK):
        missing.append(LAUNCHER_PYTHON)
    if missing:
        raise SandboxUnavailable(
            f"{', '.join(missing)} not installed (Debian packages bubblewrap, util-linux and "
            "python3): pods are not run unconfined"
        )
    return Tools(**{name: path or "" for name, path in found.items()})


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
    """The command line that runs `argv` inside the replica's sandbox.

    Everything in it runs with the environment it is given, root's tools included:
    a container's variables go through `confining` instead.
    """
    bwrap, setpriv, prlimit, _ = tools()
    args = [
        LAUNCHER_PYTHON, "-I", "-S", "-c", KEEPER,
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
    args += ["--chdir", _working_dir(confinement)]
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


def _working_dir(confinement: Confinement) -> str:
    return confinement.chdir or (PACKAGE_MOUNT if confinement.package_dir else WORK_MOUNT)


@contextlib.contextmanager
def confining(
    argv: list[str], confinement: Confinement, *, env: Mapping[str, str]
) -> Iterator[Launch]:
    """How to start `argv` with the variables `env` in a new sandbox (see `confine`).

    The variables reach the command alone, after the drop to the replica's uid,
    through a descriptor: bwrap, prlimit and setpriv run as root and would obey
    the dynamic loader's (`LD_PRELOAD`, `LD_LIBRARY_PATH`...) from a tenant.
    `LAUNCHER` becomes the command, which keeps bwrap's child's pid, exit code
    and signal.
    """
    with _variables(env) as fd:
        stage = _launching(argv, fd=fd, mode="exec", confinement=confinement)
        yield Launch(confine(stage, confinement), (fd,), dict(TOOLS_ENV))


@contextlib.contextmanager
def _variables(env: Mapping[str, str]) -> Iterator[int]:
    """A descriptor holding `env` as NUL-separated `name=value`, read from its start."""
    encoded = []
    for name, value in env.items():
        try:
            variable = f"{name}={value}".encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            variable = b"\0"
        if not name or "=" in name or b"\0" in variable:
            raise InvalidVariable(name)
        encoded.append(variable + b"\0")
    fd = os.memfd_create("marina-env", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as f:
            f.write(b"".join(encoded))
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        os.close(fd)


def _launching(argv: list[str], *, fd: int, mode: str, confinement: Confinement) -> list[str]:
    """The stage that runs `argv` with the variables in `fd`: `LAUNCHER`, in `mode`."""
    return [LAUNCHER_PYTHON, "-I", "-S", "-c", LAUNCHER, str(fd), mode,
            _working_dir(confinement), *argv]  # fmt: skip


@contextlib.contextmanager
def joining(
    argv: list[str], confinement: Confinement, *, sandbox_pid: int, env: Mapping[str, str]
) -> Iterator[Launch]:
    """How to run `argv` with the variables `env` inside the running sandbox whose
    bwrap is `sandbox_pid` (a child of this process, started by `confine` with
    `confinement`).

    The variables reach the check only, through a descriptor: nsenter and prlimit
    run as root and would obey the dynamic loader's (`LD_PRELOAD`) from a tenant.

    The namespaces are those of the sandbox's command itself: a sandbox still being
    set up (its host's file system still in reach) or gone raises `SandboxGone`.
    Inside, the check runs under `LAUNCHER` as the replica's uid, with its limits, no
    groups, no capabilities and `no_new_privs`; `end_joined` ends it.
    """
    t = tools()
    inner = _sandboxed_command(sandbox_pid, confinement)
    fds: list[int] = []
    opened: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(_close_all, fds)
        try:
            pidfd = os.pidfd_open(inner)
            fds.append(pidfd)
            for name in [name for name, _ in JOINED] + ["user"]:
                opened[name] = os.open(f"/proc/{inner}/ns/{name}", os.O_RDONLY)
                fds.append(opened[name])
            root = os.open(f"/proc/{inner}/root", os.O_RDONLY | os.O_DIRECTORY)
            fds.append(root)
            # The user namespace that owns the others (bwrap may nest the command's own).
            owner = fcntl.ioctl(opened["mnt"], NS_GET_USERNS)
            fds.append(owner)
            variables = stack.enter_context(_variables(env))
        except OSError as exc:
            raise SandboxGone(f"the container's sandbox ended ({exc.strerror})") from exc
        # Alive now, so its pid was not reused: the namespaces opened are its own.
        if not _alive(pidfd):
            raise SandboxGone(f"the container's sandbox ended (its command, pid {inner}, is gone)")
        if _sandboxed_command(sandbox_pid, confinement) != inner:
            raise SandboxGone("the container's sandbox was replaced while the check was joining")
        for name in ("mnt", "pid"):
            if os.fstat(opened[name]).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                raise SandboxGone(f"the container's process shares Marina's {name} namespace")
        enter = [t.nsenter, *(f"{flag}=/proc/self/fd/{opened[name]}" for name, flag in JOINED)]
        hop: list[str] = []
        if confinement.uid is None:
            # Not root: the sandbox's user namespaces are Marina's user's to enter, and
            # the uid stays the one mapped there. The first exec as that uid clears the
            # capabilities setns granted; the command's own user namespace, when bwrap
            # nested one, is entered from there.
            enter += [f"--user=/proc/self/fd/{owner}", "--preserve-credentials"]
            own = opened["user"]
            if os.fstat(own).st_ino != os.fstat(owner).st_ino:
                hop = [t.nsenter, f"--user=/proc/self/fd/{own}", "--preserve-credentials", "--"]
            drop = ["--no-new-privs", "--inh-caps", "-all"]
        else:
            uid = str(confinement.uid)
            drop = ["--reuid", uid, "--regid", uid, "--clear-groups", "--no-new-privs",
                    "--inh-caps", "-all", "--bounding-set", "-all"]  # fmt: skip
        args = [*enter, f"--root=/proc/self/fd/{root}", "--", *hop]
        command = [
            *args,
            t.prlimit,
            *LIMITS,
            "--",
            t.setpriv,
            *drop,
            "--",
            *_launching(argv, fd=variables, mode="reap", confinement=confinement),
        ]
        yield Launch(command, (*fds, variables), dict(TOOLS_ENV))


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def end_joined(pid: int) -> bool:
    """Ask a joined check (`pid`: its nsenter) to end with every process it started;
    False when there is no `LAUNCHER` to ask (not started yet, or ended)."""
    reapers = _children(pid)
    for reaper in reapers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(reaper, signal.SIGTERM)
    return bool(reapers)


def _sandboxed_command(sandbox_pid: int, confinement: Confinement) -> int:
    """The host pid of the command bwrap runs in the sandbox: keeper -> bwrap -> its init
    -> command.

    bwrap's init forks the command only once the sandbox is set up, so a command
    found means the mounts are final. `sandbox_pid` is `KEEPER`, bwrap its one
    child once that has executed bwrap (its command line is then no longer the
    keeper's).
    """
    marker = f"\0{confinement.work_dir}\0{WORK_MOUNT}\0".encode()
    cmdline = _cmdline(sandbox_pid)
    if _parent(sandbox_pid) != os.getpid():
        raise SandboxGone(f"the container's sandbox is gone (bwrap, pid {sandbox_pid}, ended)")
    if cmdline is None or marker not in b"\0" + cmdline:  # forked, not executed yet
        raise SandboxStarting("the container's sandbox is not started yet")
    bwraps = [pid for pid in _children(sandbox_pid) if _cmdline(pid) not in (None, cmdline)]
    inits = _children(bwraps[0]) if len(bwraps) == 1 else []
    commands = _children(inits[0]) if len(inits) == 1 else []
    if len(commands) != 1:
        raise SandboxStarting("the container's sandbox is not running its command yet")
    return commands[0]


def _cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return None


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _parent(int(entry)) == pid:
            found.append(int(entry))
    return found


def _alive(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except OSError:
        return False
    return True


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
