"""Robust ways to combine client updates (``fed.aggregation``), in plain numpy.

Each aggregator takes the replies' arrays (same keys and shapes, already
validated), their weights (training windows) and the settings, and returns
one set of arrays. ``mean`` is FedAvg's weighted mean; the others bound what
a minority of bad updates can do:

- ``trimmed-mean``: per coordinate, drop the ``trim_fraction`` largest and
  smallest values, average the rest (unweighted; Yin et al. 2018);
- ``median``: per coordinate median (unweighted);
- ``krum``: the one update closest to its ``n - f - 2`` nearest others, with
  ``f = byzantine`` assumed attackers (Blanchard et al. 2017).

Integer arrays (BatchNorm's step counters) take the per-element median.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedsense.registry import Registry

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class AggregationSettings:
    trim_fraction: float = 0.2  # trimmed-mean: share cut at each end
    byzantine: int = 1  # krum: attackers assumed among the replies


AGGREGATORS: Registry[Callable[[Sequence[Arrays], Sequence[float], AggregationSettings], Arrays]] = Registry(
    "fed.aggregation"
)


def _stack(replies: Sequence[Arrays], key: str) -> np.ndarray:
    return np.stack([r[key] for r in replies])  # (n, *shape)


def _per_key(replies: Sequence[Arrays], float_rule: Callable[[np.ndarray], np.ndarray]) -> Arrays:
    out = {}
    for key, first in replies[0].items():
        stacked = _stack(replies, key)
        if np.issubdtype(first.dtype, np.floating):
            out[key] = float_rule(stacked.astype(np.float64)).astype(first.dtype)
        else:
            out[key] = np.median(stacked, axis=0).round().astype(first.dtype)
    return out


@AGGREGATORS.register("mean")
def weighted_mean(replies: Sequence[Arrays], weights: Sequence[float], settings: AggregationSettings) -> Arrays:
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return _per_key(replies, lambda x: np.tensordot(w, x, axes=1))


@AGGREGATORS.register("trimmed-mean")
def trimmed_mean(replies: Sequence[Arrays], weights: Sequence[float], settings: AggregationSettings) -> Arrays:
    cut = int(settings.trim_fraction * len(replies))
    if len(replies) - 2 * cut < 1:
        cut = (len(replies) - 1) // 2
    return _per_key(replies, lambda x: np.sort(x, axis=0)[cut: len(replies) - cut].mean(axis=0))


@AGGREGATORS.register("median")
def median(replies: Sequence[Arrays], weights: Sequence[float], settings: AggregationSettings) -> Arrays:
    return _per_key(replies, lambda x: np.median(x, axis=0))


@AGGREGATORS.register("krum")
def krum(replies: Sequence[Arrays], weights: Sequence[float], settings: AggregationSettings) -> Arrays:
    n = len(replies)
    keys = [k for k, v in replies[0].items() if np.issubdtype(v.dtype, np.floating)]
    flat = np.stack([np.concatenate([r[k].astype(np.float64).ravel() for k in keys]) for r in replies])
    distances = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(axis=2)  # (n, n)
    neighbours = max(1, n - settings.byzantine - 2)
    scores = [np.sort(np.delete(distances[i], i))[:neighbours].sum() for i in range(n)]
    chosen = int(np.argmin(scores))
    return {k: v.copy() for k, v in replies[chosen].items()}
