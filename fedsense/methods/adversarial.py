"""DANN and M3BAT in a federation: ``dann`` (one discriminator on the fused
embedding), ``m3bat`` (one per modality branch plus the fused one) and
``m3bat_bn`` (M3BAT on device-local BatchNorm statistics).

Two designs give a discriminator both domains although a device holds one
(``adapt.alignment``):

- ``federated``: discriminators are global; each device trains them on its
  own domain label while its encoders follow the reversed gradient, and the
  server averages them with sources and targets weighing half each. A
  discriminator that sees one domain per device collapses easily, so the
  safeguards of FADE (Hong et al., KDD 2021) apply: the first
  ``adapt.warmup`` share of rounds trains source-only, a device updates the
  discriminators in its first ``adapt.disc_steps`` batches only, and a
  branch whose pooled domain loss falls below ``adapt.disc_reset_loss`` has
  its discriminator reset to its initial weights.
- ``statistics``: devices report per-branch embedding statistics; the server
  pools the sources' into a reference sent back next round; a target's own,
  device-local discriminators separate its embeddings from samples of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsense import protocol
from fedsense.protocol import is_discriminator
from fedsense.adaptation.discriminators import FUSED
from fedsense.adaptation.schedules import dann_lambda
from fedsense.adaptation.statistics import Stats, frechet_shift, from_wire, pool, privatize, shift_weights, to_wire
from fedsense.adaptation.training import Adversarial, embedding_stats, renormalize, train_adversarial
from fedsense.config import AdaptConfig, Config
from fedsense.methods.wire import WireError, read_stats
from fedsense.methods.base import (
    Branches,
    Method,
    Reply,
    Result,
    ServerState,
    Step,
    is_norm_statistic,
    supervised_result,
)


def warmup_rounds(adapt: AdaptConfig, total_rounds: int) -> int:
    """Rounds trained source-only before adversarial steps start (federated alignment only)."""
    if adapt.alignment != "federated":
        return 0
    return int(math.floor(adapt.warmup * total_rounds))


def reversal_coefficient(adapt: AdaptConfig, server_round: int, total_rounds: int) -> float:
    """DANN's schedule over the rounds after the warm-up (0 during it)."""
    warm = warmup_rounds(adapt, total_rounds)
    if server_round <= warm:
        return 0.0
    span = total_rounds - warm
    progress = 1.0 if span <= 1 else min(max((server_round - warm - 1) / (span - 1), 0.0), 1.0)
    return adapt.lambda_max * dann_lambda(progress)


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


class AdversarialMethod(Method):
    """Multi-branch adversarial adaptation (DANN is the fused branch alone)."""

    pooled_adversarial = True

    def __init__(self, name: str, branches: Branches, local_norm: bool = False, description: str = "") -> None:
        self.name = name
        self.branches = branches
        self.local_norm = local_norm
        self.device_models = local_norm
        self.description = description

    def shared(self, key: str, cfg: Config) -> bool:
        if not super().shared(key, cfg):
            return False
        if self.local_norm and is_norm_statistic(key):
            return False  # FedBN/AdaBN: a device normalises with its own statistics
        return not (cfg.adapt.alignment == "statistics" and is_discriminator(key))

    def train_metrics(self, branches: list[str]) -> list[str]:
        return [k for b in branches for k in (protocol.loss_domain_key(b), protocol.disc_acc_key(b))]

    def collects_statistics(self, adapt: AdaptConfig) -> bool:
        """Devices report embedding statistics: the statistics reference needs
        them, and so do shift-following branch weights."""
        return adapt.alignment == "statistics" or adapt.branch_weights == "shift"

    # ---------------------------------------------------------- the device
    def _adversarial(self, step: Step) -> Adversarial:
        weights = {b: float(step.config.get(protocol.cfg_weight(b), 1.0)) for b in step.model.discriminators}
        reference = None
        if step.cfg.adapt.alignment == "statistics":
            reference = from_wire(step.payload.get(protocol.REFERENCE, {}), dict(step.config))
        return Adversarial(coeff=float(step.config.get(protocol.CFG_COEFF, 0.0)), weights=weights,
                           domain_weight=step.cfg.adapt.domain_weight, reference=reference)

    def train(self, step: Step) -> Result:
        if not int(step.config.get(protocol.CFG_ADAPT_ACTIVE, 1)):
            # the warm-up: source-only training, every reply still has every branch's keys
            result = super().train(step)
            result.metrics.update({k: 0.0 for b in step.model.discriminators
                                   for k in (protocol.loss_domain_key(b), protocol.disc_acc_key(b))})
            return result
        disc_steps = step.cfg.adapt.disc_steps if step.cfg.adapt.alignment == "federated" else 0
        result = train_adversarial(
            step.model, step.data.train, step.data.domain_labels(), step.cfg.train, self._adversarial(step),
            epochs=int(step.config.get(protocol.CFG_LOCAL_EPOCHS, step.cfg.train.local_epochs)),
            lr=float(step.config.get(protocol.CFG_LR, step.cfg.train.lr)), seed=step.seed, disc_steps=disc_steps,
        )
        out = supervised_result(result)
        for b in step.model.discriminators:  # every reply carries every branch's keys
            out.metrics[protocol.loss_domain_key(b)] = result["loss_domain"].get(b, 0.0)
            out.metrics[protocol.disc_acc_key(b)] = result["disc_acc"].get(b, 0.0)
        return out

    def evaluate(self, step: Step) -> Result:
        result = Result()
        if self.local_norm and not step.labelled:
            # AdaBN: statistics of this device's own windows under *these* weights
            # (the ones from training were computed under last round's).
            renormalize(step.model, step.data.train)
            result.keep = True
        if self.collects_statistics(step.cfg.adapt):
            # Statistics of the training windows under the new global model: the
            # next round's reference is computed with the model it starts from.
            # OS entropy: noise the server could regenerate from known seeds protects nothing.
            rng = np.random.default_rng()
            stats = {b: privatize(s, step.cfg.adapt.stats_min_count, step.cfg.adapt.stats_noise, rng)
                     for b, s in embedding_stats(step.model, step.data.train).items()}
            arrays, counts = to_wire(stats)
            result.records[protocol.STATS] = arrays
            result.metrics.update(counts)
        return result

    # ---------------------------------------------------------- the server
    def server(self, cfg: Config, branches: list[str]) -> ServerState:
        return AdversarialServer(cfg.adapt, self.collects_statistics(cfg.adapt), branches, cfg.fed.rounds)


