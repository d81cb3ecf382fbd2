"""A hostile tenant's pod on the local engine: it reports what it could reach.

Two tenants (projects) each deploy a pod as non-admin users. Each pod runs a
probe that tries what a tenant would try against the host and Marina, then
serves its findings as JSON on its public port; the test reads them through
the gateway and checks each promise of docs/security.md. The pod's readiness
check runs the same probe inside the running container, as Kubernetes runs an
exec probe: it must see the container's /tmp and processes, and be held to
every one of the same promises. The tenants' variables name a library of
theirs in `LD_PRELOAD`: no process outside their sandboxes may load it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from catalog import sandbox
from tests.e2e.marina import Marina
from tests.support import wait_for

PROBE = r"""
import json, os, socket, ssl, sys, http.server

CHECKING = sys.argv[1:] == ["check"]
MARK = "/tmp/container-was-here"

def attempt(fn):
    try:
        result = fn()
        return {"ok": True, "result": result}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

def write(path):
    with open(path, "w") as f:
        f.write("x")
    return path

RANGE = b'POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n{"key":"AA=="}'

def etcd_plain():
    with socket.create_connection(("127.0.0.1", int(os.environ["ETCD_PORT"])), timeout=2) as s:
        s.sendall(RANGE)
        reply = s.recv(4096)
    if b'"header"' not in reply:
        raise OSError(f"refused: {reply[:80]!r}")
    return reply[:200].decode("latin-1")

def etcd_tls():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", int(os.environ["ETCD_PORT"])), timeout=2) as raw:
        with context.wrap_socket(raw) as s:
            s.sendall(RANGE)
            reply = s.recv(4096)
    if b'"header"' not in reply:
        raise OSError(f"refused: {reply[:80]!r}")
    return reply[:200].decode("latin-1")

def secret_seen():
    # Given reversed, so that the probe's own environment does not hold it.
    marker = os.environ["OTHER_SECRET_REVERSED"][::-1].encode()
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker in open(f"/proc/{pid}/environ", "rb").read():
                    found.append(pid)
            except OSError:
                pass
    return found

def container_seen():
    pid = int(open(MARK).read())
    return {"pid": pid, "cmdline": open(f"/proc/{pid}/cmdline", "rb").read().decode().split("\0")}

if not CHECKING:
    with open(MARK, "w") as f:
        f.write(str(os.getpid()))

state = os.environ["STATE_DIR"]
report = {
    "pid": os.getpid(),
    "container": attempt(container_seen),
    "setuid_root": attempt(lambda: os.setuid(0)),
    "uid": os.getuid(),
    "gid": os.getgid(),
    "groups": os.getgroups(),
    "cwd": os.getcwd(),
    "root": sorted(os.listdir("/")),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "status": open("/proc/self/status").read(),
    "read_state_dir": attempt(lambda: os.listdir(state)),
    "read_admin_token": attempt(lambda: open(os.path.join(state, "admin-token")).read()),
    "read_pki": attempt(lambda: os.listdir(os.path.join(state, "pki"))),
    "read_shadow": attempt(lambda: open("/etc/shadow").read()[:10]),
    "read_home": attempt(lambda: os.listdir("/root")),
    "read_package_dir": attempt(lambda: os.listdir("/pod/package")),
    "write_usr": attempt(lambda: write("/usr/marina-probe")),
    "write_etc": attempt(lambda: write("/etc/marina-probe")),
    "write_root": attempt(lambda: write("/marina-probe")),
    "write_work": attempt(lambda: write("/pod/work/probe")),
    "write_tmp": attempt(lambda: write("/tmp/probe")),
    "etcd_plain": attempt(etcd_plain),
    "etcd_tls_without_certificate": attempt(etcd_tls),
    "haproxy_socket": attempt(lambda: os.listdir(os.environ["HAPROXY_DIR"])),
    "other_secret_in": secret_seen(),
    "own_secret": os.environ.get("MY_SECRET"),
    "kill_agent": attempt(lambda: os.kill(int(os.environ["AGENT_PID"]), 0)),
}
body = json.dumps(report).encode()
if CHECKING:
    with open("/tmp/readiness.json.new", "wb") as f:
        f.write(body)
    os.rename("/tmp/readiness.json.new", "/tmp/readiness.json")
    sys.exit(0)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = globals()["body"]
        if self.path == "/readiness":
            # What the readiness check left in this container's /tmp.
            try:
                body = open("/tmp/readiness.json", "rb").read()
            except OSError:
                self.send_error(404)
                return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8080), Handler).serve_forever()
