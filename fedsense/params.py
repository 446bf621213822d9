"""Which parameters are shared with the server and which stay on the device.

One function decides it (:func:`is_shared`), so aggregation, checkpoints and
the client's local state agree. Shared parameters travel as numpy arrays
keyed by their ``state_dict`` name; local ones live in the client's state.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedsense.adaptation import Method

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)


def _norm_prefixes(model: nn.Module) -> tuple[str, ...]:
    return tuple(f"{name}." for name, mod in model.named_modules() if isinstance(mod, _NORM_TYPES))


def is_shared(name: str, model: nn.Module, method: Method) -> bool:
    """True when parameter/buffer ``name`` of ``model`` is aggregated by the server.

    With ``method.local_norm`` (FedBN/AdaBN) every normalisation layer's
    affine parameters and running statistics stay local, so a shifted device
    keeps statistics of its own data.
    """
    if name.endswith("num_batches_tracked"):
        return False  # a counter, not a parameter: averaging it means nothing
    if method.local_norm and name.startswith(_norm_prefixes(model)):
        return False
    return True


def shared_arrays(model: nn.Module, method: Method) -> dict[str, np.ndarray]:
    """The shared part of ``model.state_dict()`` as float32/int numpy copies."""
    return {
        k: v.detach().cpu().numpy().copy()
        for k, v in model.state_dict().items()
        if is_shared(k, model, method)
    }


def local_arrays(model: nn.Module, method: Method) -> dict[str, np.ndarray]:
    """The device-only part of ``model.state_dict()``."""
    return {
        k: v.detach().cpu().numpy().copy()
        for k, v in model.state_dict().items()
        if not is_shared(k, model, method)
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


def shared_keys(model: nn.Module, method: Method) -> set[str]:
    return {k for k in model.state_dict() if is_shared(k, model, method)}
