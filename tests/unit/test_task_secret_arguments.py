"""Secret values given to an action (`setSecrets`) never show in a task: the
arguments its schema marks `writeOnly` are masked, their names kept."""

from __future__ import annotations

from typing import Any, cast

import catalog.classes  # noqa: F401  (the classes register their actions)
from catalog.classes.registry import MASKED, classes, shown_task
from catalog.documents import TaskDoc
from catalog.tasks import new_task


def task(method: str, args: dict[str, Any]) -> TaskDoc:
    return new_task(
        environment=cast(Any, "e"), project=cast(Any, "p"), object_id=cast(Any, "o"),
        method=method, args=args,
    )  # fmt: skip


def test_secret_values_are_masked_and_their_names_kept() -> None:
    assert classes()["KubernetesPod"]["setSecrets"].schema["properties"]["secrets"]["writeOnly"]
    given = task("setSecrets", {"container": "web", "secrets": {"TLS_KEY": "-----BEGIN"}})
    shown = shown_task(given)
    assert shown["args"] == {"container": "web", "secrets": {"TLS_KEY": MASKED}}
    assert given["args"]["secrets"] == {"TLS_KEY": "-----BEGIN"}  # the worker's copy is whole


def test_other_actions_arguments_are_shown_as_given() -> None:
    given = task("scalePod", {"replicas": 3})
    assert shown_task(given) == given
