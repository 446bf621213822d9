"""Privacy floors: the fewest windows behind anything a device sends.

The run config and every message come from the server, so the floor a
device holds is its own: :data:`protocol.MIN_COUNT` or its node config's
``min-count``, whichever is higher (:func:`device_floor`); the server may
raise it, never lower it. Applied to

- statistics (embedding, per-class and raw statistics, projector
  centroids): ``adapt.stats_min_count`` / ``output.projector_min_count``,
  never below the device's floor (the ClientApp raises them);
- a whole-device description (``generated``'s descriptor and BatchNorm
  statistics): only from at least ``adapt.stats_min_count`` training
  windows (:func:`enough_windows`);
- the confusion matrix: a row (one true class's held-out windows and how
  they were predicted) of fewer windows than the device's floor is sent as
  zeros (:func:`floor_rows`), so no row describes one or two windows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from fedsense import protocol
from fedsense.config import Config, ConfigError


def device_floor(node_config: Mapping[str, object]) -> int:
    """The device's own floor: its node config's ``min-count`` if set (an
    integer), never below :data:`protocol.MIN_COUNT`."""
    own = node_config.get(protocol.NODE_MIN_COUNT, protocol.MIN_COUNT)
    if isinstance(own, bool) or not isinstance(own, int):
        raise ConfigError(f"node config {protocol.NODE_MIN_COUNT}={own!r}: expected an integer")
    return max(own, protocol.MIN_COUNT)


def floor_rows(confusion: np.ndarray, floor: int) -> np.ndarray:
    """``confusion`` ``(K, K)`` with every row of fewer than ``floor``
    windows set to zeros (a copy)."""
    out = np.array(confusion, dtype=np.int64, copy=True)
    out[out.sum(axis=1) < floor] = 0
    return out


def enough_windows(windows: int, floor: int) -> bool:
    """Whether a description of all ``windows`` of a device may leave it."""
    return windows >= max(floor, protocol.MIN_COUNT)


def raise_floor(cfg: Config, floor: int) -> Config:
    """``cfg`` with ``adapt.stats_min_count`` raised to the device's ``floor``
    (the server may ask for more, never for less)."""
    if cfg.adapt.stats_min_count >= floor:
        return cfg
    return replace(cfg, adapt=replace(cfg.adapt, stats_min_count=floor))
