"""The test API server answers the unmodified official client as a real one would."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kubeapi.fixtures import fresh_name, fresh_node_address
from tests.kubeapi.harness import KubeApi
from tests.support import wait_for

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client, config, dynamic, watch  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

APPLY = "application/apply-patch+yaml"


@pytest.fixture
def api_client(kube_api: KubeApi) -> Iterator[Any]:
    api = config.new_client_from_config(config_file=str(kube_api.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def core(api_client: Any) -> Any:
    return client.CoreV1Api(api_client)


@pytest.fixture
def apps(api_client: Any) -> Any:
    return client.AppsV1Api(api_client)


@pytest.fixture
def namespace(core: Any) -> Iterator[str]:
    name = fresh_name("api")
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def deployment(name: str, *, replicas: int = 1, command: list[str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox:1.36",
                            "command": command or ["sleep", "3600"],
                        }
                    ]
                },
            },
        },
    }


def status_body(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)  # type: ignore[no-any-return]


def test_discovery_and_version(api_client: Any) -> None:
    version = client.VersionApi(api_client).get_code()
    assert version.major == "1" and version.git_version.startswith("v1.")
    groups = {g.name: g for g in client.ApisApi(api_client).get_api_versions().groups}
    assert {"apps", "policy"} <= set(groups)
    core_resources = client.CoreV1Api(api_client).get_api_resources().resources
    names = {r.name for r in core_resources}
    assert {
        "pods",
        "pods/log",
        "pods/eviction",
        "services",
        "namespaces",
        "nodes",
        "configmaps",
        "secrets",
        "resourcequotas",
    } <= names
    app_resources = {r.name: r for r in client.AppsV1Api(api_client).get_api_resources().resources}
    assert app_resources["deployments/scale"].group == "autoscaling"


def test_create_get_list_and_server_fields(core: Any, namespace: str) -> None:
    made = core.create_namespaced_config_map(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"generateName": "settings-", "labels": {"tier": "web"}},
            "data": {"a": "1"},
        },
    )
    assert made.metadata.name.startswith("settings-") and len(made.metadata.name) == 14
    assert made.metadata.uid and made.metadata.creation_timestamp
    assert int(made.metadata.resource_version) > 0
    core.create_namespaced_config_map(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "other", "labels": {"tier": "db"}},
            "data": {},
        },
    )
    listed = core.list_namespaced_config_map(namespace, label_selector="tier in (web)")
    assert [c.metadata.name for c in listed.items] == [made.metadata.name]
    listed = core.list_namespaced_config_map(namespace, label_selector="tier!=web")
    assert [c.metadata.name for c in listed.items] == ["other"]
    listed = core.list_namespaced_config_map(namespace, field_selector="metadata.name=other")
    assert [c.metadata.name for c in listed.items] == ["other"]
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_config_map(
            namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}}
        )
    assert caught.value.status == 409 and status_body(caught.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_config_map("missing", namespace)
    assert caught.value.status == 404 and status_body(caught.value)["reason"] == "NotFound"


def test_stale_resource_version_gets_409(core: Any, namespace: str) -> None:
    made = core.create_namespaced_config_map(
        namespace,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "1"}},
    )
    first = core.read_namespaced_config_map("c", namespace)
    first.data = {"k": "2"}
    updated = core.replace_namespaced_config_map("c", namespace, first)
    assert int(updated.metadata.resource_version) > int(made.metadata.resource_version)
    first.data = {"k": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_config_map("c", namespace, first)
    body = status_body(caught.value)
    assert caught.value.status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    assert core.read_namespaced_config_map("c", namespace).data == {"k": "2"}


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (lambda d: d["spec"].update(replicaz=2), "spec.replicaz", "FieldValueInvalid"),
        (lambda d: d["spec"].update(replicas="two"), "spec.replicas", "FieldValueTypeInvalid"),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
            "spec.template.spec.containers[0].name",
            "FieldValueRequired",
        ),
        (
            lambda d: d["spec"]["template"]["metadata"].update(labels={"app": "other"}),
            "spec.template.metadata.labels",
            "FieldValueInvalid",
        ),
        (lambda d: d["metadata"].update(name="Not_A_Name"), "metadata.name", "FieldValueInvalid"),
    ],
)
def test_invalid_objects_get_422_with_causes(
    api_client: Any, apps: Any, namespace: str, change: Any, field: str, reason: str
) -> None:
    body = deployment("web")
    change(body)
    # the dynamic client sends what it is given; the typed one would refuse it locally
    deployments = dynamic.DynamicClient(api_client).resources.get(
        api_version="apps/v1", kind="Deployment"
    )
    with pytest.raises(ApiException) as caught:
        deployments.create(namespace=namespace, body=body)
    status = status_body(caught.value)
    assert caught.value.status == 422
    assert status["kind"] == "Status" and status["reason"] == "Invalid"
    assert (field, reason) in [(c["field"], c["reason"]) for c in status["details"]["causes"]]
    assert apps.list_namespaced_deployment(namespace).items == []


def test_a_field_the_oldest_schema_lacks_is_refused(core: Any, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "i",
                    "command": ["true"],
                    "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}],
                }
            ]
        },
    }
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod(namespace, pod)
    causes = status_body(caught.value)["details"]["causes"]
    assert any(
        c["field"] == "spec.containers[0].resizePolicy" and "1.25" in c["message"] for c in causes
    )


def test_merge_json_and_strategic_patches(apps: Any, namespace: str) -> None:
    body = deployment("web")
    body["spec"]["template"]["spec"]["containers"].append(
        {"name": "side", "image": "busybox", "command": ["sleep", "1"]}
    )
    apps.create_namespaced_deployment(namespace, body)
    # a strategic merge patch merges containers by name
    apps.patch_namespaced_deployment(
        "web",
        namespace,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}}
            }
        },
    )
    got = apps.read_namespaced_deployment("web", namespace)
    images = {c.name: c.image for c in got.spec.template.spec.containers}
    assert images == {"main": "busybox:1.37", "side": "busybox"}
    # a merge patch replaces the list
    apps.patch_namespaced_deployment(
        "web",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "main", "image": "busybox:1.38", "command": ["sleep", "9"]}
                        ]
                    }
                }
            }
        },
        _content_type="application/merge-patch+json",
    )
    got = apps.read_namespaced_deployment("web", namespace)
    assert [c.name for c in got.spec.template.spec.containers] == ["main"]
    apps.patch_namespaced_deployment(
        "web", namespace, [{"op": "replace", "path": "/spec/replicas", "value": 0}]
    )
    assert apps.read_namespaced_deployment("web", namespace).spec.replicas == 0
    assert got.metadata.generation >= 3


def test_server_side_apply_owns_fields_and_reports_conflicts(apps: Any, namespace: str) -> None:
    body = deployment("web", replicas=2)
    made = apps.patch_namespaced_deployment(
        "web", namespace, body, field_manager="marina", _content_type=APPLY
    )
    managers = {m.manager: m for m in made.metadata.managed_fields}
    assert managers["marina"].operation == "Apply"
    assert "f:replicas" in managers["marina"].fields_v1["f:spec"]
    # another manager changes replicas with an ordinary update
    apps.patch_namespaced_deployment(
        "web", namespace, {"spec": {"replicas": 5}}, field_manager="hpa"
    )
    again = deployment("web", replicas=3)
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment(
            "web", namespace, again, field_manager="marina", _content_type=APPLY
        )
    status = status_body(caught.value)
    assert caught.value.status == 409 and status["reason"] == "Conflict"
    assert 'conflict with "hpa"' in status["message"] and ".spec.replicas" in status["message"]
    assert apps.read_namespaced_deployment("web", namespace).spec.replicas == 5
    forced = apps.patch_namespaced_deployment(
        "web", namespace, again, field_manager="marina", force=True, _content_type=APPLY
    )
    assert forced.spec.replicas == 3
    owners = {m.manager: m.fields_v1 for m in forced.metadata.managed_fields}
    assert "f:replicas" in owners["marina"]["f:spec"]
    assert "f:replicas" not in (owners.get("hpa") or {}).get("f:spec", {})
    # applying the same value as another manager shares the field: no conflict
    same = apps.patch_namespaced_deployment(
        "web", namespace, deployment("web", replicas=3), field_manager="other", _content_type=APPLY
    )
    assert same.spec.replicas == 3


def test_apply_drops_fields_the_manager_no_longer_applies(core: Any, namespace: str) -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"a": "1", "b": "2"},
    }
    core.patch_namespaced_config_map(
        "c", namespace, cm, field_manager="marina", _content_type=APPLY
    )
    cm["data"] = {"a": "1"}
    got = core.patch_namespaced_config_map(
        "c", namespace, cm, field_manager="marina", _content_type=APPLY
    )
    assert got.data == {"a": "1"}
    bad = {**cm, "data": {"a": 1}}
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_config_map(
            "c", namespace, bad, field_manager="marina", _content_type=APPLY
        )
    assert caught.value.status == 422


def test_watch_streams_changes_and_bookmarks(core: Any, namespace: str) -> None:
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(
        namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w1"}}
    )
    seen: list[tuple[str, str]] = []
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_config_map,
        namespace,
        resource_version=start,
        allow_watch_bookmarks=True,
        timeout_seconds=10,
    ):
        if event["type"] == "BOOKMARK":
            seen.append(("BOOKMARK", event["raw_object"]["metadata"]["resourceVersion"]))
            break
        seen.append((event["type"], event["object"].metadata.name))
        if event["type"] == "ADDED":
            core.delete_namespaced_config_map("w1", namespace)
    w.stop()
    assert seen[:2] == [("ADDED", "w1"), ("DELETED", "w1")]
    assert seen[2][0] == "BOOKMARK" and int(seen[2][1]) > int(start)


def test_watch_from_a_compacted_revision_gets_410(
    kube_api: KubeApi, core: Any, namespace: str
) -> None:
    old = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(
        namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    )
    kube_api.compact()
    w = watch.Watch()
    with pytest.raises(ApiException) as caught:
        for _ in w.stream(core.list_namespaced_config_map, namespace, resource_version=old):
            pass
    assert caught.value.status == 410
    # a fresh list gives a revision to watch from again
    fresh = core.list_namespaced_config_map(namespace).metadata.resource_version
    events = []
    for event in w.stream(
        core.list_namespaced_config_map, namespace, resource_version=fresh, timeout_seconds=1
    ):
        events.append(event)
    assert events == []


def test_deleting_a_namespace_deletes_its_contents(core: Any) -> None:
    name = fresh_name("gone")
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    core.create_namespaced_secret(
        name,
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}},
    )
    assert core.read_namespaced_secret("s", name).data == {"k": "dg=="}
    core.delete_namespace(name)
    wait_for(
        lambda: not [n for n in core.list_namespace().items if n.metadata.name == name],
        what="namespace gone",
    )
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_secret("s", name)
    assert caught.value.status == 404
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_secret(
            name, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
        )
    assert caught.value.status == 404


def test_node_ports_are_allocated_kept_and_never_shared(core: Any, namespace: str) -> None:
    def service(name: str, node_port: int | None = None) -> dict[str, Any]:
        port: dict[str, Any] = {"port": 80, "targetPort": 8080}
        if node_port:
            port["nodePort"] = node_port
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [port]},
        }

    first = core.create_namespaced_service(namespace, service("first"))
    assert 30000 <= first.spec.ports[0].node_port <= 32767
    assert first.spec.cluster_ip.startswith("127.")
    wanted = 30000 + (first.spec.ports[0].node_port - 29999) % 2767
    second = core.create_namespaced_service(namespace, service("second", wanted))
    assert second.spec.ports[0].node_port == wanted
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_service(namespace, service("third", wanted))
    status = status_body(caught.value)
    assert caught.value.status == 422
    assert status["details"]["causes"][0]["field"] == "spec.ports[0].nodePort"
    assert "already allocated" in status["details"]["causes"][0]["message"]
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_service(namespace, service("fourth", 8080))
    assert caught.value.status == 422


def test_scale_subresource(apps: Any, namespace: str) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web", replicas=0))
    scale = apps.read_namespaced_deployment_scale("web", namespace)
    assert scale.spec.replicas == 0 and scale.status.selector == "app=web"
    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 0}})
    scale.spec.replicas = 0
    stale = apps.read_namespaced_deployment_scale("web", namespace)
    apps.replace_namespaced_deployment_scale(
        "web",
        namespace,
        {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"replicas": 0},
        },
    )
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": -1}})
    assert caught.value.status == 422
    assert stale.metadata.resource_version


def test_quota_counts_are_enforced(core: Any, namespace: str) -> None:
    core.create_namespaced_resource_quota(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "q"},
            "spec": {"hard": {"configmaps": "1"}},
        },
    )
    core.create_namespaced_config_map(
        namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "one"}}
    )
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_config_map(
            namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "two"}}
        )
    assert (
        caught.value.status == 403 and "exceeded quota: q" in status_body(caught.value)["message"]
    )
    wait_for(
        lambda: (
            (
                core.read_namespaced_resource_quota("q", namespace).status
                or client.V1ResourceQuotaStatus()
            ).used
            == {"configmaps": "1"}
        ),
        what="quota status",
    )


def test_a_second_server_is_empty_and_separate(kube_api: KubeApi, new_kube_api: Any) -> None:
    other = new_kube_api()
    assert other.url != kube_api.url
    api = config.new_client_from_config(config_file=str(other.kubeconfig))
    try:
        assert client.CoreV1Api(api).list_namespace().items == []
        other.add_node("lonely", fresh_node_address())
        assert [n.metadata.name for n in client.CoreV1Api(api).list_node().items] == ["lonely"]
    finally:
        api.close()


def test_watch_survives_concurrent_writers(core: Any, namespace: str) -> None:
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    names = [f"c{i}" for i in range(10)]

    def write() -> None:
        for name in names:
            core.create_namespaced_config_map(
                namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
            )

    writer = threading.Thread(target=write)
    writer.start()
    seen = []
    for event in watch.Watch().stream(
        core.list_namespaced_config_map, namespace, resource_version=start, timeout_seconds=10
    ):
        seen.append(event["object"].metadata.name)
        if len(seen) == len(names):
            break
    writer.join()
    assert seen == names


def test_a_deployment_count_quota_refuses_one_more_in_the_real_words(
    core: Any, apps: Any, namespace: str
) -> None:
    core.create_namespaced_resource_quota(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "project"},
            "spec": {"hard": {"count/deployments.apps": "1"}},
        },
    )
    apps.create_namespaced_deployment(namespace, deployment("one", replicas=0))
    with pytest.raises(ApiException) as caught:
        apps.create_namespaced_deployment(namespace, deployment("two", replicas=0))
    body = status_body(caught.value)
    assert caught.value.status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == (
        'deployments.apps "two" is forbidden: exceeded quota: project, requested: '
        "count/deployments.apps=1, used: count/deployments.apps=1, limited: "
        "count/deployments.apps=1"
    )
    assert body["details"] == {"name": "two", "group": "apps", "kind": "deployments"}


def test_quota_on_compute_resources_needs_requests_and_stops_deployments(
    api_client: Any, core: Any, apps: Any, namespace: str
) -> None:
    core.create_namespaced_resource_quota(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "compute"},
            "spec": {"hard": {"requests.cpu": "1", "pods": "10"}},
        },
    )
    body = deployment("web", replicas=3)
    apps.create_namespaced_deployment(namespace, body)

    def failure() -> str | None:
        for condition in apps.read_namespaced_deployment("web", namespace).status.conditions or []:
            if condition.type == "ReplicaFailure":
                return str(condition.message)
        return None

    message = wait_for(failure, what="ReplicaFailure")
    assert message.endswith("is forbidden: failed quota: compute: must specify requests.cpu")
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"requests": {"cpu": "400m"}}
    apps.replace_namespaced_deployment("web", namespace, {**body, "metadata": {"name": "web"}})
    wait_for(
        lambda: (
            len(core.list_namespaced_pod(namespace, label_selector="app=web").items) == 2
            and "exceeded quota: compute" in (failure() or "")
        ),
        what="two pods within the quota, the third refused",
    )
    used = core.read_namespaced_resource_quota("compute", namespace).status.used
    assert used["requests.cpu"] == "800m"
    container["resources"] = {"requests": {"cpu": "lots"}}
    with pytest.raises(ApiException) as caught:
        dynamic.DynamicClient(api_client).resources.get(
            api_version="apps/v1", kind="Deployment"
        ).replace(namespace=namespace, body={**body, "metadata": {"name": "web"}})
    assert caught.value.status == 422


def test_endpoints_follow_pod_readiness(core: Any, namespace: str) -> None:
    core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "db"},
            "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432}]},
        },
    )
    endpoints = wait_for(
        lambda: core.read_namespaced_endpoints("db", namespace), what="Endpoints object"
    )
    assert not endpoints.subsets


def test_immutable_fields_and_pod_updates_are_refused(core: Any, apps: Any, namespace: str) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web", replicas=0))
    current = apps.read_namespaced_deployment("web", namespace)
    current.spec.selector.match_labels = {"app": "web", "tier": "x"}
    current.spec.template.metadata.labels = {"app": "web", "tier": "x"}
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment("web", namespace, current)
    status = status_body(caught.value)
    assert caught.value.status == 422
    assert ("spec.selector", "FieldValueInvalid") in [
        (c["field"], c["reason"]) for c in status["details"]["causes"]
    ]
    assert "field is immutable" in status["message"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "9"]}]},
    }
    core.create_namespaced_pod(namespace, pod)
    core.patch_namespaced_pod(
        "p", namespace, {"spec": {"containers": [{"name": "c", "image": "b2"}]}}
    )
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_pod(
            "p", namespace, {"spec": {"containers": [{"name": "c", "command": ["sh"]}]}}
        )
    assert caught.value.status == 422
    assert "pod updates may not change fields" in status_body(caught.value)["message"]
    assert core.read_namespaced_pod("p", namespace).spec.containers[0].image == "b2"
