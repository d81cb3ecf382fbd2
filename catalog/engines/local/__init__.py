"""The local engine: nodes are node-agent processes on this machine, pod
replicas are sandboxed process groups they supervise.

`engine.py` takes desired state and reports what runs, `reconciling.py`
places, moves, restarts and routes replicas, `placement.py` chooses nodes,
`nodeagent.py` is the process that runs on each node.
"""

from catalog.engines.local.engine import LocalEngine

__all__ = ["LocalEngine"]
