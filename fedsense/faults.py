"""Injected client faults for reliability experiments (the ``faults:`` section).

Which clients are faulty is fixed by ``faults.seed``: the clients are put in
a seeded random order and the first ``round(crash * n)`` crash, the next
``round(timeout * n)`` time out, and so on through :data:`FAULT_KINDS`. A
client needs its partition id and the number of partitions to know its
fault, so faults exist in simulations only. What a faulty client does is
plain numpy here; the ClientApp's Flower mod (``fl_client.fault_mod``) applies
it to messages, the data loader (``fedsense.data.clients``) flips a
``label_flip`` client's labels. The ``*_lie`` kinds and ``malformed`` leave
training alone and change what the reply says (:func:`lie`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedsense import protocol
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


TAMPERING = ("nan", "sign_flip", "scale")  # faults that change the trained arrays sent


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


LIES = ("role_lie", "examples_lie", "confusion_lie", "stats_lie", "malformed")


def lie(kind: str, message: str, metrics: dict, records: dict[str, dict[str, np.ndarray]],
        rng: np.random.Generator) -> None:
    """Change a reply's ``metrics`` and array ``records`` in place as a
    device of fault ``kind`` would on a ``message`` ("train" or "evaluate")."""

    if kind == "role_lie":
        metrics[protocol.IS_TARGET] = 1 - int(metrics[protocol.IS_TARGET])
    elif kind == "examples_lie" and message == "train":
        metrics[protocol.NUM_EXAMPLES] = 1000 * max(int(metrics[protocol.NUM_EXAMPLES]), 1)
    elif kind == "confusion_lie" and message == "evaluate":
        flat = list(metrics[protocol.CONFUSION])
        k = int(round(len(flat) ** 0.5))
        metrics[protocol.CONFUSION] = [v + (10 ** 9 if i % (k + 1) == 0 else 0) for i, v in enumerate(flat)]
    elif kind == "stats_lie" and message == "evaluate":
        for key in [k for k in metrics if k.startswith("stats.") and k.endswith(".count")]:
            metrics[key] = 10 ** 12
        for record in records.values():
            for key in [k for k in record if k.endswith(".count")]:
                record[key] = np.full_like(record[key], 10 ** 12)
    elif kind == "malformed":
        read = ([protocol.TASK_WINDOWS, protocol.LOSS_TASK, protocol.NUM_EXAMPLES] if message == "train"
                else [protocol.CONFUSION, protocol.EVAL_WINDOWS, protocol.NUM_EXAMPLES])
        key = read[int(rng.integers(len(read)))]
        if rng.random() < 0.5:
            metrics.pop(key, None)
        else:
            metrics[key] = [1.0, 2.0, 3.0]  # a list where a number is read, or of the wrong length
