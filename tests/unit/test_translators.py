"""Translator rules that the corpus shows only in passing, checked directly."""

from __future__ import annotations

import json

import pytest

from catalog.environments import instantiate
from catalog.packages import resolve_properties
from catalog.translators import Source, SourceRejected, translate
from catalog.translators.building import dns_label, memory_mib
from catalog.translators.reading import MAX_NODES


def compose(text: str, **kwargs: str) -> object:
    return translate(Source("docker-compose.yml", text.encode()), **kwargs)


def pods_of(text: str) -> dict[str, dict]:
    translation = compose(text)
    return {p["name"]: p for p in translation.package.manifest["template"]["pods"]}


def test_names_become_dns_labels_and_services_start_with_a_letter():
    assert dns_label("My_Web App!") == "my-web-app"
    assert dns_label("9lives") == "s-9lives"
    assert dns_label("9lives", letter_first=False) == "9lives"
    assert dns_label("x" * 80, limit=40) == "x" * 40
    assert dns_label("___") == "service"


@pytest.mark.parametrize(
    ("given", "mib"),
    [("512M", 512), ("1.5g", 1536), ("256mb", 256), ("1GiB", 1024), (536870912, 512), ("1k", 1)],
)
def test_memory_sizes_in_mib_rounded_up(given, mib):
    assert memory_mib(given) == mib


def test_memory_that_is_not_a_size_is_none():
    assert memory_mib("lots") is None and memory_mib(-5) is None and memory_mib(True) is None


def test_a_link_to_a_multi_port_service_keeps_every_port_and_names_the_short_one():
    pods = pods_of(
        "services:\n"
        "  web: {image: w, command: web, links: ['db:database']}\n"
        "  db: {image: d, command: db, expose: ['8080', '5432']}\n"
    )
    assert pods["web"]["links"] == {"DATABASE": "db", "DATABASE_8080": "db-8080"}
    assert [(s["name"], s["port"]) for s in pods["db"]["services"]] == [
        ("db", 5432),
        ("db-8080", 8080),
    ]
    env = pods["web"]["containers"][0]["env"]
    assert env["DATABASE_NAME"] == "/web/database"


def test_links_copy_the_target_environment_as_docker_did():
    pods = pods_of(
        "services:\n"
        "  web: {image: w, command: web, links: [db]}\n"
        "  db: {image: d, command: db, expose: ['5432'], environment: {POSTGRES_DB: shop}}\n"
    )
    assert pods["web"]["containers"][0]["env"]["DB_ENV_POSTGRES_DB"] == "shop"


def test_published_port_is_a_public_service_whose_port_is_a_property():
    translation = compose(
        "services:\n  web: {image: w, command: web, ports: ['8080:80', '9090:9090']}\n"
    )
    manifest = translation.package.manifest
    services = manifest["template"]["pods"][0]["services"]
    assert services == [
        {"name": "web", "port": 80, "targetPort": 80, "scope": "internal"},
        {"name": "web-9090", "port": "${web_9090_port}", "targetPort": 9090, "scope": "public"},
        {"name": "web-public", "port": "${web_public_port}", "targetPort": 80, "scope": "public"},
    ]
    props = manifest["properties"]["properties"]
    assert props["web_public_port"]["default"] == 8080
    assert props["web_9090_port"]["default"] == 9090


def test_image_without_command_starts_with_no_replicas_and_a_command_that_says_why():
    translation = compose("services:\n  web: {image: nginx:1.25}\n")
    manifest = translation.package.manifest
    container = manifest["template"]["pods"][0]["containers"][0]
    assert container["command"][:2] == ["sh", "-c"] and "nginx:1.25" in container["command"][2]
    assert manifest["properties"]["properties"]["web_replicas"]["default"] == 0
    assert [w.code for w in translation.warnings] == ["no-command"]


def test_imported_package_instantiates_with_its_defaults():
    translation = compose(
        "services:\n"
        "  web: {image: w, command: web, ports: ['30111:80'], links: [db], deploy: {replicas: 3}}\n"
        "  db: {image: d, command: db, expose: ['5432']}\n"
    )
    package = translation.package
    doc = {
        "id": "e" * 32,
        "name": "t",
        "objects": {
            "c": {
                "?": {"id": "c", "type": "KubernetesCluster", "name": "k1"},
                "properties": {"name": "k1"},
            }
        },
        "order": ["c"],
    }
    objects = instantiate(package, resolve_properties(package, {}), doc, name=None)
    pods = {o["spec"]["name"]: o for o in objects if o["?"]["type"] == "KubernetesPod"}
    assert pods["web"]["replicas"]["desired"] == 3
    assert pods["web"]["spec"]["services"][1]["port"] == 30111
    # Start order: the link's target first.
    assert [o["spec"]["name"] for o in objects[1:]] == ["db", "web"]


def test_alias_bomb_is_refused_before_it_expands():
    levels = ["x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 8):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        levels.append(f"x{i}: &a{i} [{refs}]")
    text = "\n".join(levels) + "\nservices: {web: {image: w, command: [x, *a7]}}\n"
    with pytest.raises(SourceRejected) as caught:
        compose(text)
    assert str(MAX_NODES) in caught.value.problems[0].rule


def test_anchors_used_modestly_are_fine():
    pods = pods_of(
        "x-base: &base {image: w, command: web}\n"
        "services:\n  a: {<<: *base}\n  b: {<<: *base, command: other}\n"
    )
    assert pods["a"]["containers"][0]["command"] == ["web"]
    assert pods["b"]["containers"][0]["command"] == ["other"]


def test_deep_nesting_is_refused():
    text = "services: " + "[" * 40 + "]" * 40 + "\n"
    with pytest.raises(SourceRejected) as caught:
        compose(text)
    assert "nested deeper" in caught.value.problems[0].rule


def test_json_that_yaml_cannot_read_still_imports():
    zapp = json.dumps(
        {"name": "t", "version": 3, "services": [{"name": "a", "image": "i", "command": "run"}]}
    ).replace(", ", ",\t")
    translation = translate(Source("app.json", zapp.encode()))
    assert translation.format == "zapp"


def test_an_unknown_format_is_refused():
    with pytest.raises(SourceRejected) as caught:
        compose("services: {}\n", fmt="helm")
    assert caught.value.problems[0].field == "format"


def test_asked_for_package_name_must_be_a_label():
    with pytest.raises(SourceRejected):
        compose("services: {web: {image: w, command: web}}\n", name="Not A Label")
    assert compose("services: {web: {image: w, command: web}}\n", name="mine").package.name == (
        "mine"
    )


def test_commands_naming_mounted_files_point_at_the_package(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "run.py").write_text("print('hi')\n")
    (tmp_path / "docker-compose.yml").write_text(
        "services:\n  a:\n    image: python:3\n"
        "    command: [python3, /code/run.py, --config=/code/x.ini]\n"
        "    volumes: ['./app:/code:ro']\n"
    )
    path = tmp_path / "docker-compose.yml"
    translation = translate(Source(path.name, path.read_bytes(), tmp_path))
    container = translation.package.manifest["template"]["pods"][0]["containers"][0]
    assert container["command"] == [
        "python3",
        "${package}/files/app/run.py",
        "--config=${package}/files/app/x.ini",
    ]
    assert translation.package.files["files/app/run.py"] == b"print('hi')\n"
