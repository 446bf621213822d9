"""One message a round, the server's half: an evaluation carried in the train
instructions, and replies cut back into an evaluate and a train reply."""

from __future__ import annotations

import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, Metadata, MetricRecord, RecordDict

from fedsense import protocol
from strategies.bundle import MAX_REASON, carry_evaluation, split_reply


def _instructions(nodes: list[int]) -> list[Message]:
    shared = RecordDict({protocol.ARRAYS: ArrayRecord({"w": Array(np.ones(2, np.float32))}),
                         protocol.CONFIG: ConfigRecord({protocol.CFG_ROUND: 3})})
    return [Message(shared, metadata=Metadata(run_id=1, message_id="", src_node_id=0, dst_node_id=n,
                                              reply_to_message_id="", group_id="3", created_at=time.time(), ttl=60.0,
                                              message_type=MessageType.TRAIN)) for n in nodes]


def test_every_instruction_carries_the_evaluation_and_a_node_its_own_records():
    own = {2: {"generated": ArrayRecord({"g": Array(np.zeros(1, np.float32))})}}
    messages = carry_evaluation(_instructions([1, 2, 3]), ConfigRecord({protocol.CFG_ROUND: 2}),
                                {"raw": ArrayRecord({"r": Array(np.ones(3))})}, lambda n: own.get(n, {}))
    for msg in messages:
        content = msg.content
        assert content[protocol.CONFIG][protocol.CFG_ROUND] == 3  # the train part's round
        assert content[protocol.EVALUATION + protocol.CONFIG][protocol.CFG_ROUND] == 2  # the evaluated round
        assert protocol.EVALUATION + "raw" in content.array_records
        assert (protocol.EVALUATION + "generated" in content.array_records) == (msg.metadata.dst_node_id == 2)
    assert messages[0].content is messages[2].content  # still one RecordDict for the nodes without their own


def _reply(content: RecordDict | None = None, error: Error | None = None) -> Message:
    metadata = Metadata(run_id=1, message_id="reply", src_node_id=7, dst_node_id=0, reply_to_message_id="asked",
                        group_id="3", created_at=time.time(), ttl=60.0, message_type=MessageType.TRAIN,
                        src_task_id=11, dst_task_id=12)
    return Message(content, metadata=metadata) if content is not None else Message(error, metadata=metadata)


def _bundled() -> RecordDict:
    return RecordDict({
        protocol.ARRAYS: ArrayRecord({"w": Array(np.ones(2, np.float32))}),
        protocol.METRICS: MetricRecord({protocol.NUM_EXAMPLES: 5}),
        protocol.EVALUATION + protocol.METRICS: MetricRecord({protocol.EVAL_WINDOWS: 4}),
        protocol.EVALUATION + protocol.STATS: ArrayRecord({"fused.mean": Array(np.zeros(2))}),
    })


def test_a_reply_splits_into_the_two_replies_it_stands_for():
    evaluation, train = split_reply(_reply(_bundled()))
    assert evaluation is not None and not evaluation.has_error()
    assert evaluation.metadata.message_type == MessageType.EVALUATE
    assert set(evaluation.content.keys()) == {protocol.METRICS, protocol.STATS}
    assert evaluation.content[protocol.METRICS][protocol.EVAL_WINDOWS] == 4
    assert train.metadata.message_type == MessageType.TRAIN
    assert set(train.content.keys()) == {protocol.ARRAYS, protocol.METRICS}
    for part in (evaluation, train):  # the node and the instruction it answers stay named
        assert part.metadata.src_node_id == 7 and part.metadata.reply_to_message_id == "asked"
        assert (part.metadata.src_task_id, part.metadata.dst_task_id) == (11, 12)


def test_a_reply_without_an_evaluation_part_says_so():
    content = _bundled()
    for name in [n for n in content.keys() if n.startswith(protocol.EVALUATION)]:
        content.pop(name)
    evaluation, train = split_reply(_reply(content))
    assert evaluation is None and set(train.content.keys()) == {protocol.ARRAYS, protocol.METRICS}


def test_a_reported_evaluation_error_is_an_error_reply_of_bounded_typed_content():
    content = _bundled()
    content[protocol.EVALUATION_ERROR] = ConfigRecord({protocol.ERROR_CODE: "4000; drop table",
                                                       protocol.ERROR_REASON: "x" * 10_000})
    evaluation, train = split_reply(_reply(content))
    assert evaluation is not None and evaluation.has_error()
    assert evaluation.error.code == protocol.ERROR_BAD_INPUT and len(evaluation.error.reason) == MAX_REASON
    assert protocol.EVALUATION_ERROR not in train.content.keys()
    content[protocol.EVALUATION_ERROR] = ConfigRecord({protocol.ERROR_CODE: 7})
    evaluation, _ = split_reply(_reply(content))
    assert evaluation.error.code == 7 and "without a reason" in evaluation.error.reason


def test_a_failed_message_has_no_evaluation_part():
    failed = _reply(error=Error(code=5, reason="Node Unavailable"))
    assert split_reply(failed) == (None, failed)
