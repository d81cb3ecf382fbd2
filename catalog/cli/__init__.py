"""`marina`: the command line. Everything but `up` and `demo` talks to the API.

The API address and token come from --api/--token, then MARINA_API and
MARINA_TOKEN, then what `marina up` saved in its state directory (`client`).
One module per group of commands; `up` and `demo` live in `up`, the only one
that imports the server, and only when one of them runs.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from catalog.cli.actions import cmd_action, cmd_actions, cmd_task, cmd_tasks
from catalog.cli.client import CliError
from catalog.cli.completion import candidates, cmd_completion
from catalog.cli.environments import cmd_app, cmd_env
from catalog.cli.packages import cmd_import, cmd_package
from catalog.cli.status import cmd_logs, cmd_status
from catalog.statedir import default_state_dir


def cmd_serve(args: argparse.Namespace) -> int:
    """`up` or `demo`: the server (etcd's client, the engines, the API) loads here."""
    from catalog.cli import up

    return up.cmd_up(args) if args.command == "up" else up.cmd_demo(args)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="marina", description="Marina application catalog")
    top.add_argument("--api", help="API URL (default: MARINA_API or the one `up` saved)")
    top.add_argument("--token", help="bearer token (default: MARINA_TOKEN or the admin token)")
    top.add_argument(
        "--state-dir", default=str(default_state_dir()), help="state directory of `marina up`"
    )
    top.add_argument("--verbose", action="store_true")
    sub = top.add_subparsers(dest="command", required=True)

    for name, helptext in (
        ("up", "run etcd, the API, the worker and the controller"),
        ("demo", "`up`, then deploy a cluster and the guestbook"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--etcd", help="use this etcd instead of starting one")
        p.add_argument("--etcd-cacert", help="CA bundle of an https:// --etcd")
        p.add_argument("--etcd-cert", help="client certificate for an https:// --etcd")
        p.add_argument("--etcd-key", help="client certificate's key for an https:// --etcd")
        p.add_argument("--etcd-port", type=int, default=23790)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8787)
        p.add_argument(
            "--engine",
            choices=("local", "kubernetes"),
            default="local",
            help="where pods run: node agents here, or a Kubernetes cluster",
        )
        p.add_argument("--kubeconfig", help="the cluster of --engine kubernetes")
        p.add_argument("--context", help="the kubeconfig context of --engine kubernetes")
        p.add_argument(
            "--provider",
            choices=("local", "openstack"),
            default="local",
            help="where nodes come from: this machine, or servers of an OpenStack cloud",
        )
        p.add_argument("--cloud", help="the clouds.yaml entry of --provider openstack")
        p.add_argument("--image", help="node image (name or id) of --provider openstack")
        p.add_argument(
            "--flavor",
            action="append",
            default=[],
            metavar="ROLE=FLAVOR",
            help="flavor per role (master, minion, gateway) of --provider openstack",
        )
        p.add_argument("--network", help="an existing network for --provider openstack")
        p.add_argument("--keypair", help="a keypair put on the servers of --provider openstack")
        p.add_argument(
            "--register-workers",
            action="store_true",
            help="--provider openstack registers workers' Nodes itself (servers that boot nothing)",
        )
        p.add_argument(
            "--keystone-url",
            help="also take Keystone tokens (X-Auth-Token), asking this v3 endpoint",
        )
        p.set_defaults(func=cmd_serve)

    env = sub.add_parser("env", help="environments (by name or id)")
    env_sub = env.add_subparsers(dest="env_command", required=True)
    _output(env_sub.add_parser("list"))
    env_sub.add_parser("create").add_argument("name")
    _output(env_sub.add_parser("show"), table=False).add_argument("env")
    imported = env_sub.add_parser("import", help="a new environment from an export archive")
    imported.add_argument("file", help="the exportConfig .tar.gz, or its marina.json")
    imported.add_argument("--name", help="name of the new environment")
    delete = env_sub.add_parser("delete")
    delete.add_argument("env")
    delete.add_argument("--wait", action="store_true")
    env.set_defaults(func=cmd_env)

    status = _output(sub.add_parser("status", help="how environments run: pods, replicas, URLs"))
    status.add_argument("env", nargs="?")
    status.set_defaults(func=cmd_status)

    logs = sub.add_parser("logs", help="a pod replica's output")
    logs.add_argument("env")
    logs.add_argument("pod")
    logs.add_argument("--replica", type=int, default=0, help="the replica's index (default 0)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing as it comes")
    logs.add_argument("--tail", type=int, help="only the last N lines")
    logs.set_defaults(func=cmd_logs)

    app = sub.add_parser("app", help="applications").add_subparsers(
        dest="app_command", required=True
    )
    add = app.add_parser("add", help="add an application from a package")
    add.add_argument("env")
    add.add_argument("package")
    add.add_argument("--name")
    add.add_argument("--properties", help="JSON object")
    add.add_argument("--cluster", help="the cluster (name or id) when there are several")
    _values(add, "property")
    add.set_defaults(func=cmd_app)
    listed = _output(app.add_parser("list", help="the environment's applications, pods, clusters"))
    listed.add_argument("env")
    listed.set_defaults(func=cmd_app)
    remove = app.add_parser("remove", help="remove an application, a pod or a cluster")
    remove.add_argument("env")
    remove.add_argument("app", help="its name or id")
    remove.add_argument("--wait", action="store_true")
    remove.add_argument("--dry-run", action="store_true", help="say what would go")
    remove.set_defaults(func=cmd_app)

    actions = _output(sub.add_parser("actions", help="what can be run, with its arguments"))
    actions.add_argument("env")
    actions.set_defaults(func=cmd_actions)

    action = sub.add_parser("action", help="actions")
    action_sub = action.add_subparsers(dest="action_command", required=True)
    _output(action_sub.add_parser("list")).add_argument("env")
    run = action_sub.add_parser("run", help="run ACTION (an id or objectName:method)")
    run.add_argument("env")
    run.add_argument("action")
    run.add_argument("--arg", action="append", metavar="KEY=VALUE", help="as --set")
    run.add_argument("--args", help="JSON object")
    _values(run, "argument")
    run.add_argument("--wait", action="store_true", help="follow the log until it finishes")
    action.set_defaults(func=cmd_action)

    tasks = _output(sub.add_parser("tasks", help="the latest tasks (of one environment)"))
    tasks.add_argument("env", nargs="?")
    tasks.set_defaults(func=cmd_tasks)

    task = sub.add_parser("task", help="a task and its log (marina task ID)").add_subparsers(
        dest="task_command", required=True
    )
    shown = _output(task.add_parser("show"), table=False)
    shown.add_argument("task")
    shown.add_argument("--wait", action="store_true", help="follow a running task to its end")
    shown.set_defaults(func=cmd_task)
    fetch = task.add_parser("download", help="save a file a task attached")
    fetch.add_argument("task")
    fetch.add_argument("name", nargs="?", help="the file (needed when there are several)")
    fetch.add_argument("-o", "--output", help="where to save it")
    fetch.set_defaults(func=cmd_task)

    package = sub.add_parser("package", help="packages")
    package_sub = package.add_subparsers(dest="package_command", required=True)
    _output(package_sub.add_parser("list"))
    upload = package_sub.add_parser("upload")
    upload.add_argument("file")
    upload.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="replace a stored package even with an older version",
    )
    init = package_sub.add_parser("init", help="write a new package to start from")
    init.add_argument("name", help="the package name (lower-case letters, digits, '-')")
    init.add_argument("--dir", help="where to write it (default: ./NAME)")
    lint = package_sub.add_parser("lint", help="check a package folder or zip without a server")
    lint.add_argument("path")
    package.set_defaults(func=cmd_package)

    imports = sub.add_parser(
        "import", help="a package from a docker-compose file, Panamax template or ZApp"
    )
    imports.add_argument("path")
    imports.add_argument("--format", choices=("compose", "pmx", "zapp"))
    imports.add_argument("--name", help="the package name (default: from the file)")
    imports.add_argument(
        "--dry-run", action="store_true", help="print the manifest and warnings; save nothing"
    )
    imports.add_argument(
        "--strict", action="store_true", help="exit 1 (saving nothing) when there are warnings"
    )
    imports.add_argument("--replace", action="store_true", help="replace a package of that name")
    imports.set_defaults(func=cmd_import)

    completion = sub.add_parser("completion", help="a shell completion script")
    completion.add_argument("shell", choices=("bash", "zsh"))
    completion.set_defaults(func=cmd_completion)
    hidden = sub.add_parser("__complete")
    hidden.add_argument("words", nargs=argparse.REMAINDER)
    hidden.set_defaults(func=cmd_complete)
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != "__complete"]
    return top


