"""`marina up` and `marina demo`: the only commands that run the server.

This is the one CLI module that imports `catalog.server` (and through it
etcd's client, the engines and the API); the dispatch imports it only when
one of these two commands runs, so every other command starts without them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn

from catalog.cli.client import Client, CliError, resolve_action, wait_for_task
from catalog.cli.ports import port_problem
from catalog.pki import TLSFiles
from catalog.server import Server, ServerSettings, serve_until_stopped, stop_on_signals


def _settings(args: argparse.Namespace) -> ServerSettings:
    files = (args.etcd_cacert, args.etcd_cert, args.etcd_key)
    if any(files) and not all(files):
        raise CliError("--etcd-cacert, --etcd-cert and --etcd-key go together")
    if any(files) and not args.etcd:
        raise CliError("--etcd-cacert, --etcd-cert and --etcd-key are for an external --etcd")
    for option, path in zip(("--etcd-cacert", "--etcd-cert", "--etcd-key"), files, strict=True):
        if path and not Path(path).is_file():
            raise CliError(f"{option} {path}: no such file")
    if args.engine != "kubernetes" and (args.kubeconfig or args.context):
        raise CliError("--kubeconfig and --context are for --engine kubernetes")
    provider = getattr(args, "provider", "local")
    cloud = getattr(args, "cloud", None)
    if provider == "openstack" and args.engine != "kubernetes":
        raise CliError(
            "--provider openstack needs --engine kubernetes: its nodes are servers of the "
            "cloud, and Marina's node agent runs only on this machine"
        )
    if provider == "openstack" and not cloud:
        raise CliError("--provider openstack needs --cloud NAME (an entry of clouds.yaml)")
    openstack_options = {
        "--cloud": cloud,
        "--image": getattr(args, "image", None),
        "--flavor": getattr(args, "flavor", None),
        "--network": getattr(args, "network", None),
        "--keypair": getattr(args, "keypair", None),
        "--register-workers": getattr(args, "register_workers", False),
    }
    given = [option for option, value in openstack_options.items() if value]
    if given and provider != "openstack":
        raise CliError(f"{', '.join(given)}: for --provider openstack only")
    flavors: dict[str, str] = {}
    for entry in getattr(args, "flavor", None) or []:
        role, _, flavor = entry.partition("=")
        if role not in ("master", "minion", "gateway") or not flavor:
            raise CliError(f"--flavor {entry}: must be ROLE=FLAVOR, ROLE master, minion or gateway")
        flavors[role] = flavor
    if args.kubeconfig and not Path(args.kubeconfig).is_file():
        raise CliError(f"--kubeconfig {args.kubeconfig}: no such file")
    if not 0 < args.port < 65536 or not 0 < args.etcd_port < 65535:
        raise CliError("--port and --etcd-port must be from 1 to 65534")
    wanted = [(args.host, args.port, "--port")]
    if not args.etcd:  # the embedded etcd: its client port and the peer port after it
        wanted += [
            ("127.0.0.1", args.etcd_port, "--etcd-port"),
            ("127.0.0.1", args.etcd_port + 1, "--etcd-port (etcd's peer port is the next one)"),
        ]
    problems = [p for p in (port_problem(*w) for w in wanted) if p]
    if problems:
        raise CliError("\n".join(problems))
    return ServerSettings(
        engine=args.engine,
        provider=provider,
        cloud=cloud,
        openstack={
            k: v
            for k, v in {
                "image": getattr(args, "image", None),
                "flavors": flavors,
                "network": getattr(args, "network", None),
                "keypair": getattr(args, "keypair", None),
                "register_workers": getattr(args, "register_workers", False),
            }.items()
            if v
        },
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        context=args.context,
        state_dir=Path(args.state_dir),
        etcd=args.etcd,
        etcd_tls=TLSFiles(*(Path(f) for f in files)) if all(files) else None,
        host=args.host,
        port=args.port,
        etcd_port=args.etcd_port,
        keystone_url=_keystone_url(args),
    )


def _keystone_url(args: argparse.Namespace) -> str | None:
    url: str | None = getattr(args, "keystone_url", None)
    if url is not None and not url.startswith(("http://", "https://")):
        raise CliError(f"--keystone-url {url}: must be an http:// or https:// URL")
    return url


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def run() -> None:
        stop = stop_on_signals()
        server = Server(settings)
        try:
            await server.start()
        except BaseException:
            await server.stop(stop_nodes=False)
            raise
        print(f"dashboard:    {settings.api_url}/")
        print(f"Marina API:   {settings.api_url}/v1  (OpenAPI: {settings.api_url}/v1/openapi.json)")
        print(f"admin token:  {server.token}")
        print(f"etcd:         {server.etcd_url}")
        print(
            "Ctrl-C stops Marina" + (" and the nodes it started." if server.etcd else "."),
            flush=True,
        )
        await serve_until_stopped(server, stop, stop_nodes=server.etcd is not None)

    _run(run(), settings)


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the stack, deploy a cluster and the guestbook, print where they are."""
    settings = _settings(args)

    async def run() -> None:
        stop = stop_on_signals()
        server = Server(settings)
        created: list[str] = []
        try:
            await server.start()
            client = Client(settings.api_url, server.token)
            ready = threading.Event()
            failure: list[BaseException] = []

            def deploy() -> None:
                try:
                    deploy_demo(client, settings, server.token, created)
                except BaseException as exc:  # reported by the main thread
                    failure.append(exc)
                finally:
                    ready.set()

            threading.Thread(target=deploy, daemon=True).start()
            while not ready.is_set() and not stop.is_set():
                await asyncio.sleep(0.1)
            if failure and not stop.is_set():
                raise failure[0]
            await stop.wait()
            if created:
                print("removing the demo environment...", flush=True)
                with contextlib.suppress(CliError):
                    task = await asyncio.to_thread(
                        client.call, "DELETE", f"/v1/environments/{created[0]}"
                    )
                    await asyncio.to_thread(wait_for_task, client, task["task_id"], quiet=True)
        finally:
            await server.stop(stop_nodes=True)

    _run(run(), settings)


