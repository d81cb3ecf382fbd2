"""The Kubernetes engine's edge: client errors become Marina's, watches
survive 410 Gone, and what it renders ships a pod's files and secrets."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_validate
import pytest
import yaml

from catalog.engines import make_engine
from catalog.engines.base import ClusterKey, PodId, PodSpec
from catalog.engines.kubernetes import ClusterUnavailable, KubernetesEngine, follow
from catalog.engines.rendering import CONFIGMAP_LIMIT, manifests_for_specs
from catalog.errors import Conflict, MarinaError, NotFound, ValidationFailed
from catalog.store import Store
from tests.kubeapi.fixtures import fresh_name
from tests.kubeapi.harness import KubeApi
from tests.support import Etcd, free_port


def spec(name: str, *, package: str | None = None, replicas: int = 1) -> PodSpec:
    return {
        "id": PodId(name),
        "name": name,
        "environment": "unit",
        "package": package,
        "containers": [
            {
                "name": "main",
                "image": "python:3.11-slim",
                "command": ["python3", "${package}/web.py"],
                "secrets": {"TOKEN": "s3cret"},
                "ports": [{"containerPort": 8080}],
            }
        ],
        "labels": {"app": name},
        "links": {"db": "store"},
        "env": {},
        "services": [{"name": name, "port": 30080, "targetPort": 8080, "scope": "public"}],
        "replicas": replicas,
    }


def with_engine(
    kubeconfig: Path, etcd: Etcd, tmp_path: Path, use: Callable[[KubernetesEngine], Awaitable[Any]]
) -> Any:
    """`use(engine)` on a loop of its own, as the engine runs in `marina up`."""

    async def main() -> Any:
        store = Store(etcd.url)
        engine = make_engine("kubernetes", store, state_dir=tmp_path, kubeconfig=kubeconfig)
        assert isinstance(engine, KubernetesEngine)
        engine.client.configuration.retries = 0
        try:
            return await use(engine)
        finally:
            engine.close()
            await store.close()

    return asyncio.run(main())


def test_an_unreachable_api_is_reported_as_unavailable_not_as_a_client_error(
    etcd: Etcd, tmp_path: Path
) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "gone", "user": {"token": "x"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "gone"}}],
        "current-context": "gone",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ClusterUnavailable) as caught:
        with_engine(path, etcd, tmp_path, lambda e: e.pod_state(ClusterKey("c1"), PodId("p")))
    assert caught.value.status == 503 and "127.0.0.1" in str(caught.value)
    assert caught.value.__cause__ is not None  # the client's error, chained


def test_api_answers_become_marina_errors_naming_the_problem(
    kube_api: KubeApi, etcd: Etcd, tmp_path: Path
) -> None:
    cluster = ClusterKey(fresh_name("unit"))
    config = kube_api.kubeconfig
    with pytest.raises(NotFound):
        with_engine(config, etcd, tmp_path, lambda e: e.scale_pod(cluster, PodId("nothing"), 2))
    broken = spec("broken")
    broken["services"][0]["port"] = 70000  # no valid Service port
    with pytest.raises(ValidationFailed) as invalid:
        with_engine(config, etcd, tmp_path, lambda e: e.apply_pod(cluster, broken))
    assert "port" in str(invalid.value)
    assert not isinstance(invalid.value.__cause__, MarinaError)


def test_a_field_of_another_manager_is_reported_not_taken(
    kube_api: KubeApi, etcd: Etcd, tmp_path: Path
) -> None:
    cluster = ClusterKey(fresh_name("unit"))
    config = kube_api.kubeconfig
    pod = spec("owned")
    with_engine(config, etcd, tmp_path, lambda e: e.apply_pod(cluster, pod))
    apps = kubernetes.client.AppsV1Api(
        kubernetes.config.new_client_from_config(config_file=str(kube_api.kubeconfig))
    )
    # Someone else takes the image with their own apply.
    apps.patch_namespaced_deployment(
        "owned",
        KubernetesEngine.namespace(cluster),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "owned"},
            "spec": {
                "selector": {"matchLabels": {"marina.pod": "owned"}},
                "template": {
                    "metadata": {"labels": {"marina.pod": "owned"}},
                    "spec": {"containers": [{"name": "main", "image": "other:1"}]},
                },
            },
        },
        field_manager="someone-else",
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    with pytest.raises(Conflict) as caught:
        with_engine(config, etcd, tmp_path, lambda e: e.apply_pod(cluster, pod))
    assert "someone-else" in str(caught.value)
    with_engine(config, etcd, tmp_path, lambda e: e.delete_cluster(cluster))


def test_a_watch_lists_then_follows_from_the_lists_version(kube_api: KubeApi) -> None:
    client = kubernetes.config.new_client_from_config(config_file=str(kube_api.kubeconfig))
    core = kubernetes.client.CoreV1Api(client)
    name = fresh_name("watched")
    events = follow(core.list_namespace, label_selector=f"unit={name}", limit=2)
    kind, listed = next(events)
    assert kind == "LISTED" and listed["items"] == []
    core.create_namespace(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"unit": name}},
        }
    )
    kind, obj = next(events)
    assert (kind, obj["metadata"]["name"]) == ("ADDED", name)
    assert list(events) == []  # the limit ends it
    core.delete_namespace(name)


def test_render_ships_files_secrets_and_the_downward_api() -> None:
    files = {"pkg": {"web.py": b"print('hi')\n", "img/logo.png": b"\x89PNG\x00\xff"}}
    objects = manifests_for_specs(
        [spec("web", package="pkg"), {**spec("store"), "links": {}}],
        namespace="n1",
        files=files,
        addresses={"store": "10.0.0.7"},
    )
    kinds = [o["kind"] for _, o in objects]
    assert kinds.index("ConfigMap") < kinds.index("Service") < kinds.index("Deployment")
    for _, manifest in objects:
        kubernetes_validate.validate(manifest, "1.33", strict=True)
    configmap = next(o for _, o in objects if o["kind"] == "ConfigMap")
    assert list(configmap["data"].values()) == ["print('hi')\n"]
    assert [base64.b64decode(v) for v in configmap["binaryData"].values()] == [b"\x89PNG\x00\xff"]
    secret = next(o for _, o in objects if o["kind"] == "Secret")
    assert "stringData" not in secret and secret["data"]["TOKEN"] == "czNjcmV0"
    web = next(
        o for _, o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "web"
    )
    container = web["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python3", "/app/web.py"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["DB_PORT_30080_TCP_ADDR"]["value"] == "10.0.0.7"
    alias = next(o for _, o in objects if o["metadata"]["name"] == "db")
    assert alias["kind"] == "Service" and alias["spec"]["selector"] == {"marina.pod": "store"}


def test_a_package_over_the_configmap_limit_is_refused() -> None:
    files = {"pkg": {"big.bin": b"\xff" * CONFIGMAP_LIMIT}}
    with pytest.raises(ValidationFailed, match="ConfigMap"):
        manifests_for_specs([spec("web", package="pkg")], namespace="n1", files=files)
