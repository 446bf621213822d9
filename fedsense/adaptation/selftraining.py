"""Target self-training on device-local parameters (SHOT-style), and the
unlabeled choices it makes: which calibration, which normalisation.

The objective is information maximisation (Liang et al., ICML 2020): each
window's prediction confident (low entropy), the device's predictions
diverse (high entropy of their mean), plus cross-entropy toward centroid
pseudo-labels (class centroids of the fused embedding, weighted by the
predictions, then re-assigned once by nearest centroid). Only device-local
parameters move: the input calibration and the BatchNorm affine parameters;
the classifier and the encoders' weights stay as the federation made them.

Guards against collapse, each measured in the round record: the diversity
term; pseudo-labels only where the centroid label agrees with the
prediction and the prediction is confident; a quadratic anchor to the
starting point (a cap on drift); and a final check — if the objective on
the device's windows is not lower after training than before, the step is
undone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsense.adaptation.calibration import Fit, polar, signed_permutations
from fedsense.data.base import Dataset
from fedsense.engine import as_tensors, masks
from fedsense.models.net import MultimodalNet, NetOutput

EPS = 1e-6


def information_loss(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Mean per-window entropy and entropy of the mean prediction ``(B, K)``."""
    p = F.softmax(logits, dim=1)
    entropy = -(p * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    mean = p.mean(dim=0)
    diversity = -(mean * torch.log(mean + EPS)).sum()
    return entropy, diversity


def _subset(ds: Dataset, limit: int) -> Dataset:
    """At most ``limit`` windows, evenly spread (no randomness)."""
    if len(ds) <= limit:
        return ds
    return ds.subset(np.linspace(0, len(ds) - 1, limit).astype(np.int64))


@torch.no_grad()
def im_score(model: MultimodalNet, ds: Dataset) -> float:
    """The information-maximisation objective (entropy - diversity; lower is
    better) of ``model`` in eval mode on ``ds``'s windows, labels unused."""
    model.eval()
    entropy, diversity = information_loss(model(as_tensors(ds), masks(ds)).logits)
    return float(entropy - diversity)


@torch.no_grad()
def _candidate_scores(model: MultimodalNet, ds: Dataset, modality: str,
                      candidates: list[tuple[np.ndarray, np.ndarray]], chunk: int = 16) -> list[float]:
    """:func:`im_score` of ``model`` with each candidate map of ``modality``
    (the other modalities as calibrated now): the other branches are computed
    once, the candidates' branch in batches."""
    model.eval()
    x, mask = as_tensors(ds), masks(ds)
    cal = model.calibration
    assert cal is not None
    calibrated = cal(x)
    others = {m: model.branch(m, calibrated[m], mask) for m in model.modalities if m != modality}
    raw = x[modality]  # (n, 3, T), before this modality's calibration
    n = raw.shape[0]
    scores: list[float] = []
    for start in range(0, len(candidates), chunk):
        part = candidates[start:start + chunk]
        a = torch.as_tensor(np.stack([c[0] for c in part]), dtype=torch.float32)  # (c, 3, 3)
        b = torch.as_tensor(np.stack([c[1] for c in part]), dtype=torch.float32)  # (c, 3)
        mapped = torch.einsum("cij,njt->cnit", a, raw) + b[:, None, :, None]
        emb = model.branch(modality, mapped.reshape(-1, *raw.shape[1:]),
                           None if mask is None else {modality: mask[modality].repeat(len(part))})
        branches = {m: e.repeat(len(part), 1) for m, e in others.items()}
        branches[modality] = emb
        big_mask = None if mask is None else {m: v.repeat(len(part)) for m, v in mask.items()}
        logits = model.head(branches, big_mask).logits.reshape(len(part), n, -1)
        for one in logits:
            entropy, diversity = information_loss(one)
            scores.append(float(entropy - diversity))
    return scores


def choose_calibration(
    model: MultimodalNet, ds: Dataset, fits: dict[str, list[Fit]], scales: dict[str, float], limit: int = 128,
    sweep: bool = True,
) -> dict[str, object]:
    """Set ``model.calibration`` to the candidate maps with the lowest
    :func:`im_score`, one modality at a time (those with likelihood fits
    first). A modality's candidates: its current map, its likelihood fits,
    the orthogonal part of every other modality's chosen map (sensors of one
    device share a frame) and, with ``sweep``, the 48 signed axis
    permutations at the modality's energy-matched gain. Returns what was
    chosen, for the record."""
    cal = model.calibration
    assert cal is not None
    sub = _subset(ds, limit)
    order = sorted(cal.modalities, key=lambda m: (not fits.get(m), cal.modalities.index(m)))
    perms = signed_permutations() if sweep else []
    chosen: dict[str, object] = {}
    best_score = float("nan")
    for m in order:
        maps = cal.maps()
        candidates: list[tuple[str, tuple[np.ndarray, np.ndarray]]] = [("current", maps[m])]
        candidates += [(f"fit{i}", (f.matrix, f.offset)) for i, f in enumerate(fits.get(m, []))]
        candidates += [(f"frame:{o}", (polar(maps[o][0]), np.zeros(3))) for o in order if o != m]
        candidates += [(f"perm{i}", (scales.get(m, 1.0) * p, np.zeros(3))) for i, p in enumerate(perms)]
        scores = _candidate_scores(model, sub, m, [c for _, c in candidates])
        best = int(np.argmin(scores))  # ties: the earliest, so the current map stays
        cal.set_maps({m: candidates[best][1]})
        chosen[m] = candidates[best][0]
        best_score = scores[best]
    chosen["im"] = best_score
    return chosen


@torch.no_grad()
def pseudo_labels(out: NetOutput, rounds: int = 1) -> Tensor:
    """Centroid pseudo-labels (SHOT): prediction-weighted class centroids of
    the normalised fused embedding, then ``rounds`` re-assignments to the
    nearest centroid. ``(B,)`` int64."""
    p = F.softmax(out.logits, dim=1)
    f = F.normalize(out.fused, dim=1)
    centroids = F.normalize(p.T @ f / (p.sum(0)[:, None] + EPS), dim=1)
    labels = (f @ centroids.T).argmax(dim=1)
    for _ in range(rounds):
        onehot = F.one_hot(labels, p.shape[1]).float()
        centroids = F.normalize(onehot.T @ f / (onehot.sum(0)[:, None] + EPS), dim=1)
        labels = (f @ centroids.T).argmax(dim=1)
    return labels


@dataclass(frozen=True)
class SelfTraining:
    """Settings of :func:`self_train` (``adapt.self_training_*``)."""

    epochs: int = 3
    lr: float = 1e-3
    beta: float = 0.3  # weight of the pseudo-label cross-entropy
    threshold: float = 0.9  # pseudo-labels only on windows predicted at least this confidently
    anchor: float = 1.0  # quadratic pull toward the starting parameters (a cap on drift)
    batch_size: int = 64
    scope: str = "norm"  # norm: calibration and BatchNorm affine; encoders: the encoders too (classifier frozen)


def local_parameters(model: MultimodalNet, scope: str = "norm") -> list[nn.Parameter]:
    """What self-training moves: the calibration and every BatchNorm's affine
    parameters (``scope`` "norm"), or the whole encoders and fusion with the
    classifier frozen (``scope`` "encoders", SHOT's choice)."""
    params: list[nn.Parameter] = []
    if model.calibration is not None:
        params += list(model.calibration.parameters())
    if scope == "encoders":
        return params + list(model.encoders.parameters()) + list(model.fusion.parameters())
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            params += [module.weight, module.bias]
    return params


# extra loss on a batch: (model output, pseudo-labels, confident rows) -> (loss, numbers for the record)
AlignTerm = Callable[[NetOutput, Tensor, Tensor, torch.Generator], tuple[Tensor, dict[str, float]]]


def self_train(
    model: MultimodalNet, ds: Dataset, settings: SelfTraining, seed: int, align: AlignTerm | None = None,
    extra_params: list[nn.Parameter] | None = None, anchor_to: dict[str, Tensor] | None = None,
    before: float | None = None,
) -> dict[str, float]:
    """Information maximisation plus centroid pseudo-labels (plus ``align``)
    on the device-local parameters of ``model``, in place; BatchNorm
    statistics and dropout stay fixed (eval mode). The anchor pulls each
    parameter toward ``anchor_to[name]`` (default: where it starts). Undone
    when the objective on ``ds`` did not improve on ``before`` (default: the
    objective at the start). Returns the round's numbers: objective before
    and after, pseudo-labelled share, smallest predicted class share, drift
    from the anchor, whether it was kept."""
    params = local_parameters(model, settings.scope)
    if not params or len(ds) < 2:
        return {}
    names = {id(p): n for n, p in model.named_parameters()}
    trained = params + (extra_params or [])
    everything = list(model.parameters())
    flags = [p.requires_grad for p in everything]
    for p in everything:
        p.requires_grad_(any(p is q for q in trained))
    start = copy.deepcopy(model.state_dict())
    anchors = [(anchor_to or {}).get(names[id(p)], p.detach()).clone() for p in params]
    before = im_score(model, ds) if before is None else before
    optimizer = torch.optim.Adam(params + (extra_params or []), lr=settings.lr)
    generator = torch.Generator().manual_seed(seed)
    x_all, m_all = as_tensors(ds), masks(ds)
    n = len(ds)
    confident_share: list[float] = []
    extra: dict[str, list[float]] = {}
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(settings.epochs):
                model.eval()
                with torch.no_grad():
                    out_all = model(x_all, m_all)
                labels_all = pseudo_labels(out_all)
                agree_all = (labels_all == out_all.logits.argmax(1)) & (
                    F.softmax(out_all.logits, 1).max(1).values >= settings.threshold)
                confident_share.append(float(agree_all.float().mean()))
                order = torch.randperm(n, generator=generator)
                for start_row in range(0, n, settings.batch_size):
                    rows = order[start_row:start_row + settings.batch_size]
                    if rows.numel() < 2:
                        continue
                    x = {k: v[rows] for k, v in x_all.items()}
                    mask = None if m_all is None else {k: v[rows] for k, v in m_all.items()}
                    out = model(x, mask)
                    entropy, diversity = information_loss(out.logits)
                    loss = entropy - diversity
                    confident = agree_all[rows]
                    if settings.beta > 0 and bool(confident.any()):
                        loss = loss + settings.beta * F.cross_entropy(out.logits[confident], labels_all[rows][confident])
                    if align is not None:
                        term, numbers = align(out, labels_all[rows], confident, generator)
                        loss = loss + term
                        for key, value in numbers.items():
                            extra.setdefault(key, []).append(value)
                    loss = loss + settings.anchor * sum(((p - a) ** 2).sum() for p, a in zip(params, anchors))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
    finally:
        for p, flag in zip(everything, flags):
            p.requires_grad_(flag)
    after = im_score(model, ds)
    kept = after < before
    drift = float(sum(((p.detach() - a) ** 2).sum() for p, a in zip(params, anchors)) ** 0.5)
    if not kept:
        model.load_state_dict(start)
    with torch.no_grad():
        model.eval()
        shares = F.softmax(model(x_all, m_all).logits, 1).argmax(1).bincount(minlength=model.num_classes).float() / n
    return {
        "im_before": before,
        "im_after": after,
        "kept": float(kept),
        "drift": drift,
        "confident": float(np.mean(confident_share)) if confident_share else 0.0,
        "min_class_share": float(shares.min()),
        **{k: float(np.mean(v)) for k, v in extra.items()},
    }
