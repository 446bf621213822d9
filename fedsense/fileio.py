"""Atomic file writes: a reader, or a crash, never sees half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], private: bool = False) -> Path:
    """Call ``write`` on a temporary file beside ``path``, flush it to disk,
    rename it into place and flush the directory entry too (a power cut
    after the rename keeps the new file). Parent directories are created.
    ``private`` files (a device's own parameters, a run's results) are
    readable by their owner only, from their first byte on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if not private:
            os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; shared data and configs are for reading
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse it
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes, private: bool = False) -> Path:
    return atomic_write(path, lambda f: f.write(data), private)


def private_dir(path: str | Path) -> Path:
    """Create ``path`` (and its parents) and make it its owner's only: a
    run's results and a device's parameters are nobody else's to read."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
