"""Device shifts that turn one clean dataset into a heterogeneous fleet.

Every transform is a pure function on float32 windows ``(N, C, T)`` that
returns a new float32 array. :func:`apply_shifts` applies a list of
:class:`~fedsense.config.ShiftConfig` to the windows of the listed domains:
per shift and modality, in this order,

1. ``resample``  (the sensor clock runs fast or slow),
2. ``rotate`` then ``mirror`` (the phone sits differently; 3-axis modalities
   only, one rotation shared by all of them),
3. ``gain`` then ``bias`` (calibration),
4. ``noise``     (a cheaper sensor), drawn from ``default_rng(shift.seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedsense.config import ShiftConfig
from fedsense.data.base import Dataset, DatasetError

AXES = ("x", "y", "z")


def _check_windows(x: np.ndarray, what: str) -> None:
    if x.ndim != 3:
        raise DatasetError(f"{what}: expected windows of shape (N, C, T), got {x.shape}")


def _check_xyz(x: np.ndarray, what: str) -> None:
    _check_windows(x, what)
    if x.shape[1] != 3:
        raise DatasetError(
            f"{what}: needs 3 channels (x, y, z), got windows of shape {x.shape}"
        )


def _cos_sin(degrees: float) -> tuple[float, float]:
    """cos and sin of an angle in degrees, exact at multiples of 90°.

    Why: ``np.cos(np.pi / 2)`` is 6e-17, not 0, so a quarter turn would leak a
    tiny share of one axis into another; exact values keep axis swaps exact.
    """
    quarter, rest = divmod(float(degrees), 90.0)
    if rest == 0.0:
        return [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][int(quarter) % 4]
    rad = np.deg2rad(degrees)
    return float(np.cos(rad)), float(np.sin(rad))


def rotation_matrix(degrees_xyz: Sequence[float]) -> np.ndarray:
    """``R = Rz @ Ry @ Rx`` (float64 ``(3, 3)``) for angles in degrees about x, y, z.

    Applied to column vectors: first about x, then y, then z (extrinsic axes).
    """
    if len(degrees_xyz) != 3:
        raise DatasetError(f"rotate: needs three angles (x, y, z degrees), got {list(degrees_xyz)}")
    (cx, sx), (cy, sy), (cz, sz) = (_cos_sin(d) for d in degrees_xyz)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ rx


def rotate(x: np.ndarray, degrees_xyz: Sequence[float]) -> np.ndarray:
    """Rotate every sample vector of 3-axis windows.

    Args:
        x: float32 ``(N, 3, T)``; channel ``i`` is axis ``"xyz"[i]``.
        degrees_xyz: angles about x, y, z in degrees; ``R = Rz @ Ry @ Rx``.

    Returns:
        float32 ``(N, 3, T)`` with ``out[n, :, t] = R @ x[n, :, t]``.
    """
    _check_xyz(x, "rotate")
    r = rotation_matrix(degrees_xyz)
    return np.einsum("ij,njt->nit", r, x.astype(np.float64)).astype(np.float32)


def mirror(x: np.ndarray, axes: Sequence[str]) -> np.ndarray:
    """Flip the sign of the listed axes (``"x"``, ``"y"``, ``"z"``).

    Args:
        x: float32 ``(N, 3, T)``.
        axes: axis names; a repeated axis is flipped once.

    Returns:
        float32 ``(N, 3, T)``.
    """
    _check_xyz(x, "mirror")
    unknown = [a for a in axes if a not in AXES]
    if unknown:
        raise DatasetError(f"mirror: unknown axes {unknown} (valid: x, y, z)")
    sign = np.array([-1.0 if a in axes else 1.0 for a in AXES], dtype=np.float32)
    return (x * sign[None, :, None]).astype(np.float32)


def gain(x: np.ndarray, g: float) -> np.ndarray:
    """Multiply every sample by ``g``; float32 ``(N, C, T)`` in and out."""
    _check_windows(x, "gain")
    return (x * np.float32(g)).astype(np.float32)


def bias(x: np.ndarray, b: float) -> np.ndarray:
    """Add ``b`` to every sample; float32 ``(N, C, T)`` in and out."""
    _check_windows(x, "bias")
    return (x + np.float32(b)).astype(np.float32)


def add_noise(x: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Add i.i.d. Gaussian noise of standard deviation ``std`` (signal units).

    Args:
        x: float32 ``(N, C, T)``.
        std: non-negative; 0 returns a copy and draws nothing from ``rng``.
        rng: the source of the noise (advanced by ``x.size`` draws).

    Returns:
        float32 ``(N, C, T)``.
    """
    _check_windows(x, "add_noise")
    if std < 0:
        raise DatasetError(f"add_noise: std must be non-negative, got {std}")
    if std == 0:
        return x.astype(np.float32, copy=True)
    return (x + rng.normal(0.0, std, size=x.shape)).astype(np.float32)


