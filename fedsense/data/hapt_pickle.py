"""Reading ``HAPT.pkl.gz`` without pandas and without running anything the
file names: a restricted unpickler that resolves only the twelve globals
that file uses and maps pandas' classes to plain containers, then plain
numpy columns per recording (:func:`read_hapt_recordings`).
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

try:  # numpy >= 2; the pickle's ``numpy.core`` is a deprecated alias there
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # numpy 1.x (pyproject allows >= 1.26)
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]

from fedsense.data.base import DatasetError

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
