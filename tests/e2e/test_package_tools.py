"""Package authors' tools through the real `marina` binary: `package init`
scaffolds a package that lints clean, uploads and serves; `package lint` names
every problem the upload would, without a server; the tutorial in
docs/packages.md, built from its own code blocks, uploads and serves."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.e2e.marina import Marina
from tests.support import http_get, wait_for

MARINA = Path(sys.executable).with_name("marina")
DOC = Path(__file__).resolve().parents[2] / "docs" / "packages.md"


def cli(*args: str, state_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    # A closed port as the API: init and lint must not need one.
    where = ["--state-dir", str(state_dir)] if state_dir else ["--api", "http://127.0.0.1:9"]
    return subprocess.run([str(MARINA), *where, *args], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def cluster_env(marina: Marina) -> str:
    """An environment with a deployed one-node cluster for the packages to run on."""
    env = str(marina.ok("POST", "/v1/environments", {"name": "authoring"})["id"])
    marina.ok(
        "POST",
        f"/v1/environments/{env}/services",
        {"package": "kubernetes-cluster", "properties": {"name": "pk", "nodeCount": 1}},
    )
    task = marina.run(env, "pk:deploy")
    assert task["state"] == "succeeded", task
    return env


def deploy_and_fetch(marina: Marina, env: str, app: str, pod: str) -> str:
    task = marina.run(env, f"{app}:deploy")
    assert task["state"] == "succeeded", task
    url = wait_for(
        lambda: marina.objects(env)[pod]["endpoints"], timeout=60, what=f"{pod}'s endpoint"
    )[0]
    return str(
        wait_for(
            lambda: (lambda got: got[1] if got[0] == 200 else None)(http_get(url)),
            timeout=60,
            what=f"{pod} answering at {url}",
        )
    )


def test_init_scaffolds_a_package_that_lints_uploads_and_serves(marina, cluster_env, tmp_path):
    folder = tmp_path / "hello-web"
    made = cli("package", "init", "hello-web", "--dir", str(folder))
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["app.py", "manifest.yaml"]

    linted = cli("package", "lint", str(folder))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "no problems" in linted.stdout

    uploaded = cli("package", "upload", str(folder), state_dir=marina.state_dir)
    assert uploaded.returncode == 0, uploaded.stderr
    names = [p["name"] for p in marina.ok("GET", "/v1/catalog/packages?limit=1000")["packages"]]
    assert "hello-web" in names

    marina.ok(
        "POST",
        f"/v1/environments/{cluster_env}/services",
        {"package": "hello-web", "properties": {"greeting": "Hi there", "publicPort": 30191}},
    )
    assert deploy_and_fetch(marina, cluster_env, "Hello web", "hello-web") == "Hi there\n"


def test_init_refuses_a_bad_name_and_a_folder_in_use(tmp_path):
    bad = cli("package", "init", "My_App", "--dir", str(tmp_path / "x"))
    assert bad.returncode == 1
    assert "name: must be 1-63 lower-case letters" in bad.stderr
    assert not (tmp_path / "x").exists()

    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    taken = cli("package", "init", "fine", "--dir", str(tmp_path / "used"))
    assert taken.returncode == 1
    assert "folder: must be a new or empty folder" in taken.stderr
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == ["notes.txt"]


BROKEN = """\
format: marina/1
name: Broken_Name
version: 1.0
class: KubernetesApplication
colour: blue
properties:
  type: object
  properties:
    port: {type: integer, minimum: 1024, default: 80}
    code: {type: string, pattern: "(a"}
ui:
  order: [port, nothing]
template:
  pods:
    - name: web
      replicas: 99
      links: {STORE: nowhere}
      containers:
        - name: web
          image: python:3.11-slim
          command: [python3, "${package}/missing.py"]
          memory: 0
"""

# Every problem above, by field: lint must name each one in one run.
BROKEN_FIELDS = {
    "name",
    "version",
    "description",
    "colour",
    "properties.properties.code.pattern",
    "ui.order[1]",
    "template.pods[0].replicas",
    "template.pods[0].containers",
    "template.pods[0].containers[0].memory",
    "template.pods[0].links.STORE",
}


def test_lint_reports_every_problem_at_once_as_the_upload_does(marina, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "manifest.yaml").write_text(BROKEN)

    linted = cli("package", "lint", str(folder))
    assert linted.returncode == 1
    fields = {m.group(1) for m in re.finditer(r"^\S+: (\S+): ", linted.stdout, flags=re.MULTILINE)}
    assert fields >= BROKEN_FIELDS, linted.stdout
    assert "problems" in linted.stderr

    # The upload of the same package answers with the same problems.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.yaml", BROKEN)
    status, reply = marina.call(
        "POST", "/v1/catalog/packages?filename=broken.zip", raw=buffer.getvalue()
    )
    assert status == 400, reply
    assert {p["field"] for p in reply["problems"]} == fields

    # A zip lints as a folder does.
    (tmp_path / "broken.zip").write_bytes(buffer.getvalue())
    zipped = cli("package", "lint", str(tmp_path / "broken.zip"))
    assert zipped.returncode == 1
    assert set(re.findall(r"^\S+: (\S+): ", zipped.stdout, flags=re.MULTILINE)) == fields


def test_lint_names_a_path_that_is_not_there(tmp_path):
    missing = cli("package", "lint", str(tmp_path / "nothing"))
    assert missing.returncode == 1
    assert "does not exist" in missing.stdout


def tutorial_files() -> dict[str, str]:
    """The files of the tutorial's package, from the doc's `lang file=NAME` blocks
    (blocks of one file joined in order)."""
    files: dict[str, str] = {}
    for match in re.finditer(r"^```\w+ file=(\S+)\n(.*?)^```$", DOC.read_text(), re.S | re.M):
        files[match.group(1)] = files.get(match.group(1), "") + match.group(2)
    return files


def test_the_tutorial_package_is_built_from_the_doc_and_serves(marina, cluster_env, tmp_path):
    files = tutorial_files()
    assert set(files) == {"manifest.yaml", "store.py", "web.py"}
    folder = tmp_path / "quotes"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)

    linted = cli("package", "lint", str(folder))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    uploaded = cli("package", "upload", str(folder), state_dir=marina.state_dir)
    assert uploaded.returncode == 0, uploaded.stderr

    # The schema's rule, in the package's words when the API refuses a value.
    status, refused = marina.call(
        "POST",
        f"/v1/environments/{cluster_env}/services",
        {"package": "quotes", "properties": {"heading": "<b>"}},
    )
    assert status == 400 and refused["problems"][0]["field"].endswith("heading"), refused

    marina.ok(
        "POST",
        f"/v1/environments/{cluster_env}/services",
        {"package": "quotes", "properties": {"heading": "Quotes for all", "publicPort": 30192}},
    )
    page = deploy_and_fetch(marina, cluster_env, "Quotes", "quotes-web")
    assert "<h1>Quotes for all</h1>" in page
    # The quote came through the link from the store.
    assert re.search(r"<p>(Simple things|Make it work)", page), page
