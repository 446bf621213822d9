"""The array records of ``m3bat_local`` on the wire, packed and checked.

Everything read here came from another machine: a record whose arrays have
the wrong shape, are not finite, or whose counts are negative, fractional or
beyond any device's windows raises :class:`WireError` naming the key, and
the server refuses that reply's record (counted) instead of pooling it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedsense.adaptation.calibration import AXES, RawStats
from fedsense.adaptation.classwise import ClassStats
from fedsense.adaptation.statistics import Stats

MAX_COUNT = 10_000_000  # more windows than any device holds: a count above is a lie


class WireError(ValueError):
    """A record from a device is malformed."""


def _counts(arrays: Mapping[str, np.ndarray], key: str, limit: int = MAX_COUNT) -> np.ndarray:
    """A vector of whole-number counts adding up to at most ``limit`` (the windows the device declared)."""
    c = np.asarray(arrays[key])
    if c.ndim != 1 or not np.issubdtype(c.dtype, np.number) or not np.all(np.isfinite(c)) or np.any(c < 0) \
            or np.any(c != np.round(c)) or float(c.sum()) > min(limit, MAX_COUNT):
        raise WireError(f"{key}: counts must be whole numbers adding up to at most {min(limit, MAX_COUNT)} "
                        f"(the windows the device declared)")
    return c.astype(np.int64)


def _finite(arrays: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(arrays[key], dtype=np.float64)
    if a.shape != shape:
        raise WireError(f"{key}: shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise WireError(f"{key}: not finite")
    return a


def _names(arrays: Mapping[str, np.ndarray], prefix: str) -> list[str]:
    return sorted({k[len(prefix):].rsplit(".", 1)[0] for k in arrays if k.startswith(prefix)})


def _require(arrays: Mapping[str, np.ndarray], keys: list[str]) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise WireError(f"missing {missing}")


# ------------------------------------------------------------- raw statistics
RAW_PREFIX = "raw."


def raw_arrays(modality: str, s: RawStats) -> dict[str, np.ndarray]:
    p = f"{RAW_PREFIX}{modality}."
    return {p + "count": s.count.astype(np.int64), p + "mean": s.mean.astype(np.float32),
            p + "cov": s.cov.astype(np.float32), p + "energy": s.energy.astype(np.float32)}


def read_raw(arrays: Mapping[str, np.ndarray], limit: int = MAX_COUNT) -> dict[str, RawStats]:
    out = {}
    for m in _names(arrays, RAW_PREFIX):
        p = f"{RAW_PREFIX}{m}."
        _require(arrays, [p + k for k in ("count", "mean", "cov", "energy")])
        count = _counts(arrays, p + "count", limit)
        k = count.shape[0]
        cov = _finite(arrays, p + "cov", (k, AXES, AXES))
        energy = _finite(arrays, p + "energy", (k,))
        if np.any(energy < 0) or np.any(np.linalg.eigvalsh((cov + cov.transpose(0, 2, 1)) / 2) < -1e-6):
            raise WireError(f"{p}cov/energy: a covariance or energy is negative")
        out[m] = RawStats(count, _finite(arrays, p + "mean", (k, AXES)), cov, energy)
    return out


# ------------------------------------------------------- class statistics
CLASS_PREFIX = "class."


def class_arrays(branch: str, s: ClassStats) -> dict[str, np.ndarray]:
    p = f"{CLASS_PREFIX}{branch}."
    return {p + "count": s.count.astype(np.int64), p + "mean": s.mean.astype(np.float32),
            p + "var": s.var.astype(np.float32)}


def read_class_stats(arrays: Mapping[str, np.ndarray], limit: int = MAX_COUNT) -> dict[str, ClassStats]:
    out = {}
    for b in _names(arrays, CLASS_PREFIX):
        p = f"{CLASS_PREFIX}{b}."
        _require(arrays, [p + k for k in ("count", "mean", "var")])
        count = _counts(arrays, p + "count", limit)
        mean = np.asarray(arrays[p + "mean"])
        if mean.ndim != 2 or mean.shape[0] != count.shape[0]:
            raise WireError(f"{p}mean: shape {mean.shape}, expected ({count.shape[0]}, D)")
        var = _finite(arrays, p + "var", mean.shape)
        if np.any(var < 0):
            raise WireError(f"{p}var: negative variance")
        out[b] = ClassStats(count, _finite(arrays, p + "mean", mean.shape), var)
    return out


# ------------------------------------------- per-branch statistics (shift)
STATS_PREFIX = "stats."


def read_stats(arrays: Mapping[str, np.ndarray], counts: Mapping[str, object],
               limit: int = MAX_COUNT) -> dict[str, Stats]:
    """``stats.<branch>.mean``/``.cov`` arrays with their ``stats.<branch>.count`` metric
    (at most ``limit``, the windows the device declared); the covariance must
    be symmetric and positive semi-definite."""
    out = {}
    for b in _names(arrays, STATS_PREFIX):
        p = f"{STATS_PREFIX}{b}."
        _require(arrays, [p + "mean", p + "cov"])
        count = counts.get(p + "count")
        top = min(limit, MAX_COUNT)
        if isinstance(count, bool) or not isinstance(count, (int, float)) or not 0 <= count <= top \
                or count != round(count):
            raise WireError(f"{p}count: {count!r} is not a whole number in [0, {top}] (the windows the device declared)")
        mean = np.asarray(arrays[p + "mean"])
        if mean.ndim != 1:
            raise WireError(f"{p}mean: shape {mean.shape}, expected (D,)")
        d = mean.shape[0]
        cov = _finite(arrays, p + "cov", (d, d))
        if d and (not np.allclose(cov, cov.T, atol=1e-4) or np.linalg.eigvalsh((cov + cov.T) / 2).min() < -1e-4):
            raise WireError(f"{p}cov: not a covariance (symmetric, positive semi-definite)")
        out[b] = Stats(int(count), _finite(arrays, p + "mean", (d,)), cov)
    return out
