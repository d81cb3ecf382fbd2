"""A kubelet for every node of the test API server: pods really run, here, confined.

Each pod bound to a node gets its own loopback address (its podIP, in
127.70/16) and runs its containers' `command` + `args` as local processes
through Marina's sandbox (`catalog.sandbox`), with the environment a real
kubelet gives (Service links, downward API, Secret and ConfigMap references, `$(VAR)`
expansion) and ConfigMap, Secret and emptyDir volumes mounted at their
mountPath. It reports what a kubelet reports: container states and reasons
(CrashLoopBackOff with the last exit code, a StartError as containerd's
when the command does not exist), restart counts, readiness from an exec readinessProbe or
else from TCP connects to the declared ports, and logs from files.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import logging
import os
import random
import re
import shutil
import signal
from pathlib import Path
from typing import Any

from aiohttp import web

from catalog import sandbox
from catalog.addresses import listening_addresses
from tests.kubeapi.resources import BY_PATH
from tests.kubeapi.server import ApiError, ApiServer, now

Obj = dict[str, Any]
log = logging.getLogger(__name__)

PODS = BY_PATH[("", "v1", "pods")]
NODES = BY_PATH[("", "v1", "nodes")]
SECRETS = BY_PATH[("", "v1", "secrets")]
CONFIGMAPS = BY_PATH[("", "v1", "configmaps")]
SERVICES = BY_PATH[("", "v1", "services")]
POD_NET = 70
"""Pod IPs are 127.70.x.y: apart from the local engine's 127.66-68 ranges."""
BACKOFF = (1.0, 8.0)
"""First and longest restart back-off, in seconds (a real kubelet's are 10 s and 5 min)."""
STOP_GRACE = 3.0
VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


class ConfigError(Exception):
    """What a kubelet reports as CreateContainerConfigError."""


class StartError(Exception):
    """A container whose process cannot start: containerd's StartError (exit code 128)."""


