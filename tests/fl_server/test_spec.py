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


def _reply(node: int, shapes: dict[str, tuple[int, int]], classes: int = 6, target: int = 0):
    import time

    from flwr.app import Message, Metadata, MetricRecord, RecordDict

    from fedsense import protocol
    from fedsense.models import DataSpec

    metrics = {**DataSpec(shapes, classes).to_metrics(), protocol.IS_TARGET: target, protocol.PARTITION: node,
               protocol.SPEC_TRAIN_WINDOWS: 10, protocol.SPEC_TEST_WINDOWS: 5}
    meta = Metadata(run_id=1, message_id=f"q{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="x",
                    group_id="0", created_at=time.time(), ttl=60.0, message_type="query")
    return Message(content=RecordDict({protocol.METRICS: MetricRecord(metrics)}), metadata=meta)


class _Grid:
    def __init__(self, replies):
        self.replies = replies

    def send_and_receive(self, messages, timeout):
        return self.replies


def test_the_model_takes_every_modality_some_device_has(monkeypatch):
    import pytest
    from flwr.supercore.task_identity import TaskIdentity

    from fl_server.spec import query_clients

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # what a ServerApp process has: its run, node and task
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 0)

    watch = {"acc": (3, 128)}
    phone = {"acc": (3, 128), "gyro": (3, 128)}
    spec, roles, declared = query_clients(_Grid([_reply(1, watch), _reply(2, phone, target=1), _reply(3, watch)]), [1, 2, 3], 5)
    assert spec.shapes == phone and roles == {"source": 2, "target": 1, "failed": 0}
    assert declared[2].target and not declared[1].target and declared[3].train_windows == 10
    with pytest.raises(RuntimeError, match="node 2 has modality 'acc' of shape \\(3, 64\\), others \\(3, 128\\)"):
        query_clients(_Grid([_reply(1, watch), _reply(2, {"acc": (3, 64)})]), [1, 2], 5)


def test_a_query_reply_that_is_no_declaration_counts_as_failed(monkeypatch):
    from flwr.app import MetricRecord
    from flwr.supercore.task_identity import TaskIdentity

    from fedsense import protocol
    from fl_server.spec import query_clients

    for field in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, field, 1)
    liar = _reply(2, {"acc": (3, 128)})
    liar.content[protocol.METRICS] = MetricRecord({**dict(liar.content[protocol.METRICS]),
                                                   protocol.SPEC_TRAIN_WINDOWS: 1e12})
    spec, roles, declared = query_clients(_Grid([_reply(1, {"acc": (3, 128)}), liar]), [1, 2], 5)
    assert roles == {"source": 1, "target": 0, "failed": 1} and set(declared) == {1}
