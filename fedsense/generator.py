"""Cloud-generated normalisation for devices that cannot train (CDC-MMPG's idea).

A device that only runs inference describes its data by a few numbers it can
compute without the model — per modality and channel, the mean and standard
deviation of its raw windows (:func:`describe`) — and receives from the
server the BatchNorm statistics its model should use. The server's
generator is a ridge regression from those descriptors to BatchNorm
statistics (means, and log-variances so that variances stay positive),
fitted each round on the source devices, which report both their
descriptor and the statistics they compute on their own windows under the
current global model. On the device: one pass of numpy over its windows,
no forward pass of the model and no gradient.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from fedsense.data.base import Dataset
from fedsense.protocol import is_discriminator

_STATS = ("running_mean", "running_var")


def describe(data: Dataset) -> np.ndarray:
    """``(2 * sum of channels,)`` float64: per modality (in order) and channel,
    the mean and standard deviation of its values over the windows that have
    that modality (zeros for a modality the device lacks)."""
    parts = []
    for m, x in data.x.items():
        rows = data.present(m) > 0
        values = x[rows].transpose(1, 0, 2).reshape(x.shape[1], -1) if rows.any() else np.zeros((x.shape[1], 1))
        parts += [values.mean(axis=1), values.std(axis=1)]
    return np.concatenate(parts).astype(np.float64)


def norm_keys(model: nn.Module) -> list[str]:
    """The BatchNorm running statistics of ``model``'s inference path, in state-dict order."""
    return [k for k in model.state_dict() if k.endswith(_STATS) and not is_discriminator(k)]


def flatten(stats: Mapping[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
    """Statistics as one vector, variances as logs."""
    return np.concatenate([np.log(np.maximum(stats[k], 1e-12)) if k.endswith("running_var") else stats[k]
                           for k in keys]).astype(np.float64)


def unflatten(vector: np.ndarray, shapes: Mapping[str, tuple[int, ...]], keys: Sequence[str]) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for k in keys:
        size = int(np.prod(shapes[k]))
        part = vector[start : start + size].reshape(shapes[k])
        start += size
        out[k] = (np.exp(part) if k.endswith("running_var") else part).astype(np.float32)
    return out


@dataclass
class NormGenerator:
    """Ridge regression ``descriptor -> flattened statistics`` on standardised
    descriptors; ``ridge`` is the penalty on the standardised weights."""

    ridge: float = 1.0
    mean_: np.ndarray | None = None
    scale_: np.ndarray | None = None
    weights_: np.ndarray | None = None
    intercept_: np.ndarray | None = None

    def fit(self, descriptors: np.ndarray, targets: np.ndarray) -> "NormGenerator":
        """``descriptors (n, d)``, ``targets (n, p)``; needs two devices or more."""
        x, y = np.asarray(descriptors, np.float64), np.asarray(targets, np.float64)
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
            raise ValueError(f"fit needs (n, d) descriptors and (n, p) targets with n >= 2, got {x.shape}, {y.shape}")
        self.mean_, self.scale_ = x.mean(axis=0), x.std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        z = (x - self.mean_) / self.scale_
        self.intercept_ = y.mean(axis=0)
        gram = z.T @ z + self.ridge * np.eye(z.shape[1])
        self.weights_ = np.linalg.solve(gram, z.T @ (y - self.intercept_))
        return self

    @property
    def fitted(self) -> bool:
        return self.weights_ is not None

    def predict(self, descriptor: np.ndarray) -> np.ndarray:
        assert self.weights_ is not None and self.mean_ is not None and self.scale_ is not None
        z = (np.asarray(descriptor, np.float64) - self.mean_) / self.scale_
        return self.intercept_ + z @ self.weights_
