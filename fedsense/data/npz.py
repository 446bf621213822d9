"""The docs/design.md dataset file: one strict ``.npz`` holding a :class:`Dataset`.

Keys (``N`` windows; every array has the same ``N``):

- ``x_<modality>``: float32 ``(N, C, T)``, one key per modality; C and T may
  differ between modalities.
- ``y``: int64 ``(N,)``, class index, ``-1`` = unlabeled.
- ``subject``: int64 ``(N,)``, one federated client per distinct value.
- ``domain``: int64 ``(N,)``, optional, defaults to ``subject``.
- ``classes``: optional unicode string array ``(K,)`` of class names.
- ``mask_<modality>``: optional ``(N,)`` of 0/1 (bool or a number type), 0
  where that modality was not recorded in the window (its ``x`` rows are
  then ignored); a modality the device never has simply has no ``x_`` key.

Any other key is refused, so a typo (``labels`` for ``y``) cannot silently
drop data. A malformed file raises one :class:`DatasetError` naming the file
and the offending key, and nothing is half-loaded: every array is read and
checked before the :class:`Dataset` is built.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedsense.data.base import Dataset, DatasetError
from fedsense.fileio import atomic_write

X_PREFIX = "x_"
MASK_PREFIX = "mask_"
_INT_KEYS = ("y", "subject", "domain")
_REQUIRED = ("y", "subject")
_FIXED_KEYS = frozenset({*_INT_KEYS, "classes"})


def _modality_keys(keys: list[str]) -> list[str]:
    """The ``x_<modality>`` keys, in file order (an empty suffix is no modality)."""
    return [k for k in keys if k.startswith(X_PREFIX) and len(k) > len(X_PREFIX)]


def validate_arrays(arrays: Mapping[str, np.ndarray], source: str) -> None:
    """Check in-memory arrays against the npz contract; raise on the first fault.

    Args:
        arrays: key -> array, as stored in the file: ``x_<m>`` float32
            ``(N, C, T)``; ``y``, ``subject`` and optional ``domain`` int64
            ``(N,)``; optional ``classes`` unicode ``(K,)``.
        source: what the arrays came from (a file path), used in messages.

    Raises:
        DatasetError: one message naming ``source`` and the offending key.
    """
    keys = list(arrays)
    x_keys = _modality_keys(keys)
    mask_keys = [k for k in keys if k.startswith(MASK_PREFIX)]
    unknown = [k for k in keys if k not in _FIXED_KEYS and k not in x_keys and k not in mask_keys]
    if unknown:
        raise DatasetError(
            f"{source}: unknown key(s) {', '.join(repr(k) for k in unknown)}; allowed are "
            f"'x_<modality>', 'mask_<modality>', 'y', 'subject', 'domain', 'classes'"
        )
    for key in mask_keys:
        modality = key[len(MASK_PREFIX):]
        if X_PREFIX + modality not in arrays:
            raise DatasetError(f"{source}: key '{key}' masks modality '{modality}', which has no 'x_{modality}' key")
        arr = arrays[key]
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf" or arr.ndim != 1:
            raise DatasetError(f"{source}: key '{key}' must be a 1-D (N,) array of 0/1")
        if arr.shape[0] != arrays[X_PREFIX + modality].shape[0]:
            raise DatasetError(f"{source}: N mismatch: key '{key}' has N={arr.shape[0]}, "
                               f"key 'x_{modality}' has N={arrays[X_PREFIX + modality].shape[0]}")
        if not np.isin(arr, (0, 1)).all():
            raise DatasetError(f"{source}: key '{key}' holds values other than 0 and 1")
    if not x_keys:
        raise DatasetError(
            f"{source}: no modality: expected at least one 'x_<modality>' key, found keys {keys}"
        )
    for key in _REQUIRED:
        if key not in arrays:
            raise DatasetError(f"{source}: missing required key '{key}'")

    # Type and rank of every array first, so value checks below can trust them.
    for key in keys:
        if key in mask_keys:
            continue
        arr = arrays[key]
        if not isinstance(arr, np.ndarray):
            raise DatasetError(f"{source}: key '{key}' is a {type(arr).__name__}, not an array")
        if key in x_keys:
            expected_dtype, expected_rank, shape = np.dtype(np.float32), 3, "(N, C, T)"
        elif key in _INT_KEYS:
            expected_dtype, expected_rank, shape = np.dtype(np.int64), 1, "(N,)"
        else:  # classes
            if arr.dtype.kind != "U":
                raise DatasetError(
                    f"{source}: key 'classes' has dtype {arr.dtype}, expected a unicode "
                    f"string array (e.g. <U16)"
                )
            if arr.ndim != 1:
                raise DatasetError(
                    f"{source}: key 'classes' has rank {arr.ndim} (shape {arr.shape}), "
                    f"expected 1-D (K,)"
                )
            continue
        if arr.dtype != expected_dtype:
            raise DatasetError(
                f"{source}: key '{key}' has dtype {arr.dtype}, expected {expected_dtype}"
            )
        if arr.ndim != expected_rank:
            raise DatasetError(
                f"{source}: key '{key}' has rank {arr.ndim} (shape {arr.shape}), "
                f"expected {expected_rank}-D {shape}"
            )

    n = arrays["y"].shape[0]
    for key in [*x_keys, *(k for k in _INT_KEYS if k in arrays)]:
        if arrays[key].shape[0] != n:
            raise DatasetError(
                f"{source}: N mismatch: key '{key}' has N={arrays[key].shape[0]} "
                f"but key 'y' has N={n}"
            )
    if n == 0:
        raise DatasetError(f"{source}: empty: key 'y' has N=0 windows")

    for key in x_keys:
        bad = int(np.count_nonzero(~np.isfinite(arrays[key])))
        if bad:
            raise DatasetError(f"{source}: key '{key}' holds {bad} NaN/Inf value(s)")

    y = arrays["y"]
    below = int(np.count_nonzero(y < -1))
    if below:
        raise DatasetError(
            f"{source}: key 'y' holds {below} label(s) below -1 (min {int(y.min())}); "
            f"-1 means unlabeled"
        )
    if "classes" in arrays:
        k = arrays["classes"].shape[0]
        top = int(y.max())
        if top >= k:
            raise DatasetError(
                f"{source}: key 'y' has label {top} but key 'classes' names only {k} "
                f"class(es)"
            )


def _read_all(path: Path) -> dict[str, np.ndarray]:
    """Every array of the npz at ``path``, read eagerly, with readable errors."""
    source = str(path)
    if not path.is_file():
        raise DatasetError(f"{source}: dataset file not found (or not a regular file)")
    try:
        with path.open("rb") as fh:
            is_npy = fh.read(6) == b"\x93NUMPY"
        # Checked up front because np.load treats unknown bytes as a pickle and
        # answers with a misleading "contains pickled data" message.
        is_zip = zipfile.is_zipfile(path)
    except OSError as err:
        raise DatasetError(f"{source}: cannot read file ({err.strerror or err})") from None
    if is_npy:
        raise DatasetError(f"{source}: a single .npy array, not an .npz archive of named arrays")
    if not is_zip:
        raise DatasetError(
            f"{source}: not a readable .npz archive (no zip directory: the file is "
            f"truncated or not an npz)"
        )
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError(
            f"{source}: not a readable .npz archive ({type(err).__name__}: {err})"
        ) from None
    arrays: dict[str, np.ndarray] = {}
    with npz:
        for key in npz.files:
            try:
                arrays[key] = npz[key]
            except ValueError as err:
                if "allow_pickle" in str(err):
                    raise DatasetError(
                        f"{source}: key '{key}' is an object (pickled) array; store "
                        f"strings as a unicode array, numbers as numeric arrays"
                    ) from None
                raise DatasetError(
                    f"{source}: key '{key}' cannot be read ({type(err).__name__}: {err})"
                ) from None
            except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
                raise DatasetError(
                    f"{source}: key '{key}' cannot be read, file truncated or corrupt "
                    f"({type(err).__name__}: {err})"
                ) from None
            if not isinstance(arrays[key], np.ndarray):
                # NpzFile hands back raw bytes for a member without an .npy header.
                raise DatasetError(
                    f"{source}: key '{key}' cannot be read: the member is not an .npy array"
                )
    return arrays


def load_npz(path: str | Path, modalities: list[str] | None = None) -> Dataset:
    """Load and fully validate a dataset file.

    Args:
        path: the ``.npz`` file.
        modalities: modalities to keep, in this order; ``None`` or empty keeps
            every modality in file order.

    Returns:
        A :class:`Dataset` with ``x[m]`` float32 ``(N, C_m, T_m)`` and int64
        ``(N,)`` ``y``, ``subject``, ``domain`` (a copy of ``subject`` when the
        file has none).

    Raises:
        DatasetError: the file is missing, unreadable or breaks the contract.
    """
    path = Path(path)
    arrays = _read_all(path)
    validate_arrays(arrays, str(path))

    present = [k[len(X_PREFIX):] for k in _modality_keys(list(arrays))]
    wanted = list(dict.fromkeys(modalities)) if modalities else present
    missing = [m for m in wanted if m not in present]
    if missing:
        raise DatasetError(
            f"{path}: requested modality {', '.join(repr(m) for m in missing)} not in file "
            f"(key 'x_{missing[0]}' absent); modalities present: {', '.join(present)}"
        )
    subject = arrays["subject"]
    return Dataset(
        x={m: arrays[X_PREFIX + m] for m in wanted},
        y=arrays["y"],
        subject=subject,
        domain=arrays["domain"] if "domain" in arrays else subject.copy(),
        classes=tuple(str(c) for c in arrays["classes"]) if "classes" in arrays else (),
        mask={m: arrays[MASK_PREFIX + m].astype(np.float32) for m in wanted if MASK_PREFIX + m in arrays},
    )


def save_npz(ds: Dataset, path: str | Path) -> Path:
    """Write ``ds`` in the contract format, atomically; return the path written.

    The arrays are validated first, so this never writes a file that
    :func:`load_npz` would refuse. The file is written to a temporary file in
    the same directory and moved into place with ``os.replace``, so a reader
    (or a crash) never sees a half-written file. Parent directories are
    created. The path is used as given (no ``.npz`` suffix is appended).
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {X_PREFIX + m: a for m, a in ds.x.items()}
    arrays.update(y=ds.y, subject=ds.subject, domain=ds.domain)
    arrays.update({MASK_PREFIX + m: (ds.present(m) > 0).astype(np.uint8) for m in ds.mask})
    if ds.classes:
        arrays["classes"] = np.array(list(ds.classes), dtype=str)
    validate_arrays(arrays, f"save_npz({path})")

    return atomic_write(path, lambda fh: np.savez(fh, **arrays))
