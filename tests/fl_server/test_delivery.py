"""The indexed delivery sweep hands every node what Flower 1.42's own
``get_message_ins`` hands it, on a real InMemoryLinkState."""

from __future__ import annotations

import secrets
import time

import pytest
from flwr.app import Message, Metadata, RecordDict

from fl_server import delivery

flwr = pytest.importorskip("flwr")
pytestmark = pytest.mark.skipif(not flwr.__version__.startswith(delivery.FLOWER),
                                reason=f"fl_server.delivery mirrors Flower {delivery.FLOWER}x only")


def _state():
    from flwr.common.constant import HEARTBEAT_INTERVAL_INF, NOOP_ACCOUNT_NAME, NOOP_FLWR_AID
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.supercore.run import Run
    from flwr.superlink.federation import NoOpFederationManager

    state = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()).state()
    nodes = [state.create_node(NOOP_FLWR_AID, NOOP_ACCOUNT_NAME, secrets.token_bytes(32),
                               heartbeat_interval=HEARTBEAT_INTERVAL_INF) for _ in range(4)]
    run = Run.create_empty(run_id=7)
    run.federation_id = NOOP_FEDERATION_ID  # as Flower's simulation registers its run
    state.run_ids[7] = RunRecord(run=run)
    return state, nodes


def _put(state, msg_id: str, node: int, age: float = 0.0, ttl: float = 3600.0) -> None:
    from flwr.common.constant import SUPERLINK_NODE_ID

    state.message_ins_store[msg_id] = Message(RecordDict(), metadata=Metadata(
        run_id=7, message_id=msg_id, src_node_id=SUPERLINK_NODE_ID, dst_node_id=node, reply_to_message_id="",
        group_id="1", created_at=time.time() - age, ttl=ttl, message_type="train"))


def _sweeps(get, state, nodes, sweeps: int = 3) -> list[list[str]]:
    """What each node is handed, sweep after sweep (limit 1, as the simulation asks)."""
    handed = []
    for sweep in range(sweeps):
        for node in nodes:
            handed.append([m.metadata.message_id for m in get(state, node, 1)])
        _put(state, f"late-{sweep}", nodes[sweep % 3])  # a new instruction between sweeps
    return handed


def test_each_node_is_handed_what_flowers_own_sweep_hands_it():
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    original = delivery.install()  # Flower's own, also when the ServerApp's import installed it already
    assert original is not delivery.get_message_ins and InMemoryLinkState.get_message_ins is delivery.get_message_ins
    results = []
    for get in (original, delivery.get_message_ins):
        state, nodes = _state()
        for i in range(12):
            _put(state, f"m{i}", nodes[i % 3])  # the fourth node gets nothing
        _put(state, "expired", nodes[1], age=100.0, ttl=10.0)
        results.append((_sweeps(get, state, nodes, sweeps=5), sorted(state.message_ins_store)))
    assert results[0] == results[1]
    handed, left = results[1]
    # never handed out, and deleted once its node's turn reached it (Flower deletes it at the first call)
    assert ["expired"] not in handed and "expired" not in left
    assert all(len(h) == 1 for i, h in enumerate(handed) if i % 4 != 3)  # one a sweep to each of three nodes
    assert all(not h for h in handed[3::4])  # and nothing to the fourth


def test_the_index_is_rebuilt_when_the_store_changes_and_skips_what_went_stale():
    state, nodes = _state()
    _put(state, "a", nodes[0])
    _put(state, "b", nodes[0])
    assert delivery.pending_by_node(state) == {nodes[0]: ["a", "b"]}
    del state.message_ins_store["a"]
    _put(state, "c", nodes[1])
    assert delivery.pending_by_node(state) == {nodes[0]: ["b"], nodes[1]: ["c"]}
    assert [m.metadata.message_id for m in delivery.get_message_ins(state, nodes[0], None)] == ["b"]
    assert delivery.get_message_ins(state, nodes[0], None) == []  # delivered: not handed twice
    with pytest.raises(AssertionError):
        delivery.get_message_ins(state, nodes[0], 0)
