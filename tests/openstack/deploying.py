"""Deploy one node with the OpenStack provider, in a process a test can kill -9.

python -m tests.openstack.deploying CLOUD CLOUDS_YAML ETCD_URL PKI_DIR CLUSTER ROLE INDEX
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from catalog.environments import make_node
from catalog.ids import ObjectId
from catalog.providers.openstack import OpenStackProvider, OpenStackSettings
from catalog.store import Store


async def deploy(argv: list[str]) -> None:
    cloud, clouds_yaml, etcd_url, pki, cluster, role, index = argv
    settings = OpenStackSettings(
        cloud=cloud,
        config_files=(Path(clouds_yaml),) if clouds_yaml else (),
        etcd_url=etcd_url,
        etcd_ca_dir=Path(pki),
    )
    async with Store(etcd_url) as store:
        provider = OpenStackProvider(store, settings)
        node = make_node(ObjectId("cluster"), role, int(index))
        print(await provider.deploy_instance(cluster, node), flush=True)
        provider.close()


if __name__ == "__main__":
    asyncio.run(deploy(sys.argv[1:]))
