"""Client-level differential privacy of the averaged model update.

Devices clip their update (trained minus received float arrays) to an L2
norm ``C`` (Flower's fixed clipping, on the device); the server averages with
coefficients ``a_i`` (summing to 1) and adds Gaussian noise of standard
deviation ``z * C * max_i a_i``: one device changes the average by at most
``max_i a_i * C``, so ``z`` is the noise multiplier of a Gaussian mechanism
with that sensitivity. With equal weights this is Flower's
``z * C / num_clients``; window-weighted averages of unequal devices get
more noise, not a weaker guarantee.

The accountant composes one such release per round with Rényi DP
(``alpha / (2 z^2)`` per release, Mironov 2017) and converts to
``(epsilon, delta)`` with the bound of Canonne, Kamath and Steinke (2020).
No amplification by sampling is claimed (fedsense samples without the
Poisson sampling that would justify it), so the epsilon is an upper bound
for any ``fed.fraction_train``. Pure numpy; nothing here imports Flower.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

# Rényi orders searched for the tightest conversion (as in common accountants).
ORDERS = np.concatenate([np.linspace(1.01, 10.0, 400), np.linspace(10.5, 256.0, 500), [512.0, 1024.0]])


def largest_share(weights: Sequence[float]) -> float:
    """The largest coefficient ``w_i / sum(w)`` of an average weighted by ``weights``."""
    total = float(sum(weights))
    if total <= 0 or min(weights) < 0:
        raise ValueError("largest_share: weights must be non-negative and not all zero")
    return max(weights) / total


def noise_std(noise_multiplier: float, clipping_norm: float, max_share: float) -> float:
    """Standard deviation of the noise on an average in which no device's
    coefficient exceeds ``max_share``."""
    return noise_multiplier * clipping_norm * max_share


def epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """Epsilon after ``releases`` Gaussian releases of noise multiplier ``z``
    (``inf`` without noise, 0 before the first release)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if releases <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    a = ORDERS
    rdp = releases * a / (2.0 * noise_multiplier**2)
    eps = rdp + np.log1p(-1.0 / a) - (math.log(delta) + np.log(a)) / (a - 1.0)
    return float(max(np.min(eps), 0.0))


def clip_update(
    trained: Mapping[str, np.ndarray], received: Mapping[str, np.ndarray], clipping_norm: float
) -> dict[str, np.ndarray]:
    """``trained`` with its float update scaled to an L2 norm of at most
    ``clipping_norm`` (integer counters pass unchanged).

    Flower's FlatClip rule (``flwr.supercore.differential_privacy.
    compute_clip_model_update``), written here because Flower's divides by
    the norm and fails on an update of zero, which an unlabeled device that
    trained nothing sends."""
    floats = [k for k, v in trained.items() if np.issubdtype(np.asarray(v).dtype, np.floating)]
    deltas = {k: np.asarray(trained[k], np.float64) - np.asarray(received[k], np.float64) for k in floats}
    norm = math.sqrt(sum(float(np.sum(d * d)) for d in deltas.values()))
    scale = min(1.0, clipping_norm / norm) if norm > 0 else 1.0
    out = dict(trained)
    for k in floats:
        dtype = np.asarray(trained[k]).dtype
        out[k] = (np.asarray(received[k], np.float64) + scale * deltas[k]).astype(dtype)
    return out


def add_noise(arrays: Mapping[str, np.ndarray], std: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``arrays`` plus N(0, std^2) on every float entry (integer counters unchanged)."""
    out = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        if np.issubdtype(v.dtype, np.floating) and std > 0:
            out[k] = (v + rng.normal(0.0, std, size=v.shape)).astype(v.dtype)
        else:
            out[k] = v
    return out
