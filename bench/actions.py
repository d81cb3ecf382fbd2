"""Actions benchmark: scalePodUp to a serving replica, and API read throughput.

Prints one JSON document:
- `scale_pod_up_ms`: from the POST of scalePodUp to the first answer of the
  new replica through the pod's internal service address (p50, p95);
- `get_environment_rps`: GET /v1/environments/{id} requests per second with
  16 concurrent clients over keep-alive connections.

    python bench/actions.py [--runs 20] [--seconds 5] [--engine local|kubernetes]

With `--engine kubernetes` the same figures are taken twice in one run, on
the local engine and on the kubernetes engine against the Kubernetes API
test server (`tests/kubeapi/`, started here), under `engines`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from tests.e2e.marina import Marina

TARGETS = {"scale_pod_up_p50_ms": 1000, "get_environment_rps": 300}
FOOTER = re.compile(rb"<footer>([^<]+)</footer>")


def served_by(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            found = FOOTER.search(reply.read())
            return found.group(1).decode() if found else None
    except OSError:
        return None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def scale_up_latencies(marina: Marina, env: str, runs: int) -> list[float]:
    web = marina.objects(env)["web"]
    service = web["services"][0]
    internal = f"http://{service['ip']}:{service['port']}/"
    action = marina.action_id(env, "web:scalePodUp")
    samples = []
    for _ in range(runs):
        known = {served_by(internal) for _ in range(60)} - {None}
        started = time.monotonic()
        marina.ok("POST", f"/v1/environments/{env}/actions/{action}", {})
        deadline = started + 60
        while time.monotonic() < deadline:
            name = served_by(internal)
            if name is not None and name not in known:
                samples.append((time.monotonic() - started) * 1000)
                break
            time.sleep(0.002)
        else:
            raise SystemExit("bench: a new replica never answered")
        while marina.objects(env)["web"]["replicas"]["ready"] < len(known) + 1:
            time.sleep(0.05)
    return samples


async def read_throughput(api: str, token: str, env: str, seconds: float) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    done = 0
    errors = 0
    deadline = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done, errors
        while time.monotonic() < deadline:
            async with session.get(f"{api}/v1/environments/{env}", headers=headers) as reply:
                await reply.read()
                if reply.status == 200:
                    done += 1
                else:
                    errors += 1

    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(16)))
    elapsed = time.monotonic() - started
    return {
        "requests": done,
        "errors": errors,
        "seconds": round(elapsed, 2),
        "rps": round(done / elapsed, 1),
    }


def measure(runs: int, seconds: float, *, args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Both figures on one `marina up` (with `args`)."""
    state = Path(tempfile.mkdtemp(prefix="marina-bench-")) / "state"
    print(f"bench: marina up {' '.join(args)} in {state}", file=sys.stderr, flush=True)
    marina = Marina(state, args=args).start()
    try:
        try:
            env, _ = marina.deploy_guestbook(
                "bench", {"name": "k", "nodeCount": 2, "nodeCores": 4, "nodeMemory": 4096}
            )
        except AssertionError as exc:
            raise SystemExit(f"bench: deploying the guestbook failed: {exc}") from None
        samples = scale_up_latencies(marina, env, runs)
        throughput = asyncio.run(read_throughput(marina.api, marina.token, env, seconds))
        return {
            "scale_pod_up_ms": {
                "runs": len(samples),
                "p50": round(statistics.median(samples), 1),
                "p95": round(percentile(samples, 0.95), 1),
                "max": round(max(samples), 1),
            },
            "get_environment": throughput,
        }
    finally:
        marina.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--engine", choices=("local", "kubernetes"), default="local")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "actions",
        "targets": TARGETS,
        "cpu_count": os.cpu_count(),
    }
    local = measure(args.runs, args.seconds)
    if args.engine == "local":
        result.update(local)
    else:
        from tests.kubeapi.harness import KubeApi

        with KubeApi(Path(tempfile.mkdtemp(prefix="marina-bench-kubeapi-"))) as kube:
            engine = ("--engine", "kubernetes", "--kubeconfig", str(kube.kubeconfig))
            result["engines"] = {
                "local": local,
                "kubernetes (API test server)": measure(args.runs, args.seconds, args=engine),
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
