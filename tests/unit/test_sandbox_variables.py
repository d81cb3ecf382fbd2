"""A container's variables reach its command alone (real bubblewrap).

bwrap, prlimit and setpriv run as root when Marina does: a tenant's variable
that the dynamic loader obeys (`LD_PRELOAD` naming a library the tenant wrote
into its work directory, whose host path /proc/self/mountinfo gives away)
would run the tenant's code as root on the host. These tests start replicas as
the node agent does, through `sandbox.confining`, and look at every process of
the sandbox from the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from catalog import sandbox

ROOT = Path(__file__).resolve().parents[2]
REPLICA_UID = 1_250_001
"""Outside the range Marina hands to environments."""
SECRET = "s3cr3t-never-on-a-command-line"
VALUES = {
    "LANG": "C.UTF-8",  # as the node agent gives: the container's Python adds none of its own
    "SPACES": "a value with  spaces ",
    "NEWLINES": "first line\nsecond line\n",
    "EQUALS": "a=b==c=",
    "UNICODE": "héllo wörld ✓ 日本",
    "EMPTY": "",
    "DB_PASSWORD": SECRET,
}
LIBRARY = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
extern char *program_invocation_short_name;
__attribute__((constructor)) static void loaded(void) {
    char line[256];
    int fd = open(MARKS, O_WRONLY | O_APPEND | O_CREAT, 0666);
    if (fd < 0)
        return;
    snprintf(line, sizeof line, "%s uid=%d\n", program_invocation_short_name, (int)geteuid());
    write(fd, line, strlen(line));
    close(fd);
}
"""
"""A tenant's library: every process that loads it says so in MARKS."""

# Plays the node agent: starts a replica through `sandbox.confining`, waits for
# its command to run, then reports every process of the sandbox as the host
# sees it and the command's own view of its variables, and ends the replica.
AGENT = r"""
import json, os, subprocess, sys, time
from pathlib import Path
from catalog import sandbox

work, uid, env = Path(sys.argv[1]), (int(sys.argv[2]) or None), json.loads(sys.argv[3])
env.update(json.loads(Path(sys.argv[4]).read_text()))  # secrets: off the command line
confinement = sandbox.Confinement(work_dir=work, package_dir=None, uid=uid)
sandbox.prepare_work_dir(work, uid)
command = ["python3", "-c", "import json, os, time; "
           "json.dump(dict(os.environ), open('/pod/work/seen.json', 'w')); "
           "os.rename('/pod/work/seen.json', '/pod/work/env.json'); time.sleep(3600)"]

def tree(root):
    found, grow = [], [root]
    while grow:
        pid = grow.pop()
        found.append(pid)
        for entry in os.listdir("/proc"):
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except (OSError, ValueError):
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                grow.append(int(entry))
    return found

def seen(pid):
    read = lambda name: open(f"/proc/{pid}/{name}", "rb").read()
    status = dict(l.split(":", 1) for l in read("status").decode().splitlines() if ":" in l)
    return {
        "pid": pid,
        "name": status["Name"].strip(),
        "euid": int(status["Uid"].split()[1]),
        "environ": read("environ").decode(errors="replace"),
        "cmdline": read("cmdline").decode(errors="replace"),
    }

with open(work.parent / "replica.log", "ab") as log, sandbox.confining(
    command, confinement, env=env
) as confined:
    replica = subprocess.Popen(confined.command, pass_fds=confined.fds, env=confined.env,
                               stdout=log, stderr=log, cwd="/")
try:
    for _ in range(1200):
        if (work / "env.json").exists() or replica.poll() is not None:
            break
        time.sleep(0.05)
    processes = [seen(pid) for pid in tree(replica.pid)]
    cmdlines = []
    for entry in os.listdir("/proc"):
        try:
            cmdlines.append(open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace"))
        except OSError:
            pass
    print(json.dumps({
        "processes": processes,
        "cmdlines": cmdlines,
        "container": json.loads((work / "env.json").read_text()),
        "outer": replica.pid,
    }))
finally:
    replica.kill()
    replica.wait()
"""


