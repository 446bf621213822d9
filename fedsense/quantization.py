"""Quantization-aware training (``train.qat``): int8 rounding in the loop.

Every convolution and linear layer of the inference path (encoders, fusion,
classifier; not the discriminators, which never reach a device) computes with

- its weight rounded to int8 with one symmetric scale per output channel
  (``max|w| / 127``), the grid of the exported int8 model: scaling a channel
  (as folding BatchNorm into the convolution does) scales its grid with it;
- in training, its input rounded to int8 over the batch's range, so the
  weights learn to tolerate the activation rounding the int8 model adds.

Rounding passes gradients straight through (the straight-through estimator
of ``torch.fake_quantize_*``). The state dict is unchanged: what travels and
what is checkpointed are the float weights the rounding is applied to. The
deployed int8 model calibrates its activation ranges after training
(:mod:`fedsense.onnx_export`), as post-training quantization does.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

QMAX = 127  # symmetric int8 weights: [-127, 127]


def fake_quant_weight(w: Tensor) -> Tensor:
    """``w`` rounded to its per-output-channel int8 grid (gradients straight through)."""
    scale = w.detach().abs().amax(dim=tuple(range(1, w.dim()))).clamp_min(1e-12) / QMAX
    zero = torch.zeros(scale.shape, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale.float(), zero, 0, -QMAX, QMAX)


def fake_quant_activation(x: Tensor) -> Tensor:
    """``x`` rounded to symmetric int8 over its own range (the int8 export's
    activation format)."""
    scale = (x.detach().abs().max() / QMAX).clamp_min(1e-12).reshape(1).float()
    zero = torch.zeros(1, dtype=torch.int32)
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, -QMAX, QMAX)


def _conv_forward(self: nn.Conv1d, x: Tensor) -> Tensor:
    if self.training:
        x = fake_quant_activation(x)
    return F.conv1d(x, fake_quant_weight(self.weight), self.bias, self.stride, self.padding, self.dilation,
                    self.groups)


def _linear_forward(self: nn.Linear, x: Tensor) -> Tensor:
    if self.training:
        x = fake_quant_activation(x)
    return F.linear(x, fake_quant_weight(self.weight), self.bias)


def prepare_qat(model: nn.Module) -> nn.Module:
    """Make ``model``'s inference-path convolutions and linear layers compute
    with int8-rounded weights (and, in training, inputs); returns ``model``."""
    for name, module in model.named_modules():
        if name.startswith("discriminators"):
            continue
        if isinstance(module, nn.Conv1d) and module.padding_mode == "zeros":
            module.forward = types.MethodType(_conv_forward, module)  # type: ignore[method-assign]
        elif isinstance(module, nn.Linear):
            module.forward = types.MethodType(_linear_forward, module)  # type: ignore[method-assign]
    return model


def is_prepared(model: nn.Module) -> bool:
    return any(getattr(m.forward, "__func__", None) in (_conv_forward, _linear_forward) for m in model.modules())
