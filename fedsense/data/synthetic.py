"""A generated multimodal dataset for fast, deterministic tests.

Every window is a sum of per-channel sinusoids whose frequency, phase and mean
depend on the class, plus a per-subject gain and offset (so subjects, which are
also the domains, differ) and Gaussian noise. The classes are built so that no
single modality separates all of them: with two or more modalities the first
one only tells class *pairs* apart (``k // 2``) and the second only the class
parity (``k % 2``); together they identify every class. Further modalities
carry the full class. A small multimodal 1-D CNN therefore has to fuse.

Within one subject, windows are in time order as contiguous per-class
segments; each class appears in two segments (first half of its windows, then
the rest later on) so a time-ordered per-class split has something to split.
Windows are generated independently (no overlap between neighbours); the split
still drops a boundary window per class, as it would for real overlapping
windows.

Randomness comes from two independent streams: one shared by all subjects (the
class signatures) and one per subject (its gain, offset, segment order and
noise). That is what lets :func:`make_synthetic_subject` produce one subject
alone, bit-identical to its rows in :func:`make_synthetic`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsense.config import SyntheticConfig
from fedsense.data.base import Dataset, DatasetError

# Stream tags, so the shared and the per-subject generators never coincide.
_CLASS_STREAM = 0
_SUBJECT_STREAM = 1

# Class amplitudes and means are spread over these ranges (signal units) on an
# evenly spaced grid, so two class keys never coincide by chance; with the
# default noise (0.5) single samples are noisy but windows are learnable.
_AMPLITUDE_RANGE = (0.5, 1.5)
_MEAN_RANGE = (-0.8, 0.8)
# Per-window jitter: sensors are never perfectly periodic.
_PHASE_JITTER = 0.3  # radians
_AMPLITUDE_JITTER = 0.1  # relative
# Distinct class signatures keep at least this many cycles per window apart.
_FREQ_STEP = 0.75


@dataclass(frozen=True)
class _Signature:
    """Per-modality class signatures, shared by all subjects.

    Arrays are ``(K, C)`` where ``K`` is the number of distinct signature keys
    of that modality (see :func:`_class_keys`).
    """

    freq: np.ndarray  # cycles per window
    phase: np.ndarray  # radians
    amp: np.ndarray  # signal units
    mean: np.ndarray  # signal units


def _seed_words(seed: int) -> int:
    # SeedSequence needs non-negative entries; wrap so negative seeds still work.
    return int(seed) % (1 << 64)


def _class_keys(num_classes: int, modality_index: int, num_modalities: int) -> np.ndarray:
    """Signature key of each class in one modality, ``(num_classes,)`` int.

    Classes sharing a key look identical in that modality (up to noise).
    """
    k = np.arange(num_classes)
    if num_modalities == 1 or modality_index >= 2:
        return k
    # Why: pairs (2j, 2j+1) differ only in modality 1, parities only in
    # modality 0, so neither modality alone resolves all classes.
    return k // 2 if modality_index == 0 else k % 2


def _check(cfg: SyntheticConfig) -> None:
    if cfg.subjects < 1:
        raise DatasetError(f"synthetic.subjects must be at least 1, got {cfg.subjects}")
    if cfg.classes < 2:
        raise DatasetError(f"synthetic.classes must be at least 2, got {cfg.classes}")
    if cfg.windows_per_class < 1:
        raise DatasetError(
            f"synthetic.windows_per_class must be at least 1, got {cfg.windows_per_class}"
        )
    if not cfg.modalities:
        raise DatasetError("synthetic.modalities is empty: at least one modality is needed")
    for name, shape in cfg.modalities.items():
        if len(shape) != 2 or shape[0] < 1 or shape[1] < 8:
            raise DatasetError(
                f"synthetic.modalities.{name}: must be [channels>=1, steps>=8], got {shape}"
            )


def _levels(
    bounds: tuple[float, float], n_keys: int, channels: int, rng: np.random.Generator
) -> np.ndarray:
    """``(n_keys, channels)``: each column a permutation of ``n_keys`` even levels."""
    levels = np.linspace(bounds[0], bounds[1], n_keys)
    return np.stack([rng.permutation(levels) for _ in range(channels)], 1)


def _signatures(cfg: SyntheticConfig, seed: int) -> dict[str, _Signature]:
    """Class signatures per modality, drawn from the stream shared by all subjects."""
    rng = np.random.default_rng([_seed_words(seed), _CLASS_STREAM])
    out: dict[str, _Signature] = {}
    n_mod = len(cfg.modalities)
    for j, (name, (channels, steps)) in enumerate(cfg.modalities.items()):
        n_keys = int(_class_keys(cfg.classes, j, n_mod).max()) + 1
        # A grid of distinct frequencies below steps/4 (well under Nyquist), so
        # two keys never share a frequency on a channel.
        n_grid = max(n_keys, 8)
        step = min(_FREQ_STEP, max(0.1, (steps / 4 - 1) / (n_grid - 1)))
        grid = 1.0 + step * np.arange(n_grid)
        freq = np.stack([rng.choice(grid, size=n_keys, replace=False) for _ in range(channels)], 1)
        phase = rng.uniform(0.0, 2 * np.pi, size=(n_keys, channels))
        # Per channel, a random assignment of evenly spaced levels to keys.
        amp = _levels(_AMPLITUDE_RANGE, n_keys, channels, rng)
        mean = _levels(_MEAN_RANGE, n_keys, channels, rng)
        out[name] = _Signature(freq=freq, phase=phase, amp=amp, mean=mean)
    return out


def _segment_order(num_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Labels of one subject's windows in time order, ``(num_classes * per_class,)``.

    Two passes over the classes in subject-specific orders: the first pass holds
    the first ``ceil(per_class / 2)`` windows of each class, the second the rest.
    """
    first = rng.permutation(num_classes)
    second = rng.permutation(num_classes)
    if second[0] == first[-1]:
        # Why: otherwise the two segments of that class merge into one.
        second = np.roll(second, -1)
    n_first = per_class - per_class // 2
    n_second = per_class // 2
    parts = [np.full(n_first, c) for c in first] + [np.full(n_second, c) for c in second]
    return np.concatenate(parts).astype(np.int64)


