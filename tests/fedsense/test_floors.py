"""The floors a device applies to what it sends."""

from __future__ import annotations

import numpy as np
import pytest

from fedsense import protocol
from fedsense.config import ConfigError
from fedsense.floors import device_floor, enough_windows, floor_rows


def test_the_device_floor_is_its_own_and_never_below_the_minimum():
    assert device_floor({}) == protocol.MIN_COUNT
    assert device_floor({protocol.NODE_MIN_COUNT: 40}) == 40
    assert device_floor({protocol.NODE_MIN_COUNT: 1}) == protocol.MIN_COUNT
    for bad in ("few", 2.5, True):
        with pytest.raises(ConfigError, match="min-count"):
            device_floor({protocol.NODE_MIN_COUNT: bad})


def test_a_confusion_row_of_fewer_windows_than_the_floor_is_not_sent():
    cm = np.array([[5, 1, 0], [0, 2, 2], [1, 0, 0]])
    out = floor_rows(cm, 5)
    np.testing.assert_array_equal(out, [[5, 1, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(cm, [[5, 1, 0], [0, 2, 2], [1, 0, 0]])  # the input is left alone
    np.testing.assert_array_equal(floor_rows(cm, 1), cm)
    assert out.dtype == np.int64


def test_a_whole_device_description_needs_enough_windows():
    assert enough_windows(32, 32) and not enough_windows(31, 32)
    assert not enough_windows(4, 0)  # never below protocol.MIN_COUNT
