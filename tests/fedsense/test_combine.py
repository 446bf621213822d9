"""The new global arrays from a round's updates: fedsense.combine."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedsense.combine import Plan, Update, combine, fedavg


def update(node: int, weight: float, arrays: dict, target: bool = False, windows: dict | None = None) -> Update:
    return Update(node=node, target=target, metrics={}, records={}, arrays=arrays, weight=weight,
                  modality_windows=windows if windows is not None else {})


def test_the_mean_is_flowers_fedavg_bit_for_bit():
    rng = np.random.default_rng(0)
    replies = [{"w": rng.normal(size=(7, 5)).astype(np.float32), "n": np.array(3 + i, np.int64)} for i in range(5)]
    weights = [13, 7, 101, 1, 40]
    theirs = aggregate_arrayrecords(
        [RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in r.items()}),
                     "metrics": MetricRecord({"num-examples": w})}) for r, w in zip(replies, weights)],
        "num-examples")
    ours = fedavg(replies, [float(w) for w in weights])
    for key in ours:
        assert ours[key].dtype == theirs[key].numpy().dtype
        assert ours[key].tobytes() == theirs[key].numpy().tobytes()


def test_updates_without_windows_are_left_out_and_none_when_nobody_trained():
    current = {"w": np.zeros(2, np.float32)}
    ups = [update(1, 2.0, {"w": np.ones(2, np.float32)}), update(2, 0.0, {"w": np.full(2, 9.0, np.float32)})]
    np.testing.assert_array_equal(combine(ups, Plan(), current)["w"], np.ones(2, np.float32))
    assert combine([update(1, 0.0, {"w": np.ones(2, np.float32)})], Plan(), current) is None


def test_robust_rules_run_within_each_role():
    arrays = [np.full(1, v, np.float32) for v in (1.0, 1.1, 0.9, 100.0, 5.0)]
    ups = [update(i, 1.0, {"w": a}, target=(i == 4)) for i, a in enumerate(arrays)]
    out = combine(ups, Plan(rule="median"), {"w": np.zeros(1, np.float32)})
    # sources' median 1.05 (four of them), the target's 5.0, weighted by the roles' windows 4 : 1
    assert out["w"][0] == pytest.approx((4 * 1.05 + 5.0) / 5, rel=1e-6)


def test_shared_discriminators_take_their_balanced_weights():
    ups = [update(1, 3.0, {"enc": np.ones(1, np.float32), "discriminators.acc.w": np.zeros(1, np.float32)}),
           update(2, 1.0, {"enc": np.full(1, 5.0, np.float32), "discriminators.acc.w": np.full(1, 4.0, np.float32)},
                  target=True)]
    out = combine(ups, Plan(discriminator_weights=[0.5, 0.5]), None)
    assert out["enc"][0] == pytest.approx(2.0)  # windows 3 : 1
    assert out["discriminators.acc.w"][0] == pytest.approx(2.0)  # half and half


def test_a_branch_is_averaged_over_the_devices_that_have_its_modality():
    current = {"encoders.gyro.w": np.full(1, -1.0, np.float32), "head.w": np.zeros(1, np.float32)}
    ups = [update(1, 10.0, {"encoders.gyro.w": np.full(1, 2.0, np.float32), "head.w": np.ones(1, np.float32)},
                  windows={"gyro": 10.0}),
           update(2, 10.0, {"encoders.gyro.w": np.full(1, 100.0, np.float32), "head.w": np.full(1, 3.0, np.float32)},
                  windows={"gyro": 0.0})]  # no gyroscope: its untouched gyro branch does not count
    out = combine(ups, Plan(), current)
    assert out["encoders.gyro.w"][0] == pytest.approx(2.0) and out["head.w"][0] == pytest.approx(2.0)
    plain = combine(ups, Plan(modality_aware=False), current)
    assert plain["encoders.gyro.w"][0] == pytest.approx(51.0)


def test_the_methods_replacements_then_the_noise_come_last():
    ups = [update(1, 1.0, {"w": np.zeros(1000, np.float32), "d": np.zeros(1, np.float32)})]
    out = combine(ups, Plan(adjust=lambda arrays: {"d": np.full(1, 7.0, np.float32)}, noise_std=1.0),
                  None, np.random.default_rng(0))
    assert out["w"].dtype == np.float32 and 0.9 < float(out["w"].std()) < 1.1
    assert out["d"][0] != 7.0  # replaced, then noised like every other float entry
    quiet = combine(ups, Plan(adjust=lambda arrays: {"d": np.full(1, 7.0, np.float32)}), None)
    assert quiet["d"][0] == 7.0 and not quiet["w"].any()
