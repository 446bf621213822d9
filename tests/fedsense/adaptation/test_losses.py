"""The multi-branch adversarial loss against a short hand-written reference."""

from __future__ import annotations

import torch
from torch import nn

from fedsense.adaptation.discriminators import build_discriminators
from fedsense.adaptation.grl import grad_reverse
from fedsense.adaptation.losses import multi_branch_adversarial_loss


def reference(features, labels, discs, weights, coeff):
    total = 0.0
    for b, f in features.items():
        logits = discs[b](grad_reverse(f, coeff)).squeeze(-1)
        p = torch.sigmoid(logits)
        bce = -(labels[b] * torch.log(p) + (1 - labels[b]) * torch.log(1 - p)).mean()
        total = total + weights[b] * bce
    return total


def setup():
    torch.manual_seed(0)
    discs = build_discriminators({"acc": 4, "gyro": 4, "fused": 8}, hidden=5)
    feats = {b: torch.randn(6, d, requires_grad=True) for b, d in (("acc", 4), ("gyro", 4), ("fused", 8))}
    labels = {b: torch.tensor([0.0, 1, 0, 1, 1, 0]) for b in feats}
    return discs, feats, labels


def test_loss_value_and_gradients_match_the_reference() -> None:
    discs, feats, labels = setup()
    weights = {"acc": 0.5, "gyro": 2.0, "fused": 1.0}
    ours, per_branch, accs = multi_branch_adversarial_loss(feats, labels, discs, weights, coeff=0.8)
    ours.backward()
    mine = {b: f.grad.clone() for b, f in feats.items()}
    disc_grads = [p.grad.clone() for p in discs.parameters()]
    for f in feats.values():
        f.grad = None
    discs.zero_grad()
    ref = reference(feats, labels, discs, weights, 0.8)
    ref.backward()
    torch.testing.assert_close(ours, ref)
    for b, f in feats.items():
        torch.testing.assert_close(mine[b], f.grad)
    for mine_g, p in zip(disc_grads, discs.parameters()):
        torch.testing.assert_close(mine_g, p.grad)
    assert set(per_branch) == set(accs) == {"acc", "gyro", "fused"}
    assert all(0.0 <= a <= 1.0 for a in accs.values())


def test_zero_weight_branch_is_skipped() -> None:
    discs, feats, labels = setup()
    total, per_branch, _ = multi_branch_adversarial_loss(
        feats, labels, discs, {"acc": 0.0, "fused": 1.0}, coeff=1.0
    )
    total.backward()
    assert feats["acc"].grad is None and feats["gyro"].grad is None
    assert set(per_branch) == {"fused"}


def test_encoders_ascend_what_discriminators_descend() -> None:
    """With the reversal, a step on the features raises the discriminator's loss."""
    discs, feats, labels = setup()
    weights = {"acc": 1.0, "gyro": 1.0, "fused": 1.0}
    total, _, _ = multi_branch_adversarial_loss(feats, labels, discs, weights, coeff=1.0)
    total.backward()
    with torch.no_grad():
        moved = {b: f - 0.1 * f.grad for b, f in feats.items()}  # the encoder's SGD step
        after, _, _ = multi_branch_adversarial_loss(moved, labels, discs, weights, coeff=1.0)
    assert after > total.detach()
    assert isinstance(discs, nn.ModuleDict)
