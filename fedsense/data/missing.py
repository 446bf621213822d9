"""Missing modalities for robustness experiments (FedMultimodal-style).

``data.drop_modality: {gyro: 0.5}`` takes the gyroscope away from half of
the simulated devices, all their windows; ``data.drop_window: {gyro: 0.3}``
takes it away from 30 % of every device's windows. A missing modality is a
mask (``Dataset.mask``), its rows zeros: nothing downstream crashes, and
the model never sees the zeros (``MultimodalNet`` runs a branch on the
windows that have its modality). Which devices and windows is fixed by
``seed``; a real device's data say themselves what they lack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from fedsense.data.base import Dataset, DatasetError


def _salt(modality: str) -> int:
    """Another random draw per modality, stable across Python runs (unlike hash())."""
    return sum(ord(c) for c in modality)


def devices_without(modality: str, fraction: float, num_devices: int, seed: int) -> set[int]:
    """The ``round(fraction * num_devices)`` devices (partition ids) that lack ``modality``."""
    count = int(round(fraction * num_devices))
    order = np.random.default_rng([seed, _salt(modality), 7]).permutation(num_devices)
    return {int(d) for d in order[:count]}


def without(ds: Dataset, modality: str, rows: np.ndarray | None = None) -> Dataset:
    """``ds`` with ``modality`` missing in ``rows`` (boolean ``(N,)``; ``None``: every window)."""
    if modality not in ds.x:
        raise DatasetError(f"cannot drop modality '{modality}': the data have {sorted(ds.x)}")
    gone = np.ones(len(ds), bool) if rows is None else np.asarray(rows, bool)
    present = ds.present(modality) * (~gone)
    x = ds.x[modality].copy()
    x[gone] = 0.0
    return replace(ds, x={**ds.x, modality: x}, mask={**ds.mask, modality: present.astype(np.float32)})


def apply_missing(
    ds: Dataset, pid: int, num_devices: int, seed: int,
    drop_modality: Mapping[str, float], drop_window: Mapping[str, float], part: int,
) -> Dataset:
    """Device ``pid``'s windows (``part`` 0 train, 1 held-out) after the
    configured drops; a device left with no modality is an error."""
    for modality, fraction in drop_modality.items():
        if fraction > 0 and pid in devices_without(modality, fraction, num_devices, seed):
            ds = without(ds, modality)
    for modality, rate in drop_window.items():
        if rate > 0:
            rng = np.random.default_rng([seed, pid, part, _salt(modality), 11])
            ds = without(ds, modality, rng.random(len(ds)) < rate)
    if len(ds) and not any(ds.present(m).any() for m in ds.x):
        raise DatasetError(f"device {pid}: data.drop_modality/drop_window leave it no modality at all")
    return ds


def conform(ds: Dataset, shapes: Mapping[str, tuple[int, int]]) -> Dataset:
    """A device's windows with exactly the model's modalities: one the device
    lacks is zeros under a zero mask, one the model does not use is left out;
    a modality of another shape is an error naming both shapes."""
    x, mask = {}, {}
    for m, (c, t) in shapes.items():
        if m in ds.x:
            if ds.x[m].shape[1:] != (c, t):
                raise DatasetError(f"modality '{m}' has windows of shape {ds.x[m].shape[1:]}, "
                                   f"the federation's model takes ({c}, {t})")
            x[m] = ds.x[m]
            if m in ds.mask:
                mask[m] = ds.mask[m]
        else:
            x[m] = np.zeros((len(ds), c, t), np.float32)
            mask[m] = np.zeros(len(ds), np.float32)
    return replace(ds, x=x, mask=mask)