def resample(x: np.ndarray, factor: float) -> np.ndarray:
    """Stretch the time axis by linear interpolation, keeping ``T``.

    ``out[..., t] = x[..., t * factor]`` (interpolated, positions past the
    last sample clamp to it). ``factor = 1.1`` models a sensor clock running
    10 % fast: the same motion spans fewer samples.

    Args:
        x: float32 ``(N, C, T)``.
        factor: positive time-stretch factor; 1.0 is the identity.

    Returns:
        float32 ``(N, C, T)``.
    """
    _check_windows(x, "resample")
    if not factor > 0:
        raise DatasetError(f"resample: factor must be positive, got {factor}")
    steps = x.shape[2]
    pos = np.minimum(np.arange(steps) * float(factor), steps - 1)  # (T,)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, steps - 1)
    w = (pos - lo).astype(np.float32)  # 0 at integer positions: those copy exactly
    return (x[..., lo] * (np.float32(1) - w) + x[..., hi] * w).astype(np.float32)


def _is_identity_rotation(degrees_xyz: Sequence[float]) -> bool:
    return all(float(d) % 360.0 == 0.0 for d in degrees_xyz)


def describe(shift: ShiftConfig) -> str:
    """One line a person reads: what the shift does to which domains."""
    parts = []
    if not _is_identity_rotation(shift.rotate):
        parts.append("turned " + ", ".join(f"{float(d):g} deg about {a}" for d, a in zip(shift.rotate, AXES) if d))
    if shift.mirror:
        parts.append("mirrored " + "".join(shift.mirror))
    for name, value, neutral in (("gain", shift.gain, 1.0), ("bias", shift.bias, 0.0),
                                 ("noise", shift.noise, 0.0), ("resample", shift.resample, 1.0)):
        if value != neutral:
            parts.append(f"{name} {value:g}")
    what = ", ".join(parts) or "nothing"
    on = f" ({', '.join(shift.modalities)})" if shift.modalities else ""
    return f"domains {list(shift.domains)}{on}: {what}"


NO_SHIFT_HINT = "--set data.shifts=[] runs your data as recorded"


def _check_shift(shift: ShiftConfig, where: str) -> None:
    """Value checks, repeated here because a ShiftConfig can be built in code."""
    if len(shift.rotate) != 3:
        raise DatasetError(
            f"{where}: rotate needs three angles (x, y, z degrees), got {shift.rotate}"
        )
    unknown = [a for a in shift.mirror if a not in AXES]
    if unknown:
        raise DatasetError(f"{where}: unknown mirror axes {unknown} (valid: x, y, z)")
    if shift.noise < 0:
        raise DatasetError(f"{where}: noise must be non-negative, got {shift.noise}")
    if not shift.resample > 0:
        raise DatasetError(f"{where}: resample must be positive, got {shift.resample}")
    if not shift.domains:
        raise DatasetError(f"{where}: lists no domains, so it would change nothing")