def expand(text: str, env: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return VAR.sub(sub, text)


class Container:
    """One container of one pod: its process, state and history."""

    def __init__(self, pod: PodRunner, spec: Obj) -> None:
        self.pod = pod
        self.spec = spec
        self.name: str = spec["name"]
        self.restarts = 0
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.ready = False
        self.started = False
        self.process: asyncio.subprocess.Process | None = None
        self.log_path = pod.dir / f"{self.name}.log"
        self.previous_log = pod.dir / f"{self.name}.previous.log"
        self.task: asyncio.Task[None] | None = None
        self.exited = asyncio.Event()
        self.confinement: sandbox.Confinement | None = None
        self.env: dict[str, str] = {}

    def status(self) -> Obj:
        status = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restarts,
            "started": self.started,
            "state": self.state,
            "lastState": self.last_state,
        }
        if "running" in self.state or "terminated" in self.state:
            status["containerID"] = f"kubeapi://{self.pod.uid}/{self.name}"
        return status

    async def run(self) -> None:
        policy = self.pod.spec.get("restartPolicy", "Always")
        backoff = BACKOFF[0]
        pulled = True
        while not self.pod.stopping:
            cannot_start = ""
            try:
                argv, env = self.resolve()
                if argv is not None:
                    self.runnable(argv)
            except StartError as exc:
                cannot_start = str(exc)
            except ConfigError as exc:
                self.set_state(
                    {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
                )
                await self.pod.sleep(BACKOFF[0])
                continue
            if argv is None:
                reason = "ErrImagePull" if pulled else "ImagePullBackOff"
                self.set_state({"waiting": {"reason": reason, "message": env["message"]}})
                pulled = not pulled
                await self.pod.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF[1])
                continue
            terminated: Obj
            if cannot_start:
                code = 128
                terminated = {"exitCode": code, "reason": "StartError", "message": cannot_start}
                terminated["startedAt"] = "1970-01-01T00:00:00Z"  # as containerd: never ran
            else:
                code, started_at = await self.execute(argv, env)
                reason = "Completed" if code == 0 else "Error"
                terminated = {"exitCode": code, "reason": reason, "startedAt": started_at}
            if self.pod.stopping:
                break
            terminated["finishedAt"] = now()
            terminated["containerID"] = f"kubeapi://{self.pod.uid}/{self.name}"
            self.last_state = {"terminated": terminated}
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                self.set_state(self.last_state)
                self.last_state = {}
                break
            self.restarts += 1
            self.set_state(
                {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {int(backoff)}s restarting failed "
                        f"container={self.name} pod={self.pod.name}"
                        f"_{self.pod.namespace}({self.pod.uid})",
                    }
                }
            )
            await self.pod.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF[1])

    def set_state(self, state: Obj, *, ready: bool = False) -> None:
        self.state, self.ready = state, ready
        self.started = "running" in state
        self.pod.report()

    def resolve(self) -> tuple[list[str] | None, dict[str, str]]:
        env = self.pod.environment(self.spec)
        command = [expand(str(a), env) for a in self.spec.get("command") or []]
        args = [expand(str(a), env) for a in self.spec.get("args") or []]
        argv = command + args
        if not command:
            return None, {
                "message": f'image "{self.spec.get("image")}" has no entrypoint '
                "known here: give the container a command"
            }
        return argv, env

    def runnable(self, argv: list[str]) -> None:
        """StartError, in containerd's words, when the executable does not exist."""
        found = (
            shutil.which(argv[0], path=sandbox.SANDBOX_PATH)
            if "/" not in argv[0]
            else (argv[0] if self.pod.exists_inside(argv[0]) else None)
        )
        if found is None:
            where = (
                "executable file not found in $PATH"
                if "/" not in argv[0]
                else ("no such file or directory")
            )
            raise StartError(
                "failed to create containerd task: failed to create shim task: OCI runtime "
                "create failed: runc create failed: unable to start container process: "
                f'exec: "{argv[0]}": {where}: unknown'
            )

    async def execute(self, argv: list[str], env: dict[str, str]) -> tuple[int, str]:
        work = self.pod.dir / "work" / self.name
        work.mkdir(parents=True, exist_ok=True)
        confinement = sandbox.Confinement(
            work_dir=work,
            package_dir=None,
            uid=None,
            hostname=self.pod.name,
            binds=tuple(self.pod.mounts(self.spec)),
            chdir=self.spec.get("workingDir"),
        )
        full_env = {
            "PATH": sandbox.SANDBOX_PATH,
            "HOSTNAME": self.pod.name,
            "HOME": sandbox.WORK_MOUNT,
            **env,
        }
        self.exited.clear()
        self.confinement, self.env = confinement, full_env  # what exec probes run with
        with (
            open(self.log_path, "ab") as out,
            sandbox.confining(argv, confinement, env=full_env) as confined,
        ):
            self.process = await asyncio.create_subprocess_exec(
                *confined.command,
                pass_fds=confined.fds,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=confined.env,
                start_new_session=True,
            )
        started_at = now()
        self.set_state({"running": {"startedAt": started_at}})
        probe = asyncio.create_task(self.probe(self.process))
        try:
            code = await self.process.wait()
        finally:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
            self.exited.set()
        self.process = None
        self.ready = False
        # the instance that ended is "previous" from now on, and also the latest until a new one
        self.log_path.replace(self.previous_log)
        return code, started_at

    async def probe(self, process: asyncio.subprocess.Process) -> None:
        """Readiness while `process` runs.

        The loop ends by itself once the process has exited, not only by
        cancellation: asyncio.wait_for (Python 3.11) swallows a cancellation
        that meets its inner step finishing, and a probe of a container that
        exits at once (its port refusing at that same moment) then ran on, so
        the container's exit was never reported.
        """
        ports = [p["containerPort"] for p in self.spec.get("ports") or []]
        check = self.spec.get("readinessProbe") or {}
        if "exec" in check:
            await self.exec_probe(check, process)
            return
        target = (check.get("tcpSocket") or check.get("httpGet") or {}).get("port")
        if isinstance(target, str):
            target = next(
                (
                    p["containerPort"]
                    for p in self.spec.get("ports") or []
                    if p.get("name") == target
                ),
                None,
            )
        if isinstance(target, int):
            ports = [target]
        while process.returncode is None:
            ok = True
            for port in ports:
                try:
                    async with asyncio.timeout(1.0):
                        _, writer = await asyncio.open_connection(self.pod.ip, port)
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                except (OSError, TimeoutError):
                    ok = False
                    break
            if ok != self.ready and process.returncode is None:
                self.ready = ok
                self.pod.report()
            await asyncio.sleep(1.0 if ok else 0.2)

    async def exec_probe(self, check: Obj, container: asyncio.subprocess.Process) -> None:
        """An exec readinessProbe: the command in the container's sandbox, with its
        period, timeout, initial delay and failure threshold."""
        assert self.confinement is not None
        await asyncio.sleep(check.get("initialDelaySeconds", 0))
        failures = 0
        while container.returncode is None:
            argv = [str(w) for w in check["exec"]["command"]]
            with sandbox.confining(argv, self.confinement, env=self.env) as confined:
                process = await asyncio.create_subprocess_exec(
                    *confined.command,
                    pass_fds=confined.fds,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    env=confined.env,
                    start_new_session=True,
                )
            try:
                async with asyncio.timeout(check.get("timeoutSeconds", 1)):
                    code = await process.wait()
            except TimeoutError:
                code = -1
            finally:  # a timeout, or the container ending, kills the probe
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    await process.wait()
            failures = 0 if code == 0 else failures + 1
            ok = code == 0 or (self.ready and failures < check.get("failureThreshold", 3))
            if ok != self.ready and container.returncode is None:
                self.ready = ok
                self.pod.report()
            await asyncio.sleep(check.get("periodSeconds", 10))

    async def stop(self) -> None:
        await self.end(self.process)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        # A process started while this stop began (its task was cancelled
        # awaiting it) would outlive the pod: end that one too.
        await self.end(self.process)

    @staticmethod
    async def end(process: asyncio.subprocess.Process | None) -> None:
        """SIGTERM to the container's process group, SIGKILL after the grace period."""
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_GRACE):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


