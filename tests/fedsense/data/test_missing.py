"""Missing modalities: which devices and windows, masks and zeros, loud errors."""

from __future__ import annotations

import numpy as np
import pytest

from fedsense import configfile as config_mod
from fedsense.config import ConfigError
from fedsense.data.base import Dataset, DatasetError
from fedsense.data.clients import load_client_data
from fedsense.data.missing import apply_missing, devices_without, without
from tests.conftest import SYNTHETIC


def _ds(n: int = 50) -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(x={"acc": rng.normal(size=(n, 3, 8)).astype(np.float32),
                      "gyro": rng.normal(size=(n, 3, 8)).astype(np.float32)},
                   y=np.arange(n) % 3, subject=np.ones(n, np.int64), domain=np.ones(n, np.int64))


def test_the_share_of_devices_is_exact_and_fixed_by_the_seed():
    for fraction, expected in ((0.0, 0), (0.3, 9), (0.5, 15), (0.7, 21), (1.0, 30)):
        chosen = devices_without("gyro", fraction, 30, seed=0)
        assert len(chosen) == expected and chosen <= set(range(30))
        assert chosen == devices_without("gyro", fraction, 30, seed=0)
    assert devices_without("gyro", 0.5, 30, 0) != devices_without("gyro", 0.5, 30, 1)
    # a larger share keeps the devices of a smaller one: the robustness curve is nested
    assert devices_without("gyro", 0.3, 30, 0) <= devices_without("gyro", 0.7, 30, 0)


def test_a_missing_modality_is_zeros_under_a_zero_mask():
    ds = _ds()
    rows = np.arange(50) % 4 == 0
    out = without(ds, "gyro", rows)
    assert not out.x["gyro"][rows].any() and np.array_equal(out.x["gyro"][~rows], ds.x["gyro"][~rows])
    np.testing.assert_array_equal(out.present("gyro"), (~rows).astype(np.float32))
    np.testing.assert_array_equal(out.present("acc"), 1.0)
    assert out.windows_with("gyro") == int((~rows).sum())
    sub = out.subset(np.arange(10))
    np.testing.assert_array_equal(sub.present("gyro"), out.present("gyro")[:10])
    assert ds.windows_with("gyro") == 50  # the original is untouched
    with pytest.raises(DatasetError, match="cannot drop modality 'audio'"):
        without(ds, "audio")


def test_window_drops_follow_the_rate_and_a_device_keeps_some_modality():
    ds = _ds(2000)
    out = apply_missing(ds, pid=3, num_devices=30, seed=0, drop_modality={}, drop_window={"gyro": 0.3}, part=0)
    assert 0.27 < 1 - out.windows_with("gyro") / 2000 < 0.33
    gone = apply_missing(ds, 3, 30, 0, {"gyro": 1.0}, {}, 0)
    assert gone.windows_with("gyro") == 0 and gone.windows_with("acc") == 2000
    with pytest.raises(DatasetError, match="no modality at all"):
        apply_missing(ds, 3, 30, 0, {"gyro": 1.0, "acc": 1.0}, {}, 0)


def test_configured_drops_reach_the_simulated_clients(tmp_path):
    cfg = config_mod.load(SYNTHETIC, [f"data.cache_dir={tmp_path}", "data.drop_modality={gyro: 0.5}"])
    lacking = devices_without("gyro", 0.5, 6, cfg.seed)
    for pid in range(6):
        data = load_client_data(cfg, {"partition-id": pid, "num-partitions": 6})
        has = pid not in lacking
        assert (data.train.windows_with("gyro") > 0) == has and (data.test.windows_with("gyro") > 0) == has
    with pytest.raises(ConfigError, match="data.drop_window.gyro: must be a fraction"):
        config_mod.load(SYNTHETIC, ["data.drop_window={gyro: 1.5}"])
