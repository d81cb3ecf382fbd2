"""A real OpenStack control plane on loopback: keystone, placement, glance,
neutron and nova (fake virt driver), on MariaDB and RabbitMQ from Debian.

Marina's OpenStack provider is tested against this rather than against a
recording of one: the services are the released ones, installed from PyPI in
their own virtual environment (`make openstack-deps`), and they run as
processes of this machine under a directory of the caller's. Nothing of it
listens beyond 127.0.0.1, and `stop()` leaves no process behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import socket
import string
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.openstack.clouds import CloudEntry, write_clouds_yaml
from tests.openstack.processes import CommandFailed, Service, close_reaper, run, stop_all

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TEMPLATES = HERE / "templates"
DEFAULT_VENV = REPO / ".venv-openstack"

ADMIN_CLOUD = "marina-test-admin"
USER_CLOUD = "marina-test"
PROJECT = "marina"
COMPUTE_HOSTS = ("marina-compute", "marina-compute-2", "marina-compute-3")
"""Fake hypervisors, one nova-compute each: a cluster's three masters can
each have one of their own, as a server group with anti-affinity wants."""

# Databases each service migrates; nova needs three (API, cell0, cell1).
DATABASES = ("keystone", "placement", "glance", "neutron", "nova_api", "nova", "nova_cell0")


# Names what `_migrate` and `_create_databases` make; change it when they
# change, so that schemas kept by an earlier version are not reused.
SCHEMAS = "1: " + " ".join(DATABASES) + ", cell0 and cell1 mapped"


class ControlPlaneError(RuntimeError):
    """The control plane could not be installed, started or seeded."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(
    probe: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    services: list[Service] | None = None,
    interval: float = 0.25,
) -> Any:
    """Poll `probe` until it returns something true; fail early when a service died."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for service in services or []:
            service.check_running()
        try:
            last = probe()
        except Exception as exc:  # not up yet: the probe is retried until the deadline
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _without_sections(ini: str, names: set[str]) -> str:
    kept, skipping = [], False
    for line in ini.splitlines(keepends=True):
        if line.startswith("["):
            skipping = line.strip()[1:-1] in names
        if not skipping:
            kept.append(line)
    return "".join(kept)


@dataclass
class Ports:
    """Every port the control plane listens on, all on 127.0.0.1."""

    mariadb: int = field(default_factory=_free_port)
    amqp: int = field(default_factory=_free_port)
    epmd: int = field(default_factory=_free_port)
    erlang_dist: int = field(default_factory=_free_port)
    keystone: int = field(default_factory=_free_port)
    placement: int = field(default_factory=_free_port)
    glance: int = field(default_factory=_free_port)
    neutron: int = field(default_factory=_free_port)
    nova: int = field(default_factory=_free_port)


class ControlPlane:
    """Start with `start()`, use `clouds_yaml` and the cloud names, end with `stop()`."""

    def __init__(
        self,
        workdir: Path,
        *,
        venv: Path = DEFAULT_VENV,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.workdir = workdir.resolve()
        self.venv = venv.resolve()
        self.say = say or (lambda message: None)
        self.ports = Ports()
        self.admin_password = secrets.token_urlsafe(16)
        self.user_password = secrets.token_urlsafe(16)
        self.db_password = secrets.token_urlsafe(16)
        self.logs = self.workdir / "logs"
        self.state = self.workdir / "state"
        self.config = self.workdir / "config"
        self.clouds_yaml = self.workdir / "clouds.yaml"
        self.services: list[Service] = []
        self.timings: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- addresses -----------------------------------------------------------

    @property
    def keystone_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.keystone}/v3"

    def endpoint(self, service: str) -> str:
        port = getattr(self.ports, service)
        suffix = {"nova": "/v2.1", "keystone": "/v3"}.get(service, "")
        return f"http://127.0.0.1:{port}{suffix}"

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> ControlPlane:
        started = time.monotonic()
        self._check_installed()
        for directory in (self.logs, self.state, self.config):
            directory.mkdir(parents=True, exist_ok=True)
        try:
            self._write_configs()
            with self._step("mariadb and rabbitmq"):
                self._start_rabbitmq()
                warm = self._start_mariadb()
            if not warm:
                with self._step("database migrations"):
                    self._migrate()
                    self._save_schemas()
            with self._step("apis up"):
                self._start_keystone()
                # The other services need keystone only once requests come.
                self._start_apis()
                self._start_nova_services()
                self._wait_rabbitmq()
                self._wait_keystone()
                self._bootstrap_identity()
                self._wait_apis()
            with self._step("compute host registered"):
                self._register_compute_host()
            with self._step("seed resources"):
                self._seed()
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - started
        self.say(f"control plane up in {self.timings['total']:.1f}s ({'warm' if warm else 'cold'})")
        return self

    def stop(self) -> None:
        """Stop every service; idempotent."""
        services, self.services = self.services, []
        # Nothing here is worth a graceful shutdown: its data is thrown away.
        stop_all(services, grace=2.0)
        close_reaper()

    @contextlib.contextmanager
    def _step(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        yield
        self.timings[name] = time.monotonic() - began
        self.say(f"{name}: {self.timings[name]:.1f}s")

    def _check_installed(self) -> None:
        missing = [
            str(path)
            for path in (
                self.venv / "bin" / "uwsgi",
                self.venv / "bin" / "nova-compute",
                Path("/usr/sbin/mariadbd"),
                Path("/usr/lib/rabbitmq/bin/rabbitmq-server"),
            )
            if not path.exists()
        ]
        if missing:
            raise ControlPlaneError(
                "the OpenStack control plane is not installed (missing "
                + ", ".join(missing)
                + "): run `make openstack-deps`"
            )

    # -- environment -----------------------------------------------------------

    def _env(self, **extra: str) -> dict[str, str]:
        base = {
            key: value
            for key, value in os.environ.items()
            if key in ("LANG", "LC_ALL", "TZ", "TERM")
        }
        base.update(
            PATH=f"{self.venv / 'bin'}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            HOME=str(self.state),
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        base.update(extra)
        return base

    def _service(self, name: str, command: list[str], **env: str) -> Service:
        service = Service(name, command, env=self._env(**env), log=self.logs / f"{name}.log")
        with self._lock:
            self.services.append(service)
        return service.start()

    def _run(self, name: str, command: list[str], **env: str) -> str:
        return run(command, env=self._env(**env), log=self.logs / f"{name}.log")

    def _bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    # -- MariaDB and RabbitMQ --------------------------------------------------

    @property
    def _mariadb_socket(self) -> Path:
        return self.state / "mariadb" / "mariadb.sock"

    @property
    def _datadir(self) -> Path:
        return self.state / "mariadb" / "data"

    def schema_cache(self) -> Path:
        """Where migrated, empty databases are kept, per installed packages."""
        digest = hashlib.sha256(SCHEMAS.encode())
        site = sorted(p.name for p in self.venv.glob("lib/python*/site-packages/*.dist-info"))
        digest.update("\n".join(site).encode())
        return self.venv / "cache" / f"schemas-{digest.hexdigest()[:16]}"

    def _start_mariadb(self) -> bool:
        """Start MariaDB; True when it starts from migrated schemas kept earlier."""
        cache = self.schema_cache()
        warm = cache.is_dir()
        if warm:
            shutil.copytree(cache, self._datadir, symlinks=True)
        else:
            self._datadir.mkdir(parents=True)
            self._run(
                "mariadb-install-db",
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    f"--datadir={self._datadir}",
                    "--user=root",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                ],
            )
        self._run_mariadb()
        if warm:
            self._mariadb(
                f"ALTER USER 'openstack'@'127.0.0.1' IDENTIFIED BY '{self.db_password}';"
                + self._cell_mappings_sql()
            )
        else:
            self._create_databases()
        return warm

    def _run_mariadb(self) -> None:
        # Durability is worth nothing to a throw-away database, and the
        # migrations are thousands of DDL statements.
        self._service(
            "mariadb",
            [
                "/usr/sbin/mariadbd",
                "--no-defaults",
                f"--datadir={self._datadir}",
                f"--socket={self._mariadb_socket}",
                f"--pid-file={self.state / 'mariadb' / 'mariadb.pid'}",
                f"--port={self.ports.mariadb}",
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--max-connections=1000",
                "--innodb-buffer-pool-size=128M",
                "--innodb-log-file-size=16M",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--sync-binlog=0",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
                f"--log-error={self.logs / 'mariadb-error.log'}",
            ],
        )
        self._wait_mariadb()

    def _cell_mappings_sql(self) -> str:
        """Point nova's cell mappings at this run's database and broker ports."""
        values = self._values()
        return (
            "UPDATE nova_api.cell_mappings SET "
            f"database_connection = '{values['db']}/nova_cell0?charset=utf8' "
            "WHERE uuid = '00000000-0000-0000-0000-000000000000';"
            "UPDATE nova_api.cell_mappings SET "
            f"database_connection = '{values['db']}/nova?charset=utf8', "
            f"transport_url = '{values['transport_url']}' "
            "WHERE name = 'cell1';"
        )

    def _save_schemas(self) -> None:
        """Keep the migrated databases so that later runs skip the migrations."""
        mariadb = next(s for s in self.services if s.name == "mariadb")
        mariadb.stop(grace=60)  # a clean shutdown leaves a datadir that copies whole
        self.services.remove(mariadb)
        cache = self.schema_cache()
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(self._datadir, partial, symlinks=True)
        with contextlib.suppress(OSError):  # another run saved the same schemas first
            partial.rename(cache)
        shutil.rmtree(partial, ignore_errors=True)
        self._run_mariadb()

    def _mariadb(self, sql: str) -> str:
        return self._run(
            "mariadb-client",
            [
                "mariadb",
                "--no-defaults",
                f"--socket={self._mariadb_socket}",
                "-u",
                "root",
                "-e",
                sql,
            ],
        )

    def _wait_mariadb(self) -> None:
        _wait(
            lambda: self._mariadb_socket.exists() and self._mariadb("SELECT 1") is not None,
            timeout=60,
            what="mariadb",
            services=self.services,
        )

    def _create_databases(self) -> None:
        statements = [
            f"CREATE USER 'openstack'@'127.0.0.1' IDENTIFIED BY '{self.db_password}';",
        ]
        for name in DATABASES:
            statements.append(f"CREATE DATABASE {name};")
            statements.append(f"GRANT ALL PRIVILEGES ON {name}.* TO 'openstack'@'127.0.0.1';")
        self._mariadb(" ".join(statements))

    def _start_rabbitmq(self) -> None:
        home = self.state / "rabbitmq"
        (home / "mnesia").mkdir(parents=True)
        (home / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.ports.amqp}\n"
            "disk_free_limit.absolute = 50MB\n"
            "log.console = true\n"
            "log.file = false\n"
        )
        (home / "enabled_plugins").write_text("[].\n")
        (home / "rabbitmq-env.conf").write_text("")
        erlang = {
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.ports.epmd),
        }
        # An epmd of our own on a private port: one the Erlang VM started
        # would detach, outlive the broker and answer for other nodes.
        self._service("epmd", ["epmd", "-port", str(self.ports.epmd)], **erlang)
        _wait(
            lambda: socket.create_connection(("127.0.0.1", self.ports.epmd), 1).close() or True,
            timeout=20,
            what="epmd",
            services=self.services,
        )
        self._service(
            "rabbitmq",
            ["/usr/lib/rabbitmq/bin/rabbitmq-server"],
            HOME=str(home),
            RABBITMQ_HOME="/usr/lib/rabbitmq",
            RABBITMQ_CONF_ENV_FILE=str(home / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(home / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(home / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(home / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.logs),
            RABBITMQ_PID_FILE=str(home / "rabbitmq.pid"),
            RABBITMQ_NODENAME="marina@localhost",
            # A VM that fails to start writes its crash dump here, not where the tests run.
            ERL_CRASH_DUMP=str(home / "erl_crash.dump"),
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.ports.amqp),
            RABBITMQ_DIST_PORT=str(self.ports.erlang_dist),
            # Erlang's distribution listener binds every interface unless told.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            **erlang,
        )

    def _wait_rabbitmq(self) -> None:
        def accepts_amqp() -> bool:
            with socket.create_connection(("127.0.0.1", self.ports.amqp), 1) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                return s.recv(8)[:1] == b"\x01"  # connection.start frame

        _wait(accepts_amqp, timeout=90, what="rabbitmq", services=self.services)

    # -- configuration -----------------------------------------------------------

    def _values(self) -> dict[str, str]:
        return {
            "db": f"mysql+pymysql://openstack:{self.db_password}@127.0.0.1:{self.ports.mariadb}",
            "transport_url": f"rabbit://guest:guest@127.0.0.1:{self.ports.amqp}/",
            "keystone_url": self.keystone_url,
            "admin_password": self.admin_password,
            "state": str(self.state),
            "config": str(self.config),
        }

    def _render(self, template: str, target: Path, *, with_auth: bool = True) -> None:
        values = self._values()
        text = string.Template((TEMPLATES / template).read_text()).substitute(values)
        if with_auth:
            text += string.Template((TEMPLATES / "authtoken.conf").read_text()).substitute(values)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o600)

    def _write_configs(self) -> None:
        c = self.config
        self._render("keystone.conf", c / "keystone" / "keystone.conf", with_auth=False)
        self._render("placement.conf", c / "placement" / "placement.conf")
        self._render("glance-api.conf", c / "glance" / "glance-api.conf")
        self._render("neutron.conf", c / "neutron" / "neutron.conf")
        self._render(
            "ml2_conf.ini", c / "neutron" / "plugins" / "ml2" / "ml2_conf.ini", with_auth=False
        )
        self._render("nova.conf", c / "nova" / "nova.conf")
        # nova-compute reaches the database only through the conductor, and
        # complains at every start if it is given a connection.
        compute = _without_sections(
            (c / "nova" / "nova.conf").read_text(), {"database", "api_database"}
        )
        for host in COMPUTE_HOSTS:
            # Each its own state: nova-compute keeps its node's identity there.
            text = compute
            if host != COMPUTE_HOSTS[0]:
                text = text.replace("\nhost = marina-compute\n", f"\nhost = {host}\n")
                text = text.replace(f"{self.state}/nova", f"{self.state}/{host}")
                (self.state / host / "instances").mkdir(parents=True, exist_ok=True)
            (c / "nova" / f"{host}.conf").write_text(text)
            (c / "nova" / f"{host}.conf").chmod(0o600)
        shipped = self.venv / "etc"
        shutil.copy(shipped / "glance" / "glance-api-paste.ini", c / "glance")
        shutil.copy(shipped / "neutron" / "api-paste.ini", c / "neutron")
        shutil.copy(shipped / "nova" / "api-paste.ini", c / "nova")
        for directory in (
            "locks",
            "keystone/fernet-keys",
            "keystone/credential-keys",
            "glance/images",
            "glance/staging",
            "glance/tasks",
            "neutron",
            "nova/instances",
        ):
            (self.state / directory).mkdir(parents=True, exist_ok=True)

    # -- migrations --------------------------------------------------------------

    def _migrate(self) -> None:
        c = self.config
        nova = ["--config-file", str(c / "nova" / "nova.conf")]
        neutron = [
            "--config-file",
            str(c / "neutron" / "neutron.conf"),
            "--config-file",
            str(c / "neutron" / "plugins" / "ml2" / "ml2_conf.ini"),
        ]
        db = self._values()["db"]

        def keystone() -> None:
            conf = ["--config-file", str(c / "keystone" / "keystone.conf")]
            self._run("keystone-manage", [self._bin("keystone-manage"), *conf, "db_sync"])

        def nova_dbs() -> None:
            manage = [self._bin("nova-manage"), *nova]
            self._run("nova-manage", [*manage, "api_db", "sync"])
            self._run(
                "nova-manage",
                [
                    *manage,
                    "cell_v2",
                    "map_cell0",
                    "--database_connection",
                    f"{db}/nova_cell0?charset=utf8",
                ],
            )
            self._run("nova-manage", [*manage, "cell_v2", "create_cell", "--name", "cell1"])
            self._run("nova-manage", [*manage, "db", "sync"])

        jobs: dict[str, Callable[[], object]] = {
            "keystone": keystone,
            "nova": nova_dbs,
            "neutron": lambda: self._run(
                "neutron-db-manage", [self._bin("neutron-db-manage"), *neutron, "upgrade", "heads"]
            ),
            "placement": lambda: self._run(
                "placement-manage",
                [
                    self._bin("placement-manage"),
                    "--config-file",
                    str(c / "placement" / "placement.conf"),
                    "db",
                    "sync",
                ],
            ),
            "glance": lambda: self._run(
                "glance-manage",
                [
                    self._bin("glance-manage"),
                    "--config-file",
                    str(c / "glance" / "glance-api.conf"),
                    "db_sync",
                ],
            ),
        }
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = {name: pool.submit(job) for name, job in jobs.items()}
            errors = []
            for name, future in futures.items():
                try:
                    future.result()
                except CommandFailed as error:
                    errors.append(f"{name}: {error}")
        if errors:
            raise ControlPlaneError("migrations failed:\n" + "\n".join(errors))

    # -- services ----------------------------------------------------------------

    def _uwsgi(self, name: str, module: str, port: int, *extra: str, **env: str) -> Service:
        return self._service(
            name,
            [
                self._bin("uwsgi"),
                "--http-socket",
                f"127.0.0.1:{port}",
                "--module",
                module,
                "--master",
                "--processes",
                "1",
                "--threads",
                "4",
                "--enable-threads",
                "--lazy-apps",
                "--need-app",
                "--die-on-term",
                "--buffer-size",
                "65535",
                # Kept-alive connections were seen reset under uwsgi.
                "--add-header",
                "Connection: close",
                "--hook-master-start",
                "unix_signal:15 gracefully_kill_them_all",
                *extra,
            ],
            **env,
        )

    def _start_keystone(self) -> None:
        manage = [
            self._bin("keystone-manage"),
            "--config-file",
            str(self.config / "keystone" / "keystone.conf"),
        ]
        owner = ["--keystone-user", "root", "--keystone-group", "root"]
        self._run("keystone-manage", [*manage, "fernet_setup", *owner])
        self._run("keystone-manage", [*manage, "credential_setup", *owner])
        self._run(
            "keystone-manage",
            [
                *manage,
                "bootstrap",
                # One word: a password may begin with "-", which argparse takes for an option.
                f"--bootstrap-password={self.admin_password}",
                "--bootstrap-public-url",
                self.keystone_url,
                "--bootstrap-region-id",
                "RegionOne",
            ],
        )
        self._uwsgi(
            "keystone",
            "keystone.wsgi.api:application",
            self.ports.keystone,
            OS_KEYSTONE_CONFIG_DIR=str(self.config / "keystone"),
            OS_KEYSTONE_CONFIG_FILES="keystone.conf",
        )

    def _wait_keystone(self) -> None:
        _wait(
            lambda: _http_status(self.keystone_url) == 200,
            timeout=180,
            what="keystone",
            services=self.services,
        )

    def admin_connection(self) -> Any:
        import openstack

        return openstack.connect(
            auth_url=self.keystone_url,
            username="admin",
            password=self.admin_password,
            project_name="admin",
            user_domain_name="Default",
            project_domain_name="Default",
            region_name="RegionOne",
            identity_api_version="3",
        )

    def _bootstrap_identity(self) -> None:
        conn = self.admin_connection()
        identity = conn.identity
        admin = identity.find_user("admin", ignore_missing=False)
        admin_project = identity.find_project("admin", ignore_missing=False)
        service_role = identity.find_role("service", ignore_missing=False)
        identity.assign_project_role_to_user(admin_project, admin, service_role)
        project = identity.create_project(name=PROJECT, domain_id="default")
        user = identity.create_user(
            name=PROJECT,
            password=self.user_password,
            default_project_id=project.id,
            domain_id="default",
        )
        member = identity.find_role("member", ignore_missing=False)
        identity.assign_project_role_to_user(project, user, member)
        catalog = {
            "placement": ("placement", "placement"),
            "glance": ("glance", "image"),
            "neutron": ("neutron", "network"),
            "nova": ("nova", "compute"),
        }
        for key, (name, kind) in catalog.items():
            service = identity.create_service(name=name, type=kind)
            # Public only: every client and service here falls back to it.
            identity.create_endpoint(
                service_id=service.id,
                interface="public",
                url=self.endpoint(key),
                region_id="RegionOne",
            )
        write_clouds_yaml(
            self.clouds_yaml,
            [
                CloudEntry(ADMIN_CLOUD, self.keystone_url, "admin", self.admin_password, "admin"),
                CloudEntry(USER_CLOUD, self.keystone_url, PROJECT, self.user_password, PROJECT),
            ],
        )

    def _start_apis(self) -> None:
        c = self.config
        self._uwsgi(
            "placement",
            "placement.wsgi.api:application",
            self.ports.placement,
            OS_PLACEMENT_CONFIG_DIR=str(c / "placement"),
        )
        self._uwsgi(
            "glance",
            "glance.wsgi.api:application",
            self.ports.glance,
            "--http-chunked-input",
            "--http-raw-body",
            OS_GLANCE_CONFIG_DIR=str(c / "glance"),
        )
        self._uwsgi(
            "neutron",
            "neutron.wsgi.api:application",
            self.ports.neutron,
            OS_NEUTRON_CONFIG_DIR=str(c / "neutron"),
            OS_NEUTRON_CONFIG_FILES="neutron.conf;plugins/ml2/ml2_conf.ini",
        )
        self._uwsgi(
            "nova-api",
            "nova.wsgi.osapi_compute:application",
            self.ports.nova,
            OS_NOVA_CONFIG_DIR=str(c / "nova"),
        )

    def _start_nova_services(self) -> None:
        conf = ["--config-file", str(self.config / "nova" / "nova.conf")]
        self._service("nova-conductor", [self._bin("nova-conductor"), *conf])
        self._service("nova-scheduler", [self._bin("nova-scheduler"), *conf])

    def _wait_apis(self) -> None:
        for key in ("placement", "glance", "neutron", "nova"):
            _wait(
                lambda key=key: _http_status(self.endpoint(key)) < 500,
                timeout=180,
                what=f"{key} API",
                services=self.services,
            )

    def _register_compute_host(self) -> None:
        # nova-compute reports to placement once at start and then only
        # every minute: start it when placement answers.
        for host in COMPUTE_HOSTS:
            self._service(
                "nova-compute" + host.removeprefix("marina-compute"),
                [
                    self._bin("nova-compute"),
                    "--config-file",
                    str(self.config / "nova" / f"{host}.conf"),
                ],
            )
        conn = self.admin_connection()
        _wait(
            lambda: len(list(conn.placement.resource_providers())) >= len(COMPUTE_HOSTS),
            timeout=180,
            what="the compute nodes in placement",
            services=self.services,
            interval=1,
        )
        # The API lists a hypervisor, and the scheduler picks it, only once
        # its host is mapped to a cell.
        self._run(
            "nova-manage",
            [
                self._bin("nova-manage"),
                "--config-file",
                str(self.config / "nova" / "nova.conf"),
                "cell_v2",
                "discover_hosts",
                "--verbose",
            ],
        )
        _wait(
            lambda: len(list(conn.compute.hypervisors())) >= len(COMPUTE_HOSTS),
            timeout=60,
            what="the fake hypervisors",
            services=self.services,
            interval=1,
        )
        conn.close()

    # -- seed ----------------------------------------------------------------------

    def _seed(self) -> None:
        """What a cloud offers its users: flavors, an image, an external network."""
        conn = self.admin_connection()
        for name, ram, vcpus, disk in (
            ("m1.tiny", 512, 1, 1),
            ("m1.small", 2048, 1, 20),
            ("m1.medium", 4096, 2, 40),
        ):
            conn.compute.create_flavor(name=name, ram=ram, vcpus=vcpus, disk=disk)
        image = conn.image.create_image(
            name="marina-node",
            disk_format="raw",
            container_format="bare",
            visibility="public",
            data=b"\0" * 65536,
        )
        _wait(
            lambda: conn.image.get_image(image.id).status == "active",
            timeout=60,
            what="the seed image",
            services=self.services,
        )
        public = conn.network.create_network(
            name="public",
            is_router_external=True,
            is_shared=False,
            provider_network_type="flat",
            provider_physical_network="public",
        )
        # TEST-NET-3 (RFC 5737): floating IPs that route nowhere.
        conn.network.create_subnet(
            network_id=public.id,
            name="public-subnet",
            ip_version=4,
            cidr="203.0.113.0/24",
            gateway_ip="203.0.113.1",
            is_dhcp_enabled=False,
            allocation_pools=[{"start": "203.0.113.10", "end": "203.0.113.250"}],
        )
        conn.close()

    # -- reporting -------------------------------------------------------------------

    def describe(self) -> Mapping[str, str]:
        return {
            "clouds.yaml": str(self.clouds_yaml),
            "clouds": f"{USER_CLOUD} (project {PROJECT}), {ADMIN_CLOUD} (admin)",
            "keystone": self.keystone_url,
            "logs": str(self.logs),
        }
