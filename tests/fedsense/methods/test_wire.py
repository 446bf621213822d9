"""m3bat_local's records on the wire: round trips, and every lie refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from fedsense.adaptation.calibration import RawStats
from fedsense.adaptation.classwise import ClassStats
from fedsense.methods.wire import WireError, class_arrays, raw_arrays, read_class_stats, read_raw, read_stats

RAW = RawStats(np.array([40, 0, 35]), np.random.default_rng(0).normal(size=(3, 3)), np.stack([np.eye(3)] * 3),
               np.array([1.1, 0.0, 0.9]))
CLASSES = ClassStats(np.array([40, 0, 35]), np.ones((3, 8)), np.full((3, 8), 0.5))


def test_raw_and_class_statistics_round_trip():
    back = read_raw(raw_arrays("acc", RAW))["acc"]
    np.testing.assert_array_equal(back.count, RAW.count)
    np.testing.assert_allclose(back.mean, RAW.mean, rtol=1e-6)
    back_c = read_class_stats(class_arrays("fused", CLASSES))["fused"]
    np.testing.assert_allclose(back_c.var, CLASSES.var)
    assert read_raw({}) == {} and read_class_stats({}) == {}


@pytest.mark.parametrize("key,value,message", [
    ("raw.acc.count", np.array([40, -1, 35]), "raw.acc.count"),
    ("raw.acc.count", np.array([40, 1e12, 35]), "raw.acc.count"),
    ("raw.acc.count", np.array([40.5, 0, 35]), "raw.acc.count"),
    ("raw.acc.mean", np.full((3, 3), np.nan), "raw.acc.mean: not finite"),
    ("raw.acc.mean", np.zeros((4, 3)), r"raw.acc.mean: shape \(4, 3\)"),
    ("raw.acc.cov", -np.stack([np.eye(3)] * 3), "negative"),
    ("raw.acc.energy", np.array([1.0, -2.0, 1.0]), "negative"),
])
def test_a_malformed_raw_record_is_refused_naming_the_key(key, value, message):
    arrays = raw_arrays("acc", RAW)
    arrays[key] = value
    with pytest.raises(WireError, match=message):
        read_raw(arrays)


def test_missing_and_malformed_class_statistics_are_refused():
    arrays = class_arrays("fused", CLASSES)
    del arrays["class.fused.var"]
    with pytest.raises(WireError, match="missing"):
        read_class_stats(arrays)
    arrays = class_arrays("fused", CLASSES)
    arrays["class.fused.var"] = -arrays["class.fused.var"]
    with pytest.raises(WireError, match="negative variance"):
        read_class_stats(arrays)


def test_a_statistics_count_must_be_a_plausible_whole_number():
    arrays = {"stats.acc.mean": np.zeros(2), "stats.acc.cov": np.eye(2)}
    assert read_stats(arrays, {"stats.acc.count": 40})["acc"].count == 40
    for lie in (1e12, -3, 2.5, "40", None):
        with pytest.raises(WireError, match="stats.acc.count"):
            read_stats(arrays, {"stats.acc.count": lie})
