"""Injected faults: who is faulty, and what a faulty client sends."""

from __future__ import annotations

import numpy as np
import pytest

from fedsense.config import FaultsConfig
from fedsense.faults import fault_of, flip_labels, tamper


def test_each_fraction_of_clients_gets_its_fault_and_no_client_two():
    cfg = FaultsConfig(crash=0.1, nan=0.2, sign_flip=0.2, seed=3)
    faults = [fault_of(cfg, c, 30) for c in range(30)]
    assert faults.count("crash") == 3 and faults.count("nan") == 6 and faults.count("sign_flip") == 6
    assert faults.count(None) == 15
    assert faults == [fault_of(cfg, c, 30) for c in range(30)]  # fixed by the seed
    other = [fault_of(FaultsConfig(crash=0.1, nan=0.2, sign_flip=0.2, seed=4), c, 30) for c in range(30)]
    assert other != faults
    assert all(fault_of(FaultsConfig(), c, 30) is None for c in range(30))
    assert fault_of(cfg, -1, 30) is None  # a real device


def test_tampered_updates():
    received = {"w": np.array([1.0, 1.0], np.float32), "steps": np.array(4, np.int64)}
    trained = {"w": np.array([1.5, 0.5], np.float32), "steps": np.array(6, np.int64)}
    flipped = tamper("sign_flip", trained, received, 10)
    np.testing.assert_allclose(flipped["w"], [0.5, 1.5])
    np.testing.assert_allclose(tamper("scale", trained, received, 10)["w"], [6.0, -4.0])
    assert np.isnan(tamper("nan", trained, received, 10)["w"]).all()
    assert int(flipped["steps"]) == 6 and flipped["w"].dtype == np.float32
    with pytest.raises(ValueError, match="crash"):
        tamper("crash", trained, received, 10)


def test_flipped_labels_keep_unlabeled_windows():
    np.testing.assert_array_equal(flip_labels(np.array([0, 1, 5, -1]), 6), [5, 4, 0, -1])
