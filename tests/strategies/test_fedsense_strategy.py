"""FedSenseStrategy's aggregation hooks on hand-built replies."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, Metadata, MetricRecord, RecordDict

from fedsense import protocol
from fedsense.compression import encode
from fedsense.metrics import macro_f1
from strategies import FedSenseStrategy, RoundFailed
from strategies.accounting import record_nbytes

_ids = itertools.count()


def _meta(node: int) -> Metadata:
    return Metadata(
        run_id=1, message_id=f"m{next(_ids)}", src_node_id=node, dst_node_id=0,
        reply_to_message_id="x", group_id="1", created_at=time.time(), ttl=60.0,
        message_type="train",
    )


def train_reply(node: int, w: np.ndarray, n: int, loss: float = 1.0, target: int = 0) -> Message:
    content = RecordDict(
        {
            protocol.ARRAYS: ArrayRecord({"w": Array(w.astype(np.float32))}),
            protocol.METRICS: MetricRecord(
                {protocol.NUM_EXAMPLES: n, protocol.TASK_WINDOWS: n, protocol.LOSS_TASK: loss, protocol.TRAIN_STEPS: 1,
                 protocol.IS_TARGET: target, protocol.PARTITION: node}
            ),
        }
    )
    return Message(content=content, metadata=_meta(node))


def eval_reply(node: int, cm: np.ndarray, target: int) -> Message:
    content = RecordDict(
        {
            protocol.METRICS: MetricRecord(
                {protocol.NUM_EXAMPLES: int(cm.sum()), protocol.EVAL_LOSS: 0.5,
                 protocol.EVAL_WINDOWS: int(cm.sum()), protocol.CONFUSION: [int(v) for v in cm.ravel()],
                 protocol.IS_TARGET: target, protocol.PARTITION: node}
            )
        }
    )
    return Message(content=content, metadata=_meta(node))


def error_reply(node: int, reason: str) -> Message:
    return Message(error=Error(code=0, reason=reason), metadata=_meta(node))


def make(num_classes: int = 2, min_replies: int = 1, **kw) -> FedSenseStrategy:
    s = FedSenseStrategy(num_classes=num_classes, min_replies=min_replies, **kw)
    s.stats.sampled = [1, 2, 3]  # node ids asked to train
    return s


def test_weighted_average_by_training_windows():
    s = make()
    arrays, metrics = s.aggregate_train(1, [
        train_reply(1, np.array([0.0, 4.0]), n=1, loss=2.0),
        train_reply(2, np.array([4.0, 0.0]), n=3, loss=1.0),
    ])
    np.testing.assert_allclose(arrays["w"].numpy(), [3.0, 1.0])
    assert metrics["loss-task"] == pytest.approx((2.0 * 1 + 1.0 * 3) / 4)


def test_clients_without_labelled_windows_do_not_pull_the_average():
    s = make()
    arrays, _ = s.aggregate_train(1, [
        train_reply(1, np.array([1.0]), n=10),
        train_reply(2, np.array([100.0]), n=0, target=1),  # a target: no labels, no weight
    ])
    np.testing.assert_allclose(arrays["w"].numpy(), [1.0])


def test_round_where_nobody_trained_keeps_the_global_model():
    arrays, metrics = make().aggregate_train(1, [train_reply(1, np.array([5.0]), n=0, target=1)])
    assert arrays is None
    assert metrics["clients-trained"] == 0


def test_errors_are_counted_and_too_few_replies_fail_the_round():
    s = make(min_replies=2)
    with pytest.raises(RoundFailed, match="1 of 3 clients replied.*device exploded"):
        s.aggregate_train(1, [train_reply(1, np.array([1.0]), n=5), error_reply(2, "device exploded")])
    assert s.stats.replied == [1]
    assert any("device exploded" in e for e in s.stats.errors)


def test_evaluation_sums_confusions_per_role_never_averages():
    seen = []
    s = make(on_round_end=lambda r, rec, arrays: seen.append((r, rec)))
    s.current_arrays = ArrayRecord({"w": Array(np.zeros(1, np.float32))})
    big = np.array([[90, 10], [0, 0]])  # a large client, only class 0
    small = np.array([[0, 0], [5, 5]])  # a small client, only class 1
    src = np.array([[3, 1], [1, 3]])
    out = s.aggregate_evaluate(4, [eval_reply(1, big, 1), eval_reply(2, small, 1), eval_reply(3, src, 0)])
    pooled = big + small
    assert out["target-macro_f1"] == pytest.approx(macro_f1(pooled))
    # averaging per-client scores would give another number: the test can tell
    per_client = (macro_f1(big) * 100 + macro_f1(small) * 10) / 110
    assert abs(macro_f1(pooled) - per_client) > 0.05
    assert out["source-accuracy"] == pytest.approx(6 / 8)
    (r, rec), = seen
    assert r == 4
    assert rec["target"]["windows"] == 110 and rec["target"]["clients"] == 2
    assert rec["source"]["clients"] == 1
    assert rec["confusion"]["target"] == pooled.tolist()
    # per class of the pooled matrix, and per client from its own matrix
    assert rec["target"]["f1"] == {"0": pytest.approx(2 * 90 / 195), "1": pytest.approx(2 * 5 / 25)}
    assert rec["client"] == {"1": {"macro_f1": pytest.approx(macro_f1(big))},
                             "2": {"macro_f1": pytest.approx(macro_f1(small))},
                             "3": {"macro_f1": pytest.approx(0.75)}}


def test_round_record_names_the_nodes_that_were_sampled_replied_and_failed():
    seen = []
    s = make(min_replies=1, on_round_end=lambda r, rec, arrays: seen.append(rec))
    s.aggregate_train(1, [train_reply(3, np.array([1.0]), n=5), error_reply(2, "gone")])
    s.aggregate_evaluate(1, [eval_reply(3, np.eye(2, dtype=int), 0)])
    (rec,) = seen
    # counts, not averages; node 1 vanished (no reply at all), node 2 sent an error
    assert rec["clients"] == {"sampled": 3, "replied": 1, "failed": 2, "errors": 1, "rejected": 0}
    assert rec["nodes"] == {"sampled": [1, 2, 3], "replied": [3], "failed": [1, 2]}
    assert rec["errors"] == ["node 2: gone"]


def test_wrongly_sized_confusion_is_refused_not_summed():
    s = make(num_classes=2)
    s.current_arrays = ArrayRecord({"w": Array(np.zeros(1, np.float32))})
    good = eval_reply(1, np.array([[2, 0], [0, 2]]), 0)
    bad = eval_reply(2, np.eye(3, dtype=int) * 50, 0)
    out = s.aggregate_evaluate(1, [good, bad])
    assert out["source-accuracy"] == 1.0
    assert any("confusion size 9" in e for e in s.stats.errors)


def test_upload_bytes_count_the_arrays_received():
    s = make()
    w = np.zeros(1000, np.float32)
    s.aggregate_train(1, [train_reply(1, w, n=1), train_reply(2, w, n=1)])
    assert 2 * 4000 <= s.stats.bytes_up < 2 * 4000 + 2 * 500  # arrays dominate; headers are small


def test_aggregate_does_not_depend_on_reply_order():
    rng = np.random.default_rng(0)
    replies = [train_reply(i, rng.normal(size=500).astype(np.float32) * 1e3, n=int(rng.integers(1, 99)))
               for i in range(12)]
    first, _ = make().aggregate_train(1, replies)
    shuffled, _ = make().aggregate_train(1, [replies[i] for i in rng.permutation(12)])
    np.testing.assert_array_equal(first["w"].numpy(), shuffled["w"].numpy())  # bit-identical


def test_projector_rounds_ask_for_centroids_and_collect_labelled_points():
    seen = []
    s = make(on_round_end=lambda r, rec, arrays: seen.append(rec), projector_rounds=[2], projector_min_count=4)
    s.current_arrays = ArrayRecord({"w": Array(np.zeros(1, np.float32))})

    def with_centroids(node, target, rows, counts):
        msg = eval_reply(node, np.eye(2, dtype=int), target)
        msg.content[protocol.EMBEDDINGS] = ArrayRecord({"embed.fused": Array(np.asarray(rows, np.float32))})
        msg.content[protocol.METRICS] = MetricRecord({**dict(msg.content[protocol.METRICS]), protocol.EMBED_COUNT: counts})
        return msg

    good = with_centroids(1, 0, [[1.0, 2.0], [0.0, 0.0]], [9, 0])
    target = with_centroids(2, 1, [[3.0, 4.0], [5.0, 6.0]], [4, 7])
    broken = with_centroids(3, 0, [[np.nan, 0.0], [1.0, 1.0]], [5, 5])  # not finite: left out
    s.aggregate_evaluate(2, [good, target, broken])
    assert seen[-1]["projector"] == {"fused": {
        "points": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
        "labels": [["source", "1", "0"], ["target", "2", "0"], ["target", "2", "1"]],
    }}
    s.aggregate_evaluate(3, [eval_reply(1, np.eye(2, dtype=int), 0)])
    assert "projector" not in seen[-1]


def test_only_projector_rounds_carry_the_request(monkeypatch):
    from flwr.app import ConfigRecord
    from flwr.serverapp.strategy import FedAvg

    captured = []
    monkeypatch.setattr(FedAvg, "configure_evaluate", lambda self, r, a, config, g: captured.append(dict(config)) or [])
    s = make(projector_rounds=[2], projector_min_count=6)
    for r in (1, 2):
        s.configure_evaluate(r, ArrayRecord(), ConfigRecord({"num-classes": 2}), grid=None)
    assert protocol.CFG_PROJECTOR not in captured[0] and captured[1][protocol.CFG_PROJECTOR] == 6


def test_a_vanished_node_is_named_not_the_superlink_that_answered_for_it():
    # Flower's SuperLink replies for a node that lost its heartbeat, as node 1,
    # replying to the instruction sent to that node.
    seen = []
    s = make(min_replies=1, on_round_end=lambda r, rec, arrays: seen.append(rec))
    sent = Message(content=RecordDict(), metadata=Metadata(
        run_id=1, message_id="to-3", src_node_id=0, dst_node_id=3, reply_to_message_id="", group_id="1",
        created_at=time.time(), ttl=60.0, message_type="train"))  # the id the grid set when it pushed
    s.stats.outgoing = [sent]
    lost = Message(error=Error(code=5, reason="Error: Node Unavailable"), metadata=_meta(1))
    lost.metadata.__dict__["_reply_to_message_id"] = "to-3"
    s.aggregate_train(1, [train_reply(2, np.array([1.0]), n=5), lost])
    s.aggregate_evaluate(1, [eval_reply(2, np.eye(2, dtype=int), 0)])
    (rec,) = seen
    assert rec["errors"] == ["node 3: Error: Node Unavailable"]
    assert rec["nodes"]["failed"] == [1, 3]


def _compressed_reply(node: int, start: np.ndarray, w: np.ndarray, n: int, encoding: str = "int8") -> Message:
    packed, _ = encode({"w": w}, {"w": start}, encoding)
    reply = train_reply(node, w, n)
    reply.content.pop(protocol.ARRAYS)
    reply.content[protocol.UPDATE] = ArrayRecord(
        {protocol.UPDATE_VALUES: Array(packed.values), protocol.UPDATE_SCALES: Array(packed.scales)})
    return reply


def test_compressed_updates_are_decoded_against_the_global_arrays_and_counted_as_sent():
    start = np.linspace(-1, 1, 1000).astype(np.float32)
    s = make(update_encoding="int8")
    s.current_arrays = ArrayRecord({"w": Array(start)})
    a, b = start + 0.01, start - 0.03
    arrays, _ = s.aggregate_train(1, [_compressed_reply(1, start, a, n=1), _compressed_reply(2, start, b, n=3)])
    np.testing.assert_allclose(arrays["w"].numpy(), (a + 3 * b) / 4, atol=0.03 / 127)
    assert 2 * 1000 <= s.stats.bytes_up < 2 * 1000 + 2 * 500  # one byte a value, not four


def test_an_undecodable_update_is_refused_and_named_the_others_count():
    start = np.zeros(100, np.float32)
    s = make(update_encoding="int8")
    s.current_arrays = ArrayRecord({"w": Array(start)})
    short = _compressed_reply(2, start, start + 1, n=1)
    short.content[protocol.UPDATE][protocol.UPDATE_VALUES] = Array(np.zeros(99, np.int8))
    plain = train_reply(3, start + 5, n=1)  # a float32 reply to an int8 round
    arrays, _ = s.aggregate_train(1, [_compressed_reply(1, start, start + 1, n=1), short, plain])
    np.testing.assert_allclose(arrays["w"].numpy(), 1.0)
    assert len(s.stats.rejected) == 2
    assert "node 2: int8 update: 99 values" in s.stats.rejected[0]
    assert "node 3: no 'update' record" in s.stats.rejected[1]


def test_the_train_config_tells_devices_the_encoding(monkeypatch):
    from flwr.app import ConfigRecord
    from flwr.serverapp.strategy import FedAvg

    captured = []
    monkeypatch.setattr(FedAvg, "configure_train", lambda self, r, a, config, g: captured.append(dict(config)) or [])
    make(update_encoding="float16").configure_train(1, ArrayRecord(), ConfigRecord({"num-classes": 2}), grid=None)
    make().configure_train(1, ArrayRecord(), ConfigRecord({"num-classes": 2}), grid=None)
    assert captured[0][protocol.CFG_UPDATE_ENCODING] == "float16"
    assert protocol.CFG_UPDATE_ENCODING not in captured[1]  # float32: the trained arrays as they are
    with pytest.raises(KeyError, match="valid: float16, int8"):
        make(update_encoding="int4")


def _modal_reply(node: int, value: float, n: int, gyro_windows: int) -> Message:
    reply = train_reply(node, np.zeros(1), n)
    reply.content[protocol.ARRAYS] = ArrayRecord({
        "encoders.acc.w": Array(np.full(2, value, np.float32)), "encoders.gyro.w": Array(np.full(2, value, np.float32)),
        "classifier.w": Array(np.full(2, value, np.float32))})
    metrics = dict(reply.content[protocol.METRICS])
    metrics |= {protocol.modality_windows_key("acc"): n, protocol.modality_windows_key("gyro"): gyro_windows}
    reply.content[protocol.METRICS] = MetricRecord(metrics)
    return reply


def test_a_device_without_a_modality_is_left_out_of_that_branchs_average_only():
    start = ArrayRecord({k: Array(np.zeros(2, np.float32)) for k in ("encoders.acc.w", "encoders.gyro.w", "classifier.w")})
    replies = [_modal_reply(1, 1.0, 10, 10), _modal_reply(2, 3.0, 30, 30), _modal_reply(3, 100.0, 40, 0)]
    s = make(max_update_norm_ratio=0)
    s.current_arrays = start
    arrays, _ = s.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["encoders.gyro.w"].numpy(), (10 + 90) / 40)
    np.testing.assert_allclose(arrays["encoders.acc.w"].numpy(), (10 + 90 + 4000) / 80)
    np.testing.assert_allclose(arrays["classifier.w"].numpy(), (10 + 90 + 4000) / 80)
    blind = make(max_update_norm_ratio=0, modality_aware=False)  # the plain mean averages the zeros in
    blind.current_arrays = start
    plain, _ = blind.aggregate_train(1, replies)
    np.testing.assert_allclose(plain["encoders.gyro.w"].numpy(), (10 + 90 + 4000) / 80)


def test_with_every_modality_everywhere_the_average_is_flowers_bit_for_bit():
    start = ArrayRecord({k: Array(np.zeros(2, np.float32)) for k in ("encoders.acc.w", "encoders.gyro.w", "classifier.w")})
    replies = [_modal_reply(1, 0.1, 7, 7), _modal_reply(2, 0.3, 11, 11), _modal_reply(3, 0.7, 13, 13)]
    a, b = make(max_update_norm_ratio=0), make(max_update_norm_ratio=0, modality_aware=False)
    a.current_arrays = b.current_arrays = start
    aware, _ = a.aggregate_train(1, replies)
    plain, _ = b.aggregate_train(1, replies)
    for k in aware:
        np.testing.assert_array_equal(aware[k].numpy(), plain[k].numpy())


def _bundle(reply: Message, evaluation: Message) -> Message:
    for name, record in evaluation.content.items():
        reply.content[protocol.EVALUATION + name] = record
    return reply


def _instructions(self, server_round, arrays, config, grid):
    """FedAvg's train instructions to nodes 1 and 2, without a SuperLink."""
    from flwr.app import ConfigRecord

    content = RecordDict({protocol.ARRAYS: arrays,
                          protocol.CONFIG: ConfigRecord({**dict(config), protocol.CFG_ROUND: server_round})})
    return [Message(content, metadata=Metadata(run_id=1, message_id="", src_node_id=0, dst_node_id=n,
                                               reply_to_message_id="", group_id=str(server_round),
                                               created_at=time.time(), ttl=60.0, message_type="train"))
            for n in (1, 2)]


