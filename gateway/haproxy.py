"""Running HAProxy: validation, seamless reloads and the runtime API.

A reload starts a new HAProxy with `-x <stats socket> -sf <old pid>`: the new
process takes the listening sockets from the old one over the stats socket
(`expose-fd listeners`), so no connection is refused while both run, and the
old process finishes its connections before it exits. Measured against the
master CLI `reload`, this lost no connection under heavy connection churn.

HAProxy runs in its own session, so it keeps serving if the agent dies; a
restarted agent adopts it through the pid file and hands its sockets over at
the next reload.

The next process of each part is started ahead of its change, as a standby
reading its configuration from a FIFO: HAProxy spends about half of its start
loading libraries and initialising before it reads a line, and a standby has
done that already when a change comes (a new port is served in about 5 ms
instead of 10-12).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from gateway.errors import HAProxyError

log = logging.getLogger(__name__)

# What each pid file of a state directory holds, by haproxy.pid's path: the
# union of them is what haproxy.pid lists.
_PID_FILES: dict[Path, dict[str, str]] = {}

_ERROR_REPLY = re.compile(
    r"(no such|unknown|invalid|require|not found|can't|cannot|failed|error)", re.IGNORECASE
)
BIND_FAILURE = re.compile(r"cannot bind socket.*?\[(\[[^\]]+\]|[^\[\]]+?):(\d+)\]")
MAX_SOCKET_PATH = 90  # HAProxy takes at most 97 characters for a UNIX bind


class HAProxy:
    """One gateway's HAProxy process and the files it runs from."""

    def __init__(
        self,
        state_dir: Path,
        *,
        name: str = "haproxy",
        binary: str = "haproxy",
        start_timeout: float = 60.0,
        every_pid: Path | None = None,
    ) -> None:
        """`name` tells apart the processes of one gateway in its state
        directory; `every_pid`, if given, is kept listing the pids of all of
        them, for whoever cleans up after a killed agent."""
        self.state_dir = state_dir
        self.name = name
        self.binary = binary
        self.start_timeout = start_timeout
        self.config_path = state_dir / f"{name}.cfg"
        self.good_path = state_dir / f"{name}.cfg.good"
        self.map_path = state_dir / ("ports.map" if name == "haproxy" else f"{name}.map")
        self.socket_path = socket_path_for(state_dir, name)
        self.metrics_socket = socket_path_for(state_dir, f"{name}-metrics")
        self.pid_path = state_dir / f"{name}.pid"
        self.log_path = state_dir / f"{name}.log"
        self.fifo_path = state_dir / f"{name}.cfg.fifo"
        self.standby_pid_path = state_dir / f"standby-{name}.pid"
        # The standby and the processes its `-sf` names, fixed when it started.
        self._standby: tuple[Child, list[int]] | None = None
        self.every_pid = every_pid
        self.pid: int | None = None
        self.others: list[int] = []  # adopted older processes, told to finish at the next reload
        self._children: set[Child] = set()
        self._exits: dict[int, int] = {}  # exit status of children already reaped

    # -- process state -------------------------------------------------

    def adopt(self) -> int | None:
        """Take over the HAProxy processes an earlier agent left running, if any.

        The pid file lists every process the agent started that may still run,
        newest last, written as soon as each is spawned: an agent killed in the
        middle of a reload leaves none behind that its successor cannot find
        (and one killed between the spawn and the record leaves a process
        whose command line names the part's configuration).
        """
        self._end_recorded_standby()
        alive = self._recorded_alive()
        # One spawned an instant before the agent died may not be on record
        # yet; its command line names this part's configuration.
        alive += [
            p for p in _pids_running(f" -f {self.config_path} ") if p not in alive and _alive(p)
        ]
        if not alive:
            return None
        alive.sort(key=_start_time)  # the newest serves; the others finish
        self.pid, self.others = alive[-1], alive[:-1]
        self._record(alive)
        log.info("adopted running haproxy pid %s", " ".join(map(str, alive)))
        return self.pid

    def _recorded_alive(self) -> list[int]:
        """Recorded processes still running this gateway's configuration (a
        recorded pid may since belong to another program)."""
        # A process that was a standby read its configuration from the FIFO.
        mine = (f" -f {self.config_path} ", f" -f {self.fifo_path} ")
        return [
            p for p in self._recorded() if _alive(p) and any(m in _cmdline(p) + " " for m in mine)
        ]

    def _end_recorded_standby(self) -> None:
        """A standby an earlier agent left waits for a configuration that
        will never come: end it. Found by its command line, since an agent
        stopped while starting one never learnt its pid. One that took its
        configuration and serves is recorded in the pid file: it stays."""
        mine = f" -f {self.fifo_path} "
        serving = set(self._recorded())
        for pid in _pids_running(mine):
            if pid in serving:
                continue
            if self._standby is None or pid != self._standby[0].pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.standby_pid_path.unlink(missing_ok=True)

    def _recorded(self) -> list[int]:
        try:
            return [int(p) for p in self.pid_path.read_text().split()]
        except (OSError, ValueError):
            return []

    def _record(self, pids: list[int]) -> None:
        _write_atomic(self.pid_path, "".join(f"{p}\n" for p in pids))
        self._publish_every_pid()

    def _publish_every_pid(self) -> None:
        if self.every_pid is None:
            return
        # The other pid files are read once: with dozens of parts, reading
        # them all at every start was most of what recording a pid cost.
        files = _PID_FILES.get(self.every_pid)
        if files is None:
            files = _PID_FILES[self.every_pid] = {}
            mine: list[Path] = [r for r in self.state_dir.glob("*.pid") if r != self.every_pid]
        else:
            mine = [self.pid_path, self.standby_pid_path]
        for record in mine:
            try:
                files[record.name] = record.read_text()
            except OSError:
                files.pop(record.name, None)
        text = "".join(files[name] for name in sorted(files))
        _write_atomic(self.every_pid, "".join(f"{p}\n" for p in text.split()))

    def running(self) -> bool:
        return self.pid is not None and _alive(self.pid)

    # -- configuration -------------------------------------------------

    async def check(self, config: str, port_map: str | None) -> None:
        """`haproxy -c` on a candidate; raises with HAProxy's own words.

        Not `-q`: it silences the alerts too, which leaves nothing to report.
        """
        candidate = self.state_dir / f"{self.name}.cfg.new"
        map_candidate = self.map_path.with_name(self.map_path.name + ".new")
        _write_atomic(map_candidate, port_map or "")
        _write_atomic(candidate, config.replace(str(self.map_path), str(map_candidate)))
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            "-c",
            "-f",
            str(candidate),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            text = out.decode(errors="replace")
            raise HAProxyError("check", _alerts(text) or f"exit status {proc.returncode}")

    async def apply(self, config: str, port_map: str | None) -> float:
        """Swap in and confirm a configuration; seconds the swap took.

        The new process is its own check: it parses the whole configuration
        before it takes a listener or tells the old process to finish (`-sf`
        acts after start-up), so a configuration HAProxy rejects is never
        loaded, and a separate `haproxy -c` would only parse it twice. On
        failure the previous files are restored and the running process,
        which was never told to stop, keeps serving them.
        """
        started = time.perf_counter()
        # A part without a map (a static one) reads none: its files stay as
        # they are, and each start writes one file less.
        paths = [self.config_path] if port_map is None else [self.config_path, self.map_path]
        previous = {p: p.read_text() for p in paths if p.exists()}
        if port_map is not None:
            _write_atomic(self.map_path, port_map)
        _write_atomic(self.config_path, config)
        try:
            await self._start(config)
        except HAProxyError:
            for path in paths:
                if path in previous:
                    _write_atomic(path, previous[path])
                else:  # never leave a refused configuration where one is read
                    path.unlink(missing_ok=True)
            raise
        _link_atomic(self.config_path, self.good_path)
        if port_map is not None:
            _link_atomic(self.map_path, self._good_map)
        return time.perf_counter() - started

    @property
    def _good_map(self) -> Path:
        return self.map_path.with_name(self.map_path.name + ".good")

    async def retire(self) -> None:
        """Stop taking connections and let open ones finish (a soft stop);
        the last good configuration goes too, so nothing starts it again."""
        self._end_standby()
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
        self.pid, self.others = None, []
        self._record([])
        for path in (self.good_path, self._good_map):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def start_last_good(self) -> bool:
        """Serve the last configuration that worked, when nothing else is known."""
        good_map = self._good_map
        if self.running() or not self.good_path.exists():
            return False
        # The good files may be links to the ones they restore.
        _link_atomic(self.good_path, self.config_path)
        if good_map.exists():
            _link_atomic(good_map, self.map_path)
        await self._start()
        return True

    def _handover(self) -> list[int]:
        """The processes a new one takes the listeners from and tells to finish."""
        old = [p for p in [*self.others, self.pid] if p is not None and _alive(p)]
        return old if old and self.socket_path.exists() else []

    def _args(self, config: Path, old: list[int]) -> list[str]:
        args = [self.binary, "-f", str(config)]
        if old:
            args += ["-x", str(self.socket_path), "-sf", *map(str, old)]
        return args

    async def _spawn(self, args: list[str]) -> Child:
        starting = _STARTER.submit(_start_child, args, self.log_path)
        try:
            proc = Child(await asyncio.shield(asyncio.wrap_future(starting)))
        except asyncio.CancelledError:
            # The start goes on in its thread whatever happens here: a child
            # that comes of it is ended, not left to run unrecorded.
            starting.add_done_callback(_end_unwanted)
            raise
        self._children.add(proc)
        return proc

    async def prepare_standby(self) -> None:
        """Have the next process of this part started and waiting for its
        configuration, unless one already waits for the running process."""
        if self._standby is not None:
            proc, old = self._standby
            if proc.returncode is None and old == self._handover():
                return
            self._end_standby()
        if not self.fifo_path.is_fifo():
            self.fifo_path.unlink(missing_ok=True)
            os.mkfifo(self.fifo_path, 0o600)
        old = self._handover()
        proc = await self._spawn(self._args(self.fifo_path, old))
        self._standby = (proc, old)
        _write_atomic(self.standby_pid_path, f"{proc.pid}\n")
        self._publish_every_pid()

    def drop_standby(self) -> None:
        """End the standby, if one waits: this part is not expected to change soon."""
        self._end_standby()

    def _end_standby(self) -> None:
        if self._standby is None:
            return
        proc = self._standby[0]
        self._standby = None
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        asyncio.get_running_loop().create_task(self._reap_later(proc))
        self.standby_pid_path.unlink(missing_ok=True)
        self._publish_every_pid()

    async def _use_standby(self, old: list[int], config: str) -> Child | None:
        """Hand the configuration to the standby, if it waits for these old
        processes; None when there is none to use."""
        if self._standby is None:
            return None
        proc, expected = self._standby
        if expected != old:
            self._end_standby()
            return None
        self._standby = None
        self.standby_pid_path.unlink(missing_ok=True)
        deadline = time.monotonic() + 1.0
        while True:  # a standby just started may not have opened the FIFO yet
            try:
                fd = os.open(self.fifo_path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                if proc.returncode is not None or time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    asyncio.get_running_loop().create_task(self._reap_later(proc))
                    return None
                await asyncio.sleep(0.001)
        os.set_blocking(fd, True)
        data = config.encode()

        def write() -> None:
            with os.fdopen(fd, "wb") as fifo:
                fifo.write(data)

        try:
            await asyncio.to_thread(write)
        except OSError:  # it died while reading: its log says why
            log.warning("standby haproxy %s stopped reading its configuration", proc.pid)
        return proc

    async def _start(self, config: str | None = None) -> None:
        old = self._handover()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        proc = await self._use_standby(old, config) if config is not None else None
        if proc is None:
            proc = await self._spawn(self._args(self.config_path, old))
        self._record([*old, proc.pid])
        deadline = time.monotonic() + self.start_timeout
        # A first process binds the stats socket once it has parsed its
        # configuration: until then a stat is all each look costs, not a
        # connection. A successor takes the socket over with the listeners,
        # and is asked less often as it takes longer.
        fresh = not old
        pause = 0.002
        while True:
            if proc.returncode is not None:
                self._children.discard(proc)
                self._record(old)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 1.0)
                raise HAProxyError(
                    "reload",
                    _alerts(self._log_since(offset)) or f"haproxy exited with {proc.returncode}",
                )
            if not fresh or self.socket_path.exists():
                with contextlib.suppress(HAProxyError, OSError):
                    info = await self.command("show info")
                    if f"\nPid: {proc.pid}\n" in "\n" + info:
                        break
                pause = min(pause * 1.25, 0.005)
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                self._record(old)
                raise HAProxyError("reload", f"new haproxy did not answer in {self.start_timeout}s")
            await asyncio.sleep(pause)
        # The old processes were told to finish (-sf) and leave by themselves.
        self.pid, self.others = proc.pid, []
        self._record([proc.pid])
        asyncio.get_running_loop().create_task(self._reap_later(proc))

    async def _reap_later(self, proc: Child) -> None:
        with contextlib.suppress(Exception):
            await proc.wait()
        self._children.discard(proc)
        if proc.returncode is not None:
            self._exits[proc.pid] = proc.returncode
            while len(self._exits) > 16:  # only the latest matter
                del self._exits[next(iter(self._exits))]

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def pids(self) -> set[int]:
        """Every HAProxy process of this gateway that may still run."""
        pids = {p.pid for p in self._children} | set(self.others) | set(self._recorded_alive())
        if self.pid is not None:
            pids.add(self.pid)
        return {p for p in pids if _alive(p)}

    async def exit_reason(self, pid: int) -> str:
        """How a process of ours ended, as far as this agent can know (an
        adopted one is not its child: its status went to someone else)."""
        for child in list(self._children):
            if child.pid == pid:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(child.wait(), 0.5)
                if child.returncode is not None:
                    self._exits[pid] = child.returncode
        code = self._exits.pop(pid, None)
        if code is None:
            return "exited"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def forget(self, pid: int) -> None:
        """Drop a dead process from the record."""
        if self.pid == pid:
            self.pid = None
        self.others = [p for p in self.others if p != pid]
        self._record([p for p in self._recorded() if p != pid and _alive(p)])

    async def stop(self) -> None:
        """Stop serving: the current process and any still draining.

        SIGTERM is HAProxy's hard stop, so this takes milliseconds; a process
        that has not gone after half a second is killed.
        """
        pids = self.pids()
        self._standby = None
        self._end_recorded_standby()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 0.5
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for child in list(self._children):  # reap our own, so none is left a zombie
            with contextlib.suppress(ProcessLookupError):
                await child.wait()
        self.pid, self.others = None, []
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        self._publish_every_pid()

    # -- runtime API ---------------------------------------------------

    async def command(self, line: str) -> str:
        """One runtime API request (several commands may be joined by ';')."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
        except OSError as exc:
            raise HAProxyError("runtime", f"stats socket unreachable: {exc}") from exc
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode(errors="replace")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def load_certificate(self, path: str, pem: str, *, crt_lists: list[str]) -> None:
        """Load or replace a certificate at runtime and add it to crt-lists
        that lack it; no reload. A refused one is aborted and raised."""
        known = path in await self.command("show ssl cert")
        steps = [] if known else [f"new ssl cert {path}"]
        # The payload ends at the first empty line; PEM written by
        # gateway.certificates has none.
        steps += [f"set ssl cert {path} <<\n{pem.strip()}\n", f"commit ssl cert {path}"]
        steps += [f"add ssl crt-list {crt_list} {path}" for crt_list in crt_lists]
        for step in steps:
            reply = await self.command(step)
            if _ERROR_REPLY.search(reply) or "unable" in reply.lower():
                with contextlib.suppress(HAProxyError):
                    await self.command(f"abort ssl cert {path}")
                raise HAProxyError("certificate", " ".join(reply.split())[:300])

    async def drop_certificate(self, path: str, *, crt_lists: list[str]) -> None:
        for crt_list in crt_lists:
            await self.command(f"del ssl crt-list {crt_list} {path}")

    async def scrape(self) -> str:
        """HAProxy's own Prometheus exporter, served on a UNIX socket."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.metrics_socket))
        except OSError as exc:
            raise HAProxyError("metrics", f"exporter unreachable: {exc}") from exc
        try:
            writer.write(b"GET /metrics HTTP/1.0\r\nHost: haproxy\r\n\r\n")
            await writer.drain()
            reply = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, _, body = reply.partition(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise HAProxyError("metrics", head[:80].decode(errors="replace"))
        return body.decode(errors="replace")

    async def run_commands(self, commands: list[str], *, batch: int = 200) -> None:
        """Send commands in batches; raise on the first reply that reports an error."""
        for start in range(0, len(commands), batch):
            chunk = commands[start : start + batch]
            reply = await self.command("; ".join(chunk))
            for line in reply.splitlines():
                if line.strip() and _ERROR_REPLY.search(line) and "no need to change" not in line:
                    raise HAProxyError("runtime", line.strip())


class Child:
    """A HAProxy process this agent started, from a worker thread: starting
    one (fork and exec) waits for the child to run, which on a busy machine
    took 10-30 ms, all of it with the agent's event loop stopped when
    started in line. It is reaped only by `wait` (or by `returncode` once
    it has exited), so a dead child stays a zombie that `_alive` can tell
    from a live one until then."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has exited (reaping it), else None."""
        return self._popen.poll()

    def kill(self) -> None:
        self._popen.kill()

    async def wait(self) -> int:
        """Wait for the process to exit, without blocking the event loop
        (its pidfd becomes readable when it does), and reap it."""
        loop = asyncio.get_running_loop()
        while (code := self._popen.poll()) is None:
            try:
                fd = os.pidfd_open(self.pid)
            except ProcessLookupError:
                continue  # gone between the two looks: poll reaps it
            try:
                exited = loop.create_future()
                loop.add_reader(fd, _settle, exited)
                try:
                    if self._popen.poll() is None:
                        await exited
                finally:
                    loop.remove_reader(fd)
            finally:
                os.close(fd)
        return code


# Starts HAProxy processes off the event loop (see `Child`); a start that
# was given up on still finishes here, so its child can be ended.
_STARTER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="haproxy-start")


