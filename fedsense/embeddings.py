"""Class centroids of a device's embeddings: what the TensorBoard projector
shows of a federation without any single window leaving a device.

Each row is the mean embedding of one class over at least ``min_count``
held-out windows; the array's size is fixed by the number of classes and
the embedding width, never by how many windows a device holds.
"""

from __future__ import annotations

import numpy as np
import torch

from fedsense.adaptation.discriminators import FUSED
from fedsense.data.base import Dataset
from fedsense.engine import forward
from fedsense.models import MultimodalNet


@torch.no_grad()
def class_centroids(
    model: MultimodalNet, data: Dataset, num_classes: int, min_count: int, batch_size: int = 512
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Per branch (every modality and ``fused``), the ``(num_classes, D)``
    centroids of ``data``'s embeddings in eval mode, and the windows behind
    each row. Classes with fewer than ``min_count`` windows (or unlabeled
    ones) give a zero row and a count of 0."""
    model.eval()
    sums: dict[str, np.ndarray] = {}
    counts = np.bincount(data.y[data.y >= 0], minlength=num_classes)[:num_classes]
    for start in range(0, len(data), batch_size):
        out = forward(model, data, slice(start, start + batch_size))
        y = data.y[start : start + batch_size]
        onehot = np.eye(num_classes, dtype=np.float64)[np.clip(y, 0, None)] * (y >= 0)[:, None]
        for b, z in {**out.branches, FUSED: out.fused}.items():
            part = onehot.T @ z.numpy().astype(np.float64)
            sums[b] = sums[b] + part if b in sums else part
    keep = counts >= min_count
    centroids = {
        b: np.where(keep[:, None], total / np.maximum(counts, 1)[:, None], 0.0).astype(np.float32)
        for b, total in sums.items()
    }
    return centroids, [int(c) if k else 0 for c, k in zip(counts, keep)]
