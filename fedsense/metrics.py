"""Classification metrics from confusion matrices.

The server never sees samples or per-sample predictions, so every headline
number is computed from confusion matrices summed over clients.
"""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts; row = true class, column = predicted class."""
    index = y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64)
    counts = np.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 of each class; ``nan`` for a class neither present nor predicted."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    denom = support + predicted
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over classes that are present or predicted (sklearn's convention)."""
    f1 = per_class_f1(cm)
    return float(np.nanmean(f1)) if np.any(~np.isnan(f1)) else 0.0


def accuracy(cm: np.ndarray) -> float:
    cm = np.asarray(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 0.0


def summarize(cm: np.ndarray) -> dict[str, float]:
    """``macro_f1`` and ``accuracy`` of one confusion matrix."""
    return {"macro_f1": macro_f1(cm), "accuracy": accuracy(cm), "windows": int(np.sum(cm))}
