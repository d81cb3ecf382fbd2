"""The scheduler: fits, spreads, and says why when nothing fits."""

from __future__ import annotations

import pytest

from catalog.engines.local.placement import NodeCapacity, choose_node, usage
from catalog.errors import SchedulingFailed

SMALL = [{"cores": 0.5, "memory": 256}]


def test_spreads_to_the_freest_node():
    nodes = usage(
        [NodeCapacity("a", 2, 1024), NodeCapacity("b", 2, 1024)],
        [{"node": "a", "containers": SMALL}],
    )
    assert choose_node(nodes, SMALL, pod="web") == "b"


def test_refuses_with_what_was_asked_and_what_is_free():
    nodes = [NodeCapacity("a", 1, 512, used_cores=0.8)]
    with pytest.raises(SchedulingFailed) as info:
        choose_node(nodes, SMALL, pod="web")
    assert "needs 0.5 cores and 256 MiB" in str(info.value)
    assert "0.2 cores" in str(info.value)


def test_avoided_nodes_are_never_chosen():
    nodes = [NodeCapacity("a", 8, 8192), NodeCapacity("b", 1, 512)]
    assert choose_node(nodes, SMALL, pod="web", avoid=frozenset({"a"})) == "b"
    with pytest.raises(SchedulingFailed, match="no schedulable node"):
        choose_node(nodes, SMALL, pod="web", avoid=frozenset({"a", "b"}))
