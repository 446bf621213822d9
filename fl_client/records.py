"""Flower records <-> numpy arrays, the one conversion the ClientApp and its mod use."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord


def to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    # order="C" without np.ascontiguousarray, which turns a 0-d buffer into shape (1,)
    return ArrayRecord({k: Array(np.asarray(v, order="C")) for k, v in arrays.items()})