"""


def _as(marina: Marina, token: str) -> Callable[..., Any]:
    def ok(method: str, path: str, body: Any = None) -> Any:
        status, payload = marina.call(method, path, body, token=token)
        assert status < 300, (status, payload)
        return payload

    return ok


def _run(ok: Callable[..., Any], env_id: str, action: str, args: dict[str, Any]) -> None:
    action_id = next(
        a["id"]
        for a in ok("GET", f"/v1/environments/{env_id}/actions")["actions"]
        if f"{a['objectName']}:{a['name']}" == action
    )
    task_id = ok("POST", f"/v1/environments/{env_id}/actions/{action_id}", args)["task_id"]
    task = wait_for(
        lambda: (t := ok("GET", f"/v1/tasks/{task_id}"))["state"] in ("succeeded", "failed") and t,
        timeout=120,
        what=action,
    )
    assert task["state"] == "succeeded", task


def _endpoint(ok: Callable[..., Any], env_id: str, name: str) -> str:
    return str(
        wait_for(
            lambda: {o["?"]["name"]: o for o in ok("GET", f"/v1/environments/{env_id}")["objects"]}[
                name
            ]["endpoints"],
            timeout=30,
            what=f"the public endpoint of {name}",
        )[0]
    )


def _deploy_probe(
    marina: Marina, token: str, name: str, port: int, env: dict[str, str], secret: str
) -> tuple[str, str]:
    ok = _as(marina, token)
    env_id = ok("POST", "/v1/environments", {"name": name})["id"]
    ok(
        "POST",
        f"/v1/environments/{env_id}/services",
        {"package": "kubernetes-cluster", "properties": {"name": "k"}},
    )
    ok(
        "POST",
        f"/v1/environments/{env_id}/services",
        {
            "package": "kubernetes-pod",
            "properties": {
                "name": "probe",
                "containers": [
                    {
                        "name": "probe",
                        "image": "python:3.11-slim",
                        "command": ["python3", "-c", PROBE],
                        "env": env,
                        "secrets": {"MY_SECRET": secret},
                        "ports": [{"containerPort": 8080}],
                        "readiness": {
                            "command": ["python3", "-c", PROBE, "check"],
                            "interval_s": 1,
                            "timeout_s": 60,
                        },
                    }
                ],
                "services": [
                    {"name": "probe", "port": port, "targetPort": 8080, "scope": "public"}
                ],
            },
        },
    )
    _run(ok, env_id, "k:deploy", {})
    _run(ok, env_id, "probe:scalePod", {"replicas": 1})
    return env_id, _endpoint(ok, env_id, "probe")


def _agent_pid(marina: Marina) -> str:
    pids = sorted((marina.state_dir / "nodes").glob("*/*/agent.pid"))
    assert pids, "no node agent recorded"
    return pids[0].read_text().strip()


def _fetch(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return dict(json.loads(reply.read()))
    except urllib.error.HTTPError as missing:
        missing.close()
        return None


SECRETS = {"red": "red-secret-4c1d", "blue": "blue-secret-9e2a"}
LIBRARY = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
extern char *program_invocation_short_name;
__attribute__((constructor)) static void loaded(void) {
    char line[256];
    int fd = open(MARKS, O_WRONLY | O_APPEND);
    if (fd < 0)
        return;
    snprintf(line, sizeof line, "%s uid=%d\n", program_invocation_short_name, (int)geteuid());
    write(fd, line, strlen(line));
    close(fd);
}
"""
"""A tenant's library: every process that loads it says so in MARKS."""


