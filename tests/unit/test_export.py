"""exportConfig: manifests valid against the official Kubernetes schemas."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from catalog.environments import instantiate
from catalog.export import export_archive, manifests_of
from catalog.packages import load_folder, resolve_properties

ROOT = Path(__file__).resolve().parents[2] / "packages"


def environment() -> tuple[dict, dict]:
    doc = {"id": "e" * 32, "name": "Shop Env!", "objects": {}, "order": []}
    for name, props in (("kubernetes-cluster", {"name": "k1"}), ("guestbook", {})):
        package = load_folder(ROOT / name)
        for obj in instantiate(package, resolve_properties(package, props), doc, name=None):
            doc["objects"][obj["?"]["id"]] = obj
            doc["order"].append(obj["?"]["id"])
    web = next(o for o in doc["objects"].values() if o["?"]["name"] == "web")
    web["spec"]["containers"][0]["secrets"] = {"API_KEY": "s3cret"}
    cluster = next(o for o in doc["objects"].values() if o["?"]["type"] == "KubernetesCluster")
    return doc, cluster


def unpack(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


def test_every_manifest_is_valid_in_strict_mode():
    doc, cluster = environment()
    files = unpack(export_archive(doc, cluster, manifests_of(doc, cluster))[0])
    manifests = sorted(n for n in files if n.startswith("manifests/"))
    version = kubernetes_validate.latest_version()
    kinds = []
    for name in manifests:
        manifest = yaml.safe_load(files[name])
        kubernetes_validate.validate(manifest, version, strict=True)
        kinds.append(manifest["kind"])
        assert "status" not in manifest
        assert not {"uid", "resourceVersion", "creationTimestamp"} & set(manifest["metadata"])
    assert kinds[0] == "Namespace"
    assert kinds.index("Secret") < kinds.index("Deployment")
    assert kinds.count("Deployment") == 2 and kinds.count("Service") == 2
    assert manifests == sorted(manifests)


def test_a_broken_manifest_would_be_caught():
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "x"},
                "spec": {"replicas": "two"},
            },
            kubernetes_validate.latest_version(),
            strict=True,
        )


def test_archive_has_an_idempotent_apply_script_and_a_snapshot():
    doc, cluster = environment()
    files = unpack(export_archive(doc, cluster, manifests_of(doc, cluster))[0])
    script = files["apply.sh"].decode()
    assert "kubectl apply -f" in script and "kubectl create" not in script
    snapshot = json.loads(files["marina.json"])
    assert snapshot["format"] == "marina-export/1"
    assert {o["?"]["name"] for o in snapshot["objects"]} >= {"web", "store"}
    secret = next(yaml.safe_load(files[n]) for n in files if "secret" in n)
    assert secret["data"] == {"API_KEY": base64.b64encode(b"s3cret").decode()}
    namespace = yaml.safe_load(files[next(n for n in files if "namespace" in n)])
    assert namespace["metadata"]["name"] == "shop-env-k1"


def test_apply_script_runs_kubectl_against_each_manifest_in_order(tmp_path):
    """apply.sh with a recording kubectl on PATH: each manifest once, namespace first."""
    doc, cluster = environment()
    archived = export_archive(doc, cluster, manifests_of(doc, cluster))[0]
    with tarfile.open(fileobj=io.BytesIO(archived)) as archive:
        archive.extractall(tmp_path, filter="data")
    record = tmp_path / "calls"
    fake = tmp_path / "bin" / "kubectl"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    fake.chmod(0o755)
    import os
    import subprocess

    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    subprocess.run(["sh", str(tmp_path / "apply.sh")], check=True, env=env)
    calls = record.read_text().splitlines()
    assert calls[0] == "apply -f manifests/00-namespace.yaml"
    assert all(c.startswith("apply -f manifests/") for c in calls)
    assert len(calls) == len(list((tmp_path / "manifests").iterdir()))