class PodRunner:
    """One pod on one node: its address, volumes and containers."""

    def __init__(self, kubelet: Kubelet, pod: Obj, ip: str, host_ip: str) -> None:
        self.kubelet = kubelet
        self.api = kubelet.api
        meta = pod["metadata"]
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.spec = pod["spec"]
        self.ip, self.host_ip = ip, host_ip
        self.dir = kubelet.workdir / self.uid
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stopping = False
        self.started_at = now()
        self.containers = [Container(self, c) for c in self.spec["containers"]]
        self.wake = asyncio.Event()

    def start(self) -> None:
        self.report()
        for container in self.containers:
            container.task = asyncio.get_running_loop().create_task(container.run())

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()

    async def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        await asyncio.gather(*(c.stop() for c in self.containers))

    def current(self) -> Obj | None:
        return self.api.store.get(PODS, self.namespace, self.name)

    # what containers see

    def service_links(self) -> dict[str, str]:
        """What a kubelet gives for each Service of the namespace that has a
        cluster IP (enableServiceLinks, on by default): `<NAME>_SERVICE_HOST`,
        `_SERVICE_PORT` and the Docker-link `<NAME>_PORT_<port>_TCP_ADDR` family."""
        if self.spec.get("enableServiceLinks") is False:
            return {}
        env: dict[str, str] = {}
        for service in self.api.store.select(SERVICES, self.namespace):
            ip = service["spec"].get("clusterIP")
            ports = service["spec"].get("ports") or []
            if ip in (None, "", "None") or not ports:
                continue
            name = service["metadata"]["name"].upper().replace("-", "_")
            env[f"{name}_SERVICE_HOST"] = ip
            env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
            for port in ports:
                if port.get("name"):
                    key = port["name"].upper().replace("-", "_")
                    env[f"{name}_SERVICE_PORT_{key}"] = str(port["port"])
            for index, port in enumerate(ports):
                protocol = port.get("protocol", "TCP")
                url = f"{protocol.lower()}://{ip}:{port['port']}"
                if index == 0:
                    env[f"{name}_PORT"] = url
                prefix = f"{name}_PORT_{port['port']}_{protocol.upper()}"
                env[prefix] = url
                env[f"{prefix}_PROTO"] = protocol.lower()
                env[f"{prefix}_PORT"] = str(port["port"])
                env[f"{prefix}_ADDR"] = ip
        return env

    def environment(self, spec: Obj) -> dict[str, str]:
        pod = self.current() or {"metadata": {}, "spec": self.spec}
        env: dict[str, str] = self.service_links()
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self.config(CONFIGMAPS, source["configMapRef"], None)
            else:
                data = self.config(SECRETS, source.get("secretRef") or {}, None)
            env.update({prefix + k: v for k, v in (data or {}).items()})
        for var in spec.get("env") or []:
            name = var["name"]
            if "value" in var:
                env[name] = expand(str(var["value"]), env)
                continue
            source = var.get("valueFrom") or {}
            if "fieldRef" in source:
                env[name] = self.field(pod, source["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in source:
                env[name] = self.config(SECRETS, source["secretKeyRef"], "key")
            elif "configMapKeyRef" in source:
                env[name] = self.config(CONFIGMAPS, source["configMapKeyRef"], "key")
            elif "resourceFieldRef" in source:
                env[name] = "0"
            else:
                env[name] = ""
        return env

    def field(self, pod: Obj, path: str) -> str:
        meta = pod["metadata"]
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "status.podIP": self.ip,
            "status.hostIP": self.host_ip,
            "spec.nodeName": self.spec.get("nodeName", ""),
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
        }
        if path in simple:
            return str(simple[path])
        found = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if found:
            return str((meta.get(found.group(1)) or {}).get(found.group(2), ""))
        raise ConfigError(f"unsupported fieldPath {path!r}")

    def config(self, resource: Any, ref: Obj, key_field: str | None) -> Any:
        obj = self.api.store.get(resource, self.namespace, ref.get("name", ""))
        what = "secret" if resource is SECRETS else "configmap"
        if obj is None:
            if ref.get("optional"):
                return {} if key_field is None else ""
            raise ConfigError(f'{what} "{ref.get("name")}" not found')
        data = {k: v for k, v in (obj.get("data") or {}).items()}
        if resource is SECRETS:
            data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
        if key_field is None:
            return data
        key = ref[key_field]
        if key not in data:
            if ref.get("optional"):
                return ""
            kind = "Secret" if resource is SECRETS else "ConfigMap"
            raise ConfigError(f"couldn't find key {key} in {kind} {self.namespace}/{ref['name']}")
        return data[key]

    def mounts(self, spec: Obj) -> list[tuple[Path, str]]:
        volumes = {v["name"]: v for v in self.spec.get("volumes") or []}
        out = []
        for mount in spec.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            host = self.dir / "volumes" / mount["name"]
            if "emptyDir" in volume:
                host.mkdir(parents=True, exist_ok=True)
            else:
                self.write_volume(volume, host)
            if mount.get("subPath"):
                host = host / mount["subPath"]
            out.append((host, mount["mountPath"]))
        return out

    def write_volume(self, volume: Obj, host: Path) -> None:
        if "configMap" in volume:
            ref, resource, field = volume["configMap"], CONFIGMAPS, "name"
        elif "secret" in volume:
            ref, resource, field = volume["secret"], SECRETS, "secretName"
        else:
            raise ConfigError(
                f"volume {volume['name']}: only configMap, secret and emptyDir "
                "volumes are supported here"
            )
        obj = self.api.store.get(resource, self.namespace, ref.get(field, ""))
        if obj is None:
            raise ConfigError(f'{resource.kind.lower()} "{ref.get(field)}" not found')
        files: dict[str, bytes] = {}
        for key, value in (obj.get("data") or {}).items():
            files[key] = base64.b64decode(value) if resource is SECRETS else value.encode()
        for key, value in (obj.get("binaryData") or {}).items():
            files[key] = base64.b64decode(value)
        if ref.get("items"):
            files = {
                item["path"]: files[item["key"]] for item in ref["items"] if item["key"] in files
            }
        if host.exists():
            shutil.rmtree(host)
        host.mkdir(parents=True)
        mode = ref.get("defaultMode", 0o644)
        for name, content in files.items():
            target = (host / name).resolve()
            if not target.is_relative_to(host.resolve()):
                raise ConfigError(f"volume {volume['name']}: path {name!r} escapes the volume")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode)

    def exists_inside(self, path: str) -> bool:
        for host, inside in self.mounts(next(c for c in self.spec["containers"])):
            if path.startswith(inside.rstrip("/") + "/"):
                return (host / path[len(inside.rstrip("/")) + 1 :]).exists()
        return os.path.exists(path) and path.startswith(("/usr", "/bin", "/sbin", "/lib", "/etc"))

    # status

    def report(self) -> None:
        pod = self.current()
        if pod is None or pod["metadata"]["uid"] != self.uid:
            return
        statuses = [c.status() for c in self.containers]
        all_ready = all(c.ready for c in self.containers)
        done = [c.state.get("terminated") for c in self.containers]
        if all(done):
            phase = "Succeeded" if all(t and t.get("exitCode") == 0 for t in done) else "Failed"
        elif any("running" in c.state or c.restarts for c in self.containers):
            phase = "Running"
        else:
            phase = "Pending"
        old = pod.get("status") or {}
        old_conditions = {c["type"]: c for c in old.get("conditions") or []}

        def condition(kind: str, ok: bool, reason: str | None = None) -> Obj:
            status = "True" if ok else "False"
            before = old_conditions.get(kind) or {}
            stamp = before.get("lastTransitionTime") if before.get("status") == status else now()
            out = {
                "type": kind,
                "status": status,
                "lastProbeTime": None,
                "lastTransitionTime": stamp,
            }
            if reason and not ok:
                out["reason"] = reason
            return out

        status = {
            **old,
            "phase": phase,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.started_at,
            "containerStatuses": statuses,
            "conditions": [
                condition("Initialized", True),
                condition("Ready", all_ready, "ContainersNotReady"),
                condition("ContainersReady", all_ready, "ContainersNotReady"),
                old_conditions.get("PodScheduled") or condition("PodScheduled", True),
            ],
        }
        updated = copy.deepcopy(pod)
        updated["status"] = status
        if updated != pod:
            try:
                self.api.replace(PODS, pod, updated, None, "status", manager="kubelet")
            except ApiError as exc:
                log.warning("kubelet could not report pod %s: %s", self.name, exc.message)


