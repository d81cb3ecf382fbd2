"""Where `marina up` keeps its state by default.

The server writes there (etcd's data, node agents, the API address and the
admin token) and the CLI reads the last two back; both find it here, so the
CLI need not import the server.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_state_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "marina"
