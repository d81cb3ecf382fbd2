"""A signed apt repository of stand-in kubelet, kubeadm and kubectl packages,
served on loopback, so that a Kubernetes node image builds here as it would
against a real mirror (the real packages are out of these machines' reach).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("kubelet", "kubeadm", "kubectl")
VERSION = "1.31.0-1.1"

KUBELET_UNIT = """[Unit]
Description=kubelet (stand-in)
[Service]
ExecStart=/usr/bin/kubelet
[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class StubRepository:
    url: str
    """What DIB_MARINA_KUBE_REPO takes: the URI and the suite of a flat repository."""
    key: Path


def _build_package(name: str, root: Path) -> Path:
    tree = root / "src" / name
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {VERSION}\nArchitecture: all\n"
        "Maintainer: Marina tests <tests@marina.invalid>\n"
        f"Description: stand-in {name} for image builds\n"
    )
    tool = tree / "usr" / "bin" / name
    tool.parent.mkdir(parents=True)
    tool.write_text(f"#!/bin/sh\necho {name} {VERSION}\n")
    tool.chmod(0o755)
    if name == "kubelet":
        unit = tree / "lib" / "systemd" / "system" / "kubelet.service"
        unit.parent.mkdir(parents=True)
        unit.write_text(KUBELET_UNIT)
    deb = root / "repo" / f"{name}_{VERSION}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


def _release(repo: Path) -> str:
    lines = ["Origin: marina-tests", "Label: marina-tests", "Suite: ./", "SHA256:"]
    for name in ("Packages", "Packages.gz"):
        data = (repo / name).read_bytes()
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}")
    return "\n".join(lines) + "\n"


def build(root: Path) -> Path:
    """Packages, a flat index, and InRelease signed by a fresh key (root/repo, root/Release.key)."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    for name in PACKAGES:
        _build_package(name, root)
    index = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (repo / "Packages").write_text(index)
    (repo / "Packages.gz").write_bytes(gzip.compress(index.encode()))
    (repo / "Release").write_text(_release(repo))

    home = root / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home)]
    subprocess.run(
        [
            *gpg,
            "--passphrase",
            "",
            "--quick-gen-key",
            "marina-tests",
            "default",
            "default",
            "never",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*gpg, "--yes", "--clearsign", "--output", str(repo / "InRelease"), str(repo / "Release")],
        check=True,
        capture_output=True,
    )
    key = subprocess.run(
        [*gpg, "--armor", "--export", "marina-tests"], check=True, capture_output=True
    ).stdout
    (root / "Release.key").write_bytes(key)
    with contextlib.suppress(FileNotFoundError):  # gpg-agent stops with its home
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    return repo


@contextlib.contextmanager
def serving(root: Path) -> Iterator[StubRepository]:
    repo = build(root)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=os.fspath(repo))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield StubRepository(
                url=f"http://127.0.0.1:{server.server_address[1]}/ ./", key=root / "Release.key"
            )
        finally:
            server.shutdown()
            thread.join()
