"""The node agent of the local engine: one process per node.

It registers the node in etcd under a lease (the node is alive while the
lease is), runs the replicas assigned to it as process groups on their own
loopback address, restarts a crashed replica with backoff, and reports each
replica's state under the same lease, so a dead agent's replicas vanish from
the reports with it. Replica processes are tied to the agent with
PR_SET_PDEATHSIG, each sandbox through the init of a PID namespace of its own
(see `sandbox.KEEPER`): when the agent dies, at any moment of a replica's
start, they die too and nothing is orphaned.
Gateway nodes run `marina-gateway` for the cluster's public routes; the
master runs one for the internal service addresses.

Each replica runs confined (see `catalog.sandbox`): its environment's uid,
its own package files read-only, a private work directory and /tmp.

A replica is ready when every container is: one with a readiness check when
its probe passed last (its command, run inside the container's own sandbox as
an exec probe runs inside a Kubernetes container: its /tmp, work directory,
processes, uid, limits and variables; one run at a time per container, ended
with everything it started when it finishes, at its timeout and when the
replica stops), one without when its ports accept connections.

    python -m catalog.engines.local.nodeagent --etcd URL --cluster KEY --node NAME --address IP
        --role minion|master|gateway [--cores N] [--memory MiB] --state-dir DIR
        [--etcd-cacert CA --etcd-cert CERT --etcd-key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from catalog import keys, sandbox
from catalog.engines.base import ContainerSpec
from catalog.engines.local.records import ReplicaRecord, ReplicaReport
from catalog.errors import MarinaError, StoreUnavailable
from catalog.packages import get_package
from catalog.pki import TLSFiles
from catalog.processes import die_with_parent, kill_all, processes_naming
from catalog.store import Store

log = logging.getLogger("marina.nodeagent")

NODES = keys.NODES
REPLICAS = keys.REPLICAS
STATUS = keys.REPLICA_STATUS
BACKOFF = (0.2, 5.0)
PROBE_OUTPUT = 160
"""Characters of a failed probe's last output line kept in the reason."""
PROBE_END = 10
"""Seconds a probe ending at its timeout has to kill what it started before its
outer process group is killed instead."""


@dataclass
class Probe:
    """One container's readiness probe on one replica."""

    due: float
    """When the next run may start (monotonic)."""
    passing: bool = False
    failures: int = 0
    """Failed runs in a row."""
    reason: str = ""
    """Why the last run failed; empty after a pass."""
    task: asyncio.Task[None] | None = None
    proc: asyncio.subprocess.Process | None = None


@dataclass
class Replica:
    ident: str
    doc: ReplicaRecord
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    restarts: int = 0
    state: str = "starting"
    started: float = 0.0
    next_start: float = 0.0
    ready: bool = False
    probed: float = 0.0
    reported: ReplicaReport | None = None
    reason: str = ""
    confinement: sandbox.Confinement | None = None
    envs: dict[str, dict[str, str]] = field(default_factory=dict)
    """Each container's variables, as it was started with them."""
    probes: dict[str, Probe] = field(default_factory=dict)

    @property
    def generation(self) -> int:
        return int(self.doc.get("generation", 0))


