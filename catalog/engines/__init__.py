"""Where pods run: one driver per module or package, the protocol in base.py.

`make_engine` is the only way to a driver: nothing else imports one (an
import contract checks it), so a driver's internals stay its own.
"""

from __future__ import annotations

from pathlib import Path

from catalog.engines.base import Engine
from catalog.errors import MarinaError
from catalog.store import Store

ENGINES = ("local",)


def make_engine(name: str, store: Store, *, state_dir: Path) -> Engine:
    """The engine called `name`, ready for `run`."""
    if name == "local":
        from catalog.engines.local import LocalEngine

        return LocalEngine(store, state_dir=state_dir)
    raise MarinaError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
