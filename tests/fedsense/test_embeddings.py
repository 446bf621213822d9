"""Class centroids of embeddings: fixed size, thresholded, exact means."""

from __future__ import annotations

import numpy as np
import torch

from fedsense.config import ModelConfig, SyntheticConfig
from fedsense.data.synthetic import make_synthetic
from fedsense.embeddings import class_centroids
from fedsense.engine import as_tensors
from fedsense.models import DataSpec, build_model

SPEC = DataSpec({"acc": (3, 64), "gyro": (3, 64)}, num_classes=4)


def test_centroids_are_class_means_and_small_classes_are_withheld():
    ds = make_synthetic(SyntheticConfig(subjects=1, windows_per_class=6), seed=0)
    ds = ds.subset((ds.y != 3) | (np.cumsum(ds.y == 3) <= 2))  # class 3: only two windows
    model = build_model(SPEC, ModelConfig(channels=[8], embed_dim=8), seed=0)
    centroids, counts = class_centroids(model, ds, num_classes=4, min_count=3, batch_size=7)
    assert counts == [6, 6, 6, 0]
    assert set(centroids) == {"acc", "gyro", "fused"}
    model.eval()
    with torch.no_grad():
        fused = model(as_tensors(ds, slice(0, len(ds)))).fused.numpy()
    for c in range(3):
        np.testing.assert_allclose(centroids["fused"][c], fused[ds.y == c].mean(axis=0), rtol=1e-5, atol=1e-6)
    assert not centroids["acc"][3].any() and centroids["acc"].shape == (4, 8)


def test_centroid_size_does_not_depend_on_the_number_of_windows():
    model = build_model(SPEC, ModelConfig(channels=[8], embed_dim=8), seed=0)
    shapes = []
    for n in (5, 40):
        ds = make_synthetic(SyntheticConfig(subjects=1, windows_per_class=n), seed=0)
        centroids, counts = class_centroids(model, ds, 4, 2)
        shapes.append(({b: c.shape for b, c in centroids.items()}, len(counts)))
    assert shapes[0] == shapes[1]
