"""The operator's CLI against a real `marina up`: status that explains a
crashing replica, logs, names with suggestions, output formats, typed --set,
dry runs, tasks, completion, and `marina up` itself (ports, Ctrl-C)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.marina import Marina
from tests.support import free_port, wait_for

MARINA = [sys.executable, "-m", "catalog.cli"]


def cli(marina: Marina, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MARINA, "--state-dir", str(marina.state_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(marina: Marina, *args: str) -> str:
    done = cli(marina, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stdout


CRASH = {
    "name": "crash",
    "containers": [
        {
            "name": "crash",
            "image": "python:3.11",
            "cores": 0.1,
            "command": ["sh", "-c", "echo starting up; exit 3"],
        }
    ],
}
ECHO = {
    "name": "echo",
    "containers": [
        {
            "name": "echo",
            "image": "python:3.11",
            "cores": 0.1,
            "command": ["sh", "-c", "exec python3 -m http.server 8000 --bind $POD_IP"],
            "ports": [{"containerPort": 8000}],
        }
    ],
    "services": [{"name": "echo", "port": 8000, "scope": "public"}],
}


@pytest.fixture(scope="module")
def shop(marina: Marina) -> Iterator[str]:
    """An environment named `shop`, made by name through the CLI: a cluster,
    a replica that keeps crashing and one that serves."""
    ok(marina, "env", "create", "shop")
    ok(
        marina,
        "app",
        "add",
        "shop",
        "kubernetes-cluster",
        "--set",
        "name=c",
        "--set",
        "nodeCount=1",
    )
    ok(marina, "app", "add", "shop", "kubernetes-pod", "--properties", json.dumps(CRASH))
    ok(marina, "app", "add", "shop", "kubernetes-pod", "--properties", json.dumps(ECHO))
    ok(marina, "action", "run", "shop", "c:deploy", "--wait")
    ok(marina, "action", "run", "shop", "echo:scalePod", "--set", "replicas=1", "--wait")
    ok(marina, "action", "run", "shop", "crash:scalePod", "--set", "replicas=1", "--wait")
    yield "shop"


def status_json(marina: Marina, env: str) -> dict:
    return json.loads(ok(marina, "status", env, "-o", "json"))


def test_status_explains_a_crashing_replica(marina: Marina, shop: str) -> None:
    def crashed() -> dict | None:
        status = status_json(marina, shop)
        crash = next(p for p in status["pods"] if p["name"] == "crash")
        replica = crash["replicas"][0] if crash["replicas"] else None
        return status if replica and replica["restarts"] >= 1 and replica["reason"] else None

    status = wait_for(crashed, timeout=60, what="a restart of the crashing replica")
    # A crash-looping replica leaves the environment degraded, not ready.
    assert wait_for(lambda: status_json(marina, shop)["status"] == "degraded", timeout=30)
    crash = next(p for p in status["pods"] if p["name"] == "crash")
    assert crash["desired"] == 1 and crash["ready"] == 0
    reason = crash["replicas"][0]["reason"]
    assert "exited with code 3" in reason or "killed by signal" in reason, reason
    echo = next(p for p in status["pods"] if p["name"] == "echo")
    assert echo["replicas"][0]["ready"] and echo["replicas"][0]["node"] == "minion-1"
    assert status["clusters"][0]["nodes"][0]["name"] == "master-0"
    assert any(t["method"] == "scalePod" for t in status["tasks"])
    urls = wait_for(lambda: status_json(marina, shop)["urls"], timeout=30, what="a public URL")
    assert urls[0].startswith("http://")

    table = ok(marina, "status", shop)
    assert "environment shop" in table and "degraded" in table
    # Between restarts the replica may run for a moment: its restarts still show.
    assert f"[0] {crash['replicas'][0]['name']} on minion-1" in table and " restarts" in table
    assert "url: http://" in table
    # The same summary in the API, for the environment's id.
    env_id = status["id"]
    assert marina.ok("GET", f"/v1/environments/{env_id}/status")["pods"][0]["name"] == "crash"
    overview = ok(marina, "status")
    assert "shop" in overview and "degraded" in overview


def test_logs_of_a_replica(marina: Marina, shop: str) -> None:
    wait_for(lambda: "starting up" in ok(marina, "logs", shop, "crash"), timeout=60, what="output")
    assert ok(marina, "logs", shop, "crash", "--tail", "1").strip() == "starting up"
    assert ok(marina, "logs", shop, "crash", "--tail", "0") == ""
    missing = cli(marina, "logs", shop, "crash", "--replica", "4")
    assert missing.returncode == 1 and "replica '4' not found" in missing.stderr
    typo = cli(marina, "logs", shop, "crsh")
    assert typo.returncode == 1 and "did you mean 'crash'?" in typo.stderr
    env_id = status_json(marina, shop)["id"]
    status, body = marina.call("GET", f"/v1/environments/{env_id}/pods/crash/logs?tail=1")
    assert status == 200 and body == b"starting up\n"
    status, body = marina.call("GET", f"/v1/environments/{env_id}/pods/crash/logs?tail=-1")
    assert status == 400 and body["problems"][0]["field"] == "tail"
    # Following: more output arrives as the replica restarts, until Ctrl-C.
    follower = subprocess.Popen(
        [*MARINA, "--state-dir", str(marina.state_dir), "logs", shop, "crash", "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        seen = 0
        while seen < 3:  # more starts than the log had when asked: it was followed
            line = follower.stdout.readline()
            assert line, "the log ended"
            seen += line == "starting up\n"
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(60)
        assert follower.stderr is not None and "Traceback" not in follower.stderr.read()
        follower.stdout.close() if follower.stdout else None
        follower.stderr.close() if follower.stderr else None


def test_names_suggestions_and_output_formats(marina: Marina, shop: str) -> None:
    typo = cli(marina, "env", "show", "shpo")
    assert typo.returncode == 1
    assert typo.stderr == "marina: environment 'shpo' not found; did you mean 'shop'?\n"
    listed = json.loads(ok(marina, "env", "list", "-o", "json"))
    assert any(e["name"] == "shop" and e["status"] in ("ready", "degraded") for e in listed)
    # The same listing as YAML (a crashing replica changes `updated` between reads).
    as_yaml = yaml.safe_load(ok(marina, "env", "list", "-o", "yaml"))
    assert [(e["id"], e["name"], sorted(e)) for e in as_yaml] == [
        (e["id"], e["name"], sorted(e)) for e in listed
    ]
    assert "shop" in ok(marina, "env", "list")
    apps = json.loads(ok(marina, "app", "list", shop, "-o", "json"))
    assert {"c", "crash", "echo"} <= {a["name"] for a in apps}
    packages = json.loads(ok(marina, "package", "list", "-o", "json"))
    assert "guestbook" in {p["name"] for p in packages}
    actions = json.loads(ok(marina, "actions", shop, "-o", "json"))
    scale = next(a for a in actions if a["action"] == "crash:scalePod")
    assert scale["arguments"][0]["name"] == "replicas"
    assert scale["arguments"][0]["type"] == "integer" and scale["arguments"][0]["required"]
    down = next(a for a in actions if a["action"] == "c:scaleNodesDown")
    assert down["destructive"] is True
    table = ok(marina, "actions", shop)
    assert "replicas:integer (required)" in table
    wrong = cli(marina, "action", "run", shop, "crash:scalePods")
    assert wrong.returncode == 1 and "did you mean 'crash:scalePod'?" in wrong.stderr
    # The API's address as `marina up` prints it, with /v1, works as well.
    shown = subprocess.run(
        [*MARINA, "--api", marina.api + "/v1", "--token", marina.token, "env", "show", shop],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and json.loads(shown.stdout)["name"] == "shop", shown.stderr


def test_set_is_typed_values_and_dry_run(marina: Marina, shop: str, tmp_path: Path) -> None:
    before = marina.objects(status_json(marina, shop)["id"])["echo"]["replicas"]["desired"]
    dry = json.loads(
        ok(marina, "action", "run", shop, "echo:scalePod", "--set", "replicas=2", "--dry-run")
    )
    assert dry["arguments"] == {"replicas": 2} and dry["target"]["name"] == "echo"
    assert dry["problems"] == [] and dry["destructive"] is True
    after = marina.objects(status_json(marina, shop)["id"])["echo"]["replicas"]["desired"]
    assert after == before, "a dry run changes nothing"
    text = cli(marina, "action", "run", shop, "echo:scalePod", "--set", "replicas=two")
    assert text.returncode == 1 and "replicas must be integer" in text.stderr
    values = tmp_path / "values.yaml"
    values.write_text("replicas: -1\n")
    refused = cli(
        marina, "action", "run", shop, "echo:scalePod", "--values", str(values), "--dry-run"
    )
    assert refused.returncode == 1 and "replicas" in refused.stdout
    # The cluster's own limit is checked when the action is asked for, naming field and rule.
    limited = cli(marina, "action", "run", shop, "c:scaleNodes", "--set", "count=20")
    assert limited.returncode == 1
    assert "count: must not exceed the cluster's maxNodes" in limited.stderr
    assert limited.stderr.count("must not exceed") == 1, "each problem is said once"
    assert not any(
        t["method"] == "scaleNodes" for t in json.loads(ok(marina, "tasks", shop, "-o", "json"))
    )
    # A package's properties: typed from its schema, dotted keys nest, a file as Helm's.
    values.write_text("nodeCount: 1\n")
    added = json.loads(
        ok(
            marina,
            "app",
            "add",
            shop,
            "kubernetes-cluster",
            "--values",
            str(values),
            "--set",
            "name=second",
            "--set",
            "nodeCores=0.5",
            "--dry-run",
        )
    )
    cluster = next(a for a in added["adds"] if a["type"] == "KubernetesCluster")
    assert cluster["properties"]["nodeCount"] == 1 and cluster["properties"]["nodeCores"] == 0.5
    assert cluster["properties"]["maxNodes"] == 5, "the package's defaults are filled in"
    assert [a["type"] for a in added["adds"][1:]] == ["MasterNode", "MinionNode", "GatewayNode"]
    too_many = cli(marina, "app", "add", shop, "kubernetes-cluster", "--set", "name=third",
                   "--set", "nodeCount=9", "--dry-run")  # fmt: skip
    assert too_many.returncode == 1 and "nodeCount: must not exceed maxNodes" in too_many.stderr
    assert "second" not in {
        a["name"] for a in json.loads(ok(marina, "app", "list", shop, "-o", "json"))
    }


def test_tasks_and_a_task_with_its_log(marina: Marina, shop: str) -> None:
    tasks = json.loads(ok(marina, "tasks", shop, "-o", "json"))
    deploy = next(t for t in tasks if t["method"] == "deploy")
    assert deploy["state"] == "succeeded" and deploy["environment"] == "shop"
    assert deploy["id"] in ok(marina, "tasks")
    shown = ok(marina, "task", deploy["id"])
    assert '"state": "succeeded"' in shown and "setupNode" in shown
    waited = ok(marina, "task", deploy["id"], "--wait")
    assert "succeeded" in waited
    assert json.loads(ok(marina, "task", "show", deploy["id"], "-o", "json"))["log"]
    unknown = cli(marina, "task", "nope")
    assert unknown.returncode == 1 and unknown.stderr.count("marina:") == 1


def test_completion_offers_commands_and_names(marina: Marina, shop: str) -> None:
    script = ok(marina, "completion", "bash")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert "compdef _marina marina" in ok(marina, "completion", "zsh")
    state = str(marina.state_dir)
    words = ["--state-dir", state]
    assert "status" in ok(marina, "__complete", "--", *words, "st").split()
    assert ok(marina, "__complete", "--", *words, "logs", "sh").split() == ["shop"]
    assert ok(marina, "__complete", "--", *words, "logs", "shop", "cr").split() == ["crash"]
    assert (
        "crash:scalePod"
        in ok(marina, "__complete", "--", *words, "action", "run", "shop", "").split()
    )
    assert ok(marina, "__complete", "--", *words, "env", "list", "-o", "y").split() == ["yaml"]
    # Through bash itself, with the script sourced as a user would.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    completed = subprocess.run(
        [
            "bash",
            "-c",
            'source <(marina completion bash); COMP_WORDS=(marina --state-dir "$1" env show sh); '
            'COMP_CWORD=5; _marina; printf "%s\\n" "${COMPREPLY[@]}"',
            "bash",
            state,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert completed.stdout.split() == ["shop"], completed.stderr
    # Through zsh, after compinit, with its word list; compadd (zsh's, which
    # works only inside a completion widget) prints what it is given.
    completed = subprocess.run(
        [
            "zsh",
            "-c",
            "autoload -U compinit; compinit -u; source <(marina completion zsh); "
            'compadd() { print -l -- "${(@P)2}" }; '
            'words=(marina --state-dir "$1" logs shop cr); CURRENT=6; _marina',
            "zsh",
            state,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert completed.stdout.split() == ["crash"], completed.stderr


def test_removing_an_application_a_pod_and_a_second_cluster(marina: Marina, shop: str) -> None:
    env_id = status_json(marina, shop)["id"]
    # A second cluster: applications name it with --cluster, even those whose
    # package does not declare the property.
    ok(marina, "app", "add", shop, "kubernetes-cluster", "--set", "name=spare")
    ambiguous = cli(marina, "app", "add", shop, "guestbook")
    assert ambiguous.returncode == 1 and "several clusters" in ambiguous.stderr
    ok(marina, "app", "add", shop, "guestbook", "--cluster", "spare")
    objects = marina.objects(env_id)
    spare = objects["spare"]["?"]["id"]
    assert objects["web"]["cluster"] == spare and objects["Guestbook"]["cluster"] == spare
    busy = cli(marina, "app", "remove", shop, "spare")
    assert busy.returncode == 1 and "remove them first" in busy.stderr and "web" in busy.stderr
    dry = json.loads(ok(marina, "app", "remove", shop, "Guestbook", "--dry-run"))
    assert dry["remove"]["type"] == "KubernetesApplication" and "Guestbook" in marina.objects(
        env_id
    )
    ok(marina, "app", "remove", shop, "Guestbook", "--wait")
    objects = marina.objects(env_id)
    assert "Guestbook" not in objects and "web" not in objects and "store" not in objects
    ok(marina, "app", "remove", shop, "spare", "--wait")
    objects = marina.objects(env_id)
    assert "spare" not in objects and not any(o.get("cluster") == spare for o in objects.values())
    # A deployed pod: its replicas stop and it leaves the status.
    ok(marina, "app", "remove", shop, "crash", "--wait")
    assert "crash" not in {p["name"] for p in status_json(marina, shop)["pods"]}
    gone = cli(marina, "logs", shop, "crash")
    assert gone.returncode == 1 and "pod 'crash' not found" in gone.stderr
    status, body = marina.call("DELETE", f"/v1/environments/{env_id}/objects/master-0")
    assert status == 404, body


def test_ctrl_c_while_waiting_leaves_the_task_running(marina: Marina, shop: str) -> None:
    # A replica that never accepts connections on its port keeps scalePod waiting.
    never = {
        "name": "never",
        "containers": [
            {
                "name": "never",
                "image": "python:3.11",
                "cores": 0.1,
                "command": ["sleep", "600"],
                "ports": [{"containerPort": 8000}],
            }
        ],
    }
    ok(marina, "app", "add", shop, "kubernetes-pod", "--properties", json.dumps(never))
    waiting = subprocess.Popen(
        [*MARINA, "--state-dir", str(marina.state_dir), "action", "run", shop, "never:scalePod",
         "--set", "replicas=1", "--wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a shell's background job has it: SIGINT ignored from the start.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        assert waiting.stdout is not None
        assert "[  1]" in waiting.stdout.readline()  # the first step is shown
    finally:
        waiting.send_signal(signal.SIGINT)
        _out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 130, err
    assert "goes on" in err and "--wait`" in err and "Traceback" not in err
    task_id = err.split("marina task ")[1].split()[0]
    assert marina.ok("GET", f"/v1/tasks/{task_id}")["state"] in ("queued", "running")


def test_up_names_a_taken_port_and_its_holder(marina: Marina, tmp_path: Path) -> None:
    taken = subprocess.run(
        [*MARINA, "--state-dir", str(tmp_path / "other"), "up", "--port", str(marina.port),
         "--etcd-port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert taken.returncode == 1
    assert f"port {marina.port} on 127.0.0.1 is held by pid {marina.proc.pid}" in taken.stderr
    assert "choose another with --port" in taken.stderr and "internal error" not in taken.stderr
    assert taken.stderr.count("marina:") == 1
    etcd = cli(marina, "up", "--port", str(free_port()), "--etcd-port", str(marina.etcd_port))
    assert etcd.returncode == 1 and "--etcd-port" in etcd.stderr and "etcd" in etcd.stderr


def test_ctrl_c_stops_up_and_everything_it_started(tmp_path: Path) -> None:
    server = Marina(tmp_path / "state").start()
    assert server.proc is not None
    server.proc.send_signal(signal.SIGINT)
    server.proc.wait(30)  # a generous bound: it stops well within it
    assert server.proc.returncode == 0
    leftovers = subprocess.run(
        ["pgrep", "-f", str(server.state_dir)], capture_output=True, text=True
    ).stdout.split()
    assert not leftovers, f"processes left behind: {leftovers}"
    with pytest.raises(OSError):
        urllib.request.urlopen(server.api + "/v1/openapi.json", timeout=5)


def test_make_demo_takes_ports() -> None:
    makefile = Path(__file__).resolve().parents[2] / "Makefile"
    dry = subprocess.run(
        ["make", "-n", "-f", str(makefile), "demo", "PORT=18123", "ETCD_PORT=23123"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=makefile.parent,
    )
    assert "--port 18123" in dry.stdout and "--etcd-port 23123" in dry.stdout, dry.stdout


def test_wait_on_a_terminal_shows_a_progress_bar_with_the_current_step(
    marina: Marina, shop: str
) -> None:
    import pty
    import re

    main, terminal = pty.openpty()
    waiting = subprocess.Popen(
        [*MARINA, "--state-dir", str(marina.state_dir), "action", "run", shop, "echo:scalePod",
         "--set", "replicas=2", "--wait"],
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    )  # fmt: skip
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal closed with the command
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    out, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, (out, shown)
    bar = shown.decode(errors="replace")
    steps = re.findall(r"\[[#.]{20}\] step (\d+), \d+s: ([^\r\x1b]*)", bar)
    assert steps, bar
    # The bar names a step the log printed, and ends cleared.
    logged = [line.split(None, 3)[3] for line in out.splitlines() if line.startswith("[")]
    assert any(message and message in logged[int(n) - 1] for n, message in steps), (steps, logged)
    assert bar.endswith("\r\x1b[K")
    # Not on a terminal, nothing but the log lines.
    plain = cli(marina, "action", "run", shop, "echo:scalePod", "--set", "replicas=1", "--wait")
    assert plain.returncode == 0 and "\x1b" not in plain.stdout + plain.stderr
