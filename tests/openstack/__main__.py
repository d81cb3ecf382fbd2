"""`make openstack`: start the test control plane and keep it up until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

from tests.openstack.controlplane import USER_CLOUD, ControlPlane, ControlPlaneError


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.openstack", description=__doc__)
    parser.add_argument(
        "--dir", type=Path, help="where state and logs go (default: a new temporary directory)"
    )
    args = parser.parse_args()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="marina-openstack-"))
    # SIGTERM ends it as Ctrl-C does, also while it is starting.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    plane = ControlPlane(workdir, say=lambda line: print(line, flush=True))
    try:
        plane.start()
    except ControlPlaneError as error:
        print(error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        for key, value in plane.describe().items():
            print(f"{key}: {value}")
        print(
            f"\ntry: OS_CLIENT_CONFIG_FILE={plane.clouds_yaml} OS_CLOUD={USER_CLOUD} "
            f"{plane.venv}/bin/openstack server list\n\nCtrl-C stops every service.",
            flush=True,
        )
        stop.wait()
    finally:
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
