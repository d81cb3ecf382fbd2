"""clouds.yaml for the test control plane, read as every OpenStack tool reads it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class CloudEntry:
    """One named cloud: a user in a project, password authentication."""

    name: str
    auth_url: str
    username: str
    password: str
    project_name: str
    region_name: str = "RegionOne"

    def as_dict(self) -> dict[str, object]:
        return {
            "auth": {
                "auth_url": self.auth_url,
                "username": self.username,
                "password": self.password,
                "project_name": self.project_name,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": self.region_name,
            "identity_api_version": 3,
            "interface": "public",
        }


def write_clouds_yaml(path: Path, entries: list[CloudEntry]) -> Path:
    """Write `entries` as a clouds.yaml readable only by its owner (it holds passwords)."""
    document = {"clouds": {entry.name: entry.as_dict() for entry in entries}}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(document, out, sort_keys=False)
    return path
