"""Single-modality paths: cross-modal distillation, or labels alone.

A device that lacks a sensor runs the model with that modality masked: the
fused embedding has zeros where the missing branch would be, and the
classifier must cope. With ``train.single_modality``, every training window
that has every modality also trains each one-modality path of the model
(the same encoders, fusion and classifier, the other modalities masked):

- ``distill`` (EdgeVL-style cross-modal distillation): toward the full
  model's prediction on the same window, ``T^2 * KL(softmax(z/T) ||
  softmax(z_m/T))`` with the full logits ``z`` as a fixed teacher, on
  labelled windows (the label itself is not used). With
  ``train.distill_unlabeled`` also on unlabeled ones — an unlabeled
  target's, where the teacher is the model being adapted (in the federated
  M3BAT-BN experiment that undid the adaptation late in training; README,
  "Heterogeneous devices");
- ``labels``: cross-entropy of each path with the window's label
  (labelled windows only), the baseline distillation is compared with.

The loss is averaged over the modalities and scaled by
``train.single_modality_weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fedsense.models import MultimodalNet, NetOutput

MODES = ("none", "distill", "labels")


def single_modality_loss(
    model: MultimodalNet, x: dict[str, Tensor], mask: dict[str, Tensor] | None, full: NetOutput, y: Tensor,
    mode: str, temperature: float = 2.0, unlabeled: bool = False,
) -> Tensor | None:
    """The mean over modalities of each one-modality path's loss on the
    windows that have every modality and a label (``distill`` with
    ``unlabeled``: with a label or not); None when there is nothing to learn
    (mode ``none``, one modality, no such window)."""
    if mode == "none" or len(model.modalities) < 2:
        return None
    batch = full.logits.shape[0]
    rows = torch.ones(batch, dtype=torch.bool)
    if mask is not None:
        for m in model.modalities:
            rows &= mask[m] > 0
    if mode == "labels" or not unlabeled:
        rows &= y >= 0
    if int(rows.sum()) < 2:  # BatchNorm cannot train on one window
        return None
    xs = {m: v[rows] for m, v in x.items()}
    n = int(rows.sum())
    teacher = full.logits[rows].detach()
    losses = []
    for keep in model.modalities:
        only = {m: torch.full((n,), float(m == keep)) for m in model.modalities}
        logits = model(xs, only).logits
        if mode == "distill":
            losses.append(temperature ** 2 * F.kl_div(F.log_softmax(logits / temperature, dim=1),
                                                      F.log_softmax(teacher / temperature, dim=1),
                                                      log_target=True, reduction="batchmean"))
        else:
            losses.append(F.cross_entropy(logits, y[rows]))
    return torch.stack(losses).mean()
