"""Which parameters are shared with the server and which stay on the device.

The run's method decides it (:meth:`fedsense.methods.Method.shared` and
``kept``), and everything asks through :class:`Sharing`, so aggregation,
checkpoints and the client's local state agree. Shared parameters travel as
numpy arrays keyed by their ``state_dict`` name; kept ones live in the
device's state between messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fedsense.config import Config

if TYPE_CHECKING:  # the methods load arrays with this module's functions
    from fedsense.methods.base import Method


@dataclass(frozen=True)
class Sharing:
    """The sharing rule of a run: its method under its config (``adapt.alignment``
    decides, for instance, whether discriminators are global)."""

    method: "Method"
    cfg: Config = field(default_factory=Config)

    def shared(self, key: str) -> bool:
        return self.method.shared(key, self.cfg)

    def kept(self, key: str, model: nn.Module, labelled: bool = False) -> bool:
        return self.method.kept(key, self.cfg, model, labelled)  # type: ignore[arg-type]


def _as_sharing(rule: "Sharing | Method") -> Sharing:
    return rule if isinstance(rule, Sharing) else Sharing(rule)


def is_shared(name: str, model: nn.Module, rule: "Sharing | Method") -> bool:
    """True when parameter/buffer ``name`` of ``model`` is aggregated by the server."""
    return _as_sharing(rule).shared(name)


def shared_keys(model: nn.Module, rule: "Sharing | Method") -> set[str]:
    return {k for k in model.state_dict() if is_shared(k, model, rule)}


def shared_arrays(model: nn.Module, rule: "Sharing | Method") -> dict[str, np.ndarray]:
    """The shared part of ``model.state_dict()`` as numpy copies."""
    return {
        k: v.detach().cpu().numpy().copy()
        for k, v in model.state_dict().items()
        if is_shared(k, model, rule)
    }


def local_arrays(model: nn.Module, rule: "Sharing | Method", labelled: bool = False) -> dict[str, np.ndarray]:
    """The part of ``model.state_dict()`` a device keeps as its own (what is
    not shared; under real FedBN a labelled device's affine parameters too)."""
    rule = _as_sharing(rule)
    return {
        k: v.detach().cpu().numpy().copy()
        for k, v in model.state_dict().items()
        if rule.kept(k, model, labelled)
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
