"""Device-shift transforms and their application to selected domains."""

from __future__ import annotations

import numpy as np
import pytest

from fedsense.config import ShiftConfig
from fedsense.data.base import Dataset, DatasetError
from fedsense.data.shifts import (
    add_noise,
    apply_shifts,
    bias,
    describe,
    gain,
    mirror,
    resample,
    rotate,
)


def windows(n: int = 4, c: int = 3, t: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, c, t)).astype(np.float32)


def dataset() -> Dataset:
    """Three domains (1, 2, 3), two windows each; acc/gyro 3-axis, audio 1-channel."""
    rng = np.random.default_rng(1)
    n = 6
    domain = np.array([1, 1, 2, 2, 3, 3], dtype=np.int64)
    return Dataset(
        x={
            "acc": rng.normal(size=(n, 3, 16)).astype(np.float32),
            "gyro": rng.normal(size=(n, 3, 16)).astype(np.float32),
            "audio": rng.normal(size=(n, 1, 24)).astype(np.float32),
        },
        y=np.array([0, 1, 0, 1, 0, 1], dtype=np.int64),
        subject=domain.copy(),
        domain=domain,
        classes=("a", "b"),
    )


# --------------------------------------------------------------------------- #
# Transforms


def test_rotate_90_about_z_maps_x_to_y_exactly() -> None:
    x = np.zeros((2, 3, 5), dtype=np.float32)
    x[:, 0] = np.arange(5, dtype=np.float32) + 1.5
    out = rotate(x, [0, 0, 90])
    expected = np.zeros_like(x)
    expected[:, 1] = x[:, 0]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)


def test_rotate_order_is_rz_ry_rx() -> None:
    # x-axis quarter turn maps y -> z; then a z quarter turn maps z -> z.
    # In the other order (Rx @ Rz) y would go to -x and then stay at -x.
    x = np.zeros((1, 3, 1), dtype=np.float32)
    x[0, 1, 0] = 1.0
    np.testing.assert_array_equal(rotate(x, [90, 0, 90])[0, :, 0], [0.0, 0.0, 1.0])


def test_rotation_preserves_vector_norms() -> None:
    x = windows()
    out = rotate(x, [17.0, -40.0, 123.0])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
    assert not np.allclose(out, x)


def test_rotate_refuses_non_3_channels() -> None:
    with pytest.raises(DatasetError, match=r"\(4, 2, 16\)"):
        rotate(windows(c=2), [0, 0, 90])


def test_mirror_flips_listed_axes() -> None:
    x = windows()
    out = mirror(x, ["x", "z"])
    np.testing.assert_array_equal(out[:, 0], -x[:, 0])
    np.testing.assert_array_equal(out[:, 1], x[:, 1])
    np.testing.assert_array_equal(out[:, 2], -x[:, 2])
    with pytest.raises(DatasetError, match="w"):
        mirror(x, ["w"])


def test_gain_and_bias() -> None:
    x = windows()
    np.testing.assert_allclose(gain(x, 2.5), x * 2.5, rtol=1e-6)
    np.testing.assert_allclose(bias(x, -0.75), x - 0.75, rtol=1e-6)
    assert gain(x, 2.5).dtype == np.float32 and bias(x, 1.0).dtype == np.float32


