"""Every etcd key Marina writes, spelled in one place.

Prefixes end in `/`; functions build one document's key. The gateway's route
and status keys are a public contract (docs/architecture.md): the gateway
spells them on its own side, since it shares no code with the catalog.
"""

from __future__ import annotations

ROOT = "/marina/"

# -- catalog --------------------------------------------------------------------
ENVIRONMENTS = f"{ROOT}environments/"
ENVIRONMENTS_BY_PROJECT = f"{ROOT}environments-by-project/"
PACKAGES = f"{ROOT}packages/"
TOKENS = f"{ROOT}tokens/"
TASKS = f"{ROOT}tasks/"
TASK_LOGS = f"{ROOT}tasklogs/"
TASK_FILES = f"{ROOT}taskfiles/"
TASKS_BY_ENVIRONMENT = f"{ROOT}tasks-by-environment/"
TASKS_BY_PROJECT = f"{ROOT}tasks-by-project/"
QUEUE = f"{ROOT}queue/"
ENVIRONMENT_LOCKS = f"{ROOT}locks/env/"
CONTROLLER_LOCK = f"{ROOT}locks/controller"
CLUSTERS = f"{ROOT}clusters/"

# -- gateway contract ---------------------------------------------------------------
ROUTES = f"{ROOT}gateway/routes/"
GATEWAY_STATUS = f"{ROOT}gateway/status/"
GATEWAY_CERTS = f"{ROOT}gateway/certs/"

# -- the local engine ---------------------------------------------------------------
NODES = f"{ROOT}nodes/"
REPLICAS = f"{ROOT}replicas/"
REPLICA_STATUS = f"{ROOT}replica-status/"
ADDRESSES = f"{ROOT}addresses/"
LOCAL_PODS = f"{ROOT}engine/local/pods/"
LOCAL_CORDONED = f"{ROOT}engine/local/cordoned/"
LOCAL_LOST = f"{ROOT}engine/local/lost/"
LOCAL_KNOWN = f"{ROOT}engine/local/known/"
LOCAL_RECONCILER_LOCK = f"{ROOT}locks/local-engine"
SANDBOX_UIDS = f"{ROOT}sandbox/uids/"
SANDBOX_ENVIRONMENTS = f"{ROOT}sandbox/environments/"


def environment(env_id: str) -> str:
    return f"{ENVIRONMENTS}{env_id}"


def route(cluster: str, service: str) -> str:
    return f"{ROUTES}{cluster}/{service}"


def gateway_status(gateway_id: str) -> str:
    return f"{GATEWAY_STATUS}{gateway_id}"


def gateway_cert(cluster: str, host: str) -> str:
    return f"{GATEWAY_CERTS}{cluster}/{host}"


def node(cluster: str, name: str) -> str:
    return f"{NODES}{cluster}/{name}"


def replica(cluster: str, ident: str) -> str:
    return f"{REPLICAS}{cluster}/{ident}"


def replica_status(cluster: str, ident: str) -> str:
    return f"{REPLICA_STATUS}{cluster}/{ident}"


def local_pod(cluster: str, pod: str) -> str:
    return f"{LOCAL_PODS}{cluster}/{pod}"


def local_cordoned(cluster: str, node_name: str) -> str:
    return f"{LOCAL_CORDONED}{cluster}/{node_name}"


SESSIONS = f"{ROOT}sessions/"
ENVIRONMENT_VERSIONS = f"{ROOT}environment-versions/"
PACKAGE_FLAGS = f"{ROOT}package-flags/"


def sessions_of(env_id: str) -> str:
    """Murano configuration sessions of one environment (each under a lease)."""
    return f"{SESSIONS}{env_id}/"


def session(env_id: str, session_id: str) -> str:
    return f"{SESSIONS}{env_id}/{session_id}"


def environment_version(env_id: str) -> str:
    """The environment's version as sessions deploy it (Murano's `version`)."""
    return f"{ENVIRONMENT_VERSIONS}{env_id}"


def package_flags(name: str) -> str:
    """A package's Murano `enabled` and `is_public` flags."""
    return f"{PACKAGE_FLAGS}{name}"
