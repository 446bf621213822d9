"""The multi-branch adversarial loss (M3BAT; DANN is the fused branch alone)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsense.adaptation.grl import grad_reverse


def multi_branch_adversarial_loss(
    features: dict[str, Tensor],
    labels: dict[str, Tensor],
    discriminators: nn.ModuleDict,
    weights: dict[str, float],
    coeff: float,
) -> tuple[Tensor, dict[str, float], dict[str, float]]:
    """``sum_b w_b * BCE(D_b(GRL(f_b, coeff)), y_b)`` over the branches in ``features``.

    Args:
        features: branch -> ``(B_b, D_b)`` embeddings (own windows, possibly
            followed by reference samples).
        labels: branch -> ``(B_b,)`` float domain labels in {0, 1}.
        discriminators: branch -> discriminator (logits out).
        weights: branch -> loss weight (a missing branch weighs 0 and is skipped).
        coeff: the reversal coefficient: encoders receive ``-coeff`` times the
            discriminator's gradient; discriminators learn normally. Rows that
            are samples of a reference distribution carry no gradient to any
            encoder, so reversing them is harmless.

    Returns:
        (total loss, per-branch BCE, per-branch discriminator accuracy).
    """
    total = torch.zeros(())
    losses: dict[str, float] = {}
    accs: dict[str, float] = {}
    for branch, f in features.items():
        w = float(weights.get(branch, 0.0))
        if w == 0.0:
            continue
        logits = discriminators[branch](grad_reverse(f, coeff))
        loss = F.binary_cross_entropy_with_logits(logits, labels[branch])
        total = total + w * loss
        losses[branch] = float(loss.detach())
        accs[branch] = float(((logits.detach() > 0).float() == labels[branch]).float().mean())
    return total, losses, accs
