"""A `marina up` process for end-to-end tests, and a small API client."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support import free_port, wait_for


class Marina:
    def __init__(
        self, state_dir: Path, *, etcd: str | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.state_dir = state_dir
        self.etcd = etcd
        self.args = args
        """More `marina up` options (`--engine kubernetes --kubeconfig PATH`)."""
        self.etcd_port = free_port()
        while True:  # the embedded etcd takes the port after its client port too
            peer = self.etcd_port + 1
            try:
                import socket

                with socket.socket() as s:
                    s.bind(("127.0.0.1", peer))
                break
            except OSError:
                self.etcd_port = free_port()
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def start(self) -> Marina:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "marina.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "catalog.cli",
                    "--state-dir",
                    str(self.state_dir),
                    "--verbose",
                    "up",
                    "--port",
                    str(self.port),
                    "--etcd-port",
                    str(self.etcd_port),
                    *(["--etcd", self.etcd] if self.etcd else []),
                    *self.args,
                ],
                stdout=log,
                stderr=log,
            )
        try:
            wait_for(
                lambda: (self.state_dir / "admin-token").exists() and self._answers(),
                timeout=60,
                what="marina up",
            )
        except AssertionError:
            self.stop()  # one that never came up is not left running
            raise
        self.token = (self.state_dir / "admin-token").read_text().strip()
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.api + "/v1/openapi.json", timeout=2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"}
        if token != "":
            headers["Authorization"] = f"Bearer {token or self.token}"
        request = urllib.request.Request(self.api + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                payload = reply.read()
                kind = reply.headers.get_content_type()
                return reply.status, json.loads(payload) if kind == "application/json" else payload
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                return exc.code, json.loads(payload)
            except ValueError:
                return exc.code, payload

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = self.call(method, path, body)
        assert status < 300, (status, payload)
        return payload

    def run(
        self, env: str, action: str, args: dict[str, Any] | None = None, *, timeout: float = 120
    ) -> dict[str, Any]:
        """Run `objectName:method` and wait for the task to finish."""
        action_id = self.action_id(env, action)
        task_id = self.ok("POST", f"/v1/environments/{env}/actions/{action_id}", args or {})[
            "task_id"
        ]
        return self.wait_task(task_id, timeout=timeout)

    def action_id(self, env: str, action: str) -> str:
        name, _, method = action.partition(":")
        actions = self.ok("GET", f"/v1/environments/{env}/actions")["actions"]
        return next(a["id"] for a in actions if a["objectName"] == name and a["name"] == method)

    def wait_task(self, task_id: str, *, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.ok("GET", f"/v1/tasks/{task_id}")
            if task["state"] in ("succeeded", "failed"):
                return dict(task)
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} did not finish in {timeout}s")

    def deploy_guestbook(
        self, name: str, cluster: dict[str, Any], guestbook: dict[str, Any] | None = None
    ) -> tuple[str, str]:
        """An environment with the cluster (properties `cluster`) and the guestbook
        deployed on it; its id and the guestbook's public URL."""
        env = self.ok("POST", "/v1/environments", {"name": name})["id"]
        self.ok(
            "POST",
            f"/v1/environments/{env}/services",
            {"package": "kubernetes-cluster", "properties": cluster},
        )
        self.ok(
            "POST",
            f"/v1/environments/{env}/services",
            {"package": "guestbook", "properties": guestbook or {}},
        )
        for action in (f"{cluster['name']}:deploy", "Guestbook:deploy"):
            task = self.run(env, action)
            assert task["state"] == "succeeded", task
        url = wait_for(
            lambda: self.objects(env)["web"]["endpoints"], timeout=30, what="the public endpoint"
        )[0]
        return str(env), str(url)

    def objects(self, env: str) -> dict[str, dict[str, Any]]:
        return {o["?"]["name"]: o for o in self.ok("GET", f"/v1/environments/{env}")["objects"]}

    def etcd_keys(self, prefix: str) -> list[str]:
        """The keys under `prefix` in the embedded etcd, read with Marina's client certificate."""
        import asyncio

        from catalog.pki import TLSFiles
        from catalog.store import Store

        pki = self.state_dir / "pki"
        tls = TLSFiles(pki / "ca.pem", pki / "client.pem", pki / "client-key.pem")

        async def read() -> list[str]:
            async with Store(f"https://127.0.0.1:{self.etcd_port}", tls=tls) as store:
                return [item.key for item in await store.list(prefix)]

        return asyncio.run(read())


def running(state_dir: Path, *args: str, etcd: str | None = None) -> Iterator[Marina]:
    """A started `marina up` for a fixture to yield; stopping it (Ctrl-C)
    must leave no process behind: node agents, replicas and gateways included."""
    server = Marina(state_dir, etcd=etcd, args=args).start()
    yield server
    server.stop()
    leftovers = subprocess.run(
        ["pgrep", "-f", str(server.state_dir)], capture_output=True, text=True
    ).stdout.split()
    assert not leftovers, f"processes left behind: {leftovers}"