def _shift_modalities(ds: Dataset, shift: ShiftConfig, where: str) -> list[str]:
    """The modalities one shift acts on, in dataset order; checks names and shapes."""
    valid = ds.modalities
    unknown = [m for m in shift.modalities if m not in valid]
    if unknown:
        raise DatasetError(
            f"{where}: unknown modalities {unknown} (valid: {', '.join(valid)})"
        )
    chosen = [m for m in valid if not shift.modalities or m in shift.modalities]
    orients = not _is_identity_rotation(shift.rotate) or bool(shift.mirror)
    if orients:
        bad = [m for m in shift.modalities if ds.x[m].shape[1] != 3]
        if bad:
            shapes = ", ".join(f"{m} {ds.x[m].shape}" for m in bad)
            raise DatasetError(
                f"{where}: rotate/mirror need 3-channel modalities, but listed {shapes}"
            )
        if not any(ds.x[m].shape[1] == 3 for m in chosen):
            # Why: otherwise the requested rotation would silently do nothing.
            raise DatasetError(
                f"{where}: rotate/mirror requested but no chosen modality has 3 channels"
            )
    return chosen


def _apply_one(x: np.ndarray, shift: ShiftConfig, rng: np.random.Generator) -> np.ndarray:
    """One shift on the selected windows of one modality, ``(n, C, T)`` float32."""
    if shift.resample != 1.0:
        x = resample(x, shift.resample)
    if x.shape[1] == 3:
        if not _is_identity_rotation(shift.rotate):
            x = rotate(x, shift.rotate)
        if shift.mirror:
            x = mirror(x, shift.mirror)
    if shift.gain != 1.0:
        x = gain(x, shift.gain)
    if shift.bias != 0.0:
        x = bias(x, shift.bias)
    if shift.noise > 0.0:
        x = add_noise(x, shift.noise, rng)
    return x


def apply_shifts(ds: Dataset, shifts: Sequence[ShiftConfig], strict: bool = True) -> Dataset:
    """A new dataset with each shift applied to the windows of its domains.

    Shifts are applied one after another, so two shifts on the same domain
    compose. Rotation and mirroring act only on 3-channel modalities and use
    the same matrix for each of them (a phone turned in the pocket turns
    accelerometer and gyroscope alike); listing a modality with another channel
    count together with a rotation or mirror is an error. Noise for one shift
    comes from ``np.random.default_rng(shift.seed)``, drawn modality by
    modality in dataset order, so the result is deterministic.

    Args:
        ds: the input; never modified.
        shifts: the shifts to apply.
        strict: when true (default), a shift whose ``domains`` match no window
            is an error (a typo would otherwise silently do nothing). A client
            holding only its own subject's windows passes ``False`` to apply
            the fleet's shift list and skip the shifts meant for others.

    Returns:
        A :class:`Dataset` with the same ``y``, ``subject``, ``domain``,
        ``classes`` and shapes; ``x[m]`` float32 ``(N, C_m, T_m)``.
    """
    x = {m: a.astype(np.float32, copy=True) for m, a in ds.x.items()}
    for i, shift in enumerate(shifts):
        where = f"shift {i} (domains {list(shift.domains)})"
        _check_shift(shift, where)
        chosen = _shift_modalities(ds, shift, where)
        rows = np.isin(ds.domain, np.asarray(shift.domains, dtype=np.int64))
        if not rows.any():
            if strict:
                present = [int(d) for d in np.unique(ds.domain)]
                raise DatasetError(
                    f"{where}: no window has any of domains {list(shift.domains)} "
                    f"(present: {present}); data.shifts are synthetic shifts of an experiment "
                    f"(configs/default.yaml turns HAPT users 25-30): {NO_SHIFT_HINT}"
                )
            continue
        rng = np.random.default_rng(shift.seed)
        for m in chosen:
            x[m][rows] = _apply_one(x[m][rows], shift, rng)
    return Dataset(
        x=x,
        y=ds.y.copy(),
        subject=ds.subject.copy(),
        domain=ds.domain.copy(),
        classes=ds.classes,
    )
