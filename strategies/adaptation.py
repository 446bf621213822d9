"""Server-side adaptation state: the reversal schedule, the pooled statistics
reference and the per-branch weights. Pure bookkeeping over numbers the
clients report; the FedSenseStrategy calls it from its hooks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedsense import protocol
from fedsense.adaptation import FUSED, Method, needs_statistics
from fedsense.adaptation.schedules import reversal_coefficient
from fedsense.adaptation.statistics import Stats, frechet_shift, pool, shift_weights, to_wire
from fedsense.config import AdaptConfig


@dataclass
class AdaptationState:
    """What the server knows about adaptation between rounds."""

    adapt: AdaptConfig
    method: Method
    branches: list[str]  # discriminator branch names, e.g. ["acc", "gyro", "fused"]
    total_rounds: int
    reference: dict[str, Stats] = field(default_factory=dict)  # pooled source statistics
    target: dict[str, Stats] = field(default_factory=dict)  # pooled target statistics

    @property
    def collects_statistics(self) -> bool:
        return needs_statistics(self.method, self.adapt.alignment, self.adapt.branch_weights)

    def shifts(self) -> dict[str, float]:
        """Per-branch source/target shift (normalised Fréchet distance)."""
        return {
            b: frechet_shift(self.reference[b], self.target[b])
            for b in self.reference
            if b in self.target
        }

    def weights(self) -> dict[str, float]:
        """Branch loss weights: fixed ones from config, times (``shift``) each
        modality branch's share of the measured shift."""
        fixed = {b: float(self.adapt.weights.get(b, 1.0)) for b in self.branches}
        if self.adapt.branch_weights != "shift":
            return fixed
        shifts = self.shifts()
        modal = [b for b in self.branches if b != FUSED]
        if not all(b in shifts for b in modal):
            return fixed  # first round: nothing measured yet
        follow = shift_weights({b: shifts[b] for b in modal})
        return {b: fixed[b] * follow.get(b, 1.0) for b in self.branches}

    def discriminator_weights(self, weights: list[float], is_target: list[bool]) -> list[float]:
        """Reply weights for discriminator numbers (and federated discriminators):
        domains balanced; under a statistics reference only targets take
        adversarial steps, so only they count."""
        if self.adapt.alignment == "statistics":
            return [w if t else 0.0 for w, t in zip(weights, is_target)]
        return domain_balanced(weights, is_target)

    def round_config(self, server_round: int) -> dict[str, float | int]:
        """ConfigRecord entries of a training round (empty for non-adversarial methods)."""
        if not self.branches:
            return {}
        out: dict[str, float | int] = {
            protocol.CFG_COEFF: reversal_coefficient(server_round, self.total_rounds, self.adapt.lambda_max)
        }
        for b, w in self.weights().items():
            out[protocol.cfg_weight(b)] = w
        if self.adapt.alignment == "statistics":
            out.update(to_wire(self.reference)[1])
        return out

    def reference_arrays(self) -> dict[str, np.ndarray]:
        """The reference sent with training messages (statistics alignment)."""
        if self.adapt.alignment != "statistics":
            return {}
        return to_wire(self.reference)[0]

    def snapshot(self) -> tuple[dict[str, dict[str, int]], dict[str, np.ndarray]]:
        """The pooled statistics as (counts, float64 arrays) for a resume point."""
        counts: dict[str, dict[str, int]] = {}
        arrays: dict[str, np.ndarray] = {}
        for role, store in (("reference", self.reference), ("target", self.target)):
            counts[role] = {b: s.count for b, s in store.items()}
            for b, s in store.items():
                arrays[f"{role}/{b}/mean"] = s.mean
                arrays[f"{role}/{b}/cov"] = s.cov
        return counts, arrays

    def restore(self, counts: dict[str, dict[str, int]], arrays: dict[str, np.ndarray]) -> None:
        """Undo :meth:`snapshot`."""
        for role, store in (("reference", self.reference), ("target", self.target)):
            store.clear()
            for b, n in counts.get(role, {}).items():
                store[b] = Stats(int(n), arrays[f"{role}/{b}/mean"], arrays[f"{role}/{b}/cov"])

    def update(self, sources: list[dict[str, Stats]], targets: list[dict[str, Stats]]) -> None:
        """Pool this round's reported statistics (clients below the minimum
        count reported zeros and are left out by ``pool``)."""
        for store, parts in ((self.reference, sources), (self.target, targets)):
            for b in {b for p in parts for b in p}:
                pooled = pool([p[b] for p in parts if b in p])
                if pooled is not None:
                    store[b] = pooled


def domain_balanced(weights: list[float], is_target: list[bool]) -> list[float]:
    """Per-reply weights that give sources and targets half the total each.

    A federated discriminator sees one domain per client; averaging it by
    window counts would tilt it toward the larger domain (its bias learns the
    base rate). Balanced, the average recovers DANN's balanced pooled
    objective. With one domain only, the plain weights are returned.
    """
    totals = {d: sum(w for w, t in zip(weights, is_target) if t == d) for d in (False, True)}
    if not (totals[False] > 0 and totals[True] > 0):
        return list(weights)
    return [0.5 * w / totals[t] for w, t in zip(weights, is_target)]