def test_add_noise_has_requested_std_and_is_seeded() -> None:
    x = np.zeros((50, 3, 100), dtype=np.float32)
    a = add_noise(x, 0.3, np.random.default_rng(5))
    b = add_noise(x, 0.3, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32
    assert abs(float(a.std()) - 0.3) < 0.01


def test_resample_identity_and_ramp_stretch() -> None:
    x = windows()
    np.testing.assert_array_equal(resample(x, 1.0), x)
    ramp = np.broadcast_to(np.arange(10, dtype=np.float32), (1, 1, 10)).copy()
    # Clock 50 % fast: sample t reads the input at 1.5 t, clamped at the last sample.
    expected = np.minimum(np.arange(10) * 1.5, 9.0)
    np.testing.assert_allclose(resample(ramp, 1.5)[0, 0], expected, rtol=1e-6)
    # Clock slow: the ramp is stretched out.
    np.testing.assert_allclose(resample(ramp, 0.5)[0, 0], np.arange(10) * 0.5, rtol=1e-6)


# --------------------------------------------------------------------------- #
# apply_shifts


def test_apply_shifts_touches_only_listed_domains_and_not_the_input() -> None:
    ds = dataset()
    before = {m: a.copy() for m, a in ds.x.items()}
    out = apply_shifts(ds, [ShiftConfig(domains=[2], gain=2.0, bias=1.0)])
    for m in ds.modalities:
        np.testing.assert_array_equal(ds.x[m], before[m])  # input untouched
        rows = ds.domain == 2
        np.testing.assert_array_equal(out.x[m][~rows], ds.x[m][~rows])
        np.testing.assert_allclose(out.x[m][rows], ds.x[m][rows] * 2.0 + 1.0, rtol=1e-6)
        assert out.x[m].dtype == np.float32
    np.testing.assert_array_equal(out.y, ds.y)
    np.testing.assert_array_equal(out.domain, ds.domain)


def test_apply_shifts_rotates_every_3_axis_modality_alike() -> None:
    ds = dataset()
    out = apply_shifts(ds, [ShiftConfig(domains=[1, 3], rotate=[0, 0, 90], mirror=["z"])])
    rows = np.isin(ds.domain, [1, 3])
    for m in ("acc", "gyro"):
        expected = mirror(rotate(ds.x[m][rows], [0, 0, 90]), ["z"])
        np.testing.assert_array_equal(out.x[m][rows], expected)
    np.testing.assert_array_equal(out.x["audio"], ds.x["audio"])  # 1 channel: not rotated


def test_apply_shifts_only_listed_modalities() -> None:
    ds = dataset()
    out = apply_shifts(ds, [ShiftConfig(domains=[3], modalities=["gyro"], bias=5.0)])
    np.testing.assert_array_equal(out.x["acc"], ds.x["acc"])
    assert not np.array_equal(out.x["gyro"], ds.x["gyro"])


def test_apply_shifts_is_deterministic_and_seeded() -> None:
    ds = dataset()
    shift = ShiftConfig(domains=[1], noise=0.5, resample=1.2, seed=3)
    a, b = apply_shifts(ds, [shift]), apply_shifts(ds, [shift])
    for m in ds.modalities:
        np.testing.assert_array_equal(a.x[m], b.x[m])
    c = apply_shifts(ds, [ShiftConfig(domains=[1], noise=0.5, resample=1.2, seed=4)])
    assert not np.array_equal(a.x["acc"], c.x["acc"])


def test_apply_shifts_refuses_rotation_of_listed_non_3_channel_modality() -> None:
    with pytest.raises(DatasetError, match="audio"):
        apply_shifts(dataset(), [ShiftConfig(domains=[1], modalities=["audio"], rotate=[0, 0, 30])])
    with pytest.raises(DatasetError, match="audio"):
        apply_shifts(dataset(), [ShiftConfig(domains=[1], modalities=["audio"], mirror=["x"])])
    # Gain on the same modality is fine.
    apply_shifts(dataset(), [ShiftConfig(domains=[1], modalities=["audio"], gain=2.0)])


def test_apply_shifts_unknown_modality_lists_valid_ones() -> None:
    with pytest.raises(DatasetError, match=r"magnet.*acc, gyro, audio"):
        apply_shifts(dataset(), [ShiftConfig(domains=[1], modalities=["magnet"])])


def test_apply_shifts_unmatched_domains_is_an_error() -> None:
    with pytest.raises(DatasetError, match=r"\[7, 9\].*present: \[1, 2, 3\].*--set data.shifts=\[\]"):
        apply_shifts(dataset(), [ShiftConfig(domains=[7, 9], gain=2.0)])
    # A client holding one subject may skip shifts meant for others.
    ds = dataset()
    out = apply_shifts(ds, [ShiftConfig(domains=[7], gain=2.0)], strict=False)
    np.testing.assert_array_equal(out.x["acc"], ds.x["acc"])


def test_describe_names_every_change_and_only_those() -> None:
    assert describe(ShiftConfig(domains=[25, 26], rotate=[0, 0, 45], gain=1.15, noise=0.05)) == (
        "domains [25, 26]: turned 45 deg about z, gain 1.15, noise 0.05")
    assert describe(ShiftConfig(domains=[3], modalities=["acc"], mirror=["y"], bias=0.05, resample=1.1)) == (
        "domains [3] (acc): mirrored y, bias 0.05, resample 1.1")
    assert describe(ShiftConfig(domains=[1])) == "domains [1]: nothing"
