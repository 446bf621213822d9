"""Which parameters are shared with the server and which stay on the device.

One function decides it (:func:`is_shared`), so aggregation, checkpoints and
the client's local state agree. Shared parameters travel as numpy arrays
keyed by their ``state_dict`` name; local ones live in the client's state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsense.adaptation import Method

_STATS = ("running_mean", "running_var")


@dataclass(frozen=True)
class Sharing:
    """The sharing rule of a run.

    Attributes:
        method: the adaptation method; ``local_norm`` keeps BatchNorm running
            statistics on the device (FedBN/AdaBN). Affine parameters stay
            shared: an unlabeled target could never learn its own.
        local_discriminators: discriminators stay on the device (the
            statistics-reference design); otherwise they are global
            (federated discriminators).
    """

    method: Method
    local_discriminators: bool = False


def sharing_of(method: Method, alignment: str) -> Sharing:
    """The sharing rule of a method under an ``adapt.alignment``."""
    return Sharing(method, local_discriminators=method.adversarial and alignment == "statistics")


def _as_sharing(rule: Sharing | Method) -> Sharing:
    return rule if isinstance(rule, Sharing) else Sharing(rule)


def is_shared(name: str, model: nn.Module, rule: Sharing | Method) -> bool:
    """True when parameter/buffer ``name`` of ``model`` is aggregated by the server."""
    rule = _as_sharing(rule)
    if name.endswith("num_batches_tracked"):
        return False  # a counter, not a parameter: averaging it means nothing
    if rule.method.local_norm and name.endswith(_STATS):
        return False
    if rule.local_discriminators and name.startswith("discriminators."):
        return False
    return True


def shared_keys(model: nn.Module, rule: Sharing | Method) -> set[str]:
    return {k for k in model.state_dict() if is_shared(k, model, rule)}


def shared_arrays(model: nn.Module, rule: Sharing | Method) -> dict[str, np.ndarray]:
    """The shared part of ``model.state_dict()`` as numpy copies."""
    return {
        k: v.detach().cpu().numpy().copy()
        for k, v in model.state_dict().items()
        if is_shared(k, model, rule)
    }


def local_arrays(model: nn.Module, rule: Sharing | Method) -> dict[str, np.ndarray]:
    """The device-only part of ``model.state_dict()``."""
    return {
        k: v.detach().cpu().numpy().copy()
        for k, v in model.state_dict().items()
        if not is_shared(k, model, rule)
    }


def load_arrays(model: nn.Module, arrays: dict[str, np.ndarray], *, strict_keys: set[str]) -> None:
    """Copy ``arrays`` into ``model``; every key of ``strict_keys`` must be present
    with the model's shape, and no unknown key is accepted."""
    state = model.state_dict()
    unknown = sorted(set(arrays) - set(state))
    missing = sorted(strict_keys - set(arrays))
    if unknown or missing:
        raise ValueError(f"model arrays do not match: unknown {unknown[:5]}, missing {missing[:5]}")
    for key, value in arrays.items():
        if tuple(value.shape) != tuple(state[key].shape):
            raise ValueError(
                f"array '{key}' has shape {tuple(value.shape)}, model expects {tuple(state[key].shape)}"
            )
        state[key] = torch.as_tensor(np.ascontiguousarray(value), dtype=state[key].dtype)
    model.load_state_dict(state)