class NodeAgent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cluster: str = args.cluster
        self.node: str = args.node
        self.address: str = args.address
        self.state_dir = Path(args.state_dir)
        self.tls = (
            TLSFiles(Path(args.etcd_cacert), Path(args.etcd_cert), Path(args.etcd_key))
            if args.etcd_cacert
            else None
        )
        self.store = Store(args.etcd, tls=self.tls)
        self.uids: dict[str, int] = {}
        self.lease: int | None = None
        self.replicas: dict[str, Replica] = {}
        self.desired: dict[str, ReplicaRecord] = {}
        self.changed = asyncio.Event()
        self.helpers: list[asyncio.subprocess.Process] = []

    async def run(self, stop: asyncio.Event) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Sandboxes a killed predecessor left would hold their addresses and run
        # unsupervised: none should (they die with it), this makes sure.
        leftovers = processes_naming(str(self.state_dir / "replicas"))
        if leftovers:
            log.warning("ending %d replica processes left by an earlier agent", len(leftovers))
            kill_all(leftovers)
        tasks = [asyncio.create_task(self._register(stop))]
        if self.args.role == "minion":
            tasks.append(asyncio.create_task(self._follow(stop)))
            tasks.append(asyncio.create_task(self._supervise(stop)))
        else:
            tasks.append(asyncio.create_task(self._run_gateway(stop)))
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for replica in list(self.replicas.values()):
                await self._stop_replica(replica)
            for helper in self.helpers:
                with contextlib.suppress(ProcessLookupError):
                    helper.terminate()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(helper.wait(), 15)
            if self.lease is not None:
                with contextlib.suppress(MarinaError):
                    await self.store.revoke_lease(self.lease)
            await self.store.close()

    # -- membership ------------------------------------------------------

    async def _register(self, stop: asyncio.Event) -> None:
        ttl = self.args.lease_ttl
        while not stop.is_set():
            try:
                if self.lease is None or not await self.store.refresh_lease(self.lease):
                    self.lease = await self.store.grant_lease(ttl)
                    await self.store.put(
                        f"{NODES}{self.cluster}/{self.node}",
                        {
                            "node": self.node,
                            "address": self.address,
                            "role": self.args.role,
                            "cores": self.args.cores,
                            "memory": self.args.memory,
                            "pid": os.getpid(),
                            "started": time.time(),
                        },
                        lease=self.lease,
                    )
                    for replica in self.replicas.values():
                        replica.reported = None  # the old lease took the reports along
                    self.changed.set()
            except StoreUnavailable as exc:
                log.warning("lease not refreshed: %s", exc)
            await asyncio.sleep(ttl / 4)

    # -- gateways -----------------------------------------------------------

    async def _run_gateway(self, stop: asyncio.Event) -> None:
        """Keep this node's gateway agent running (master: internal services)."""
        internal = self.args.role == "master"
        routes = f"{self.cluster}.internal" if internal else self.cluster
        args = [
            sys.executable,
            "-m",
            "gateway.cli",
            "--etcd",
            self.args.etcd,
            "--cluster",
            routes,
            "--address",
            self.address,
            "--state-dir",
            str(self.state_dir / "gateway"),
            "--id",
            f"{self.cluster}-{self.node}",
            "--port-range",
            "none" if internal else "30000-32767",
            "--wipe-hold",
            "5",
            "--log-level",
            "WARNING",
            *(self.tls.args() if self.tls else []),
        ]
        delay = BACKOFF[0]
        while not stop.is_set():
            with open(self.state_dir / "gateway.log", "ab") as logfile:
                proc = await asyncio.create_subprocess_exec(
                    *args, stdout=logfile, stderr=logfile, preexec_fn=die_with_parent
                )
            self.helpers = [proc]
            started = time.monotonic()
            await proc.wait()
            if stop.is_set():
                return
            log.warning("gateway agent exited with %s; restarting", proc.returncode)
            delay = BACKOFF[0] if time.monotonic() - started > 30 else min(delay * 2, BACKOFF[1])
            await asyncio.sleep(delay)

    # -- replicas -------------------------------------------------------------

    async def _follow(self, stop: asyncio.Event) -> None:
        prefix = f"{REPLICAS}{self.cluster}/"
        while not stop.is_set():
            try:
                start = await self.store.revision()
                self.desired = {
                    v.key[len(prefix) :]: v.value
                    for v in await self.store.list(prefix)
                    if v.value.get("node") == self.node
                }
                self.changed.set()
                async for change in self.store.watch(prefix, start_revision=start + 1):
                    ident = change.key[len(prefix) :]
                    if change.value is not None and change.value.get("node") == self.node:
                        self.desired[ident] = change.value
                    else:
                        self.desired.pop(ident, None)
                    self.changed.set()
            except StoreUnavailable as exc:
                log.warning("replica watch broken: %s", exc)
                await asyncio.sleep(1)

    async def _supervise(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.changed.clear()
            try:
                await self._reconcile()
            except StoreUnavailable as exc:
                log.warning("replica reports not written: %s", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.1)

    async def _reconcile(self) -> None:
        for ident in list(self.replicas):
            replica = self.replicas[ident]
            want = self.desired.get(ident)
            if want is None:
                await self._stop_replica(replica)
                del self.replicas[ident]
                shutil.rmtree(self._replica_dir(ident) / "work", ignore_errors=True)
                with contextlib.suppress(MarinaError):
                    await self.store.delete(f"{STATUS}{self.cluster}/{ident}")
            elif int(want.get("generation", 0)) != replica.generation:
                await self._stop_replica(replica)
                replica.doc = want
                replica.state, replica.next_start = "restarting", 0.0
        for ident, want in self.desired.items():
            if ident not in self.replicas:
                self.replicas[ident] = Replica(ident, want)
        now = time.monotonic()
        for replica in self.replicas.values():
            alive = bool(replica.procs) and all(p.returncode is None for p in replica.procs)
            if replica.procs and not alive:
                codes = [p.returncode for p in replica.procs if p.returncode is not None]
                replica.reason = _exit_reason(codes[0] if codes else None)
                await self._stop_replica(replica)
                replica.restarts += 1
                quick = now - replica.started < 10
                delay = (
                    min(BACKOFF[0] * 2 ** min(replica.restarts, 5), BACKOFF[1])
                    if quick
                    else BACKOFF[0]
                )
                replica.next_start = now + delay
                replica.state = "crashed"
                log.warning(
                    "replica %s exited; restart %d in %.1fs", replica.ident, replica.restarts, delay
                )
            if not replica.procs and now >= replica.next_start:
                await self._start_replica(replica)
            if replica.procs:
                self._judge_readiness(replica, now)
            await self._report(replica)

    def _judge_readiness(self, replica: Replica, now: float) -> None:
        """Ready when every probe passes; start the probes that are due."""
        ready, reasons = True, []
        for container in replica.doc["containers"]:
            check = container.get("readiness")
            if not check:
                continue
            probe = replica.probes.get(container["name"])
            if probe is None:
                probe = replica.probes[container["name"]] = Probe(
                    due=replica.started + check["start_period_s"]
                )
            if probe.task is None and now >= probe.due:
                probe.task = asyncio.create_task(self._probe(replica, container, probe))
            ready = ready and probe.passing
            if not probe.passing and probe.reason:
                reasons.append(probe.reason)
        # Ports often while starting, then now and then: each look is a connection.
        if ready and (not replica.ready or now - replica.probed > 2):
            replica.probed = now
            ready = _ports_open(replica.doc)
        elif ready:
            ready = replica.ready
        replica.ready = ready
        replica.state = "ready" if ready else "starting"
        replica.reason = "; ".join(reasons)

    async def _probe(self, replica: Replica, container: ContainerSpec, probe: Probe) -> None:
        """Run a container's probe once, inside its sandbox, and record the outcome."""
        check = container["readiness"]
        argv = [w.replace("${package}", sandbox.PACKAGE_MOUNT) for w in check["command"]]
        output = self._replica_dir(replica.ident) / f"{container['name']}.readiness.log"
        names = [c["name"] for c in replica.doc["containers"]]
        index = names.index(container["name"])
        outer = replica.procs[index] if index < len(replica.procs) else None
        passed, why = False, ""
        try:
            assert replica.confinement is not None
            if outer is None or outer.returncode is not None:
                raise sandbox.SandboxGone("the container's sandbox is gone (its command exited)")
            with (
                open(output, "wb") as out,
                sandbox.joining(
                    argv,
                    replica.confinement,
                    sandbox_pid=outer.pid,
                    env=replica.envs[container["name"]],
                ) as joined,
            ):
                probe.proc = await asyncio.create_subprocess_exec(
                    *joined.command,
                    pass_fds=joined.fds,
                    env=joined.env,
                    cwd="/",
                    stdout=out,
                    stderr=out,
                    stdin=asyncio.subprocess.DEVNULL,
                    preexec_fn=die_with_parent,
                )
            try:
                # asyncio.timeout, not wait_for: wait_for (3.11) can swallow the
                # cancellation of a stopping replica when the probe ends with it.
                async with asyncio.timeout(check["timeout_s"]):
                    code = await probe.proc.wait()
            except TimeoutError:
                why = f"readiness probe timed out after {check['timeout_s']}s"
            else:
                passed = code == 0
                why = "" if passed else f"readiness probe failed: {_probe_code(code)}"
        except sandbox.SandboxStarting:
            # Nothing to join yet: no turn taken, the next comes soon.
            probe.due = time.monotonic() + 0.2
            probe.task = None
            return
        except (OSError, MarinaError) as exc:
            why = f"readiness probe cannot run: {exc}"
        finally:
            # Ended here whatever ended the wait (timeout, the replica stopping):
            # a probe never outlives its turn.
            proc, probe.proc = probe.proc, None
            if proc is not None and proc.returncode is None:
                await _end_probe(proc)
        last = _last_line(output) if why and not why.startswith("readiness probe cannot") else ""
        why += f": {last}" if last else ""
        probe.failures = 0 if passed else probe.failures + 1
        if passed:
            probe.passing = True
        elif probe.failures >= check["failure_threshold"]:
            probe.passing = False
        probe.reason = why
        probe.due = time.monotonic() + check["interval_s"]
        probe.task = None
        self.changed.set()

    async def _package_dir(self, package: str) -> Path:
        """The package's files as stored now: an upgraded package gets a new folder."""
        pkg = await get_package(self.store, package)
        digest = hashlib.sha256()
        for path in sorted(pkg.files):
            digest.update(path.encode() + b"\0" + hashlib.sha256(pkg.files[path]).digest())
        target = self.state_dir / "packages" / package / digest.hexdigest()[:16]
        if not target.exists():
            staging = target.with_name(target.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            root = staging.resolve()
            for path, data in pkg.files.items():
                file = (staging / path).resolve()
                if not file.is_relative_to(root) or file == root:
                    raise MarinaError(f"package {package}: file path {path!r} leaves the package")
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_bytes(data)
                file.chmod(0o644)
            os.replace(staging, target)
        return target

    def _replica_dir(self, ident: str) -> Path:
        return self.state_dir / "replicas" / ident

    async def _confinement(self, replica: Replica) -> sandbox.Confinement:
        doc = replica.doc
        uid: int | None = None
        if os.geteuid() == 0:
            environment = str(doc.get("environment") or self.cluster)
            if environment not in self.uids:
                self.uids[environment] = await sandbox.environment_uid(self.store, environment)
            uid = self.uids[environment]
        work = self._replica_dir(replica.ident) / "work"
        sandbox.prepare_work_dir(work, uid)
        name = doc.get("package")
        package = await self._package_dir(name) if name else None
        return sandbox.Confinement(
            work_dir=work, package_dir=package, uid=uid, hostname=str(doc["name"])[:63]
        )

    async def _start_replica(self, replica: Replica) -> None:
        doc = replica.doc
        logdir = self._replica_dir(replica.ident)
        logdir.mkdir(parents=True, exist_ok=True)
        replica.procs = []
        try:
            confinement = replica.confinement = await self._confinement(replica)
            for container in doc["containers"]:
                env = {
                    "PATH": sandbox.SANDBOX_PATH,
                    "LANG": "C.UTF-8",
                    "HOME": sandbox.WORK_MOUNT,
                    "TMPDIR": "/tmp",
                    **doc.get("env", {}),
                    **container.get("env", {}),
                    **container.get("secrets", {}),
                    "POD_IP": doc["ip"],
                    "HOSTNAME": doc["name"],
                    "MARINA_NODE": self.node,
                }
                replica.envs[container["name"]] = env
                argv = [
                    part.replace("${package}", sandbox.PACKAGE_MOUNT)
                    for part in [*container["command"], *container.get("args", [])]
                ]
                with (
                    open(logdir / f"{container['name']}.log", "ab") as logfile,
                    sandbox.confining(argv, confinement, env=env) as confined,
                ):
                    proc = await asyncio.create_subprocess_exec(
                        *confined.command,
                        pass_fds=confined.fds,
                        env=confined.env,
                        cwd="/",
                        stdout=logfile,
                        stderr=logfile,
                        stdin=asyncio.subprocess.DEVNULL,
                        preexec_fn=die_with_parent,
                    )
                replica.procs.append(proc)
        except (OSError, MarinaError) as exc:
            log.warning("replica %s: cannot start: %s", replica.ident, exc)
            replica.state = "failed"
            replica.reason = str(exc)
            replica.next_start = time.monotonic() + BACKOFF[1]
            await self._stop_replica(replica)
            return
        replica.started = time.monotonic()
        replica.state = "starting"
        replica.reason = ""

    async def _stop_replica(self, replica: Replica) -> None:
        for probe in replica.probes.values():
            if probe.proc is not None and probe.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(probe.proc.pid, signal.SIGKILL)
            if probe.task is not None:
                probe.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probe.task
        replica.probes = {}
        for proc in replica.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in replica.procs:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        # What is left of the sandbox (its PID namespace's init is ending with
        # the keeper) is found by its own directory and ended at once.
        kill_all(processes_naming(str(self._replica_dir(replica.ident))))
        replica.procs = []
        replica.ready = False

    async def _report(self, replica: Replica) -> None:
        if self.lease is None:
            return
        status: ReplicaReport = {
            "node": self.node,
            "state": replica.state,
            "ready": replica.ready,
            "ip": replica.doc["ip"],
            "pod": replica.doc["pod"],
            "restarts": replica.restarts,
            "generation": replica.generation,
            "pids": [p.pid for p in replica.procs],
            "reason": replica.reason,
        }
        if status != replica.reported:
            await self.store.put(
                f"{STATUS}{self.cluster}/{replica.ident}", status, lease=self.lease
            )
            replica.reported = status


async def _end_probe(proc: asyncio.subprocess.Process) -> None:
    """End a probe with every process it started inside the replica, never the replica.

    Inside the replica's PID namespace only the probe's own reaper knows its tree
    (orphans included): it is asked first. Its outer process group goes at once
    when there is no reaper, or after `PROBE_END` seconds.
    """
    if sandbox.end_joined(proc.pid):
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROBE_END):
                await proc.wait()
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    if code == 127:
        return "exited with code 127: command not found"
    return f"exited with code {code}"


def _probe_code(code: int) -> str:
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exit code {code}" + (" (command not found)" if code == 127 else "")


def _last_line(path: Path) -> str:
    """The last line a probe printed, shortened, for its failure reason."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:PROBE_OUTPUT] if lines else ""


def _ports_open(doc: ReplicaRecord) -> bool:
    """Whether the ports of every container without a readiness check accept connections."""
    for container in doc["containers"]:
        if container.get("readiness"):
            continue
        for port in container.get("ports", []):
            try:
                socket.create_connection((doc["ip"], port["containerPort"]), timeout=0.2).close()
            except OSError:
                return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marina-node")
    parser.add_argument("--etcd", required=True)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--role", choices=["master", "minion", "gateway"], required=True)
    parser.add_argument("--cores", type=float, default=2.0)
    parser.add_argument("--memory", type=int, default=2048)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--lease-ttl", type=int, default=3)
    parser.add_argument("--etcd-cacert", help="CA bundle of an https:// etcd")
    parser.add_argument("--etcd-cert", help="client certificate for etcd")
    parser.add_argument("--etcd-key", help="client certificate's key for etcd")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await NodeAgent(args).run(stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