def _output(p: argparse.ArgumentParser, *, table: bool = True) -> argparse.ArgumentParser:
    formats = ("table", "json", "yaml") if table else ("json", "yaml")
    p.add_argument("-o", "--output", choices=formats, default=formats[0], help="output format")
    return p


def _values(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help=f"a {what}, typed by the schema (a.b=1 for nested ones)",
    )
    p.add_argument("--values", metavar="FILE.yaml", help=f"{what}s from a YAML file (--set wins)")
    p.add_argument("--dry-run", action="store_true", help="check and show; change nothing")


def cmd_complete(args: argparse.Namespace) -> int:
    words = args.words[1:] if args.words[:1] == ["--"] else args.words
    for candidate in candidates(parser(), words, args):
        print(candidate)
    return 0


TASK_WORDS = {"show", "download", "-h", "--help"}


def _task_shorthand(argv: list[str]) -> list[str]:
    """`marina task ID` means `marina task show ID`."""
    for i, word in enumerate(argv):
        if word == "task" and i + 1 < len(argv) and argv[i + 1] not in TASK_WORDS:
            return [*argv[: i + 1], "show", *argv[i + 1 :]]
        if not word.startswith("-") and (i == 0 or argv[i - 1] not in GLOBAL_VALUED):
            break
    return argv


GLOBAL_VALUED = {"--api", "--token", "--state-dir"}


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C stops following and waiting even in a background job, whose shell
    # leaves SIGINT ignored (Python would then never raise KeyboardInterrupt).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = parser().parse_args(_task_shorthand(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
        return code
    except CliError as exc:
        print(f"marina: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from catalog.errors import MarinaError

        if isinstance(exc, MarinaError):
            print(f"marina: {exc}", file=sys.stderr)
            return 1
        logging.getLogger("marina").debug("unexpected error", exc_info=True)
        print(
            f"marina: internal error ({type(exc).__name__}: {exc}); rerun with --verbose",
            file=sys.stderr,
        )
        return 2
