"""Gradient reversal: identity forward, -lambda x gradient backward."""

from __future__ import annotations

import pytest
import torch

from fedsense.adaptation.grl import grad_reverse


@pytest.mark.parametrize("coeff", [0.0, 0.3, 1.0, 2.5])
def test_reversed_gradient_is_minus_lambda_times_plain(coeff: float) -> None:
    x = torch.randn(5, 4, requires_grad=True)
    w = torch.randn(4, 3)
    (torch.tanh(x @ w) ** 2).sum().backward()
    plain = x.grad.clone()
    x.grad = None
    out = grad_reverse(x, coeff)
    assert torch.equal(out, x)
    (torch.tanh(out @ w) ** 2).sum().backward()
    torch.testing.assert_close(x.grad, -coeff * plain)


def test_layers_after_the_reversal_get_their_normal_gradient() -> None:
    x = torch.randn(6, 3, requires_grad=True)
    w = torch.randn(3, 1, requires_grad=True)
    (grad_reverse(x, 0.7) @ w).sum().backward()
    torch.testing.assert_close(w.grad, x.detach().sum(0, keepdim=True).T)
