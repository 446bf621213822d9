"""Arbitrary reply contents never crash a round: every bad field is refused
with a reason (hypothesis), for the plain strategy and with methods' server
states that read their own fields."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fedsense import protocol
from fedsense.configfile import from_dict
from fedsense.methods import METHODS
from strategies.roster import Declared, Roster
from tests.strategies.test_fedsense_strategy import eval_reply, make, train_reply

BAD = st.one_of(
    st.none(),  # the key is missing
    st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5),
    st.lists(st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1), max_size=5),
)
TRAIN_KEYS = [protocol.NUM_EXAMPLES, protocol.TASK_WINDOWS, protocol.LOSS_TASK, protocol.IS_TARGET,
              protocol.TRAIN_STEPS, protocol.COMPUTE_SECONDS, "windows.acc", "loss-domain.fused", "disc-acc.fused"]
EVAL_KEYS = [protocol.CONFUSION, protocol.NUM_EXAMPLES, protocol.EVAL_WINDOWS, protocol.EVAL_LOSS, protocol.IS_TARGET,
             protocol.COMPUTE_SECONDS, protocol.EMBED_COUNT, "stats.fused.count", protocol.PARTITION]


def _states():
    yield None
    for method, alignment in (("dann", "federated"), ("dann", "statistics"), ("m3bat_local", "statistics")):
        cfg = from_dict({"adapt": {"method": method, "alignment": alignment, "warmup": 0.0}, "fed": {"rounds": 5}})
        yield METHODS[method].server(cfg, ["fused"])


def _strategy(state):
    roster = Roster({1: Declared(False, 100, 40), 2: Declared(True, 100, 40)})
    required = ["windows.acc"] + (["loss-domain.fused", "disc-acc.fused"] if state is not None else [])
    s = make(num_classes=2, min_replies=1, roster=roster, method_state=state, required_train=required)
    s.current_arrays = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    return s


def _with(reply, changes: dict):
    metrics = dict(reply.content[protocol.METRICS])
    for key, value in changes.items():
        if value is None:
            metrics.pop(key, None)
        else:
            metrics[key] = value
    try:
        reply.content[protocol.METRICS] = MetricRecord(metrics)
    except (TypeError, ValueError):
        assume(False)  # Flower itself would not carry it
    return reply


def _honest_train(node: int):
    reply = train_reply(node, np.array([1.0, 2.0]), n=50, target=int(node == 2))
    return _with(reply, {"windows.acc": 50, "loss-domain.fused": 0.6, "disc-acc.fused": 0.5,
                         protocol.COMPUTE_SECONDS: 0.1})


@pytest.mark.parametrize("state_index", range(4))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(TRAIN_KEYS), BAD, min_size=1, max_size=4),
       array=st.sampled_from(["ok", "nan", "shape", "dtype", "missing"]))
def test_any_train_reply_is_averaged_or_refused_with_a_reason(state_index, changes, array):
    s = _strategy(list(_states())[state_index])
    bad = _with(_honest_train(1), changes)
    arrays = {"ok": np.array([5.0, 5.0], np.float32), "nan": np.array([np.nan, 1], np.float32),
              "shape": np.zeros(3, np.float32), "dtype": np.zeros(2, np.float64), "missing": None}[array]
    bad.content[protocol.ARRAYS] = ArrayRecord({} if arrays is None else {"w": Array(arrays)})
    out, _ = s.aggregate_train(1, [bad, _honest_train(2)])
    if s.stats.rejected:
        assert s.stats.rejected[0].startswith("node 1: ") and len(s.stats.rejected[0]) > len("node 1: ")
        np.testing.assert_allclose(out["w"].numpy(), [1.0, 2.0])  # the honest reply alone
    assert np.all(np.isfinite(out["w"].numpy()))


@pytest.mark.parametrize("state_index", range(4))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(EVAL_KEYS), BAD, min_size=1, max_size=4),
       records=st.sampled_from(["none", "stats-shape", "stats-nan", "class-lie"]))
def test_any_evaluate_reply_is_summed_or_refused_with_a_reason(state_index, changes, records):
    seen = []
    s = _strategy(list(_states())[state_index])
    s.on_round_end = lambda r, rec, arrays: seen.append(rec)
    bad = _with(eval_reply(1, np.array([[3, 1], [0, 4]]), 0), changes)
    if records == "stats-shape":
        bad.content[protocol.STATS] = ArrayRecord({"stats.fused.mean": Array(np.zeros(3, np.float32)),
                                                   "stats.fused.cov": Array(np.zeros((2, 2), np.float32))})
    elif records == "stats-nan":
        bad.content[protocol.STATS] = ArrayRecord({"stats.fused.mean": Array(np.full(2, np.nan, np.float32)),
                                                   "stats.fused.cov": Array(np.eye(2, dtype=np.float32))})
    elif records == "class-lie":
        bad.content[protocol.CLASS_STATS] = ArrayRecord({
            "class.fused.count": Array(np.array([10 ** 12, 0])), "class.fused.mean": Array(np.zeros((2, 2))),
            "class.fused.var": Array(np.ones((2, 2)))})
    s.aggregate_evaluate(1, [bad, eval_reply(2, np.array([[2, 0], [0, 2]]), 1)])
    (rec,) = seen
    assert rec["target"]["clients"] == 1  # the honest reply always counts
    for error in rec.get("errors", []):
        assert error.startswith("node 1: ")
    if "source" in rec:
        assert sum(map(sum, rec["confusion"]["source"])) <= 40  # never more than the device declared
