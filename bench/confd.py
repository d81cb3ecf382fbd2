"""confd driving HAProxy from the same route keys: the anchor the gateway is
measured against.

confd is built from its public source (kelseyhightower/confd, which vendors
its dependencies) with Go into a cache folder outside the repository, once.
Where it comes from, in order: `$MARINA_CONFD` (a binary), the cache
(`$MARINA_BENCH_CACHE`, default `~/.cache/marina-bench`), or a build from
`$MARINA_CONFD_SRC` (a source folder, or a bare git repository whose HEAD is
exported). Without any of them the benchmark reports confd as unavailable.

confd renders one HAProxy configuration with a frontend and a backend per
route (the straightforward template for the contract), checks it with
`haproxy -c` and reloads seamlessly: a new HAProxy started with
`-x <stats socket> -sf <old pid>`, as the gateway does. By default its
global section carries the gateway's start-up tuning (`httpclient.ssl.verify
none`: Debian's HAProxy otherwise parses the system CA store at every start,
about 30 ms), so the comparison measures the agents, not HAProxy options;
`tuned=False` gives the stock global section confd users run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("MARINA_BENCH_CACHE", Path.home() / ".cache" / "marina-bench"))
SOURCES = [
    os.environ.get("MARINA_CONFD_SRC", ""),
    "/work/.mirror/kelseyhightower+confd/repo",
]

TEMPLATE = """\
global
    maxconn 4000
    stats socket {socket} mode 600 level admin expose-fd listeners
    hard-stop-after 30s
{tuning}
defaults
    timeout connect 5s
    timeout client 60s
    timeout server 60s
{{{{range gets "{prefix}*"}}}}{{{{$name := base .Key}}}}{{{{$r := json .Value}}}}
frontend fe_{{{{$name}}}}
    mode {{{{$r.mode}}}}
    bind {address}:{{{{$r.port}}}}
    default_backend be_{{{{$name}}}}

backend be_{{{{$name}}}}
    mode {{{{$r.mode}}}}
{{{{range $i, $b := $r.backends}}}}    server s{{{{$i}}}} {{{{$b.host}}}}:{{{{$b.port}}}}
{{{{end}}}}{{{{end}}}}
frontend fe_placeholder
    mode tcp
    bind {address}:{placeholder}
"""

RESOURCE = """\
[template]
src = "haproxy.cfg.tmpl"
dest = "{work}/haproxy.cfg"
keys = ["{prefix_key}"]
check_cmd = "haproxy -c -q -f {{{{.src}}}}"
reload_cmd = "{work}/reload.sh"
"""

RELOAD = """\
#!/bin/sh
# Seamless: the new process takes the listeners over the stats socket.
if [ -s {work}/haproxy.pid ] && kill -0 $(cat {work}/haproxy.pid) 2>/dev/null; then
  exec haproxy -D -p {work}/haproxy.pid -f {work}/haproxy.cfg \\
    -x {work}/haproxy.sock -sf $(cat {work}/haproxy.pid)
fi
exec haproxy -D -p {work}/haproxy.pid -f {work}/haproxy.cfg
"""


def locate() -> tuple[Path | None, str]:
    """The confd binary, built on first use; or None and the reason."""
    given = os.environ.get("MARINA_CONFD")
    if given:
        return (Path(given), "") if Path(given).is_file() else (None, f"{given} missing")
    built = CACHE / "confd"
    if built.is_file():
        return built, ""
    if shutil.which("go") is None:
        return None, "Go is not installed (Debian package golang-go)"
    for source in filter(None, SOURCES):
        src = Path(source)
        if not src.exists():
            continue
        try:
            tree = _source_tree(src)
            CACHE.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["go", "build", "-o", str(built), "."],
                cwd=tree,
                env={
                    **os.environ,
                    "GOFLAGS": "-mod=vendor",
                    "GOCACHE": str(CACHE / "gocache"),
                },
                check=True,
                capture_output=True,
                timeout=900,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"building confd from {src} failed: {exc}"
        return built, ""
    return None, "no confd source (set MARINA_CONFD_SRC or MARINA_CONFD)"


def _source_tree(src: Path) -> Path:
    if (src / "confd.go").exists():
        return src
    # A bare repository: export its HEAD.
    tree = CACHE / "confd-src"
    if not (tree / "confd.go").exists():
        tree.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as archive:
            subprocess.run(
                ["git", "--git-dir", str(src), "archive", "HEAD"], stdout=archive, check=True
            )
            archive.seek(0)
            with tarfile.open(fileobj=archive) as tar:
                tar.extractall(tree, filter="data")
    return tree


class Confd:
    """confd watching one cluster's routes and reloading its own HAProxy."""

    def __init__(
        self,
        binary: Path,
        *,
        etcd_url: str,
        cluster: str,
        address: str,
        placeholder: int,
        tuned: bool = True,
    ) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="marina-confd-"))
        self.cluster, self.address = cluster, address
        prefix = f"/marina/gateway/routes/{cluster}/"
        (self.work / "conf.d").mkdir()
        (self.work / "templates").mkdir()
        (self.work / "templates" / "haproxy.cfg.tmpl").write_text(
            TEMPLATE.format(
                socket=self.work / "haproxy.sock",
                prefix=prefix,
                address=address,
                placeholder=placeholder,
                tuning="    noreuseport\n    httpclient.ssl.verify none\n" if tuned else "",
            )
        )
        (self.work / "conf.d" / "haproxy.toml").write_text(
            RESOURCE.format(work=self.work, prefix_key=prefix.rstrip("/"))
        )
        reload = self.work / "reload.sh"
        reload.write_text(RELOAD.format(work=self.work))
        reload.chmod(0o755)
        self.log = open(self.work / "confd.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                str(binary),
                "-backend",
                "etcdv3",
                "-node",
                etcd_url,
                "-watch",
                "-confdir",
                str(self.work),
                "-log-level",
                "warning",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.work / "haproxy.pid").read_text().split()]
        except (OSError, ValueError):
            return []

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        # HAProxy daemonised itself, and old processes may still drain: end
        # every process running this instance's configuration.
        for pid in {*self.pids(), *_running(f"-f {self.work}/haproxy.cfg")}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.work, ignore_errors=True)


def _running(fragment: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmdline:
            pids.append(int(entry))
    return pids
