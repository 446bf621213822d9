"""Aggregate embedding statistics: what the statistics-reference design sends.

A client reports, per branch, the count, mean and covariance of its
embeddings over many windows (never fewer than a minimum count, optionally
with Gaussian noise). The server pools the sources' statistics into one
Gaussian reference per branch; each client's discriminator then separates
its own embeddings from samples of that reference. The same statistics give
the per-branch source/target shift that M3BAT-style branch weights follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fedsense.protocol import stats_keys


@dataclass(frozen=True)
class Stats:
    """Count, mean ``(D,)`` and population covariance ``(D, D)`` of embeddings."""

    count: int
    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def of(cls, z: np.ndarray) -> "Stats":
        """Statistics of ``z`` ``(N, D)``."""
        z = np.asarray(z, dtype=np.float64)
        mean = z.mean(axis=0)
        centred = z - mean
        return cls(int(z.shape[0]), mean, centred.T @ centred / max(z.shape[0], 1))

    @classmethod
    def empty(cls, dim: int) -> "Stats":
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))


def privatize(stats: Stats, min_count: int, noise_std: float, rng: np.random.Generator) -> Stats:
    """What may leave the device: nothing below ``min_count`` windows, and
    Gaussian noise on mean and (symmetrically) covariance when asked."""
    if stats.count < min_count:
        return Stats.empty(stats.mean.shape[0])
    if noise_std <= 0:
        return stats
    d = stats.mean.shape[0]
    noise = rng.normal(0.0, noise_std, size=(d, d))
    return Stats(
        stats.count,
        stats.mean + rng.normal(0.0, noise_std, size=d),
        stats.cov + (noise + noise.T) / 2.0,
    )


def pool(parts: list[Stats]) -> Stats | None:
    """Statistics of the union of the windows behind ``parts`` (None if empty)."""
    parts = [p for p in parts if p.count > 0]
    if not parts:
        return None
    n = sum(p.count for p in parts)
    mean = sum(p.count * p.mean for p in parts) / n
    second = sum(p.count * (p.cov + np.outer(p.mean, p.mean)) for p in parts) / n
    return Stats(n, mean, second - np.outer(mean, mean))


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of a covariance, negative eigenvalues (noise) clipped."""
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2.0)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def sample(stats: Stats, n: int, generator: torch.Generator) -> Tensor:
    """``n`` float32 samples of the Gaussian N(mean, cov)."""
    root = torch.as_tensor(_psd_sqrt(stats.cov), dtype=torch.float32)
    z = torch.randn(n, stats.mean.shape[0], generator=generator)
    return z @ root + torch.as_tensor(stats.mean, dtype=torch.float32)


def frechet_shift(source: Stats, target: Stats) -> float:
    """Fréchet distance between the two Gaussians, divided by the source's
    total variance so branches of different scale compare."""
    s_half = _psd_sqrt(source.cov)
    cross = _psd_sqrt(s_half @ target.cov @ s_half)
    dist = float(
        np.sum((source.mean - target.mean) ** 2)
        + np.trace(source.cov) + np.trace(target.cov) - 2.0 * np.trace(cross)
    )
    return max(dist, 0.0) / max(float(np.trace(source.cov)), 1e-12)


def shift_weights(shifts: dict[str, float]) -> dict[str, float]:
    """Branch weights proportional to each branch's shift, with mean 1."""
    total = sum(shifts.values())
    if total <= 0:
        return {b: 1.0 for b in shifts}
    return {b: len(shifts) * v / total for b, v in shifts.items()}


def to_wire(stats: dict[str, Stats]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per-branch statistics as float32 arrays and integer counts, keyed as in
    ``fedsense.protocol.stats_keys``."""

    arrays: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for branch, s in stats.items():
        k_mean, k_cov, k_count = stats_keys(branch)
        arrays[k_mean] = s.mean.astype(np.float32)
        arrays[k_cov] = s.cov.astype(np.float32)
        counts[k_count] = int(s.count)
    return arrays, counts


def from_wire(arrays: dict[str, np.ndarray], counts: dict[str, object]) -> dict[str, Stats]:
    """Inverse of :func:`to_wire`."""

    out: dict[str, Stats] = {}
    for key in arrays:
        if key.startswith("stats.") and key.endswith(".mean"):
            branch = key[len("stats.") : -len(".mean")]
            k_mean, k_cov, k_count = stats_keys(branch)
            out[branch] = Stats(
                int(counts.get(k_count, 0)),  # type: ignore[arg-type]
                np.asarray(arrays[k_mean], dtype=np.float64),
                np.asarray(arrays[k_cov], dtype=np.float64),
            )
    return out