def make_synthetic_subject(cfg: SyntheticConfig, seed: int, subject: int) -> Dataset:
    """The windows of one subject, generated without any other subject.

    Equal, array for array, to ``make_synthetic(cfg, seed)`` restricted to
    ``subject``; memory is ``O(one subject)``, so a large virtual fleet can
    build each client's data on its own.

    Args:
        cfg: dataset shape; ``subject`` must be in ``1..cfg.subjects``.
        seed: any integer; the same ``(cfg, seed, subject)`` gives the same data.
        subject: 1-based subject id (also its domain).

    Returns:
        A :class:`Dataset` with ``N = cfg.classes * cfg.windows_per_class``
        windows, ``x[m]`` float32 ``(N, C_m, T_m)``, ``y``/``subject``/``domain``
        int64 ``(N,)``, classes ``("class0", ...)``.
    """
    _check(cfg)
    if not 1 <= subject <= cfg.subjects:
        raise DatasetError(f"subject {subject} is outside 1..{cfg.subjects}")
    signatures = _signatures(cfg, seed)
    rng = np.random.default_rng([_seed_words(seed), _SUBJECT_STREAM, subject])
    y = _segment_order(cfg.classes, cfg.windows_per_class, rng)
    n = y.shape[0]
    n_mod = len(cfg.modalities)
    x: dict[str, np.ndarray] = {}
    for j, (name, (channels, steps)) in enumerate(cfg.modalities.items()):
        sig = signatures[name]
        key = _class_keys(cfg.classes, j, n_mod)[y]  # (N,)
        # Subject effect: a multiplicative gain and an additive offset per channel.
        gain = np.exp(cfg.subject_shift * rng.normal(size=channels))  # (C,)
        offset = cfg.subject_shift * rng.normal(size=channels)  # (C,)
        t = np.arange(steps) / steps  # (T,) in windows
        phase = sig.phase[key] + _PHASE_JITTER * rng.normal(size=(n, channels))  # (N, C)
        amp = sig.amp[key] * (1.0 + _AMPLITUDE_JITTER * rng.normal(size=(n, channels)))
        wave = amp[..., None] * np.sin(
            2 * np.pi * sig.freq[key][..., None] * t + phase[..., None]
        )  # (N, C, T)
        clean = wave + sig.mean[key][..., None]
        noisy = gain[:, None] * clean + offset[:, None] + cfg.noise * rng.normal(
            size=(n, channels, steps)
        )
        x[name] = noisy.astype(np.float32)
    ids = np.full(n, subject, dtype=np.int64)
    return Dataset(
        x=x,
        y=y,
        subject=ids,
        domain=ids.copy(),
        classes=tuple(f"class{k}" for k in range(cfg.classes)),
    )


def make_synthetic(cfg: SyntheticConfig, seed: int) -> Dataset:
    """The whole generated dataset: subjects ``1..cfg.subjects`` one after another.

    Deterministic for ``(cfg, seed)``. Subject ``s`` is also domain ``s``.

    Returns:
        A :class:`Dataset` with ``N = cfg.subjects * cfg.classes *
        cfg.windows_per_class`` windows; ``x[m]`` float32 ``(N, C_m, T_m)``
        for every modality of ``cfg.modalities``; within each subject, windows
        are in time order.
    """
    _check(cfg)
    parts = [make_synthetic_subject(cfg, seed, s) for s in range(1, cfg.subjects + 1)]
    return Dataset(
        x={m: np.concatenate([p.x[m] for p in parts]) for m in cfg.modalities},
        y=np.concatenate([p.y for p in parts]),
        subject=np.concatenate([p.subject for p in parts]),
        domain=np.concatenate([p.domain for p in parts]),
        classes=parts[0].classes,
    )
