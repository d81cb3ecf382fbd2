"""The node-image elements: their dependencies resolve, their scripts pass
shellcheck, a Kubernetes node build without a package repository stops at
once, and the gateway image holds what a gateway node boots into.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from diskimage_builder import element_dependencies

from tests.elements import building, stubrepo

ELEMENTS = building.ELEMENTS
OURS = sorted(p.name for p in ELEMENTS.iterdir() if (p / "element-deps").exists())
DIB_ELEMENTS = Path(element_dependencies.__file__).parent / "elements"
HOOK_DIRS = (
    "environment.d",
    "extra-data.d",
    "root.d",
    "pre-install.d",
    "install.d",
    "post-install.d",
    "finalise.d",
)


def resolve(*names: str, paths: list[str] | None = None) -> set[str]:
    """diskimage-builder's own resolution: every element a build of `names` runs."""
    path = ":".join(paths or [str(ELEMENTS), str(DIB_ELEMENTS)])
    found = element_dependencies.get_elements(list(names), path)
    return {name for name, _ in found}


def scripts() -> list[Path]:
    return sorted(
        path
        for element in OURS
        for hook in HOOK_DIRS
        for path in (ELEMENTS / element / hook).glob("*")
    )


def test_there_are_three_elements() -> None:
    assert OURS == ["marina-base", "marina-gateway", "marina-kube-node"]


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("marina-base", {"package-installs", "install-static"}),
        ("marina-gateway", {"marina-base", "package-installs", "install-static"}),
        ("marina-kube-node", {"marina-base", "package-installs", "install-static"}),
    ],
)
def test_dependencies_resolve(role: str, expected: set[str]) -> None:
    elements = resolve("debian-minimal", role)
    assert {role, *expected} <= elements
    assert "debootstrap" in elements


def test_a_missing_dependency_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "marina-broken"
    broken.mkdir()
    (broken / "element-deps").write_text("marina-base\nno-such-element\n")
    with pytest.raises(element_dependencies.MissingElementException, match="no-such-element"):
        resolve("marina-broken", paths=[str(tmp_path), str(ELEMENTS), str(DIB_ELEMENTS)])


def test_every_element_declares_packages_and_install_steps() -> None:
    for element in OURS:
        folder = ELEMENTS / element
        assert (folder / "package-installs.yaml").is_file(), element
        assert (folder / "README.rst").is_file(), element
        steps = [p for hook in ("install.d", "post-install.d") for p in (folder / hook).glob("*")]
        assert steps, f"{element} has no install steps"
        assert all(os.access(p, os.X_OK) for p in steps), steps