@pytest.fixture()
def shared_tmp() -> Iterator[Path]:
    """A folder that the nobody user can reach too (pytest's are closed to others)."""
    folder = Path(tempfile.mkdtemp(prefix="marina-variables-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _library(folder: Path, marks: Path) -> Path:
    """The tenant's library, built as a tenant would (cc), naming where it leaves marks."""
    source = folder / "evil.c"
    source.write_text(LIBRARY)
    library = folder / "evil.so"
    subprocess.run(
        ["cc", "-shared", "-fPIC", f'-DMARKS="{marks}"', "-o", str(library), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    library.chmod(0o755)
    return library


def _as_agent(folder: Path, env: dict[str, str], *, user: str) -> dict[str, Any]:
    """Run AGENT as root (the uid switch) or as nobody (a user namespace) on the
    replica laid out in `folder` (its work directory made by `_work`)."""
    work = folder / "replica" / "work"
    secrets = folder / "secrets.json"
    secrets.write_text(json.dumps({k: v for k, v in env.items() if k == "DB_PASSWORD"}))
    public = {k: v for k, v in env.items() if k != "DB_PASSWORD"}
    prefix = []
    if user == "nobody":
        for path in (work.parent, work, secrets, *work.iterdir()):
            os.chown(path, 65534, 65534)
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    uid = REPLICA_UID if user == "root" else 0
    agent = [sys.executable, "-c", AGENT, str(work), str(uid), json.dumps(public), str(secrets)]
    ran = subprocess.run(
        [*prefix, *agent],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = work.parent / "replica.log"
    assert ran.returncode == 0, ran.stderr + (log.read_text() if log.exists() else "")
    return dict(json.loads(ran.stdout))


def _work(folder: Path) -> Path:
    work = folder / "replica" / "work"
    work.mkdir(parents=True)
    return work


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to build a library")
USERS = pytest.mark.parametrize("user", ["root", "nobody"])


@needs_root
@needs_cc
@USERS
def test_a_tenants_ld_preload_is_loaded_by_no_process_outside_its_sandbox(
    shared_tmp: Path, user: str
) -> None:
    marks = shared_tmp / "marks"
    marks.touch()
    marks.chmod(0o666)  # whoever loads the library can say so
    work = _work(shared_tmp)
    # The tenant's library in its own work directory, named by its host path (a
    # replica restarting finds it there).
    shutil.copy(_library(shared_tmp, marks), work / "evil.so")
    env = {
        "PATH": sandbox.SANDBOX_PATH,
        "LD_PRELOAD": str(work / "evil.so"),
        "LD_LIBRARY_PATH": str(work),
        "LD_AUDIT": str(work / "evil.so"),
        "GCONV_PATH": str(work),
        "LANG": "C.UTF-8",
    }
    found = _as_agent(shared_tmp, env, user=user)
    loaded = marks.read_text()
    assert loaded == "", f"the tenant's library ran outside its sandbox: {loaded}"
    assert found["container"] == {**env, "PWD": sandbox.WORK_MOUNT}


@needs_root
@USERS
def test_no_variable_of_the_container_reaches_the_tools_that_set_up_its_sandbox(
    shared_tmp: Path, user: str
) -> None:
    _work(shared_tmp)
    env = {"PATH": sandbox.SANDBOX_PATH, "LD_PRELOAD": "/nonexistent.so", **VALUES}
    found = _as_agent(shared_tmp, env, user=user)
    processes = found["processes"]
    command = processes[-1]
    assert command["name"] == "python3" and "time.sleep(3600)" in command["cmdline"]
    tools = processes[:-1]
    # The keeper, bwrap as its namespace's init, and bwrap's init as the
    # sandbox's pid 1: the ones left once the rest exec'd.
    assert [p["name"] for p in tools] == ["python3", "bwrap", "bwrap"], processes
    for tool in tools:
        if user == "root":
            assert tool["euid"] == 0
        assert tool["environ"] == f"PATH={sandbox.SANDBOX_PATH}\0", tool
    assert command["euid"] == (REPLICA_UID if user == "root" else 65534)
    environ = dict(v.split("=", 1) for v in command["environ"].split("\0") if v)
    assert environ == {**env, "PWD": sandbox.WORK_MOUNT}


@needs_root
@USERS
def test_the_container_sees_every_variable_as_given_and_secrets_are_on_no_command_line(
    shared_tmp: Path, user: str
) -> None:
    _work(shared_tmp)
    env = {"PATH": sandbox.SANDBOX_PATH, "HOME": sandbox.WORK_MOUNT, **VALUES}
    found = _as_agent(shared_tmp, env, user=user)
    assert found["container"] == {**env, "PWD": sandbox.WORK_MOUNT}
    assert len(found["cmdlines"]) > 5
    assert not [c for c in found["cmdlines"] if SECRET in c]


def _exit(argv: list[str], env: dict[str, str], tmp_path: Path) -> tuple[int, str]:
    uid = REPLICA_UID if os.geteuid() == 0 else None
    confinement = sandbox.Confinement(work_dir=tmp_path / "work", package_dir=None, uid=uid)
    sandbox.prepare_work_dir(confinement.work_dir, uid)
    with sandbox.confining(argv, confinement, env=env) as confined:
        ran = subprocess.run(
            confined.command,
            pass_fds=confined.fds,
            env=confined.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    return ran.returncode, ran.stdout + ran.stderr


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["sh", "-c", "exit 7"], 7),
        (["sh", "-c", "exit 0"], 0),
        (["no-such-command-anywhere"], 127),
        (["/pod/work/no-such-file"], 127),
        (["/pod/work/data"], 126),  # there, but not executable
        (["/pod/work/script", "4"], 4),  # no #!: run by /bin/sh, as setpriv's execvp does
        (["sh", "-c", 'test "$PWD" = /pod/work'], 0),  # as bwrap --chdir sets it
    ],
)
def test_the_commands_exit_code_comes_through_as_the_node_agent_reads_it(
    tmp_path: Path, argv: list[str], code: int
) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "data").write_text("data\n")
    (tmp_path / "work" / "script").write_text('exit "$1"\n')
    (tmp_path / "work" / "script").chmod(0o755)
    found, out = _exit(argv, {"PATH": sandbox.SANDBOX_PATH}, tmp_path)
    assert found == code, out
    if code >= 126:
        assert argv[0] in out  # the log says which command could not start


def test_a_command_killed_by_a_signal_ends_the_sandbox_as_before(tmp_path: Path) -> None:
    found, _ = _exit(["sh", "-c", "kill -TERM $$"], {"PATH": sandbox.SANDBOX_PATH}, tmp_path)
    # bwrap reports its command's signal as a shell does.
    assert found == 128 + 15


def test_the_command_is_found_on_the_containers_own_path(tmp_path: Path) -> None:
    found, out = _exit(["sh", "-c", 'echo "$PATH"'], {"PATH": "/usr/bin:/bin"}, tmp_path)
    assert (found, out) == (0, "/usr/bin:/bin\n")
    found, out = _exit(["sh", "-c", "exit 0"], {"PATH": "/nowhere"}, tmp_path)
    assert found == 127, out


def test_a_variable_no_environment_can_hold_is_refused(tmp_path: Path) -> None:
    for env in ({"A=B": "x"}, {"": "x"}, {"A": "x\0y"}, {"A\0": "x"}, {"A": "\ud800"}):
        with pytest.raises(sandbox.InvalidVariable):
            _exit(["true"], env, tmp_path)
