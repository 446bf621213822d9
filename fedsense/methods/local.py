"""``m3bat_local``: multi-branch adaptation of device-local parameters.

Labelled devices train the shared model on their labels (FedAvg), and
report aggregate statistics: per class and 3-axis modality, the mean and
covariance of their raw windows' means (:mod:`fedsense.adaptation.calibration`),
and per class and branch the mean and variance of their embeddings
(:mod:`fedsense.adaptation.classwise`). The server pools both.

An unlabeled device adapts, right before it evaluates the model it was
sent, only what is its own:

1. **calibration** (``adapt.calibration``): a linear map of each 3-axis
   modality, fitted by likelihood under the sources' raw-statistics mixture
   once (candidates kept on the device), chosen each round by the network's
   information-maximisation objective;
2. **normalisation**: the sources' BatchNorm statistics or its own, again
   whichever gives the lower objective;
3. **self-training** (``adapt.self_training``): information maximisation and
   centroid pseudo-labels on the calibration and the encoders, classifier
   frozen (``adapt.self_training_scope``; :mod:`fedsense.adaptation.selftraining`),
   optionally with
4. **class-conditional multi-branch alignment** (``adapt.align_branches``, off
   by default; ``adapt.class_conditional``): per branch a moment term and a
   device-local class-conditional discriminator against the pooled class
   reference, branch weights following each modality's measured shift.

Nothing a target learns is averaged: its reply to a train instruction
carries no weight, and its calibration and discriminators stay on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fedsense import protocol
from fedsense.protocol import is_discriminator
from fedsense.adaptation.calibration import Fit, RawStats, energy_scale, fit_candidates, pool_raw, raw_stats
from fedsense.adaptation.classwise import Alignment, ClassStats, alignment_term, class_stats, pool_class_stats
from fedsense.adaptation.discriminators import FUSED
from fedsense.adaptation.schedules import reversal_coefficient
from fedsense.adaptation.selftraining import SelfTraining, choose_calibration, im_score, local_parameters, self_train
from fedsense.adaptation.statistics import Stats, frechet_shift, pool, privatize, shift_weights, to_wire
from fedsense.adaptation.training import embedding_stats, renormalize
from fedsense.config import AdaptConfig, Config
from fedsense.methods import wire
from fedsense.methods.base import (
    ADAPTED,
    METHOD_STATE,
    Method,
    Records,
    Reply,
    Result,
    ServerState,
    Step,
    is_norm_affine,
    is_norm_statistic,
)
from fedsense.params import load_arrays

log = logging.getLogger("fedsense.client")
FIT_PREFIX = "calibration-fit/"  # keys of the calibration candidates in Step.state
FIT_DONE = "calibration-fitted"  # Step.state: the fits were made (possibly none)
ADAPTED_KEY = ADAPTED[len(METHOD_STATE):]  # Step.state keys of the parameters evaluated with
DELTA = "selftrain-delta/"  # Step.state keys of self-training's change of the BatchNorm affine parameters


def _read(reader, arrays):
    """A record the server sent, read and checked; an unreadable one is ignored
    (the device adapts without it) rather than trusted or fatal."""
    try:
        return reader(arrays)
    except wire.WireError as err:
        log.warning("m3bat_local: a record from the server is ignored: %s", err)
        return {}


def _sweep_round(step: Step) -> bool:
    """Whether this round's calibration choice tries the 48 axis permutations
    too: in the first rounds, every fifth round and the last (the model it
    judges by keeps changing; in between only the current map, the fits and
    the other modalities' frames compete)."""
    r = step.server_round
    return r <= 3 or r % 5 == 0 or r >= step.cfg.fed.rounds


def adapted_start(model, scope: str) -> dict[str, torch.Tensor]:
    """The values self-training starts from and is anchored to, of what it
    moves besides the calibration (which carries over by itself): the
    BatchNorm affine parameters, or with scope "encoders" the encoders' and
    fusion's parameters."""
    moved = {id(p) for p in local_parameters(model, scope)}
    return {k: p.detach().clone() for k, p in model.named_parameters()
            if id(p) in moved and not k.startswith("calibration.")}


def _is_norm(model, key: str) -> bool:
    return is_norm_statistic(key) or is_norm_affine(model, key)


def _norm_statistics(model) -> dict[str, np.ndarray]:
    return {k: v.clone().numpy() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked")) and not is_discriminator(k)}


class LocalM3BAT(Method):
    name = "m3bat_local"
    device_models = True
    replayable = True
    own_options = ("calibration", "self_training", "align_branches", "class_conditional", "moment_weight",
                   "self_training_epochs", "self_training_lr", "self_training_beta", "self_training_threshold",
                   "self_training_anchor", "self_training_scope")
    description = ("calibration, normalisation and self-training of each unlabeled device's own copy "
                   "(optionally class-conditional multi-branch alignment) on source-only FedAvg")

    def model_options(self, cfg: Config) -> dict[str, Any]:
        return {"adversarial": cfg.adapt.align_branches, "disc_hidden": cfg.adapt.disc_hidden,
                "calibrate": cfg.adapt.calibration, "class_conditional": True}

    def shared(self, key: str, cfg: Config) -> bool:
        return super().shared(key, cfg) and not is_discriminator(key) and not key.startswith("calibration.")

    # ---------------------------------------------------------- the device
    def evaluate(self, step: Step) -> Result:
        """A source reports raw and class statistics; a target adapts. Every
        reply carries every field (a source's adaptation numbers are 0, a
        target's statistics records empty), so keys never tell roles apart."""
        if step.labelled:
            result = self._report_source(step)
        else:
            result = self._adapt_target(step)
            result.records.update(self._empty_source_records(step))
        result.metrics = {k: float(result.metrics.get(k, 0.0)) for k in self._numbers(step)}
        arrays, counts = self._shift_statistics(step)  # under the model as evaluated
        result.records[protocol.STATS] = arrays
        result.metrics.update(counts)
        return result

    def _numbers(self, step: Step) -> list[str]:
        """The adaptation numbers every evaluate reply carries (fixed by the config and model)."""
        names = ["im_before", "im_after", "kept", "drift", "confident", "min_class_share"]
        if step.cfg.adapt.align_branches != "none":
            names += [f"{kind}.{b}" for b in step.model.discriminators for kind in ("moment", "disc_acc",
                                                                                   "loss_domain")]
        return [protocol.ST_CALIBRATION_CHANGED, protocol.ST_NORM_LOCAL, *map(protocol.selftrain_key, names)]

    def _empty_source_records(self, step: Step) -> Records:
        """A source's statistics records with every count 0 (a target's reply)."""
        k = step.model.num_classes
        raw = {}
        for m, x in step.data.train.x.items():
            if x.shape[1] == 3:
                empty = RawStats(np.zeros(k, np.int64), np.zeros((k, 3)), np.zeros((k, 3, 3)), np.zeros(k))
                raw.update(wire.raw_arrays(m, empty))
        dims = {**{m: e.embed_dim for m, e in step.model.encoders.items()}, FUSED: step.model.fusion.out_dim}
        classes = {key: v for b, d in dims.items() for key, v in
                   wire.class_arrays(b, ClassStats(np.zeros(k, np.int64), np.zeros((k, d)), np.zeros((k, d)))).items()}
        return {protocol.RAW: raw, protocol.CLASS_STATS: classes} if raw else {protocol.CLASS_STATS: classes}

    def _report_source(self, step: Step) -> Result:
        cfg, data = step.cfg, step.data.train
        num_classes = step.model.num_classes
        records: Records = {}
        raw: dict[str, np.ndarray] = {}
        for m, x in data.x.items():
            if x.shape[1] != 3:
                continue
            rows = data.present(m) > 0
            s = raw_stats(x[rows], data.y[rows], num_classes, cfg.adapt.stats_min_count)
            raw.update(wire.raw_arrays(m, s))
        if raw:
            records[protocol.RAW] = raw
        cstats = class_stats(step.model, data, num_classes, cfg.adapt.stats_min_count)
        records[protocol.CLASS_STATS] = {k: v for b, s in cstats.items() for k, v in wire.class_arrays(b, s).items()}
        return Result(records=records)

    def _shift_statistics(self, step: Step) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Per-branch statistics of all windows (arrays, count metrics), for
        the measured shift that sets the branch weights."""
        rng = np.random.default_rng()  # OS entropy: noise the server could regenerate protects nothing
        stats = {b: privatize(s, step.cfg.adapt.stats_min_count, step.cfg.adapt.stats_noise, rng)
                 for b, s in embedding_stats(step.model, step.data.train).items()}
        return to_wire(stats)

    def _adapt_target(self, step: Step) -> Result:
        cfg, model, data = step.cfg, step.model, step.data.train
        adapt = cfg.adapt
        numbers: dict[str, float] = {}
        raw = _read(wire.read_raw, step.payload.get(protocol.RAW, {}))
        if adapt.calibration and model.calibration is not None and raw:
            # candidates from the likelihood fits (modalities whose window means
            # pin a frame down); the others are chosen among axis maps alone
            fits = self._fits(step, raw)
            scales = {m: energy_scale(data.x[m][data.present(m) > 0], raw[m]) for m in raw if m in data.x}
            before = model.calibration.maps()
            choose_calibration(model, data, fits, scales, sweep=_sweep_round(step))
            numbers[protocol.ST_CALIBRATION_CHANGED] = float(any(
                not np.allclose(before[m][0], a) for m, (a, _b) in model.calibration.maps().items()))
        # Normalisation: the sources' statistics, or this device's own, whichever the objective prefers.
        global_stats = _norm_statistics(model)
        score_global = im_score(model, data)
        renormalize(model, data)
        score_local = im_score(model, data)
        local = score_local < score_global
        if not local:
            load_arrays(model, global_stats, strict_keys=set())
        numbers[protocol.ST_NORM_LOCAL] = float(local)
        score = min(score_local, score_global)
        reference = _read(wire.read_class_stats, step.payload.get(protocol.CLASS_STATS, {}))
        if adapt.self_training:
            # Self-training goes on across rounds: last round's change of the
            # BatchNorm affine parameters is applied to this round's global ones
            # (kept if the objective says it still helps), and the anchor pulls
            # toward the global values, so the drift cap holds over all rounds.
            affine = adapted_start(model, adapt.self_training_scope)
            score = self._resume_self_training(step, affine, score)
            align = None
            weights = {b: float(step.config.get(protocol.cfg_weight(b), 1.0)) for b in model.discriminators}
            if adapt.align_branches != "none" and reference:
                align = alignment_term(model, Alignment(
                    reference=reference, weights=weights, coeff=float(step.config.get(protocol.CFG_COEFF, 0.0)),
                    domain_weight=adapt.domain_weight, moment_weight=adapt.moment_weight,
                    class_conditional=adapt.class_conditional))
            settings = SelfTraining(epochs=adapt.self_training_epochs, lr=adapt.self_training_lr,
                                    beta=adapt.self_training_beta, threshold=adapt.self_training_threshold,
                                    anchor=adapt.self_training_anchor, scope=adapt.self_training_scope)
            discriminators = list(model.discriminators.parameters()) if align is not None else []
            outcome = self_train(model, data, settings, step.seed, align=align, extra_params=discriminators,
                                 anchor_to=affine, before=score)
            numbers.update({protocol.selftrain_key(k): v for k, v in outcome.items()})
            state = model.state_dict()
            step.state.update({DELTA + k: (state[k] - v).numpy().copy() for k, v in affine.items()})
        # what this device evaluates with, for `fedsense export --device` (not loaded by the next round)
        state = model.state_dict()
        own = set(affine) if adapt.self_training else set()
        step.state.update({ADAPTED_KEY + k: state[k].numpy().copy() for k in state
                           if not is_discriminator(k) and (k.startswith("calibration.") or _is_norm(model, k)
                                                           or k in own)})
        return Result(metrics=numbers, keep=True)

    def _resume_self_training(self, step: Step, affine: dict[str, torch.Tensor], score: float) -> float:
        """Apply the device's last change of its BatchNorm affine parameters to
        ``step.model`` if the objective is lower with it; returns the objective
        self-training starts from."""
        delta = {k[len(DELTA):]: v for k, v in step.state.items() if k.startswith(DELTA)}
        if set(delta) != set(affine) or any(delta[k].shape != tuple(affine[k].shape) for k in affine):
            return score  # none yet, or another model's
        load_arrays(step.model, {k: (affine[k] + torch.as_tensor(delta[k])).numpy() for k in affine},
                    strict_keys=set())
        resumed = im_score(step.model, step.data.train)
        if resumed < score:
            return resumed
        load_arrays(step.model, {k: v.numpy() for k, v in affine.items()}, strict_keys=set())
        return score

    def _fits(self, step: Step, raw: dict[str, RawStats]) -> dict[str, list[Fit]]:
        """The calibration candidates of each 3-axis modality: from the
        device's state, else fitted now to the raw reference ``raw``."""
        fits: dict[str, list[Fit]] = {}
        stored = {k[len(FIT_PREFIX):]: v for k, v in step.state.items() if k.startswith(FIT_PREFIX)}
        for key in stored:
            m, _, leaf = key.rpartition(".")
            if leaf == "matrix":
                fits[m] = [Fit(a, b, float(n)) for a, b, n in
                           zip(stored[f"{m}.matrix"], stored[f"{m}.offset"], stored[f"{m}.nll"])]
        if fits or step.state.get(FIT_DONE) is not None:
            return fits
        data = step.data.train
        for m, reference in raw.items():
            if m not in data.x or data.x[m].shape[1] != 3:
                continue
            found = fit_candidates(data.x[m][data.present(m) > 0], reference)
            if found:
                fits[m] = found
                step.state[f"{FIT_PREFIX}{m}.matrix"] = np.stack([f.matrix for f in found])
                step.state[f"{FIT_PREFIX}{m}.offset"] = np.stack([f.offset for f in found])
                step.state[f"{FIT_PREFIX}{m}.nll"] = np.array([f.nll for f in found])
        step.state[FIT_DONE] = np.array(1)  # fitted once, also when nothing could be
        return fits

    # ---------------------------------------------------------- the server
    def server(self, cfg: Config, branches: list[str]) -> ServerState:
        return LocalServer(cfg.adapt, branches, cfg.fed.rounds)


class LocalServer(ServerState):
    """Pools the sources' raw and class statistics; measures the per-branch
    shift; reports what the targets' adaptation did."""

    def __init__(self, adapt: AdaptConfig, branches: list[str], total_rounds: int) -> None:
        self.adapt = adapt
        self.branches = branches
        self.total_rounds = total_rounds
        self.raw: dict[str, RawStats] = {}
        self.classes: dict[str, ClassStats] = {}
        self.source: dict[str, Stats] = {}
        self.target: dict[str, Stats] = {}
        self._targets: dict[str, float] = {}
        self._coeff = 0.0

    def shifts(self) -> dict[str, float]:
        return {b: frechet_shift(self.source[b], self.target[b]) for b in self.source if b in self.target}

    def weights(self) -> dict[str, float]:
        fixed = {b: float(self.adapt.weights.get(b, 1.0)) for b in self.branches}
        shifts = self.shifts()
        modal = [b for b in self.branches if b != FUSED]
        if not modal or not all(b in shifts for b in modal):
            return fixed
        follow = shift_weights({b: shifts[b] for b in modal})
        return {b: fixed[b] * follow.get(b, 1.0) for b in self.branches}

    def evaluate_config(self, server_round: int) -> dict[str, float | int]:
        self._coeff = reversal_coefficient(server_round, self.total_rounds, self.adapt.lambda_max)
        return {protocol.CFG_COEFF: self._coeff, **{protocol.cfg_weight(b): w for b, w in self.weights().items()}}

    def evaluate_payload(self, server_round: int) -> Records:
        out: Records = {}
        if self.raw:
            out[protocol.RAW] = {k: v for m, s in self.raw.items() for k, v in wire.raw_arrays(m, s).items()}
        if self.classes:
            out[protocol.CLASS_STATS] = {k: v for b, s in self.classes.items()
                                         for k, v in wire.class_arrays(b, s).items()}
        return out

    def after_evaluate(self, replies: list[Reply]) -> None:
        raw_parts: dict[str, list[RawStats]] = {}
        classes: dict[str, list[ClassStats]] = {}
        shift: dict[bool, list[dict[str, Stats]]] = {False: [], True: []}
        numbers: dict[str, list[float]] = {}
        self.refused = []
        for r in replies:
            try:
                raw = wire.read_raw(r.records.get(protocol.RAW, {}), r.windows) if not r.target else {}
                cls = wire.read_class_stats(r.records.get(protocol.CLASS_STATS, {}), r.windows) if not r.target else {}
                stats = wire.read_stats(r.records.get(protocol.STATS, {}), r.metrics, r.windows)
            except wire.WireError as err:
                self.refused.append(f"node {r.node}: statistics refused: {err}")
                continue
            for m, s in raw.items():
                raw_parts.setdefault(m, []).append(s)
            for b, s in cls.items():
                classes.setdefault(b, []).append(s)
            if stats:
                shift[r.target].append(stats)
            if r.target:
                for k, v in r.metrics.items():
                    if k.startswith(protocol.SELFTRAIN_PREFIX) and isinstance(v, (int, float)) and np.isfinite(v):
                        numbers.setdefault(k[len(protocol.SELFTRAIN_PREFIX):], []).append(float(v))
        for m, parts_m in raw_parts.items():
            pooled = pool_raw(parts_m)
            if pooled is not None:
                self.raw[m] = pooled
        for b, parts in classes.items():
            pooled_c = pool_class_stats(parts)
            if pooled_c is not None:
                self.classes[b] = pooled_c
        for store, parts in ((self.source, shift[False]), (self.target, shift[True])):
            for b in {b for p in parts for b in p}:
                pooled_s = pool([p[b] for p in parts if b in p])
                if pooled_s is not None:
                    store[b] = pooled_s
        self._targets = {k: float(np.mean(v)) for k, v in numbers.items()}

    def record(self, server_round: int) -> dict[str, Any]:
        out: dict[str, Any] = {"lambda": self._coeff, "weight": self.weights(), "shift": self.shifts()}
        if self._targets:
            out["targets"] = dict(self._targets)
        return out

    def snapshot(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {}
        for m, s in self.raw.items():
            arrays.update({f"raw/{k}": v for k, v in wire.raw_arrays(m, s).items()})
        for b, s in self.classes.items():
            arrays.update({f"classes/{k}": v for k, v in wire.class_arrays(b, s).items()})
        for role, store in (("source", self.source), ("target", self.target)):
            for b, s in store.items():
                arrays[f"{role}/{b}/mean"], arrays[f"{role}/{b}/cov"] = s.mean, s.cov
                arrays[f"{role}/{b}/count"] = np.asarray(s.count)
        return {}, arrays

    def restore(self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        self.raw = wire.read_raw({k[len("raw/"):]: v for k, v in arrays.items() if k.startswith("raw/")})
        self.classes = wire.read_class_stats({k[len("classes/"):]: v for k, v in arrays.items()
                                              if k.startswith("classes/")})
        for role, store in (("source", self.source), ("target", self.target)):
            for key in arrays:
                if key.startswith(f"{role}/") and key.endswith("/mean"):
                    b = key[len(role) + 1:-len("/mean")]
                    store[b] = Stats(int(arrays[f"{role}/{b}/count"]), arrays[key], arrays[f"{role}/{b}/cov"])


M3BAT_LOCAL = LocalM3BAT()
