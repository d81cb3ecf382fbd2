"""Build Marina's node images with diskimage-builder (`make image`, and the tests).

An image is Debian (`debian-minimal`, from the mirror apt already uses) plus
the role's element: `marina-gateway` for gateways, `marina-kube-node` for
masters and workers. Builds go through `disk-image-create` as a user would
run it; `build_cached` keeps one result per content of `elements/` so that a
test session pays for a debootstrap build once.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
ELEMENTS = REPO / "elements"
CACHE = REPO / ".cache" / "images"

ROLES = {
    "gateway": ["debian-minimal", "marina-gateway"],
    "master": ["debian-minimal", "marina-kube-node"],
    "worker": ["debian-minimal", "marina-kube-node"],
}
RELEASE = "bookworm"


class BuildFailed(RuntimeError):
    """disk-image-create exited non-zero; the message ends with its output."""


def apt_mirrors() -> tuple[str, str]:
    """The Debian and security mirrors this machine's apt uses (the only ones it may reach)."""
    main, security = "http://deb.debian.org/debian", "http://deb.debian.org/debian-security"
    texts = []
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        with contextlib.suppress(OSError):
            texts.append(path.read_text())
    for uri in re.findall(r"(?:^URIs:\s*|^deb\s+(?:\[[^]]*\]\s+)?)(\S+)", "\n".join(texts), re.M):
        if uri.rstrip("/").endswith("/debian-security"):
            security = uri.rstrip("/")
        elif uri.rstrip("/").endswith("/debian"):
            main = uri.rstrip("/")
    return main, security


def build_environment(wheels: Path, **extra: str) -> dict[str, str]:
    main, security = apt_mirrors()
    env = dict(os.environ)
    env.update(
        ELEMENTS_PATH=str(ELEMENTS),
        DIB_RELEASE=RELEASE,
        DIB_DISTRIBUTION_MIRROR=os.environ.get("DIB_DISTRIBUTION_MIRROR", main),
        DIB_DEBIAN_SECURITY_MIRROR=os.environ.get("DIB_DEBIAN_SECURITY_MIRROR", security),
        DIB_MARINA_WHEELS=str(wheels),
    )
    # disk-image-create is a script of the same environment as this Python.
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


def build_wheels(target: Path) -> Path:
    """Marina's wheel and every wheel it depends on, for an image to install offline."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(target), str(REPO)],
        check=True,
    )
    return target


def build_image(
    role: str,
    output: Path,
    *,
    image_type: str = "qcow2",
    wheels: Path,
    extra_elements: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    echo: bool = False,
) -> Path:
    """Run disk-image-create for `role`; returns the image file.

    Its output goes to `log`, and to this process's standard output with `echo`.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [
        "disk-image-create",
        "--no-tmpfs",
        "-t",
        image_type,
        "-o",
        str(output),
        *ROLES[role],
        *extra_elements,
    ]
    tail: collections.deque[str] = collections.deque(maxlen=60)
    with (
        subprocess.Popen(
            command,
            env=build_environment(wheels, **(env or {})),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process,
        open(log or os.devnull, "w") as saved,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line)
            saved.write(line)
            if echo:
                print(line, end="", flush=True)
    if process.returncode != 0:
        raise BuildFailed(f"{' '.join(command)} exited {process.returncode}:\n{''.join(tail)}")
    return output.with_name(f"{output.name}.{image_type}")


def elements_digest() -> str:
    """What a build depends on here: every file of elements/, diskimage-builder, the release."""
    digest = hashlib.sha256()
    digest.update(f"{version('diskimage-builder')} {RELEASE} {apt_mirrors()}".encode())
    for path in sorted(ELEMENTS.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(ELEMENTS)).encode())
            digest.update(oct(path.stat().st_mode & 0o777).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cached_path(role: str, image_type: str = "tar", *, variant: str = "") -> Path:
    """Where `build_cached` keeps the image for this content of elements/."""
    name = f"{role}-{variant}" if variant else role
    return CACHE / f"{name}-{elements_digest()}.{image_type}"


def build_cached(
    role: str,
    image_type: str = "tar",
    *,
    variant: str = "",
    env: Mapping[str, str] | None = None,
) -> Path:
    """The image for `role` from the cache, built first when elements/ changed.

    Marina's own code is not part of the key: the tests check what the
    elements put in the image, and a new wheel does not change that.
    `variant` names builds whose `env` changes what goes in.
    """
    image = cached_path(role, image_type, variant=variant)
    if image.exists():
        return image
    key = image.name.removesuffix(f".{image_type}")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix=f".{key}-") as scratch:
        work = Path(scratch)
        built = build_image(
            role,
            work / key,
            image_type=image_type,
            wheels=build_wheels(work / "wheels"),
            env=env,
            log=CACHE / f"{key}.log",
        )
        built.rename(image)  # atomic: a concurrent session finds a whole image or none
    prefix = key.rsplit("-", 1)[0]
    for stale in CACHE.glob(f"{prefix}-*.{image_type}"):
        if stale != image and stale.name.rsplit("-", 1)[0] == prefix:
            stale.unlink()
    return image


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.elements.building", description=__doc__)
    parser.add_argument("--role", choices=sorted(ROLES), default="gateway")
    parser.add_argument("--type", default="qcow2", help="disk-image-create -t (qcow2, tar, raw)")
    parser.add_argument("--output", type=Path, default=REPO / "build" / "images")
    parser.add_argument(
        "--element",
        action="append",
        default=[],
        help="another element to add (e.g. vm, for a partitioned, bootable disk)",
    )
    args = parser.parse_args()
    wheels = build_wheels(REPO / "build" / "image-wheels")
    try:
        image = build_image(
            args.role,
            args.output / f"marina-{args.role}",
            image_type=args.type,
            wheels=wheels,
            extra_elements=tuple(args.element),
            log=args.output / f"marina-{args.role}.log",
            echo=True,
        )
    except BuildFailed as error:
        print(error, file=sys.stderr)
        return 1
    print(image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
