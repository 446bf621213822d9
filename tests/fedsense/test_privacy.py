"""Client-level DP pieces: clipping, noise scale, and the accountant checked
against the exact privacy curve of the Gaussian mechanism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsense.privacy import add_noise, clip_update, epsilon, largest_share, noise_std


def _exact_epsilon(mu: float, delta: float) -> float:
    """Exact epsilon of a Gaussian mechanism with sensitivity/std ``mu``
    (Balle & Wang 2018): delta(eps) = Phi(mu/2 - eps/mu) - e^eps Phi(-mu/2 - eps/mu)."""
    phi = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))  # noqa: E731
    d = lambda e: phi(mu / 2 - e / mu) - math.exp(e) * phi(-mu / 2 - e / mu)  # noqa: E731
    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if d(mid) > delta else (lo, mid)
    return hi


@pytest.mark.parametrize("z, rounds", [(1.0, 1), (1.0, 20), (0.5, 5), (2.0, 100), (5.0, 200)])
def test_epsilon_is_a_tight_upper_bound_of_the_exact_gaussian_curve(z, rounds):
    # T releases of noise multiplier z compose exactly to one of z / sqrt(T).
    exact = _exact_epsilon(math.sqrt(rounds) / z, 1e-5)
    got = epsilon(z, rounds, 1e-5)
    assert exact <= got <= 1.35 * exact + 0.05


def test_epsilon_grows_with_rounds_and_shrinks_with_noise():
    assert epsilon(1.0, 0, 1e-5) == 0.0
    assert epsilon(0.0, 3, 1e-5) == math.inf
    assert epsilon(1.0, 10, 1e-5) < epsilon(1.0, 20, 1e-5)
    assert epsilon(2.0, 10, 1e-5) < epsilon(1.0, 10, 1e-5)
    assert epsilon(1.0, 10, 1e-3) < epsilon(1.0, 10, 1e-6)
    with pytest.raises(ValueError, match="delta"):
        epsilon(1.0, 1, 0.0)


def test_clipping_bounds_the_float_update_and_leaves_counters():
    rng = np.random.default_rng(0)
    received = {"w": rng.normal(size=(4, 5)).astype(np.float32), "b": np.zeros(3, np.float32),
                "count": np.array(7, np.int64)}
    trained = {"w": received["w"] + 3.0, "b": received["b"] - 2.0, "count": np.array(9, np.int64)}
    clipped = clip_update(trained, received, 1.5)
    norm = math.sqrt(sum(float(np.sum((clipped[k].astype(np.float64) - received[k]) ** 2)) for k in ("w", "b")))
    assert norm == pytest.approx(1.5, rel=1e-5)
    assert clipped["w"].dtype == np.float32 and clipped["count"] == 9
    # direction kept: the clipped update is a positive multiple of the original
    ratio = (clipped["w"] - received["w"]) / 3.0
    assert np.allclose(ratio, ratio.flat[0]) and ratio.flat[0] > 0
    short = {"w": received["w"] + 1e-3, "b": received["b"], "count": trained["count"]}
    assert np.array_equal(clip_update(short, received, 1.5)["w"], short["w"])  # inside the bound: unchanged
    same = clip_update(received, received, 1.5)  # a device that trained nothing (Flower's clip divides by 0 here)
    assert all(np.array_equal(same[k], received[k]) for k in received)


def test_noise_is_scaled_to_the_largest_share_of_the_average():
    assert largest_share([1, 1, 1, 1]) == 0.25
    assert largest_share([3, 1]) == 0.75
    assert noise_std(1.2, 2.0, 0.25) == pytest.approx(0.6)  # Flower's z * C / n for equal weights
    with pytest.raises(ValueError):
        largest_share([0, 0])
    arrays = {"w": np.zeros((200, 200), np.float32), "n": np.array(5, np.int64)}
    noisy = add_noise(arrays, 0.3, np.random.default_rng(1))
    assert noisy["w"].dtype == np.float32 and noisy["n"] == 5
    assert float(noisy["w"].std()) == pytest.approx(0.3, rel=0.02)
