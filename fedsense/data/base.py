"""The in-memory multimodal dataset every loader returns.

A :class:`Dataset` is the docs/design.md npz contract held in memory: one float32
array ``(N, C, T)`` per modality, int64 labels (``-1`` = unlabeled), subjects
and domains. Within one subject, windows are in time order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DatasetError(ValueError):
    """A dataset file or array violates the dataset contract."""


@dataclass(frozen=True)
class Dataset:
    """Windows of several modalities with labels, subjects and domains.

    Attributes:
        x: modality name -> float32 array ``(N, C_m, T_m)``.
        y: int64 ``(N,)`` class index, ``-1`` for unlabeled.
        subject: int64 ``(N,)``; each distinct value is one federated client.
        domain: int64 ``(N,)``; grouping such as device model or body position.
        classes: class names, ``len(classes)`` is the number of classes.
        mask: modality -> float32 ``(N,)``, 1 where that modality was
            recorded in the window, 0 where it is missing (its ``x`` rows are
            zeros); a modality without an entry is present in every window.
    """

    x: dict[str, np.ndarray]
    y: np.ndarray
    subject: np.ndarray
    domain: np.ndarray
    classes: tuple[str, ...] = field(default=())
    mask: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.x)

    @property
    def num_classes(self) -> int:
        if self.classes:
            return len(self.classes)
        labelled = self.y[self.y >= 0]
        return int(labelled.max()) + 1 if labelled.size else 0

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def shapes(self) -> dict[str, tuple[int, int]]:
        """Per-modality ``(channels, time steps)``."""
        return {m: (int(a.shape[1]), int(a.shape[2])) for m, a in self.x.items()}

    def subset(self, index: np.ndarray) -> "Dataset":
        """Rows ``index`` (boolean mask or integer indices), order kept."""
        return Dataset(
            x={m: a[index] for m, a in self.x.items()},
            y=self.y[index],
            subject=self.subject[index],
            domain=self.domain[index],
            classes=self.classes,
            mask={m: a[index] for m, a in self.mask.items()},
        )

    def present(self, modality: str) -> np.ndarray:
        """float32 ``(N,)``: 1 where ``modality`` was recorded."""
        given = self.mask.get(modality)
        return given if given is not None else np.ones(len(self), np.float32)

    def windows_with(self, modality: str) -> int:
        """How many windows have ``modality``."""
        return int(np.count_nonzero(self.present(modality)))

    def subjects(self) -> list[int]:
        """Distinct subjects in ascending order: client ``i`` is ``subjects()[i]``."""
        return [int(s) for s in np.unique(self.subject)]
