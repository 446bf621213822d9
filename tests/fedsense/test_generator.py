"""Generated normalisation: descriptors, the ridge generator, the statistics' encoding."""

from __future__ import annotations

import numpy as np
import pytest

from fedsense.data.base import Dataset
from fedsense.data.missing import without
from fedsense.generator import NormGenerator, describe, flatten, unflatten


def test_a_descriptor_is_each_channels_mean_and_spread_without_the_model():
    rng = np.random.default_rng(0)
    acc = (rng.normal(size=(40, 3, 16)) * [[[1.0], [2.0], [3.0]]] + [[[5.0], [0.0], [-1.0]]]).astype(np.float32)
    gyro = rng.normal(size=(40, 2, 8)).astype(np.float32)
    ds = Dataset(x={"acc": acc, "gyro": gyro}, y=np.zeros(40, np.int64), subject=np.ones(40, np.int64),
                 domain=np.ones(40, np.int64))
    d = describe(ds)
    assert d.shape == (2 * 3 + 2 * 2,)
    np.testing.assert_allclose(d[:3], [5.0, 0.0, -1.0], atol=0.2)
    np.testing.assert_allclose(d[3:6], [1.0, 2.0, 3.0], rtol=0.1)
    lacking = describe(without(ds, "gyro"))  # a device without the sensor: zeros, same size
    assert lacking.shape == d.shape and not lacking[6:].any() and np.array_equal(lacking[:6], d[:6])


def test_the_generator_recovers_a_linear_relation_and_keeps_variances_positive():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(24, 6))
    w = rng.normal(size=(6, 10))
    y = x @ w + 0.5
    gen = NormGenerator(ridge=1e-6).fit(x, y)
    probe = rng.normal(size=6)
    np.testing.assert_allclose(gen.predict(probe), probe @ w + 0.5, rtol=1e-4, atol=1e-4)
    stats = {"b.running_mean": rng.normal(size=4).astype(np.float32),
             "b.running_var": rng.uniform(0.1, 3, size=4).astype(np.float32)}
    keys, shapes = list(stats), {k: v.shape for k, v in stats.items()}
    vector = flatten(stats, keys)
    back = unflatten(vector, shapes, keys)
    np.testing.assert_allclose(back["b.running_var"], stats["b.running_var"], rtol=1e-6)
    assert np.all(unflatten(vector - 50, shapes, keys)["b.running_var"] > 0)  # exp of any log-variance
    with pytest.raises(ValueError, match="n >= 2"):
        NormGenerator().fit(x[:1], y[:1])