class Kubelet:
    def __init__(self, api: ApiServer, workdir: Path) -> None:
        self.api = api
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pods: dict[str, PodRunner] = {}
        self.retiring: set[PodRunner] = set()
        """Pods being stopped (deleted, or their node gone): stopped with the kubelet too."""
        self.task: asyncio.Task[None] | None = None
        self.ips: set[str] = set()
        api.pod_log = self.serve_log

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        runners = [*self.pods.values(), *self.retiring]
        await asyncio.gather(*(runner.stop() for runner in runners))
        self.pods.clear()
        self.retiring.clear()

    async def run(self) -> None:
        sub = self.api.store.subscribe(lambda e: e.resource in (PODS, NODES))
        try:
            while not self.api.closing.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await sub.queue.get()
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                await self.sync()
        finally:
            self.api.store.unsubscribe(sub)

    async def sync(self) -> None:
        nodes = {n["metadata"]["name"]: n for n in self.api.store.select(NODES)}
        wanted: dict[str, Obj] = {}
        for pod in self.api.store.select(PODS):
            node = nodes.get(pod["spec"].get("nodeName", ""))
            uid = pod["metadata"]["uid"]
            if pod["metadata"].get("deletionTimestamp"):
                asyncio.get_running_loop().create_task(self.finish(pod))
                continue
            if node is not None:
                wanted[uid] = pod
                if uid not in self.pods:
                    self.launch(pod, node)
        for uid in [u for u in self.pods if u not in wanted]:
            runner = self.pods.pop(uid)
            asyncio.get_running_loop().create_task(self.retire(runner))

    def launch(self, pod: Obj, node: Obj) -> None:
        host_ip = next(
            (
                a["address"]
                for a in node["status"].get("addresses", [])
                if a["type"] == "InternalIP"
            ),
            "127.0.0.1",
        )
        runner = PodRunner(self, pod, self.allocate_ip(), host_ip)
        self.pods[pod["metadata"]["uid"]] = runner
        runner.start()

    def allocate_ip(self) -> str:
        busy = listening_addresses()
        while True:
            ip = f"127.{POD_NET}.{random.randint(0, 254)}.{random.randint(2, 254)}"
            if ip not in self.ips and ip not in busy:
                self.ips.add(ip)
                return ip

    async def retire(self, runner: PodRunner) -> None:
        self.retiring.add(runner)
        await runner.stop()
        self.retiring.discard(runner)
        self.ips.discard(runner.ip)

    async def finish(self, pod: Obj) -> None:
        """A pod being deleted: stop its containers, then remove it for good."""
        uid = pod["metadata"]["uid"]
        runner = self.pods.pop(uid, None)
        if runner is not None:
            await self.retire(runner)
        current = self.api.store.get(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        if current is not None and current["metadata"]["uid"] == uid:
            self.api.store.remove(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])

    # logs

    async def serve_log(self, pod: Obj, container: str, request: web.Request) -> web.StreamResponse:
        runner = self.pods.get(pod["metadata"]["uid"])
        query = request.query
        if runner is None:
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod '
                f'"{pod["metadata"]["name"]}" is waiting to start: ContainerCreating',
            )
        target = next(c for c in runner.containers if c.name == container)
        previous = query.get("previous") in ("true", "1")
        path = target.previous_log if previous else target.log_path
        if not previous and not path.exists() and target.previous_log.exists():
            path = target.previous_log  # between restarts the last instance is the current one
        if not path.exists():
            if previous:
                raise ApiError(
                    400,
                    "BadRequest",
                    f'previous terminated container "{container}" in pod "{runner.name}" not found',
                )
            reason = (target.state.get("waiting") or {}).get("reason", "ContainerCreating")
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{runner.name}" is waiting to start: {reason}',
            )
        data = path.read_bytes()
        if "tailLines" in query:
            lines = data.splitlines(keepends=True)
            count = int(query["tailLines"])
            data = b"".join(lines[-count:]) if count > 0 else b""
        if "limitBytes" in query:
            data = data[: int(query["limitBytes"])]
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(data)
        if query.get("follow") in ("true", "1") and not previous:
            offset = path.stat().st_size
            try:
                while not self.api.closing.is_set():
                    size = path.stat().st_size if path.exists() else 0
                    if size > offset:
                        with open(path, "rb") as handle:
                            handle.seek(offset)
                            chunk = handle.read(size - offset)
                        offset = size
                        await response.write(chunk)
                        continue
                    if target.exited.is_set() or runner.stopping:
                        break
                    await asyncio.sleep(0.1)
            except (ConnectionResetError, asyncio.CancelledError):
                pass
        return response