def test_every_script_passes_shellcheck() -> None:
    found = scripts()
    assert len(found) >= 8
    result = subprocess.run(
        ["shellcheck", "--shell=bash", "--external-sources", *map(str, found)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kube_node_build_without_a_repository_stops_with_a_message(tmp_path: Path) -> None:
    env = building.build_environment(tmp_path, DIB_MARINA_KUBE_REPO="")
    result = subprocess.run(
        [
            "disk-image-create",
            "--no-tmpfs",
            "-t",
            "tar",
            "-o",
            str(tmp_path / "node"),
            "debian-minimal",
            "marina-kube-node",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "DIB_MARINA_KUBE_REPO is not set" in output
    # It stopped before debootstrap (root.d/08-debootstrap) spent minutes.
    assert "Running" in output
    assert not [line for line in output.splitlines() if "Running" in line and "debootstrap" in line]
    assert not list(tmp_path.glob("node*.tar"))


def test_kube_node_repository_needs_a_key_unless_local(tmp_path: Path) -> None:
    check = ELEMENTS / "marina-kube-node" / "root.d" / "01-marina-kube-repo-check"

    def run(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(check)],
            env={"PATH": os.environ["PATH"], **env},
            capture_output=True,
            text=True,
            check=False,
        )

    assert run(DIB_MARINA_KUBE_REPO="https://mirror.example/k8s/ /").returncode == 1
    key = tmp_path / "Release.key"
    key.write_text("key")
    assert (
        run(
            DIB_MARINA_KUBE_REPO="https://mirror.example/k8s/ /", DIB_MARINA_KUBE_REPO_KEY=str(key)
        ).returncode
        == 0
    )
    assert run(DIB_MARINA_KUBE_REPO="file:/srv/k8s ./").returncode == 0


@pytest.fixture(scope="session")
def gateway_image() -> Path:
    """The gateway image as a tar, built once per content of elements/ (see building.py)."""
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is missing: run `make image-deps`")
    return building.build_cached("gateway", "tar")


# A cold build runs debootstrap and installs a kernel, HAProxy and Marina's
# wheels: minutes, not seconds.
@pytest.mark.timeout(1500)
def test_gateway_image_holds_haproxy_the_gateway_and_cloud_init(gateway_image: Path) -> None:
    with tarfile.open(gateway_image) as image:
        members = {m.name.removeprefix("./"): m for m in image.getmembers()}

        def read(name: str) -> str:
            member = image.extractfile(members[name])
            assert member is not None, name
            return member.read().decode()

        for path in (
            "usr/sbin/haproxy",
            "usr/bin/cloud-init",
            "usr/sbin/chronyd",
            "opt/marina/bin/marina-gateway",
            "etc/systemd/system/marina-gateway.service",
            "etc/modules-load.d/marina-kubernetes.conf",
            "etc/sysctl.d/90-marina-kubernetes.conf",
        ):
            assert path in members, f"{path} is not in the image"

        entry_point = read("opt/marina/bin/marina-gateway")
        assert entry_point.startswith("#!/opt/marina/bin/python")
        assert "from gateway.cli import main" in entry_point
        assert any(
            n.startswith("opt/marina/lib/python3") and n.endswith("gateway/agent.py")
            for n in members
        )

        unit = read("etc/systemd/system/marina-gateway.service")
        assert "EnvironmentFile=/etc/marina/gateway.env" in unit
        assert "ExecStart=/opt/marina/bin/marina-gateway --etcd ${MARINA_ETCD}" in unit
        assert "User=marina-gateway" in unit
        enabled = members["etc/systemd/system/multi-user.target.wants/marina-gateway.service"]
        assert enabled.issym()
        # Debian's haproxy.service would take the ports first: masked.
        assert members["etc/systemd/system/haproxy.service"].linkname == "/dev/null"
        assert "marina-gateway:" in read("etc/passwd")

        assert "br_netfilter" in read("etc/modules-load.d/marina-kubernetes.conf")
        sysctls = read("etc/sysctl.d/90-marina-kubernetes.conf")
        assert "net.ipv4.ip_forward = 1" in sysctls
        assert "net.bridge.bridge-nf-call-iptables = 1" in sysctls
        assert "ConfigDrive" in read("etc/cloud/cloud.cfg.d/90-marina-datasources.cfg")


def test_image_builder_refuses_an_unknown_role(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        building.build_image("router", tmp_path / "x", wheels=tmp_path)


@pytest.fixture(scope="session")
def worker_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A worker image against the stand-in repository, built once per elements/ content."""
    variant = f"stub-kube-{stubrepo.VERSION}"
    image = building.cached_path("worker", "tar", variant=variant)
    if image.exists():
        return image
    with stubrepo.serving(tmp_path_factory.mktemp("kube-repo")) as repo:
        return building.build_cached(
            "worker",
            "tar",
            variant=variant,
            env={"DIB_MARINA_KUBE_REPO": repo.url, "DIB_MARINA_KUBE_REPO_KEY": str(repo.key)},
        )


@pytest.mark.timeout(1500)
def test_worker_image_holds_a_container_runtime_and_held_kubelet(worker_image: Path) -> None:
    with tarfile.open(worker_image) as image:
        members = {m.name.removeprefix("./"): m for m in image.getmembers()}

        def read(name: str) -> str:
            member = image.extractfile(members[name])
            assert member is not None, name
            return member.read().decode()

        for tool in (
            "usr/bin/kubelet",
            "usr/bin/kubeadm",
            "usr/bin/kubectl",
            "usr/bin/containerd",
            "usr/sbin/runc",
            "usr/bin/cloud-init",
        ):
            assert tool in members, f"{tool} is not in the image"
        source = read("etc/apt/sources.list.d/marina-kube.list")
        assert source.startswith("deb [signed-by=/etc/apt/keyrings/marina-kube.asc] http://")
        assert "BEGIN PGP PUBLIC KEY BLOCK" in read("etc/apt/keyrings/marina-kube.asc")
        assert "SystemdCgroup = true" in read("etc/containerd/config.toml")
        for unit in ("kubelet.service", "containerd.service"):
            assert f"etc/systemd/system/multi-user.target.wants/{unit}" in members, unit
        status = read("var/lib/dpkg/status")
        for package in stubrepo.PACKAGES:
            assert f"Package: {package}\nStatus: hold ok installed" in status, package
        assert "br_netfilter" in read("etc/modules-load.d/marina-kubernetes.conf")
        assert "gateway" not in " ".join(n for n in members if n.startswith("etc/systemd/system/"))
