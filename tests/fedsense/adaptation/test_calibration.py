"""Device-local calibration: the module, the sources' raw statistics, and
the likelihood fit that recovers a turned, mirrored or rescaled sensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsense.adaptation.calibration import (
    Calibration,
    energy_scale,
    fit_candidates,
    informative,
    polar,
    pool_raw,
    raw_stats,
    signed_permutations,
)
from fedsense.data.shifts import rotation_matrix

# Gravity directions of four postures (as an accelerometer at the hip sees
# them: upright, two tilts, lying), in g.
POSTURES = np.array([[1.0, -0.17, -0.02], [0.95, 0.16, 0.15], [0.9, -0.3, -0.2], [0.09, 0.66, 0.57]])


def windows(n_per_class: int, seed: int, transform: np.ndarray = np.eye(3), offset: float = 0.0):
    """Windows ``(N, 3, 32)`` of the postures with motion noise, and their labels."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(POSTURES)), n_per_class)
    g = POSTURES[y] + rng.normal(0, 0.04, (y.size, 3))  # the posture varies a little per window
    x = g[:, :, None] + rng.normal(0, 0.1, (y.size, 3, 32))  # motion within the window
    x = np.einsum("ij,njt->nit", transform, x) + offset
    return x.astype(np.float32), y


def test_calibration_starts_as_the_identity_and_never_learns_from_a_task_loss():
    cal = Calibration(["acc"])
    x = {"acc": torch.randn(4, 3, 8), "audio": torch.randn(4, 1, 8)}
    out = cal(x)
    assert torch.equal(out["acc"], x["acc"]) and out["audio"] is x["audio"] and cal.is_identity()
    assert not any(p.requires_grad for p in cal.parameters())  # only self-training unfreezes it


def test_calibration_applies_the_map_it_was_given():
    cal = Calibration(["acc"])
    a, b = rotation_matrix([0, 0, 30]) * 1.2, np.array([0.1, 0.0, -0.2])
    cal.set_maps({"acc": (a, b)})
    x = torch.randn(2, 3, 5)
    expected = torch.einsum("ij,njt->nit", torch.as_tensor(a, dtype=torch.float32), x) + torch.tensor(b, dtype=torch.float32)[None, :, None]
    torch.testing.assert_close(cal({"acc": x})["acc"], expected)
    np.testing.assert_allclose(cal.maps()["acc"][0], a, atol=1e-6)


def test_pooled_raw_statistics_are_those_of_the_union():
    x1, y1 = windows(40, 1)
    x2, y2 = windows(60, 2)
    pooled = pool_raw([raw_stats(x1, y1, 4, 2), raw_stats(x2, y2, 4, 2)])
    whole = raw_stats(np.concatenate([x1, x2]), np.concatenate([y1, y2]), 4, 2)
    np.testing.assert_array_equal(pooled.count, whole.count)
    for a, b in ((pooled.mean, whole.mean), (pooled.cov, whole.cov), (pooled.energy, whole.energy)):
        np.testing.assert_allclose(a, b, atol=1e-10)


def test_a_class_below_the_minimum_count_is_not_reported():
    x, y = windows(10, 0)
    s = raw_stats(x, y, 5, 11)  # 10 windows per class, class 4 absent
    assert s.count.tolist() == [0, 0, 0, 0, 0] and not s.mean.any() and not s.cov.any()
    assert raw_stats(x, y, 5, 10).count.tolist() == [10, 10, 10, 10, 0]


@pytest.mark.parametrize("name,transform", [
    ("turned 45 degrees about z, 15 % gain", rotation_matrix([0, 0, 45]) * 1.15),
    ("mirrored y", np.diag([1.0, -1.0, 1.0])),
    ("turned 120 degrees about x", rotation_matrix([120, 0, 0])),
    ("upside down", rotation_matrix([0, 180, 0])),
])
def test_the_best_fit_undoes_how_the_device_is_worn(name, transform):
    """Sources' class statistics of their window means; a target's windows
    worn otherwise; the most likely map takes them back (labels unused)."""
    xs, ys = windows(80, 0)
    reference = raw_stats(xs, ys, 4, 10)
    xt, _ = windows(50, 1, transform)
    fits = fit_candidates(xt, reference)
    assert fits and fits == sorted(fits, key=lambda f: f.nll)
    np.testing.assert_allclose(fits[0].matrix, np.linalg.inv(transform), atol=0.1)
    assert np.abs(fits[0].offset).max() < 0.1


def test_no_fit_without_a_direction_in_the_window_means():
    """A gyroscope averages to about zero: its window means say nothing."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.5, (200, 3, 32)).astype(np.float32)
    y = np.repeat(np.arange(4), 50)
    reference = raw_stats(x, y, 4, 10)
    assert not informative(reference) and fit_candidates(x, reference) == []
    assert informative(raw_stats(*windows(50, 0), 4, 10))


def test_energy_scale_matches_a_sensor_gain():
    xs, ys = windows(80, 0)
    xt, _ = windows(80, 0, np.eye(3) * 0.8)
    assert energy_scale(xt, raw_stats(xs, ys, 4, 10)) == pytest.approx(1.25, rel=1e-6)


def test_signed_permutations_are_the_48_orthogonal_axis_maps():
    perms = signed_permutations()
    assert len(perms) == 48 and len({p.tobytes() for p in perms}) == 48
    assert all(np.allclose(p @ p.T, np.eye(3)) for p in perms)
    assert sum(np.linalg.det(p) < 0 for p in perms) == 24  # reflections included
    q = rotation_matrix([10, 20, 30])
    np.testing.assert_allclose(polar(2.5 * q), q, atol=1e-12)
