"""The resume point of a run: everything the server needs to continue after
its last complete round, in one file written atomically.

``checkpoints/resume.npz`` holds the global arrays (``arrays/<key>``), any
further server arrays such as the statistics reference (``extra/<key>``) and
a JSON document (``state``: the round, the strategy's history and totals,
RNG state). One file, replaced by rename, so a kill at any moment leaves
either the previous round's resume point or the new one, never a mix.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsense.config import ConfigError
from fedsense.fileio import atomic_write

RESUME_FILE = "resume.npz"
_STATE = "state"


@dataclass(frozen=True)
class ResumePoint:
    server_round: int  # the last complete round
    arrays: dict[str, np.ndarray]  # global shared arrays after that round
    extra: dict[str, np.ndarray]
    state: dict[str, Any]


def resume_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / RESUME_FILE


def save_resume(
    run_dir: str | Path,
    server_round: int,
    arrays: Mapping[str, np.ndarray],
    state: Mapping[str, Any],
    extra: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write the resume point after ``server_round`` (replacing the previous one)."""
    doc = json.dumps({"round": int(server_round), **state}).encode()
    content = {f"arrays/{k}": np.asarray(v) for k, v in arrays.items()}
    content.update({f"extra/{k}": np.asarray(v) for k, v in (extra or {}).items()})
    content[_STATE] = np.frombuffer(doc, dtype=np.uint8)
    path = resume_path(run_dir)
    atomic_write(path, lambda f: np.savez(f, **content))
    return path


def load_resume(run_dir: str | Path) -> ResumePoint:
    """The resume point of ``run_dir``; ConfigError naming the file when there
    is none or it cannot be read."""
    path = resume_path(run_dir)
    if not path.exists():
        raise ConfigError(f"{path}: no resume point (the run completed no round, or it is not a run directory)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            content = {k: npz[k] for k in npz.files}
        state = json.loads(bytes(content.pop(_STATE)).decode())
        server_round = int(state.pop("round"))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError, TypeError) as err:
        raise ConfigError(f"{path}: unreadable resume point ({type(err).__name__}: {err})") from None
    arrays = {k.removeprefix("arrays/"): v for k, v in content.items() if k.startswith("arrays/")}
    extra = {k.removeprefix("extra/"): v for k, v in content.items() if k.startswith("extra/")}
    if server_round < 1 or not arrays:
        raise ConfigError(f"{path}: malformed resume point (round {server_round}, {len(arrays)} arrays)")
    return ResumePoint(server_round, arrays, extra, state)
