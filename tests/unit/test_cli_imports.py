"""Every command but `up` and `demo` starts without the server or etcd's client:
the CLI imports `catalog.cli.up` only when one of those two runs."""

import subprocess
import sys

LOADED = (
    "import sys, catalog.cli\n"
    "print(sorted(m for m in sys.modules\n"
    "    if m in ('catalog.server', 'catalog.cli.up') or m.split('.')[0] in ('aetcd', 'grpc')))"
)


def test_cli_loads_neither_the_server_nor_the_etcd_client():
    done = subprocess.run(
        [sys.executable, "-c", LOADED], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
