"""Injected client faults for reliability experiments (the ``faults:`` section).

Which clients are faulty is fixed by ``faults.seed``: the clients are put in
a seeded random order and the first ``round(crash * n)`` crash, the next
``round(timeout * n)`` time out, and so on through :data:`FAULT_KINDS`. A
client needs its partition id and the number of partitions to know its
fault, so faults exist in simulations only. The tampering itself is plain
numpy; the ClientApp applies it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedsense.config import FAULT_KINDS, FaultsConfig


def fault_of(cfg: FaultsConfig, client: int, num_clients: int) -> str | None:
    """The fault of ``client`` (``0..num_clients-1``), or None for an honest one."""
    if not 0 <= client < num_clients:
        return None
    order = np.random.default_rng([cfg.seed, 104729]).permutation(num_clients)
    position = int(np.flatnonzero(order == client)[0])
    start = 0
    for kind in FAULT_KINDS:
        count = int(round(getattr(cfg, kind) * num_clients))
        if start <= position < start + count:
            return kind
        start += count
    return None


def tamper(
    kind: str, trained: Mapping[str, np.ndarray], received: Mapping[str, np.ndarray], scale_factor: float
) -> dict[str, np.ndarray]:
    """The arrays a ``nan``, ``sign_flip`` or ``scale`` client sends instead of
    ``trained``, given the global arrays it ``received`` (float arrays only;
    integer counters are sent as trained)."""
    out = {}
    for key, value in trained.items():
        if not np.issubdtype(value.dtype, np.floating):
            out[key] = value
            continue
        start = received[key].astype(value.dtype)
        if kind == "nan":
            out[key] = np.full_like(value, np.nan)
        elif kind == "sign_flip":
            out[key] = start - (value - start)
        elif kind == "scale":
            out[key] = start + scale_factor * (value - start)
        else:
            raise ValueError(f"fault '{kind}' does not tamper with the update")
    return out


def flip_labels(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels ``k -> K-1-k``; unlabeled windows (-1) stay unlabeled."""
    return np.where(y >= 0, num_classes - 1 - y, y).astype(y.dtype)
