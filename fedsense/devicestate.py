"""A device's own parameters on its own disk, so they outlive the run.

Device-only arrays (BatchNorm statistics under local normalisation,
discriminators under the statistics reference) live in Flower's
``context.state``, which belongs to one run. A resumed run is a new Flower
run: without a copy on disk every device would start its local parts over
and the resumed federation would drift from the uninterrupted one.

Each save is stamped with the round and phase that produced it
(``<kind>-<round>-<phase>.npz``, phase 0 training, 1 evaluation); a device
loads the newest state produced *before* the step it is about to take, so a
state written during a round the server never completed is ignored on
resume. Files of rounds more than two before the newest are removed: with
one message a round the server's resume point can be two rounds behind what
a device has saved (its last evaluation is recorded when the next round's
replies are all in). Kinds:
``local`` (the device-only parameters) and ``residual`` (error feedback's
rounding residual under compressed updates, see fedsense.compression).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedsense.data.base import DatasetError
from fedsense.fileio import atomic_write
from fedsense.methods.base import METHOD_STATE, Step
from fedsense.models.net import MultimodalNet
from fedsense.params import Sharing, load_arrays, local_arrays

PHASES = {"train": 0, "evaluate": 1}
KINDS = ("local", "residual")


def _stamps(directory: Path, kind: str) -> list[tuple[int, int, Path]]:
    if kind not in KINDS:
        raise ValueError(f"device state kind {kind!r}: valid kinds are {', '.join(KINDS)}")
    if not directory.is_dir():
        return []
    name = re.compile(rf"{kind}-(\d{{4,}})-([01])\.npz")
    found = []
    for path in directory.iterdir():
        if m := name.fullmatch(path.name):
            found.append((int(m.group(1)), int(m.group(2)), path))
    return sorted(found)


def save_local(directory: str | Path, server_round: int, phase: str, arrays: Mapping[str, np.ndarray],
               kind: str = "local") -> Path:
    """Store the device-only arrays (of ``kind``) produced by ``phase`` of ``server_round``."""
    directory = Path(directory)
    stamps = _stamps(directory, kind)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # a device's own parameters: its owner's only
    path = directory / f"{kind}-{server_round:04d}-{PHASES[phase]}.npz"
    atomic_write(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}), private=True)
    for r, _, old in stamps:
        if r < server_round - 2:
            old.unlink(missing_ok=True)
    return path


def load_local(directory: str | Path, server_round: int, phase: str, kind: str = "local") -> dict[str, np.ndarray] | None:
    """The newest device-only arrays (of ``kind``) saved before ``phase`` of ``server_round``, or None."""
    before = (server_round, PHASES[phase])
    candidates = [path for r, p, path in _stamps(Path(directory), kind) if (r, p) < before]
    if not candidates:
        return None
    path = candidates[-1]
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{path}: unreadable device state ({type(err).__name__}: {err})") from None


def kept_arrays(step: Step, sharing: Sharing) -> dict[str, np.ndarray]:
    """What a device keeps after ``step``: its own parameters and, under
    :data:`METHOD_STATE`, its method's arrays."""
    return {**local_arrays(step.model, sharing, step.labelled),
            **{METHOD_STATE + k: v for k, v in step.state.items()}}


def load_kept(model: MultimodalNet, stored: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Load a device's kept parameters (:func:`kept_arrays`) over ``model``;
    returns its method's arrays (a :attr:`Step.state`)."""
    load_arrays(model, {k: v for k, v in stored.items() if not k.startswith(METHOD_STATE)}, strict_keys=set())
    return {k[len(METHOD_STATE):]: v for k, v in stored.items() if k.startswith(METHOD_STATE)}
