"""From a :class:`DataConfig` to a ready dataset: load by kind, pick modalities, shift.

Kinds are a registry (``data.kind``); each loader returns the docs/design.md
contract in memory. The result is cached per process, because a simulated
client process serves many virtual clients over many rounds.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedsense.config import DataConfig
from fedsense.data.base import Dataset, DatasetError
from fedsense.data.hapt import CLASSES as HAPT_CLASSES
from fedsense.data.hapt import load_hapt
from fedsense.data.npz import load_npz
from fedsense.data.shifts import apply_shifts
from fedsense.data.synthetic import make_synthetic
from fedsense.registry import Registry

LOADERS: Registry[Callable[[DataConfig, int], Dataset]] = Registry("data.kind")


def class_names(cfg: DataConfig) -> tuple[str, ...]:
    """The class names a server can know without reading any data (the
    built-in HAPT's activities); () otherwise: charts then show indices."""
    return HAPT_CLASSES if cfg.kind == "hapt" else ()


def cache_dir(cfg: DataConfig) -> Path:
    """Where derived arrays are cached: ``data.cache_dir``, $FEDSENSE_CACHE, ~/.cache/fedsense."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    return Path(os.environ.get("FEDSENSE_CACHE", Path.home() / ".cache" / "fedsense")).expanduser()


@LOADERS.register("synthetic")
def _synthetic(cfg: DataConfig, seed: int) -> Dataset:

    return make_synthetic(cfg.synthetic, seed)


@LOADERS.register("hapt")
def _hapt(cfg: DataConfig, seed: int) -> Dataset:

    return load_hapt(cfg.path or None, window=cfg.window, step=cfg.step, cache_dir=cache_dir(cfg))


@LOADERS.register("npz")
def _npz(cfg: DataConfig, seed: int) -> Dataset:

    if not cfg.path:
        raise DatasetError("data.path: required when data.kind is 'npz'")
    return load_npz(cfg.path)


def select_modalities(ds: Dataset, modalities: list[str]) -> Dataset:
    """Keep only ``modalities`` (in that order); empty keeps all."""
    if not modalities:
        return ds
    unknown = [m for m in modalities if m not in ds.x]
    if unknown:
        raise DatasetError(
            f"data.modalities: {unknown} not in the dataset (it has {list(ds.modalities)})"
        )
    return Dataset(
        x={m: ds.x[m] for m in modalities},
        y=ds.y,
        subject=ds.subject,
        domain=ds.domain,
        classes=ds.classes,
        mask={m: ds.mask[m] for m in modalities if m in ds.mask},
    )


def select_subjects(ds: Dataset, subjects: list[int]) -> Dataset:
    """Keep only the windows of ``subjects`` (empty keeps all); a subject the
    data do not have is an error naming it."""
    if not subjects:
        return ds
    present = set(ds.subjects())
    unknown = sorted(set(subjects) - present)
    if unknown:
        raise DatasetError(f"data.subjects: {unknown} not in the dataset (it has {sorted(present)})")
    return ds.subset(np.flatnonzero(np.isin(ds.subject, np.asarray(subjects, dtype=np.int64))))


def build_dataset(cfg: DataConfig, seed: int) -> Dataset:
    """Load ``cfg.kind``, select modalities and apply device shifts (uncached)."""

    ds = LOADERS[cfg.kind](cfg, seed)
    ds = select_modalities(ds, list(cfg.modalities))
    ds = select_subjects(ds, list(cfg.subjects))
    if cfg.shifts:
        ds = apply_shifts(ds, list(cfg.shifts))
    return ds


_CACHE: dict[tuple[str, int], Dataset] = {}


def cached_dataset(cfg: DataConfig, seed: int) -> Dataset:
    """:func:`build_dataset`, memoised per process on the config's content.

    Only the latest dataset is kept: a process serves one run at a time.
    """
    key = (json.dumps(dataclasses.asdict(cfg), sort_keys=True), seed)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = build_dataset(cfg, seed)
    return _CACHE[key]