@pytest.fixture(scope="module")
def tenant_library() -> Iterator[tuple[Path, Path]]:
    """A library a tenant built (on the host, as one in its work directory would be)
    and the file where it leaves a line for each process that loads it."""
    folder = Path(tempfile.mkdtemp(prefix="marina-tenant-library-"))
    try:
        folder.chmod(0o755)
        marks = folder / "marks"
        marks.touch()
        marks.chmod(0o666)
        library = folder / "evil.so"
        if shutil.which("cc"):
            (folder / "evil.c").write_text(LIBRARY)
            subprocess.run(
                ["cc", "-shared", "-fPIC", f'-DMARKS="{marks}"', "-o", str(library),
                 str(folder / "evil.c")],
                check=True,
                timeout=120,
            )  # fmt: skip
        yield library, marks
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def reports(marina: Marina, tenant_library: tuple[Path, Path]) -> dict[str, dict[str, Any]]:
    """Each tenant's findings: its container's ("red") and its readiness check's ("red-check");
    every promise below holds for both."""
    haproxy_dirs = sorted((marina.state_dir / "nodes").glob("*/*/gateway"))
    found: dict[str, dict[str, Any]] = {}
    secrets = SECRETS
    library, _ = tenant_library
    for tenant, port, other in (("red", 30411, "blue"), ("blue", 30412, "red")):
        token = marina.ok("POST", "/v1/tokens", {"project": tenant})["token"]
        env = {
            "STATE_DIR": str(marina.state_dir),
            "ETCD_PORT": str(marina.etcd_port),
            "HAPROXY_DIR": str(haproxy_dirs[0]) if haproxy_dirs else "/nonexistent",
            "OTHER_SECRET_REVERSED": secrets[other][::-1],
            "AGENT_PID": _agent_pid(marina) if (marina.state_dir / "nodes").exists() else "1",
            "LD_PRELOAD": str(library),
            "LD_LIBRARY_PATH": str(library.parent),
        }
        _, url = _deploy_probe(marina, token, f"{tenant}-env", port, env, secrets[tenant])
        found[tenant] = _fetch(url) or {}
        found[f"{tenant}-check"] = wait_for(
            lambda url=url: _fetch(url.rstrip("/") + "/readiness"),
            timeout=60,
            what=f"{tenant}'s readiness report",
        )
    return found


def test_a_readiness_check_runs_inside_the_running_container(reports):
    for tenant in ("red", "blue"):
        container, check = reports[tenant], reports[f"{tenant}-check"]
        # The container's /tmp, its process (the one that wrote the mark) and its uid.
        assert check["container"]["ok"], check["container"]
        assert check["container"]["result"]["pid"] == container["pid"]
        seen = check["container"]["result"]["cmdline"]
        assert seen[:2] == ["python3", "-c"] and "check" not in seen
        assert container["pid"] in check["pids"] and check["pid"] != container["pid"]
        assert check["uid"] == container["uid"] and check["gid"] == container["gid"]
        assert check["cwd"] == container["cwd"] == "/pod/package"
        assert check["own_secret"] == container["own_secret"]


def test_replicas_run_as_an_unprivileged_uid_per_environment(reports):
    red, blue = reports["red"], reports["blue"]
    assert reports["red-check"]["uid"] == red["uid"] and reports["blue-check"]["uid"] == blue["uid"]
    for report in reports.values():
        assert report["uid"] >= 1000 and report["gid"] == report["uid"]
        assert report["groups"] in ([], [report["gid"]])
        caps = {
            line.split(":")[0]: int(line.split(":")[1], 16)
            for line in report["status"].splitlines()
            if line.startswith("Cap")
        }
        assert caps["CapEff"] == 0 and caps["CapPrm"] == 0 and caps["CapBnd"] == 0
        assert "NoNewPrivs:\t1" in report["status"]
        assert not report["setuid_root"]["ok"]
    assert red["uid"] != blue["uid"]