class AdversarialServer(ServerState):
    """The reversal schedule, the pooled statistics reference, the branch
    weights, the discriminator numbers of each round and FADE's reset."""

    def __init__(self, adapt: AdaptConfig, collects: bool, branches: list[str], total_rounds: int) -> None:
        self.adapt = adapt
        self.collects = collects
        self.branches = branches
        self.total_rounds = total_rounds
        self.reference: dict[str, Stats] = {}  # pooled source statistics
        self.target: dict[str, Stats] = {}  # pooled target statistics
        self.initial: dict[str, np.ndarray] = {}  # discriminator arrays at the start (reset)
        self.resets: dict[str, int] = {}
        self._round: dict[str, Any] = {}  # the round in training: schedule, weights, discriminator numbers
        self._rounds: dict[int, dict[str, Any]] = {}  # the last rounds', for their records

    def set_initial(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.initial = {k: np.array(v) for k, v in arrays.items() if is_discriminator(k)}

    def shifts(self) -> dict[str, float]:
        """Per-branch source/target shift (normalised Fréchet distance)."""
        return {b: frechet_shift(self.reference[b], self.target[b]) for b in self.reference if b in self.target}

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

    def train_config(self, server_round: int) -> dict[str, float | int]:
        coeff = reversal_coefficient(self.adapt, server_round, self.total_rounds)
        out: dict[str, float | int] = {protocol.CFG_COEFF: coeff}
        if server_round <= warmup_rounds(self.adapt, self.total_rounds):
            out[protocol.CFG_ADAPT_ACTIVE] = 0
        for b, w in self.weights().items():
            out[protocol.cfg_weight(b)] = w
        if self.adapt.alignment == "statistics":
            out.update(to_wire(self.reference)[1])
        self._round = {"lambda": coeff, "weight": {b: float(out[protocol.cfg_weight(b)]) for b in self.branches}}
        self._rounds = {r: v for r, v in self._rounds.items() if r >= server_round - 1}
        self._rounds[server_round] = self._round
        return out

    def train_payload(self, server_round: int) -> dict[str, dict[str, np.ndarray]]:
        if self.adapt.alignment != "statistics" or not self.reference:
            return {}
        return {protocol.REFERENCE: to_wire(self.reference)[0]}

    def discriminator_weights(self, weights: list[float], is_target: list[bool]) -> list[float]:
        """Reply weights for discriminator numbers (and federated discriminators):
        domains balanced; under a statistics reference only targets take
        adversarial steps, so only they count."""
        if self.adapt.alignment == "statistics":
            return [w if t else 0.0 for w, t in zip(weights, is_target)]
        return domain_balanced(weights, is_target)

    def after_train(self, replies: list[Reply], weights: list[float]) -> dict[str, Any]:
        if not replies or protocol.loss_domain_key(self.branches[0]) not in replies[0].metrics:
            return {}
        balanced = self.discriminator_weights(weights, [r.target for r in replies])
        # A reply whose domain loss is 0 took no adversarial step on that
        # branch (a logistic loss is never 0): it has no accuracy to report.
        losses, accs = {}, {}
        for b in self.branches:
            stepped = [w if float(r.metrics[protocol.loss_domain_key(b)]) > 0 else 0.0
                       for r, w in zip(replies, balanced)]
            total = sum(stepped)
            if total > 0:
                losses[b] = sum(float(r.metrics[protocol.loss_domain_key(b)]) * w for r, w in zip(replies, stepped)) / total
                accs[b] = sum(float(r.metrics[protocol.disc_acc_key(b)]) * w for r, w in zip(replies, stepped)) / total
        self._round["disc_acc"] = accs
        self._round["loss_domain"] = losses
        return {"loss_domain": losses}

    def adjust(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """FADE's loss-triggered reset: a federated discriminator whose pooled
        domain loss fell below ``adapt.disc_reset_loss`` (it separates the
        domains too well for the encoders to follow) starts over from its
        initial weights."""
        floor = self.adapt.disc_reset_loss
        replaced: dict[str, np.ndarray] = {}
        if self.adapt.alignment != "federated" or floor <= 0 or not self.initial:
            return replaced
        for b, loss in self._round.get("loss_domain", {}).items():
            keys = [k for k in arrays if k.startswith(f"{protocol.DISCRIMINATORS}{b}.") and k in self.initial]
            if loss < floor and keys:
                replaced.update({k: self.initial[k].copy() for k in keys})
                self.resets[b] = self.resets.get(b, 0) + 1
        return replaced

    def after_evaluate(self, replies: list[Reply]) -> None:
        """Pool this round's reported statistics (clients below the minimum
        count reported zeros and are left out by ``pool``)."""
        reported: dict[bool, list[dict[str, Stats]]] = {False: [], True: []}
        self.refused = []
        for r in replies:
            if protocol.STATS in r.records:
                try:
                    reported[r.target].append(read_stats(r.records[protocol.STATS], r.metrics, r.windows))
                except WireError as err:
                    self.refused.append(f"node {r.node}: statistics refused: {err}")
        for store, parts in ((self.reference, reported[False]), (self.target, reported[True])):
            for b in {b for p in parts for b in p}:
                pooled = pool([p[b] for p in parts if b in p])
                if pooled is not None:
                    store[b] = pooled

    def record(self, server_round: int) -> dict[str, Any]:
        trained = self._rounds.get(server_round, self._round)
        adapt: dict[str, Any] = {"lambda": float(trained.get("lambda", 0.0)),
                                 "weight": trained.get("weight", {b: 1.0 for b in self.branches})}
        if trained.get("disc_acc"):
            adapt["disc_acc"] = dict(trained["disc_acc"])
        if self.collects:
            adapt["shift"] = self.shifts()
        if self.resets:
            adapt["resets"] = dict(self.resets)
        return adapt

    def snapshot(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The pooled statistics as (counts, float64 arrays) for a resume point."""
        counts: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for role, store in (("reference", self.reference), ("target", self.target)):
            counts[role] = {b: s.count for b, s in store.items()}
            for b, s in store.items():
                arrays[f"{role}/{b}/mean"] = s.mean
                arrays[f"{role}/{b}/cov"] = s.cov
        counts["resets"] = dict(self.resets)
        return {"statistics": counts}, arrays

    def restore(self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        counts = state.get("statistics", {})
        for role, store in (("reference", self.reference), ("target", self.target)):
            store.clear()
            for b, n in counts.get(role, {}).items():
                store[b] = Stats(int(n), arrays[f"{role}/{b}/mean"], arrays[f"{role}/{b}/cov"])
        self.resets = {b: int(n) for b, n in counts.get("resets", {}).items()}


DANN = AdversarialMethod("dann", "fused", description="single-branch DANN: one discriminator on the fused embedding")
M3BAT = AdversarialMethod("m3bat", "all", description="M3BAT: a discriminator per modality branch and on the fused one")
# M3BAT on top of device-local normalisation statistics (FedBN/AdaBN):
# the branches align what renormalising alone leaves shifted.
M3BAT_BN = AdversarialMethod("m3bat_bn", "all", local_norm=True,
                             description="M3BAT on device-local BatchNorm statistics")
