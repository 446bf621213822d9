"""Robust aggregation: what a minority of bad updates can and cannot do."""

from __future__ import annotations

import numpy as np
import pytest

from fedsense.aggregation import AGGREGATORS, AggregationSettings, by_group


def _replies(values, steps=(3, 3, 3, 3, 100)):
    return [{"w": np.array(v, np.float32), "n": np.array(s, np.int64)} for v, s in zip(values, steps)]


HONEST = [[1.0, 2.0], [1.1, 2.1], [0.9, 1.9], [1.0, 2.0]]
ATTACK = [-50.0, -100.0]  # a sign-flipped, scaled update


def test_mean_is_the_weighted_average():
    out = AGGREGATORS["mean"](_replies([[0.0, 0.0], [3.0, 6.0]], steps=(1, 1)), [1, 2], AggregationSettings())
    np.testing.assert_allclose(out["w"], [2.0, 4.0])
    assert out["w"].dtype == np.float32


@pytest.mark.parametrize("name", ["trimmed-mean", "median", "krum"])
def test_one_attacker_in_five_moves_robust_aggregates_little_and_the_mean_a_lot(name):
    replies = _replies([*HONEST, ATTACK])
    weights = [1.0] * 5
    robust = AGGREGATORS[name](replies, weights, AggregationSettings(trim_fraction=0.2, byzantine=1))["w"]
    mean = AGGREGATORS["mean"](replies, weights, AggregationSettings())["w"]
    assert np.abs(robust - np.array([1.0, 2.0])).max() < 0.15
    assert np.abs(mean - np.array([1.0, 2.0])).max() > 10
    assert robust.dtype == np.float32


def test_integer_arrays_take_the_median_and_keep_their_dtype():
    out = AGGREGATORS["trimmed-mean"](_replies([*HONEST, ATTACK]), [1.0] * 5, AggregationSettings())
    assert out["n"].dtype == np.int64 and int(out["n"]) == 3


def test_krum_returns_one_clients_update_and_trimming_never_empties():
    replies = _replies([*HONEST, ATTACK])
    chosen = AGGREGATORS["krum"](replies, [1.0] * 5, AggregationSettings(byzantine=1))
    assert any(np.array_equal(chosen["w"], r["w"]) for r in replies[:4])
    two = _replies([[1.0, 1.0], [3.0, 3.0]], steps=(1, 1))
    np.testing.assert_allclose(AGGREGATORS["trimmed-mean"](two, [1, 1], AggregationSettings(0.49))["w"], [2.0, 2.0])


def test_an_unknown_aggregation_lists_the_valid_ones():
    with pytest.raises(KeyError, match="unknown fed.aggregation 'avg' .*krum, mean, median, trimmed-mean"):
        AGGREGATORS["avg"]


def test_multi_krum_averages_the_best_scored_updates():
    replies = _replies([*HONEST, ATTACK])
    out = AGGREGATORS["krum"](replies, [1.0] * 5, AggregationSettings(byzantine=1, krum_select=0))["w"]
    np.testing.assert_allclose(out, np.mean(HONEST, axis=0), rtol=1e-6)  # the four honest, not the attacker
    one = AGGREGATORS["krum"](replies, [1.0] * 5, AggregationSettings(byzantine=1))["w"]
    assert any(np.allclose(one, h) for h in HONEST)  # classic Krum: one honest update as it is


def test_robust_rules_work_within_each_role():
    """Short adversarial-only target updates form the tightest cluster: pooled
    Krum picks one of them and the task stops learning; per role it does not."""
    sources = [[1.0, 2.0], [1.2, 1.8], [0.8, 2.2], [1.1, 2.1], [-1.0, -2.0]]  # the last flipped
    targets = [[0.01, 0.0], [0.0, 0.01], [0.01, 0.01]]
    replies = _replies([*sources, *targets], steps=[3] * 8)
    weights = [1.0] * 8
    roles = ["source"] * 5 + ["target"] * 3
    settings = AggregationSettings(byzantine=1, krum_select=0)
    pooled = AGGREGATORS["krum"](replies, weights, settings)["w"]
    grouped = by_group("krum", replies, weights, roles, settings)["w"]
    honest_sources = np.mean(sources[:4], axis=0)
    assert np.linalg.norm(pooled - honest_sources) > np.linalg.norm(grouped - honest_sources)
    assert grouped[0] > 0.5 and grouped[1] > 1.0  # the task direction survives
    # the mean is linear: per role or pooled, the same weighted average
    np.testing.assert_allclose(by_group("mean", replies, [1, 2, 3, 4, 5, 6, 7, 8], roles, settings)["w"],
                               AGGREGATORS["mean"](replies, [1, 2, 3, 4, 5, 6, 7, 8], settings)["w"], rtol=1e-6)


def test_a_branch_is_averaged_over_the_devices_that_have_its_modality_only():
    from fedsense.aggregation import branch_of, modality_mean

    assert branch_of("encoders.gyro.features.0.weight", ["acc", "gyro"]) == "gyro"
    assert branch_of("discriminators.acc.net.0.weight", ["acc", "gyro"]) == "acc"
    assert branch_of("classifier.1.weight", ["acc", "gyro"]) is None
    assert branch_of("discriminators.fused.net.0.weight", ["acc", "gyro"]) is None
    current = {"encoders.gyro.w": np.full(2, 9.0, np.float32), "encoders.acc.w": np.zeros(2, np.float32),
               "classifier.w": np.zeros(2, np.float32)}
    replies = [{"encoders.gyro.w": np.full(2, v, np.float32), "encoders.acc.w": np.full(2, v, np.float32),
                "classifier.w": np.full(2, v, np.float32)} for v in (1.0, 3.0, 100.0)]
    windows = [{"acc": 10, "gyro": 10}, {"acc": 10, "gyro": 30}, {"acc": 40, "gyro": 0}]  # the third lacks gyro
    out = modality_mean(replies, windows, current, ["acc", "gyro"])
    assert set(out) == {"encoders.gyro.w", "encoders.acc.w"}  # the fused parts are the caller's average
    np.testing.assert_allclose(out["encoders.gyro.w"], (1 * 10 + 3 * 30) / 40)  # 100 never enters
    np.testing.assert_allclose(out["encoders.acc.w"], (1 * 10 + 3 * 10 + 100 * 40) / 60)
    nobody = modality_mean(replies, [{"acc": 1, "gyro": 0}] * 3, current, ["acc", "gyro"])
    np.testing.assert_array_equal(nobody["encoders.gyro.w"], current["encoders.gyro.w"])  # kept, not zeroed
