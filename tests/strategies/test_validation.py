"""Updates are checked before averaging: malformed or out-of-scale ones are refused."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedsense import protocol
from strategies.intake import train_updates
from strategies.validation import direction_cosines, malformed, screen
from tests.strategies.test_fedsense_strategy import make, train_reply

REF = {"w": np.zeros(4, np.float32), "bn.num_batches_tracked": np.array(3, np.int64)}


FULL = {protocol.NUM_EXAMPLES: 10, protocol.TASK_WINDOWS: 10, protocol.LOSS_TASK: 0.5, protocol.IS_TARGET: 0}


def _reply(w, steps=4, **metrics):
    arrays = {"w": np.asarray(w, np.float32), "bn.num_batches_tracked": np.array(steps, np.int64)}
    return arrays, {**FULL, **metrics}


def test_well_formed_replies_pass():
    replies = [_reply([0.1, 0, 0, 0]), _reply([0, 0.2, 0, 0]), _reply([0, 0, -0.1, 0])]
    assert screen(replies, REF, max_norm_ratio=10) == [None, None, None]


GOOD = _reply([0] * 4)[0]


@pytest.mark.parametrize("arrays, metrics, named", [
    ({"w": np.zeros(4, np.float32)}, FULL, "missing ['bn.num_batches_tracked']"),
    ({**GOOD, "extra": np.zeros(1, np.float32)}, FULL, "unexpected ['extra']"),
    ({**GOOD, "w": np.zeros(5, np.float32)}, FULL, "w: shape (5,), expected (4,)"),
    ({**GOOD, "w": np.zeros(4, np.float64)}, FULL, "w: dtype float64, expected float32"),
    ({**GOOD, "w": np.array([0, np.nan, 0, 0], np.float32)}, FULL, "w: NaN or infinite"),
    ({**GOOD, "w": np.array([0, np.inf, 0, 0], np.float32)}, FULL, "w: NaN or infinite"),
    (GOOD, {**FULL, protocol.NUM_EXAMPLES: float("nan")}, "num-examples nan is missing or not a finite number"),
    (GOOD, {**FULL, protocol.NUM_EXAMPLES: -3}, "num-examples -3 is not a valid value"),
    (GOOD, {}, "num-examples None is missing or not a finite number"),
    (GOOD, {**FULL, protocol.IS_TARGET: float("nan")}, "is-target nan"),
    (GOOD, {**FULL, protocol.IS_TARGET: 2}, "is-target 2"),
    (GOOD, {**FULL, protocol.LOSS_TASK: float("inf")}, "loss-task inf"),
    (GOOD, {**FULL, protocol.TASK_WINDOWS: -1}, "task-windows -1"),
    (GOOD, {k: v for k, v in FULL.items() if k != protocol.TASK_WINDOWS}, "task-windows None is missing"),
    (GOOD, {**FULL, protocol.LOSS_TASK: [1.0, 2.0]}, "loss-task [1.0, 2.0] is missing or not a finite number"),
])
def test_malformed_replies_are_named(arrays, metrics, named):
    reason = malformed(arrays, REF, metrics)
    assert reason is not None and named in reason
    assert malformed(GOOD, REF, {**FULL, protocol.IS_TARGET: 1}) is None


def test_keys_the_aggregation_reads_are_required():
    assert "windows.gyro None is missing" in malformed(GOOD, REF, FULL, required=["windows.gyro"])
    assert malformed(GOOD, REF, {**FULL, "windows.gyro": 3}, required=["windows.gyro"]) is None


def test_an_update_far_longer_than_the_rounds_median_is_refused():
    honest = [_reply([0.1, 0, 0, 0]), _reply([0, 0.12, 0, 0]), _reply([0, 0, 0.09, 0])]
    attacker = _reply([50.0, 0, 0, 0])
    verdicts = screen([*honest, attacker], REF, max_norm_ratio=10)
    assert verdicts[:3] == [None, None, None]
    assert verdicts[3] is not None and "over 10 x the round's median" in verdicts[3]
    assert screen([*honest, attacker], REF, max_norm_ratio=0)[3] is None  # the bound can be switched off
    # each role against its own median: short target updates do not make sources outliers
    targets = [_reply([0.001, 0, 0, 0]), _reply([0, 0.001, 0, 0]), _reply([0, 0, 0.002, 0])] * 2
    roles = ["source"] * 3 + ["target"] * 6
    assert screen([*honest, *targets], REF, 10, groups=roles) == [None] * 9
    assert screen([*honest, *targets], REF, 10)[:3] != [None] * 3  # one pooled median would refuse sources
    # unchanged replies (norm 0) neither fail nor drag the median to zero
    still = [_reply([0, 0, 0, 0])] * 3
    assert screen([*still, *honest], REF, max_norm_ratio=10) == [None] * 6


def test_the_strategy_leaves_refused_updates_out_and_counts_them():
    seen = []
    s = make(num_classes=2, min_replies=2, on_round_end=lambda r, rec, arrays: seen.append(rec))
    s.stats.sampled = [1, 2, 3, 4, 5]
    s.current_arrays = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    honest = [train_reply(1, np.array([1.0, 0.0]), n=10), train_reply(2, np.array([0.0, 1.0]), n=10),
              train_reply(3, np.array([1.0, 1.0]), n=10)]
    poisoned = [train_reply(4, np.array([np.nan, 0.0]), n=10), train_reply(5, np.array([1e6, 1e6]), n=10)]
    arrays, _ = s.aggregate_train(1, [*honest, *poisoned])
    # the average of the honest three only
    np.testing.assert_allclose(arrays["w"].numpy(), [2 / 3, 2 / 3], rtol=1e-6)
    s.aggregate_evaluate(1, [])
    (rec,) = seen
    assert rec["clients"]["rejected"] == 2 and rec["nodes"]["replied"] == [1, 2, 3]
    assert [r.split(":")[0] for r in rec["rejected"]] == ["node 4", "node 5"]
    assert "NaN" in rec["rejected"][0] and "median" in rec["rejected"][1]


def test_a_round_with_too_few_acceptable_updates_fails_clearly():
    from strategies.fedsense_strategy import RoundFailed

    s = make(num_classes=2, min_replies=2)
    s.current_arrays = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    bad = train_reply(2, np.array([np.inf, 0.0]), n=10)
    with pytest.raises(RoundFailed, match=r"1 of 3 clients replied usefully.*Refused: \['node 2: w: NaN"):
        s.aggregate_train(1, [train_reply(1, np.array([1.0, 0.0]), n=10), bad])


def test_the_strategy_combines_with_the_configured_robust_aggregation():
    honest = [train_reply(i, np.array([1.0, 2.0]) + 0.01 * i, n=10) for i in (1, 2, 3, 4)]
    attacker = train_reply(5, np.array([-40.0, -80.0]), n=10)  # within no norm bound: the bound is off
    results = {}
    for name in ("mean", "median"):
        s = make(num_classes=2, min_replies=2, aggregation=name, max_update_norm_ratio=0)
        s.current_arrays = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
        arrays, _ = s.aggregate_train(1, [*honest, attacker])
        results[name] = arrays["w"].numpy()
    np.testing.assert_allclose(results["median"], [1.02, 2.02], atol=1e-5)  # middle of 1.01..1.04 and -40
    assert results["mean"][0] < -5  # what the robust option prevents


@pytest.mark.parametrize("metrics, named", [
    ({protocol.IS_TARGET: float("nan"), protocol.CONFUSION: [1, 0, 0, 1]}, "is-target nan"),
    ({protocol.CONFUSION: [1, 0, 0, 1]}, "is-target None"),
    ({protocol.IS_TARGET: 0, protocol.CONFUSION: [1, 0, 0]}, "confusion size 3, expected 4"),
    ({protocol.IS_TARGET: 0}, "confusion size no"),
    ({protocol.IS_TARGET: 0, protocol.CONFUSION: [1, -5, 0, 1]}, "not counts"),
    ({protocol.IS_TARGET: 0, protocol.CONFUSION: [1, 0.5, 0, 1]}, "not counts"),
    ({protocol.IS_TARGET: 0, protocol.CONFUSION: [1, 0, 0, 1], protocol.PARTITION: float("nan")}, "partition-id nan"),
])
def test_malformed_evaluations_are_named(metrics, named):
    from strategies.validation import malformed_evaluation

    reason = malformed_evaluation(metrics, 2)
    assert reason is not None and named in reason
    good = {protocol.IS_TARGET: 1, protocol.CONFUSION: [3, 0, 1, 2], protocol.PARTITION: 4,
            protocol.NUM_EXAMPLES: 6, protocol.EVAL_WINDOWS: 6, protocol.EVAL_LOSS: 0.3}
    assert malformed_evaluation(good, 2) is None
    for key in (protocol.NUM_EXAMPLES, protocol.EVAL_WINDOWS, protocol.EVAL_LOSS):
        assert f"{key} None is missing" in malformed_evaluation({k: v for k, v in good.items() if k != key}, 2)
    assert "not numbers" in malformed_evaluation({**good, protocol.CONFUSION: [3, "x", 1, 2]}, 2)


def test_a_poisoned_evaluation_is_refused_not_summed():
    from tests.strategies.test_fedsense_strategy import eval_reply

    seen = []
    s = make(num_classes=2, on_round_end=lambda r, rec, arrays: seen.append(rec))
    s.current_arrays = ArrayRecord({"w": Array(np.zeros(1, np.float32))})
    poisoned = eval_reply(2, np.array([[5, 0], [0, 5]]), 0)
    poisoned.content[protocol.METRICS][protocol.CONFUSION] = [-100, 0, 0, 5]
    s.aggregate_evaluate(1, [eval_reply(1, np.array([[2, 1], [0, 3]]), 0), poisoned])
    (rec,) = seen
    assert rec["confusion"]["source"] == [[2, 1], [0, 3]] and rec["source"]["clients"] == 1
    assert rec["errors"] == ["node 2: confusion holds values that are not counts"]


def _noniid(rng, n_honest=8, n_flipped=2, dim=20_000, common=0.2):
    """Non-IID devices: a shared direction buried under large device-specific noise."""
    shared = rng.normal(size=dim) * common
    honest = [shared + rng.normal(size=dim) for _ in range(n_honest)]
    flipped = [-(shared + rng.normal(size=dim)) for _ in range(n_flipped)]
    return [{"w": u.astype(np.float32)} for u in honest + flipped]


def test_a_sign_flipped_update_points_away_from_the_others():
    rng = np.random.default_rng(0)
    replies = _noniid(rng)
    cosines = direction_cosines(replies, {"w": np.zeros(20_000, np.float32)}, ["source"] * 10)
    assert all(c > 0.05 for c in cosines[:8]) and all(c < -0.05 for c in cosines[8:])
    # lengths look honest: the norm bound lets them through
    assert screen([(r, FULL) for r in replies], {"w": np.zeros(20_000, np.float32)}, 10) == [None] * 10
    # too few to compare, or no update: no cosine
    assert direction_cosines(replies[:2], {"w": np.zeros(20_000, np.float32)}, ["source"] * 2) == [None, None]


def test_the_strategy_refuses_clients_whose_updates_point_away_on_average():
    """An attacker is negative round after round; an honest client that is
    once slightly negative (a converged round's noise) keeps its place."""
    rng = np.random.default_rng(1)
    s = make(min_replies=1, min_update_cosine=0.0)
    s.current_arrays = ArrayRecord({"w": Array(np.zeros(20_000, np.float32))})
    for server_round, common in ((1, 0.2), (2, 0.2), (3, 0.0)):  # round 3: no shared direction left
        replies = [train_reply(node, r["w"], n=10) for node, r in enumerate(_noniid(rng, common=common), start=1)]
        s.stats.rejected = []
        kept = train_updates(server_round, replies, {"w": np.zeros(20_000, np.float32)}, s.screening, s.stats,
                             s.reputation)
        assert [u.node for u in kept] == list(range(1, 9)), server_round
        assert all("points away from the other source updates" in r for r in s.stats.rejected)
    assert s.reputation["9"][1] == 3 and s.reputation["9"][0] < 0
    state, _ = s.snapshot()
    assert state["reputation"]["9"] == list(s.reputation["9"])