def test_with_one_message_a_round_ends_when_the_next_rounds_replies_bring_its_evaluation(monkeypatch):
    from flwr.app import ConfigRecord
    from flwr.serverapp.strategy import FedAvg

    asked = []
    monkeypatch.setattr(FedAvg, "configure_train", _instructions)
    monkeypatch.setattr(FedAvg, "configure_evaluate", lambda self, r, a, config, g: asked.append(r) or [])
    seen = []
    s = make(one_message=True, last_round=2, on_round_end=lambda r, rec, arrays: seen.append((r, rec)))
    start = ArrayRecord({"w": Array(np.zeros(1, np.float32))})
    first = s.configure_train(1, start, ConfigRecord({"num-classes": 2}), grid=None)
    assert not any(n.startswith(protocol.EVALUATION) for n in first[0].content.keys())  # nothing to evaluate yet
    s.aggregate_train(1, [train_reply(1, np.array([1.0]), n=2), train_reply(2, np.array([3.0]), n=2)])
    assert s.configure_evaluate(1, s.current_arrays, ConfigRecord({"num-classes": 2}), grid=None) == []
    assert s.aggregate_evaluate(1, []) is None and seen == [] and asked == []  # no message: round 1 is open

    second = s.configure_train(2, s.current_arrays, ConfigRecord({"num-classes": 2}), grid=None)
    carried = second[0].content[protocol.EVALUATION + protocol.CONFIG]
    assert carried[protocol.CFG_ROUND] == 1 and carried["num-classes"] == 2
    np.testing.assert_allclose(second[0].content[protocol.ARRAYS]["w"].numpy(), [2.0])  # evaluated: round 1's model
    cm = np.array([[3, 1], [0, 4]])
    arrays, _ = s.aggregate_train(2, [_bundle(train_reply(1, np.array([5.0]), n=1), eval_reply(1, cm, 0)),
                                      train_reply(2, np.array([7.0]), n=1)])  # node 2 evaluated nothing
    (server_round, record), = seen  # round 1 is recorded before round 2's updates are combined
    assert server_round == 1
    assert record["source"]["macro_f1"] == pytest.approx(macro_f1(cm)) and record["source"]["clients"] == 1
    assert record["errors"] == ["node 2: the reply carries no evaluation"]
    assert record["train"]["clients_trained"] == 2  # round 1's own training
    np.testing.assert_allclose(arrays["w"].numpy(), [6.0])  # the train parts are averaged as ever
    plain = [train_reply(1, np.array([5.0]), n=1), train_reply(2, np.array([7.0]), n=1)]
    assert s.stats.bytes_up_train == sum(record_nbytes(m.content) for m in plain)  # the updates' bytes only
    assert s.stats.bytes_up > s.stats.bytes_up_train

    s.configure_evaluate(2, arrays, ConfigRecord({"num-classes": 2}), grid=None)
    assert asked == [2]  # the last round ends with evaluate instructions