def _start_child(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as logfile:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=logfile,
            start_new_session=True,
        )


def _end_unwanted(starting: concurrent.futures.Future[subprocess.Popen[bytes]]) -> None:
    if starting.exception() is not None:
        return
    popen = starting.result()
    popen.kill()
    popen.wait()  # killed: at once


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def socket_path_for(state_dir: Path, name: str = "haproxy") -> Path:
    """The stats socket: in the state directory unless its path is too long for
    a UNIX socket; then in a private folder under the temporary directory,
    named after the state directory so a restarted agent finds it again."""
    inside = state_dir / f"{name}.sock"
    if len(str(inside)) <= MAX_SOCKET_PATH:
        return inside
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"marina-gw-{digest}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid():
        raise HAProxyError("setup", f"{folder} belongs to another user")
    return folder / f"{name}.sock"


def bound_ports_failing(message: str) -> set[tuple[str, int]]:
    """Addresses and ports HAProxy could not bind, read from its alert text."""
    return {(host.strip("[]"), int(port)) for host, port in BIND_FAILURE.findall(message)}


_ALERT_PREFIX = re.compile(r"^\[(ALERT|WARNING)\]\s*\(\d+\)\s*:\s*(config\s*:\s*)?")
_SUMMARY = re.compile(r"Error\(s\) found in configuration file|Fatal errors found in configuration")


def _alerts(text: str) -> str:
    """HAProxy's alerts without the boilerplate around them."""
    lines = [
        _ALERT_PREFIX.sub("", ln.strip())
        for ln in text.splitlines()
        if ln.startswith("[ALERT]") and not _SUMMARY.search(ln)
    ]
    return " | ".join(lines[-8:]) or text.strip()[-500:]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie answers kill(0) too. A child of this agent is asked without
    # reaping it (one system call, where reading /proc costs a file open
    # per process and look, dozens per change with as many parts).
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _start_time(pid: int) -> int:
    """When a process started, in clock ticks since boot (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def _pids_running(fragment: str) -> list[int]:
    """Processes whose command line (with a final space) holds `fragment`."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and fragment in _cmdline(int(entry.name)) + " ":
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _link_atomic(source: Path, target: Path) -> None:
    """`target` with `source`'s content, without copying it: the next write
    of `source` replaces its name with a new file, which leaves this one."""
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    os.link(source, tmp)
    os.replace(tmp, target)


def _write_atomic(path: Path, text: str) -> None:
    # No fsync: after a crash the agent renders everything again from etcd,
    # and a rename is all a reader needs to never see half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
