"""Quantization-aware training: int8 weight grids, straight-through
gradients, an unchanged state dict, discriminators left alone."""

from __future__ import annotations

import copy

import pytest
import torch

from fedsense.config import ModelConfig
from fedsense.models import DataSpec, build_model
from fedsense.quantization import fake_quant_activation, fake_quant_weight, is_prepared, prepare_qat

SPEC = DataSpec({"acc": (3, 32), "gyro": (3, 32)}, num_classes=4)
CFG = ModelConfig(channels=[8, 16], embed_dim=16)


def _x(batch: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {m: torch.randn(batch, 3, 32, generator=g) for m in SPEC.shapes}


def test_each_output_channel_takes_at_most_255_values_on_a_symmetric_grid():
    w = torch.randn(6, 3, 5) * torch.tensor([0.01, 0.1, 1, 10, 100, 1000]).reshape(6, 1, 1)
    q = fake_quant_weight(w)
    for c in range(6):
        step = w[c].abs().max() / 127
        levels = torch.round(q[c] / step)
        assert torch.allclose(levels * step, q[c], rtol=1e-5, atol=1e-12)
        assert levels.abs().max() <= 127 and len(torch.unique(levels)) <= 255
        assert (q[c] - w[c]).abs().max() <= step / 2 * 1.0001


def test_scaling_a_channel_scales_its_grid_so_folding_batchnorm_changes_nothing():
    w = torch.randn(4, 3, 5)
    k = torch.tensor([0.3, -2.0, 5.0, 0.01]).reshape(4, 1, 1)  # gamma / sqrt(var + eps), any sign
    torch.testing.assert_close(fake_quant_weight(w * k), fake_quant_weight(w) * k, rtol=1e-5, atol=1e-7)


def test_rounding_passes_gradients_straight_through():
    w = torch.randn(4, 3, 5, requires_grad=True)
    x = torch.randn(2, 8, requires_grad=True)
    (fake_quant_weight(w) * 3).sum().backward()
    (fake_quant_activation(x) * 2).sum().backward()
    torch.testing.assert_close(w.grad, torch.full_like(w, 3.0))
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))


def test_activation_rounding_keeps_zero_and_the_range():
    x = torch.tensor([-3.0, 0.0, 0.5, 1.7, 2.9])
    q = fake_quant_activation(x)
    assert q[1] == 0 and (q - x).abs().max() <= 3.0 / 127 / 2 * 1.0001


def test_a_prepared_model_keeps_its_state_dict_and_computes_with_rounded_weights():
    plain = build_model(SPEC, CFG, seed=1, adversarial="all")
    qat = prepare_qat(copy.deepcopy(plain))
    assert is_prepared(qat) and not is_prepared(plain)
    assert list(qat.state_dict()) == list(plain.state_dict())
    # discriminators never reach a device: left in float
    assert all(not is_prepared(d) for d in qat.discriminators.values())
    rounded = copy.deepcopy(plain)
    with torch.no_grad():
        for name, module in rounded.named_modules():
            if not name.startswith("discriminators") and isinstance(module, (torch.nn.Conv1d, torch.nn.Linear)):
                module.weight.copy_(fake_quant_weight(module.weight))
    qat.eval(), rounded.eval(), plain.eval()
    x = _x()
    torch.testing.assert_close(qat(x).logits, rounded(x).logits)
    assert not torch.allclose(qat(x).logits, plain(x).logits)


def test_qat_training_moves_the_float_weights_and_learns():
    torch.manual_seed(0)
    model = prepare_qat(build_model(SPEC, CFG, seed=2))
    x, y = _x(64), torch.randint(0, 4, (64,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = copy.deepcopy(model.state_dict())
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x).logits, y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    moved = [k for k in before if before[k].dtype.is_floating_point and not torch.equal(before[k], model.state_dict()[k])]
    assert any("encoders.acc.features.0.weight" == k for k in moved)


@pytest.mark.parametrize("value", [True, False])
def test_train_qat_is_applied_by_build_run_model(synthetic_cfg, value):
    from dataclasses import replace

    from fedsense.runmodel import build_run_model

    cfg = replace(synthetic_cfg, train=replace(synthetic_cfg.train, qat=value))
    assert is_prepared(build_run_model(SPEC, cfg)) is value
    assert not is_prepared(build_run_model(SPEC, cfg, qat=False))