def test_a_replica_sees_only_the_system_and_its_own_area(reports):
    for report in reports.values():
        assert set(report["root"]) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32",
                                       "pod", "proc", "sbin", "tmp", "usr"}  # fmt: skip
        assert report["cwd"] == "/pod/package" and report["read_package_dir"]["ok"]
        for probe in ("read_state_dir", "read_admin_token", "read_pki", "read_home"):
            assert not report[probe]["ok"], (probe, report[probe])
        assert not report["read_shadow"]["ok"]
        # Its own process tree only: no node agent, no other pod, no Marina.
        assert max(report["pids"]) < 50, report["pids"]
        assert not report["kill_agent"]["ok"]


def test_the_system_is_read_only_and_work_and_tmp_are_writable(reports):
    for report in reports.values():
        for probe in ("write_usr", "write_etc", "write_root"):
            assert not report[probe]["ok"], (probe, report[probe])
        assert report["write_work"]["ok"], report["write_work"]
        assert report["write_tmp"]["ok"], report["write_tmp"]


def test_etcd_and_haproxy_are_out_of_reach(reports):
    for report in reports.values():
        assert not report["etcd_plain"]["ok"], report["etcd_plain"]
        assert not report["etcd_tls_without_certificate"]["ok"], report[
            "etcd_tls_without_certificate"
        ]
        assert not report["haproxy_socket"]["ok"], report["haproxy_socket"]


def test_secrets_stay_in_their_environment(reports):
    for tenant, secret in (("red", "red-secret-4c1d"), ("blue", "blue-secret-9e2a")):
        assert reports[tenant]["own_secret"] == reports[f"{tenant}-check"]["own_secret"] == secret
    for report in reports.values():
        assert report["other_secret_in"] == []


def _read(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""  # ended meanwhile


def test_no_variable_of_a_tenant_reaches_a_process_outside_its_sandbox(
    marina, reports, tenant_library
):
    """bwrap, prlimit and setpriv run as root: a tenant's LD_PRELOAD must not reach them."""
    assert reports["red"] and reports["blue"]  # both pods running
    _, marks = tenant_library
    assert marks.read_text() == "", "a tenant's library ran outside its sandbox"
    # What stays of each sandbox outside it once its command runs: bwrap, and its init.
    pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    state = f"\0{marina.state_dir}/".encode()
    bwraps = [
        pid for pid in pids if _read(pid, "comm") == b"bwrap\n" and state in _read(pid, "cmdline")
    ]
    assert len(bwraps) >= 4, bwraps
    for pid in bwraps:
        assert os.stat(f"/proc/{pid}").st_uid == 0
        assert _read(pid, "environ") in (f"PATH={sandbox.SANDBOX_PATH}\0".encode(), b"")
    for pid in pids:
        cmdline = _read(pid, "cmdline")
        for secret in SECRETS.values():
            assert secret.encode() not in cmdline, (pid, cmdline)


def test_the_original_exploit_serves_nothing_of_marina(marina, reports):
    """`cd ../../../../.. && python3 -m http.server`, as the report had it."""
    ok = _as(marina, marina.ok("POST", "/v1/tokens", {"project": "red"})["token"])
    env_id = next(e["id"] for e in ok("GET", "/v1/environments")["environments"]
                  if e["name"] == "red-env")  # fmt: skip
    ok(
        "POST",
        f"/v1/environments/{env_id}/services",
        {
            "package": "kubernetes-pod",
            "properties": {
                "name": "files",
                "containers": [
                    {
                        "name": "files",
                        "image": "python:3.11-slim",
                        "command": [
                            "sh",
                            "-c",
                            "cd ../../../../.. && "
                            'exec python3 -m http.server --bind "$POD_IP" 8080',
                        ],
                        "ports": [{"containerPort": 8080}],
                    }
                ],
                "services": [
                    {"name": "files", "port": 30413, "targetPort": 8080, "scope": "public"}
                ],
            },
        },
    )
    _run(ok, env_id, "files:scalePod", {"replicas": 1})
    url = _endpoint(ok, env_id, "files")
    with urllib.request.urlopen(url, timeout=10) as reply:
        listing = reply.read().decode()
    assert "usr/" in listing and "root/" not in listing and "work/" not in listing
    for path in (str(marina.state_dir / "admin-token"), "/root/", "/etc/shadow"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(url.rstrip("/") + path, timeout=10).close()
        caught.value.close()
        assert caught.value.code in (403, 404), path
