"""What a run shows in TensorBoard: tags, images and hparams, from numbers.

``metrics.jsonl`` keeps each round's record as the strategy builds it;
TensorBoard groups the same numbers as ``<scope>/<metric>[/<detail>]`` with
the server round as step: ``eval/target/macro_f1``, ``eval/client/7/macro_f1``,
``train/loss_domain/acc``, ``adapt/disc_acc/gyro``, ``comm/bytes_up``,
``clients/failed``, ``round/seconds``. Nothing here opens a file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

EVAL_SCOPES = ("target", "source", "client")  # record keys shown under eval/
RENAMED = {"seconds": "round/seconds"}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"target": {"macro_f1": .9}}`` -> ``{"target/macro_f1": .9}``: finite
    numbers only (strings, booleans, lists and ``None`` are left out)."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def scalar_tags(record: Mapping[str, Any]) -> dict[str, float]:
    """TensorBoard tag -> value for one round's record."""
    out: dict[str, float] = {}
    for key, value in record.items():
        tag = f"eval/{key}" if key in EVAL_SCOPES else RENAMED.get(key, key)
        if isinstance(value, Mapping):
            out.update(flatten(value, tag))
        else:
            out.update(flatten({tag: value}))
    return out


def layout() -> dict[str, dict[str, list]]:
    """TensorBoard's custom-scalars layout (its "Custom Scalars" tab): the
    headline first, then adaptation per branch, then clients and cost. Tags
    are regular expressions over :func:`scalar_tags`' names."""
    return {
        "1 headline: macro-F1 and accuracy": {
            "macro-F1 (target: unlabeled devices' held-out windows)": [
                "Multiline", [r"eval/target/macro_f1", r"eval/source/macro_f1"]],
            "accuracy": ["Multiline", [r"eval/target/accuracy", r"eval/source/accuracy"]],
        },
        "2 adaptation": {
            "shift per branch (source vs target embeddings)": ["Multiline", [r"adapt/shift/.*"]],
            "branch weights": ["Multiline", [r"adapt/weight/.*"]],
            "discriminator accuracy per branch (0.5: domains indistinguishable)": [
                "Multiline", [r"adapt/disc_acc/.*", r"adapt/targets/disc_acc.*"]],
            "targets' self-training (collapse: smallest class share 0)": [
                "Multiline", [r"adapt/targets/(min_class_share|confident|kept|norm_local|calibration_changed)"]],
            "reversal coefficient": ["Multiline", [r"adapt/lambda"]],
        },
        "3 clients and cost": {
            "clients per round": ["Multiline", [r"clients/.*"]],
            "bytes per round": ["Multiline", [r"comm/.*"]],
            "device CPU seconds per message": ["Multiline", [r"compute/.*/cpu_seconds"]],
            "round seconds": ["Multiline", [r"round/seconds"]],
        },
    }


def confusion_image(cm: np.ndarray, names: Sequence[str] = (), title: str = "") -> np.ndarray:
    """A confusion matrix as a ``(3, H, W)`` uint8 image a person can read:
    true class down, predicted class across (class names when given, else
    indices), each cell's count and its share of the true class, the colour
    that share (white 0 to dark blue 1)."""
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[0] if cm.ndim == 2 else 0
    if cm.ndim != 2 or cm.shape != (k, k) or k == 0:
        raise ValueError(f"confusion matrix must be square and non-empty, got shape {cm.shape}")
    labels = [str(n).replace("_", " ") for n in names] if len(names) == k else [str(c) for c in range(k)]
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = 1.2 + 0.75 * k
    fig = Figure(figsize=(side + 1.2, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}\n{share[i, j]:.0%}" if rows[i, 0] else "0", ha="center", va="center",
                    fontsize=7, color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "windows (share of the true class)", fontsize=9)
    fig.tight_layout()
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[:, :, :3].transpose(2, 0, 1))


SPRITE = 16  # pixels of one projector point's image


def point_sprites(labels: Sequence[Sequence[str]], class_column: int = 2, role_column: int = 0) -> np.ndarray:
    """``(N, 3, SPRITE, SPRITE)`` float images in [0, 1] for TensorBoard's
    projector, which draws a point as its image (its one way to colour
    points before the user picks a colour map): the colour is the class
    (matplotlib's tab10, cycled), a source a filled square, a target an
    open one."""
    palette = colormaps["tab10"].colors
    out = np.ones((len(labels), 3, SPRITE, SPRITE), np.float32)
    ring = np.zeros((SPRITE, SPRITE), bool)
    ring[:3], ring[-3:], ring[:, :3], ring[:, -3:] = True, True, True, True
    for i, row in enumerate(labels):
        try:
            colour = np.asarray(palette[int(row[class_column]) % len(palette)], np.float32)
        except (ValueError, IndexError):
            colour = np.full(3, 0.5, np.float32)  # no class: grey
        shape = ring if str(row[role_column]) == "target" else np.ones_like(ring)
        out[i][:, shape] = colour[:, None]
    return out


def hparams_of(config: Mapping[str, Any]) -> dict[str, float | str | bool]:
    """Every leaf of a config dict as an HParams value: numbers and strings as
    they are, anything else (lists, ``None``) as its JSON text."""
    out: dict[str, float | str | bool] = {}

    def walk(tree: Mapping[str, Any], prefix: str) -> None:
        for key, value in tree.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, Mapping) and value:
                walk(value, name)
            elif isinstance(value, (bool, int, float, str)):
                out[name] = value
            else:
                out[name] = json.dumps(value)

    walk(config, "")
    return out


def final_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The HParams tab's metrics: final target and source macro-F1 (those known)."""
    out = {}
    for role in ("target", "source"):
        value = (summary.get(role) or {}).get("macro_f1")
        if value is not None:
            out[f"hparam/{role}_macro_f1"] = float(value)
    return out


def nodes_text(nodes: Mapping[str, list[int]], labels: Mapping[int, str] | None = None) -> str:
    """Which nodes were sampled, replied and failed in a round (Markdown):
    each by its label (e.g. ``client 3 (source)``) when known, else its id."""
    labels = labels or {}
    return "\n\n".join(
        f"**{kind}** ({len(ids)}): {', '.join(labels.get(i, str(i)) for i in ids) or '—'}"
        for kind, ids in nodes.items()
    )