def _run(main: Coroutine[Any, Any, None], settings: ServerSettings) -> NoReturn:
    """Run the server to its end, then leave at once.

    By then every process Marina started is stopped; what remains are the
    etcd client's gRPC threads and executor workers parked on I/O, which an
    ordinary interpreter exit would wait seconds for after Ctrl-C.
    """
    try:
        asyncio.run(main)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        # Taken between the check in _settings and the bind.
        raise CliError(
            port_problem(settings.host, settings.port, "--port") or f"{exc.strerror}"
        ) from None
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)


def deploy_demo(client: Client, settings: ServerSettings, token: str, created: list[str]) -> None:
    env = client.call("POST", "/v1/environments", {"name": f"demo-{int(time.time())}"})
    env_id = env["id"]
    created.append(env_id)
    print(f"environment {env_id} created", flush=True)
    client.call(
        "POST",
        f"/v1/environments/{env_id}/services",
        {
            "package": "kubernetes-cluster",
            "properties": {"name": "demo", "nodeCount": 2, "gatewayCount": 1},
        },
    )
    client.call("POST", f"/v1/environments/{env_id}/services", {"package": "guestbook"})
    for action in ("demo:deploy", "Guestbook:deploy"):
        action_id = resolve_action(client, env_id, action)
        task = client.call("POST", f"/v1/environments/{env_id}/actions/{action_id}", {})
        final = wait_for_task(client, task["task_id"])
        if final["state"] != "succeeded":
            raise CliError(f"{action} failed: {final['error']}")
    shown = client.call("GET", f"/v1/environments/{env_id}")
    urls = sorted({e for o in shown["objects"] for e in o.get("endpoints", []) or []})
    print()
    print(f"dashboard:       {settings.api_url}/")
    print(f"Marina API:      {settings.api_url}/v1")
    print(f"admin token:     {token}")
    print(f"environment:     {env_id}")
    for url in urls:
        print(f"application URL: {url}")
    print("Ctrl-C stops everything.", flush=True)
