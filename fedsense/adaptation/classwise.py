"""Class-conditional embedding statistics and the class-conditional
multi-branch alignment term built on them.

Sources report, per branch (each modality and the fused embedding) and per
class with at least a minimum number of windows, the count, mean and
per-dimension variance of their embeddings; the server pools them into a
class-conditional reference. A target aligns its confidently
pseudo-labelled windows to it class by class, on every branch: a moment
term (the squared distance of its batch's class means from the
reference's, relative to the reference class's total variance) and a
class-conditional discriminator per branch
(embedding and one-hot class in, behind a gradient reversal layer) that
separates its windows from samples of the reference's class Gaussians.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsense.adaptation.discriminators import FUSED
from fedsense.adaptation.grl import grad_reverse
from fedsense.data.base import Dataset
from fedsense.engine import forward
from fedsense.models.net import MultimodalNet, NetOutput

VAR_FLOOR = 1e-4  # variances below this are noise of a dead unit: floored in the moment term


@dataclass(frozen=True)
class ClassStats:
    """Per class ``k``: ``count[k]`` windows, ``mean[k]`` ``(D,)`` and
    per-dimension variance ``var[k]`` of one branch's embeddings."""

    count: np.ndarray  # (K,) int64
    mean: np.ndarray  # (K, D)
    var: np.ndarray  # (K, D)


@torch.no_grad()
def class_stats(model: MultimodalNet, data: Dataset, num_classes: int, min_count: int,
                batch_size: int = 512) -> dict[str, ClassStats]:
    """Per branch, the class statistics of ``data``'s labelled windows under
    ``model`` in eval mode; a class below ``min_count`` windows is empty."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(data), batch_size):
        index = slice(start, start + batch_size)
        out = forward(model, data, index)
        y = data.y[index]
        for b, z in {**out.branches, FUSED: out.fused}.items():
            rows = (y >= 0) & ((data.present(b)[index] > 0) if b in data.x else True)
            parts.setdefault(b, []).append(z.numpy().astype(np.float64)[rows])
            labels.setdefault(b, []).append(y[rows])
    out_stats = {}
    for b in parts:
        z, y = np.concatenate(parts[b]), np.concatenate(labels[b])
        d = z.shape[1]
        count = np.zeros(num_classes, np.int64)
        mean, var = np.zeros((num_classes, d)), np.zeros((num_classes, d))
        for k in range(num_classes):
            zk = z[y == k]
            if zk.shape[0] >= max(min_count, 2):
                count[k], mean[k], var[k] = zk.shape[0], zk.mean(axis=0), zk.var(axis=0)
        out_stats[b] = ClassStats(count, mean, var)
    return out_stats


def pool_class_stats(parts: list[ClassStats]) -> ClassStats | None:
    """Statistics of the union of the windows behind ``parts``, class by class."""
    parts = [p for p in parts if int(p.count.sum()) > 0]
    if not parts:
        return None
    count = sum(p.count for p in parts).astype(np.int64)
    safe = np.maximum(count, 1)[:, None]
    mean = sum(p.count[:, None] * p.mean for p in parts) / safe
    second = sum(p.count[:, None] * (p.var + p.mean ** 2) for p in parts) / safe
    var = np.maximum(second - mean ** 2, 0.0)
    mean[count == 0], var[count == 0] = 0.0, 0.0
    return ClassStats(count, mean, var)


@dataclass(frozen=True)
class Alignment:
    """One round's class-conditional alignment settings (from the server)."""

    reference: dict[str, ClassStats]
    weights: dict[str, float]  # branch -> weight (normalised to sum 1 over the used branches)
    coeff: float  # gradient reversal coefficient of the discriminators
    domain_weight: float = 1.0
    moment_weight: float = 1.0
    adversarial: bool = True  # the class-conditional discriminators (False: moments only)
    class_conditional: bool = True  # False: the reference's classes pooled, labels not used


def _moment(means: Tensor, mu: Tensor, var: Tensor) -> Tensor:
    """Mean over classes of ``|means_k - mu_k|^2 / sum_d var_kd``: how far
    the class means are, relative to the class's total spread (1: as far as
    a typical window of the class lies from its mean). Not per dimension: a
    unit the sources barely use (variance near zero) would otherwise weigh
    thousands of times more than the rest — on HAPT it drove the term to
    about 100 and undid self-training."""
    return (((means - mu) ** 2).sum(1) / var.sum(1)).mean()


def alignment_term(model: MultimodalNet, align: Alignment):
    """The loss term :func:`fedsense.adaptation.selftraining.self_train` adds
    per batch: ``(output, pseudo-labels, confident rows, generator) -> (loss, numbers)``."""
    used = {b: w for b, w in align.weights.items() if w > 0 and b in align.reference}
    total = sum(used.values())
    weights = {b: w / total for b, w in used.items()} if total > 0 else {}
    refs = {}
    for b in weights:
        ref = align.reference[b]
        if not align.class_conditional:  # one Gaussian of all classes, as marginal alignment sees them
            pooled = pool_class_stats([ClassStats(ref.count.sum(keepdims=True),
                                                  (ref.count[:, None] * ref.mean).sum(0, keepdims=True)
                                                  / max(int(ref.count.sum()), 1),
                                                  np.zeros((1, ref.mean.shape[1])))])
            second = (ref.count[:, None] * (ref.var + ref.mean ** 2)).sum(0) / max(int(ref.count.sum()), 1)
            assert pooled is not None
            ref = ClassStats(pooled.count, pooled.mean, np.maximum(second - pooled.mean[0] ** 2, 0.0)[None])
        refs[b] = (torch.as_tensor(ref.count > 0), torch.as_tensor(ref.mean, dtype=torch.float32),
                   torch.as_tensor(np.maximum(ref.var, VAR_FLOOR), dtype=torch.float32))

    def term(out: NetOutput, labels: Tensor, confident: Tensor, generator: torch.Generator):
        every = {**out.branches, FUSED: out.fused}
        loss = torch.zeros(())
        numbers: dict[str, float] = {}
        for b, w in weights.items():
            present, mu, var = refs[b]
            y = labels if align.class_conditional else torch.zeros_like(labels)
            rows = confident & present[y]
            if int(rows.sum()) < 2:
                continue
            z, y = every[b][rows], y[rows]
            onehot = F.one_hot(y, mu.shape[0]).float()
            counts = onehot.sum(0)
            means = onehot.T @ z / counts.clamp(min=1)[:, None]
            seen = counts > 0
            moment = _moment(means[seen], mu[seen], var[seen])
            branch_loss = align.moment_weight * moment
            if align.adversarial and b in model.discriminators:
                samples = mu[y] + var[y].sqrt() * torch.randn(z.shape, generator=generator)
                cond = F.one_hot(labels[rows], model.num_classes).float()
                disc = model.discriminators[b]
                logits = torch.cat([disc(torch.cat([grad_reverse(z, align.coeff), cond], 1)),
                                    disc(torch.cat([samples, cond], 1))])
                target = torch.cat([torch.ones(z.shape[0]), torch.zeros(z.shape[0])])
                bce = F.binary_cross_entropy_with_logits(logits, target)
                branch_loss = branch_loss + bce
                numbers[f"disc_acc.{b}"] = float(((logits.detach() > 0).float() == target).float().mean())
                numbers[f"loss_domain.{b}"] = float(bce.detach())
            numbers[f"moment.{b}"] = float(moment.detach())
            loss = loss + w * branch_loss
        return align.domain_weight * loss, numbers

    return term


def discriminator_parameters(model: MultimodalNet) -> list[nn.Parameter]:
    return list(model.discriminators.parameters())
