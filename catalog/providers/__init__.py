"""Where nodes come from: one module per driver, the protocol in base.py.

`make_provider` is the way to a driver from the server: the OpenStack one
(and openstacksdk with it) is imported only when it is asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from catalog.errors import MarinaError
from catalog.pki import TLSFiles
from catalog.providers.base import Provider
from catalog.providers.local import LocalProvider, Workers
from catalog.store import Store

PROVIDERS = ("local", "openstack")


def make_provider(
    name: str,
    store: Store,
    *,
    etcd_url: str,
    etcd_tls: TLSFiles | None,
    state_dir: Path,
    workers: Workers | None,
    cloud: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Provider:
    """The provider called `name`; `cloud` names the clouds.yaml entry of
    `openstack`, `options` its settings (image, flavors, network, keypair)."""
    if name == "local":
        return LocalProvider(
            store, etcd_url=etcd_url, etcd_tls=etcd_tls, state_dir=state_dir, workers=workers
        )
    if name == "openstack":
        if workers is None or not cloud:
            raise MarinaError(
                "the openstack provider needs --cloud and --engine kubernetes "
                "(its nodes never run Marina's node agent)"
            )
        try:
            from catalog.providers.openstack import OpenStackProvider, OpenStackSettings
        except ImportError as exc:
            raise MarinaError(
                "the openstack provider needs openstacksdk: pip install 'marina[openstack]'"
            ) from exc
        settings = OpenStackSettings(
            cloud=cloud, etcd_url=etcd_url, etcd_ca_dir=etcd_tls.ca.parent if etcd_tls else None
        )
        options = dict(options or {})
        if "flavors" in options:  # the roles given; the others keep their defaults
            options["flavors"] = {**settings.flavors, **options["flavors"]}
        settings = dataclasses.replace(settings, **options)
        provider = OpenStackProvider(store, settings, workers=workers)
        provider.connection()  # an unknown cloud is refused now, not at the first deploy
        return provider
    raise MarinaError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}")
