"""Which nodes describe their data before round 1."""

from __future__ import annotations

from fl_server.spec import nodes_to_query


def test_every_node_unless_a_sample_is_asked_for():
    nodes = [30, 10, 20]
    assert nodes_to_query(nodes, 0, seed=0) == nodes
    assert nodes_to_query(nodes, 3, seed=0) == nodes and nodes_to_query(nodes, 5, seed=0) == nodes


def test_a_sample_is_fixed_by_the_seed_and_drawn_from_the_fleet():
    nodes = list(range(1000, 11000))
    first = nodes_to_query(nodes, 50, seed=1)
    assert len(first) == len(set(first)) == 50 and set(first) <= set(nodes)
    assert nodes_to_query(list(reversed(nodes)), 50, seed=1) == first  # node order does not matter
    assert nodes_to_query(nodes, 50, seed=2) != first
