"""The test API server's storage: objects, one revision counter, an event history.

Like etcd behind a real API server, every write takes the next revision,
which becomes the object's resourceVersion; watches replay the history from
a revision, and a compaction forgets it (a watch from before it gets 410).
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.kubeapi.resources import Resource

Obj = dict[str, Any]
Key = tuple[str, str, str, str]
"""(group, plural, namespace, name); namespace is '' for cluster-scoped objects."""

HISTORY_LIMIT = 5000
"""Events kept for watches; older ones are compacted away, as etcd's history is."""


@dataclass
class Event:
    revision: int
    resource: Resource
    type: str
    obj: Obj


@dataclass
class Subscription:
    accepts: Callable[[Event], bool]
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)


class Store:
    def __init__(self) -> None:
        self.objects: dict[Key, Obj] = {}
        self.revision = 1
        self.compacted = 1
        """Events at or before this revision are gone."""
        self.history: deque[Event] = deque()
        self.subscriptions: list[Subscription] = []

    @staticmethod
    def key(resource: Resource, namespace: str, name: str) -> Key:
        return (resource.group, resource.plural, namespace if resource.namespaced else "", name)

    def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        found = self.objects.get(self.key(resource, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def select(self, resource: Resource, namespace: str | None = None) -> list[Obj]:
        return [copy.deepcopy(o) for o in self._iter(resource, namespace)]

    def _iter(self, resource: Resource, namespace: str | None) -> Iterator[Obj]:
        for (group, plural, ns, _), obj in sorted(self.objects.items()):
            if (group, plural) == (resource.group, resource.plural) and (
                namespace is None or ns == namespace
            ):
                yield obj

    def put(self, resource: Resource, obj: Obj, *, created: bool) -> Obj:
        self.revision += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.revision)
        meta = obj["metadata"]
        self.objects[self.key(resource, meta.get("namespace", ""), meta["name"])] = obj
        self._record(Event(self.revision, resource, "ADDED" if created else "MODIFIED", obj))
        return copy.deepcopy(obj)

    def remove(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        obj = self.objects.pop(self.key(resource, namespace, name), None)
        if obj is None:
            return None
        self.revision += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.revision)
        self._record(Event(self.revision, resource, "DELETED", obj))
        return copy.deepcopy(obj)

    def _record(self, event: Event) -> None:
        self.history.append(event)
        while len(self.history) > HISTORY_LIMIT:
            self.compacted = self.history.popleft().revision
        for sub in self.subscriptions:
            if sub.accepts(event):
                sub.queue.put_nowait(event)

    def compact(self) -> int:
        """Forget every event so far, as an etcd compaction does; returns the revision."""
        self.history.clear()
        self.compacted = self.revision
        return self.revision

    def since(self, revision: int) -> list[Event] | None:
        """Events after `revision`, or None when they were compacted away."""
        if revision < self.compacted:
            return None
        return [e for e in self.history if e.revision > revision]

    def subscribe(self, accepts: Callable[[Event], bool]) -> Subscription:
        sub = Subscription(accepts)
        self.subscriptions.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self.subscriptions:
            self.subscriptions.remove(sub)
        sub.queue.put_nowait(None)