def test_a_one_message_resume_point_sends_the_next_round_as_the_uninterrupted_run_did(monkeypatch):
    """The point is taken while round 2's instructions are out with round 1's
    evaluation: a resumed strategy sends round 2 with the same evaluation,
    and leaves out what it brings back (round 1 is recorded already)."""
    import random

    from flwr.app import ConfigRecord
    from flwr.serverapp.strategy import FedAvg

    monkeypatch.setattr(FedAvg, "configure_train", _instructions)
    monkeypatch.setattr(FedAvg, "configure_evaluate", lambda self, r, a, config, g: [])
    points = []
    s = make(one_message=True, last_round=3,
             on_round_end=lambda r, rec, arrays: points.append((r, s.snapshot(), s.random_state())))
    start = ArrayRecord({"w": Array(np.zeros(1, np.float32))})
    s.configure_train(1, start, ConfigRecord({"num-classes": 2}), grid=None)
    s.aggregate_train(1, [train_reply(1, np.array([1.0]), n=2), train_reply(2, np.array([3.0]), n=2)])
    s.configure_evaluate(1, s.current_arrays, ConfigRecord({"num-classes": 2, "probe": 7}), grid=None)
    s.aggregate_evaluate(1, [])
    random.seed(11)
    before = random.getstate()
    sent = s.configure_train(2, s.current_arrays, ConfigRecord({"num-classes": 2}), grid=None)
    random.random()  # anything drawn after the instructions went out is not the point's
    cm = np.array([[3, 1], [0, 4]])
    s.aggregate_train(2, [_bundle(train_reply(n, np.array([5.0]), n=1), eval_reply(n, cm, 0)) for n in (1, 2)])
    (server_round, (state, arrays), saved_random), = points
    assert server_round == 1 and saved_random == before

    resumed = make(one_message=True, last_round=3, on_round_end=lambda r, rec, a: points.append(r))
    resumed.restore(state, arrays)
    assert resumed.rounds_done == 1
    again = resumed.configure_train(1, s.current_arrays, ConfigRecord({"num-classes": 2}), grid=None)  # round 2
    carried = again[0].content[protocol.EVALUATION + protocol.CONFIG]
    assert dict(carried) == dict(sent[0].content[protocol.EVALUATION + protocol.CONFIG])
    assert carried["probe"] == 7 and carried[protocol.CFG_ROUND] == 1
    arrays_after, _ = resumed.aggregate_train(1, [_bundle(train_reply(n, np.array([5.0]), n=1), eval_reply(n, cm, 0))
                                                  for n in (1, 2)])
    assert len(points) == 1 and len(resumed.history) == 1  # round 1 is not recorded twice
    np.testing.assert_allclose(arrays_after["w"].numpy(), [5.0])
    assert resumed.stats.errors == []
