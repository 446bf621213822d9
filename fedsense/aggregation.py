"""Robust ways to combine client updates (``fed.aggregation``), in plain numpy.

Each aggregator takes the replies' arrays (same keys and shapes, already
validated), their weights (training windows) and the settings, and returns
one set of arrays. ``mean`` is FedAvg's weighted mean; the others bound what
a minority of bad updates can do:

- ``trimmed-mean``: per coordinate, drop the ``trim_fraction`` largest and
  smallest values, average the rest (unweighted; Yin et al. 2018);
- ``median``: per coordinate median (unweighted);
- ``krum``: the update closest to its ``n - f - 2`` nearest others, with
  ``f = byzantine`` assumed attackers (Blanchard et al. 2017); with
  ``krum_select = m > 1`` the mean of the ``m`` best-scored updates
  (Multi-Krum; 0 means ``n - f``).

Integer arrays (BatchNorm's step counters) take the per-element median.

:func:`by_group` applies a rule within each group of replies (the strategy
groups by role) and combines the groups by their total weight: an unlabeled
target's adversarial-only update and a labelled source's supervised one are
different populations, and pooled, Krum picks the tight cluster of short
target updates and the model stops learning its task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedsense.protocol import DISCRIMINATORS
from fedsense.registry import Registry

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class AggregationSettings:
    trim_fraction: float = 0.2  # trimmed-mean: share cut at each end
    byzantine: int = 1  # krum: attackers assumed among the replies
    krum_select: int = 1  # krum: updates averaged (1 Krum, m > 1 Multi-Krum, 0 n - byzantine)


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
    if n == 1:
        return {k: v.copy() for k, v in replies[0].items()}
    keys = [k for k, v in replies[0].items() if np.issubdtype(v.dtype, np.floating)]
    flat = np.stack([np.concatenate([r[k].astype(np.float64).ravel() for k in keys]) for r in replies])
    squares = (flat**2).sum(axis=1)
    distances = np.maximum(squares[:, None] + squares[None, :] - 2.0 * flat @ flat.T, 0.0)  # (n, n)
    neighbours = max(1, n - settings.byzantine - 2)
    scores = [np.sort(np.delete(distances[i], i))[:neighbours].sum() for i in range(n)]
    select = settings.krum_select or max(1, n - settings.byzantine)
    chosen = np.argsort(scores, kind="stable")[: min(select, n)]
    return _per_key([replies[i] for i in chosen], lambda x: x.mean(axis=0))


def by_group(
    name: str,
    replies: Sequence[Arrays],
    weights: Sequence[float],
    groups: Sequence[str],
    settings: AggregationSettings,
) -> Arrays:
    """Rule ``name`` within each group of replies, the groups' results
    averaged by the groups' total weights. Krum's assumed attackers are
    capped per group so that ``n > 2 f + 2`` holds where it can."""
    rule = AGGREGATORS[name]
    parts, totals = [], []
    for group in sorted(set(groups)):
        members = [i for i, g in enumerate(groups) if g == group]
        local = settings
        if name == "krum":
            local = AggregationSettings(settings.trim_fraction, min(settings.byzantine, max(0, (len(members) - 3) // 2)),
                                        settings.krum_select)
        parts.append(rule([replies[i] for i in members], [weights[i] for i in members], local))
        totals.append(float(sum(weights[i] for i in members)))
    if len(parts) == 1:
        return parts[0]
    return weighted_mean(parts, totals, settings)


def branch_of(key: str, modalities: Sequence[str]) -> str | None:
    """The modality whose branch array ``key`` belongs to (its encoder or its
    discriminator), or None for the parts every device trains (fusion,
    classifier, the fused discriminator)."""
    for m in modalities:
        if key.startswith((f"encoders.{m}.", f"{DISCRIMINATORS}{m}.")):
            return m
    return None


def modality_mean(
    replies: Sequence[Arrays], windows: Sequence[dict[str, float]], current: Mapping[str, np.ndarray],
    modalities: Sequence[str],
    weights: Sequence[float] | None = None,
) -> Arrays:
    """Each modality's branch arrays averaged over the replies of devices that
    have that modality, by their windows with it (``weights[i]``, when given,
    replaces a reply's windows but still counts only if it has the modality);
    a branch nobody had this round keeps ``current``. Only branch keys are
    returned: the rest is the caller's ordinary average."""
    out: Arrays = {}
    for key in replies[0]:
        m = branch_of(key, modalities)
        if m is None:
            continue
        w = [(weights[i] if weights is not None else windows[i][m]) if windows[i][m] > 0 else 0.0
             for i in range(len(replies))]
        total = sum(w)
        if total <= 0:
            out[key] = current[key]
            continue
        if not np.issubdtype(replies[0][key].dtype, np.floating):  # BatchNorm's step counter
            out[key] = np.median(np.stack([r[key] for r, wi in zip(replies, w) if wi > 0]), axis=0).astype(
                replies[0][key].dtype)
            continue
        out[key] = sum(r[key].astype(np.float64) * (wi / total) for r, wi in zip(replies, w) if wi > 0).astype(
            replies[0][key].dtype)
    return out
