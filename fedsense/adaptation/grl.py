"""Gradient reversal: identity forward, ``-coeff * grad`` backward.

The coefficient is an argument of every call, never state of a module:
clients are rebuilt each round and the schedule belongs to the server.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coeff: float) -> Tensor:  # type: ignore[override]
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return -ctx.coeff * grad, None


def grad_reverse(x: Tensor, coeff: float) -> Tensor:
    """``x`` unchanged; the gradient flowing back through it is multiplied by ``-coeff``."""
    return _GradReverse.apply(x, float(coeff))
