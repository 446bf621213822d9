"""The new global arrays from one round's updates: one pure function.

A round's train replies are decoded and checked once, on the server, into
:class:`Update` objects (``strategies.intake``); :func:`combine` takes them,
the round's :class:`Plan` (which rule, which keys are averaged over whom,
how much noise) and the arrays the round started from, and returns the
arrays every device gets next. Nothing here knows Flower.

In order:

1. the rule over the updates that trained on windows (weight > 0):
   ``mean`` is FedAvg's weighted mean over all of them, the robust rules of
   :mod:`fedsense.aggregation` run within each role (:func:`by_group`);
2. shared discriminators (federated alignment): averaged with the method's
   balanced domain weights instead;
3. modality branches (``mean`` only): each averaged over the devices that
   have that modality, by their windows with it, once some device lacks it;
4. the method's own replacements (a discriminator reset);
5. Gaussian noise (``privacy.dp``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedsense.aggregation import AggregationSettings, by_group, modality_mean
from fedsense.methods.base import Reply
from fedsense.protocol import is_discriminator
from fedsense.privacy import add_noise

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Update(Reply):
    """One device's train reply, decoded and validated once.

    Beside what the method's server state reads (:class:`Reply`): the
    trained arrays, the windows it trained on (its weight), its windows per
    modality and its name in metrics.
    """

    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    weight: float = 0.0
    modality_windows: Mapping[str, float] = field(default_factory=dict)
    client: str = ""

    @property
    def role(self) -> str:
        return "target" if self.target else "source"


@dataclass(frozen=True)
class Plan:
    """How a round's updates become the new global arrays."""

    rule: str = "mean"  # a name of fedsense.aggregation.AGGREGATORS
    settings: AggregationSettings = AggregationSettings()
    modality_aware: bool = True  # with "mean": branches over the devices that have their modality
    discriminator_weights: Sequence[float] | None = None  # per update: shared discriminators (None: none)
    adjust: Callable[[Arrays], Mapping[str, np.ndarray]] | None = None  # the method's replacements
    noise_std: float | None = None  # Gaussian noise on every float entry (None: privacy off)


def fedavg(arrays: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]) -> Arrays:
    """FedAvg's weighted mean, summed in the replies' order and dtype as
    Flower's ``aggregate_arrayrecords`` sums it (so results match it bit for bit)."""
    total = sum(weights)
    out: Arrays = {}
    for record, w in zip(arrays, [w / total for w in weights], strict=True):
        for key, value in record.items():
            if key not in out:
                out[key] = value * w
            else:
                out[key] += value * w
    return out


def combine(updates: Sequence[Update], plan: Plan, current: Mapping[str, np.ndarray] | None,
            rng: np.random.Generator | None = None) -> Arrays | None:
    """The new global arrays (see the module's docstring), or None when no
    update trained on any window (the global model stays)."""
    weights = [u.weight for u in updates]
    if sum(weights) <= 0:
        return None
    trained = [u for u in updates if u.weight > 0]
    if plan.rule == "mean":
        arrays = fedavg([u.arrays for u in trained], [u.weight for u in trained])
    else:
        arrays = by_group(plan.rule, [dict(u.arrays) for u in trained], [u.weight for u in trained],
                          [u.role for u in trained], plan.settings)
    balanced = plan.discriminator_weights
    keys = [k for k in arrays if is_discriminator(k)]
    if balanced is not None and keys:  # federated discriminators: sources and targets weigh half each
        norm = sum(balanced) or 1.0
        for key in keys:
            arrays[key] = np.asarray(sum(u.arrays[key] * (w / norm) for u, w in zip(updates, balanced) if w > 0))
    if plan.modality_aware and plan.rule == "mean" and current is not None:
        arrays.update(branches_over_their_devices(updates, current, balanced))
    if plan.adjust is not None:
        arrays.update({k: np.asarray(v) for k, v in plan.adjust(arrays).items()})
    if plan.noise_std is not None:
        arrays = add_noise(arrays, plan.noise_std, rng if rng is not None else np.random.default_rng())
    return arrays


def branches_over_their_devices(updates: Sequence[Update], current: Mapping[str, np.ndarray],
                                balanced: Sequence[float] | None) -> Arrays:
    """Each modality branch's average over the devices that have that
    modality ({} — nothing changes, bit for bit — while every device has
    every modality in every window)."""
    modalities = sorted(updates[0].modality_windows)
    windows = [{m: float(u.modality_windows.get(m, 0.0)) for m in modalities} for u in updates]
    if all(w[m] == u.weight for u, w in zip(updates, windows) if u.weight > 0 for m in modalities):
        return {}
    trained = [i for i, u in enumerate(updates) if u.weight > 0]
    out = modality_mean([{k: v for k, v in updates[i].arrays.items() if not is_discriminator(k)} for i in trained],
                        [windows[i] for i in trained], current, modalities)
    if balanced is not None:  # federated discriminators: their balanced domain weights
        out.update(modality_mean([{k: v for k, v in u.arrays.items() if is_discriminator(k)} for u in updates],
                                 windows, current, modalities, weights=balanced))
    return out
