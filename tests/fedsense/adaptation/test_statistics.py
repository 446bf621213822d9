"""Aggregate statistics: pooling, privacy floor, sampling, shift, wire format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsense.adaptation.statistics import (
    Stats, frechet_shift, from_wire, pool, privatize, sample, shift_weights, to_wire,
)


def test_pooled_statistics_equal_those_of_the_pooled_windows() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(i, 1 + i, size=(n, 3)) for i, n in enumerate((40, 7, 100))]
    pooled = pool([Stats.of(p) for p in parts])
    direct = Stats.of(np.concatenate(parts))
    assert pooled.count == 147
    np.testing.assert_allclose(pooled.mean, direct.mean)
    np.testing.assert_allclose(pooled.cov, direct.cov, atol=1e-10)


def test_clients_below_the_minimum_count_send_nothing() -> None:
    rng = np.random.default_rng(1)
    small = Stats.of(rng.normal(size=(10, 4)))
    sent = privatize(small, min_count=32, noise_std=0.0, rng=rng)
    assert sent.count == 0 and not sent.mean.any() and not sent.cov.any()
    assert pool([sent]) is None
    big = Stats.of(rng.normal(size=(50, 4)))
    assert privatize(big, 32, 0.0, rng) is big


def test_noise_perturbs_and_keeps_covariance_symmetric() -> None:
    rng = np.random.default_rng(2)
    s = Stats.of(rng.normal(size=(64, 5)))
    noisy = privatize(s, 2, 0.1, np.random.default_rng(3))
    assert not np.allclose(noisy.mean, s.mean)
    np.testing.assert_allclose(noisy.cov, noisy.cov.T)


def test_samples_follow_the_reference() -> None:
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    s = Stats(10, np.array([1.0, -2.0]), cov)
    z = sample(s, 20000, torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(z.mean(0), s.mean, atol=0.05)
    np.testing.assert_allclose(np.cov(z.T), cov, atol=0.06)


def test_shift_is_zero_for_equal_distributions_and_grows_with_distance() -> None:
    rng = np.random.default_rng(4)
    a = Stats.of(rng.normal(size=(500, 3)))
    assert frechet_shift(a, a) == pytest.approx(0.0, abs=1e-6)
    near = Stats(a.count, a.mean + 0.5, a.cov)
    far = Stats(a.count, a.mean + 2.0, a.cov)
    assert 0 < frechet_shift(a, near) < frechet_shift(a, far)


def test_shift_weights_have_mean_one_and_follow_the_shift() -> None:
    w = shift_weights({"acc": 3.0, "gyro": 1.0})
    assert w == pytest.approx({"acc": 1.5, "gyro": 0.5})
    assert shift_weights({"acc": 0.0, "gyro": 0.0}) == {"acc": 1.0, "gyro": 1.0}


def test_wire_round_trip_has_fixed_size() -> None:
    rng = np.random.default_rng(5)
    stats = {"acc": Stats.of(rng.normal(size=(40, 4))), "fused": Stats.of(rng.normal(size=(400, 8)))}
    arrays, counts = to_wire(stats)
    assert {k: a.shape for k, a in arrays.items()} == {
        "stats.acc.mean": (4,), "stats.acc.cov": (4, 4), "stats.fused.mean": (8,), "stats.fused.cov": (8, 8)
    }  # the size depends on the embedding, never on the number of windows
    back = from_wire(arrays, counts)
    assert back["fused"].count == 400
    np.testing.assert_allclose(back["acc"].cov, stats["acc"].cov, rtol=1e-6)


def test_frechet_matches_scipy_with_different_covariances() -> None:
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(6)
    a = Stats.of(rng.normal(size=(300, 4)) @ rng.normal(size=(4, 4)))
    b = Stats.of(rng.normal(size=(300, 4)) @ rng.normal(size=(4, 4)) + 1.0)
    cross = np.real(sqrtm(a.cov @ b.cov))
    expected = np.sum((a.mean - b.mean) ** 2) + np.trace(a.cov + b.cov - 2 * cross)
    assert frechet_shift(a, b) == pytest.approx(expected / np.trace(a.cov), rel=1e-6)
