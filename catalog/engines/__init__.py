"""Where pods run: one driver per module or package, the protocol in base.py.

`make_engine` is the only way to a driver: nothing else imports one (an
import contract checks it), so a driver's internals stay its own.
"""

from __future__ import annotations

from pathlib import Path

from catalog.engines.base import Engine
from catalog.errors import MarinaError
from catalog.store import Store

ENGINES = ("local", "kubernetes")


def make_engine(
    name: str,
    store: Store,
    *,
    state_dir: Path,
    kubeconfig: Path | None = None,
    context: str | None = None,
) -> Engine:
    """The engine called `name`, ready for `run`.

    `kubeconfig` and `context` choose the cluster of the `kubernetes` engine
    (the default kubeconfig, or the in-cluster account, when unset).
    """
    if name == "local":
        from catalog.engines.local import LocalEngine

        return LocalEngine(store, state_dir=state_dir)
    if name == "kubernetes":
        try:
            from catalog.engines.kubernetes import KubernetesEngine
        except ImportError as exc:
            raise MarinaError(
                "the kubernetes engine needs its client: pip install 'marina[kubernetes]'"
            ) from exc
        return KubernetesEngine(store, state_dir=state_dir, kubeconfig=kubeconfig, context=context)
    raise MarinaError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
