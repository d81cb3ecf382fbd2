"""`marina status` and `marina logs`: how an environment runs, and what its
replicas print, so that a failure explains itself without the state directory."""

from __future__ import annotations

import argparse
import sys
import urllib.parse

from catalog.cli.client import Client, CliError, connect, emit, environments, pick, resolve_env
from catalog.documents import EnvironmentStatus, PodLine


def cmd_status(args: argparse.Namespace) -> int:
    client = connect(args)
    if not args.env:
        found = environments(client)
        summaries: list[EnvironmentStatus] = [
            client.call("GET", f"/v1/environments/{e['id']}/status") for e in found
        ]
        emit(summaries, args.output, lambda: _overview(summaries))
        return 0
    summary = client.call("GET", f"/v1/environments/{resolve_env(client, args.env)}/status")
    if args.output != "table":
        emit(summary, args.output, lambda: [])
        return 0
    print_status(summary)
    return 0


def _overview(summaries: list[EnvironmentStatus]) -> list[list[str]]:
    rows = [["ID", "NAME", "STATUS", "PODS READY", "RESTARTS", "URLS"]]
    for s in summaries:
        ready = sum(p["ready"] for p in s["pods"])
        desired = sum(p["desired"] for p in s["pods"])
        restarts = sum(p["restarts"] for p in s["pods"])
        rows.append(
            [
                s["id"],
                s["name"],
                s["status"],
                f"{ready}/{desired}",
                str(restarts),
                " ".join(s["urls"]),
            ]
        )
    return rows


def print_status(s: EnvironmentStatus) -> None:
    print(f"environment {s['name']} ({s['id']}): {s['status']}")
    for cluster in s["clusters"]:
        nodes = ", ".join(
            f"{n['name']} {n['state']}" + (f" {n['address']}" if n["address"] else "")
            for n in cluster["nodes"]
        )
        print(f"cluster {cluster['name']}: {cluster['state']}; nodes: {nodes or '-'}")
    for app in s["applications"]:
        print(
            f"application {app['name']} ({app['package']}): {app['state']}; "
            f"pods: {', '.join(app['pods'])}"
        )
    if s["pods"]:
        print()
        print(f"{'POD':<20} {'READY':<7} {'STATE':<10} {'RESTARTS':<9} PROBLEM")
        for pod in s["pods"]:
            problem = pod["pending"] or next(
                (r["reason"] for r in pod["replicas"] if not r["ready"] and r["reason"]), ""
            )
            print(
                f"{pod['name']:<20} {pod['ready']}/{pod['desired']:<5} {pod['state']:<10} "
                f"{pod['restarts']:<9} {problem}".rstrip()
            )
            for r in pod["replicas"]:
                mark = "ready" if r["ready"] else "NOT READY"
                why = f"  last: {r['reason']}" if r["reason"] else ""
                print(
                    f"  [{r['index']}] {r['name']} on {r['node']} {r['address']} {mark}, "
                    f"{r['restarts']} restarts{why}"
                )
    if s["urls"]:
        print()
        for url in s["urls"]:
            print(f"url: {url}")
    if s["tasks"]:
        print()
        for task in s["tasks"]:
            result = task["error"] or task["reason"] or task["outcome"] or ""
            print(f"task {task['id']} {task['method']}: {task['state']} {result}".rstrip())


def cmd_logs(args: argparse.Namespace) -> int:
    client = connect(args)
    env_id = resolve_env(client, args.env)
    pod = pick(_pods(client, env_id), args.pod, "pod", where=f" in {args.env}")
    query = {"replica": str(args.replica), "follow": "1" if args.follow else "0"}
    if args.tail is not None:
        query["tail"] = str(args.tail)
    path = f"/v1/environments/{env_id}/pods/{pod['id']}/logs?{urllib.parse.urlencode(query)}"
    try:
        for chunk in client.raw_stream(path):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    except KeyboardInterrupt:
        return 130
    return 0


def _pods(client: Client, env_id: str) -> list[PodLine]:
    status: EnvironmentStatus = client.call("GET", f"/v1/environments/{env_id}/status")
    if not status["pods"]:
        raise CliError(f"environment {status['name']} has no pods")
    return list(status["pods"])
