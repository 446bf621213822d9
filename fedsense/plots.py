"""Learning curves of runs as PNG files, drawn from their metrics.jsonl with
matplotlib (headless, the Agg backend).

``learning_curves`` writes ``macro_f1.png`` (target solid with round
markers, source dashed; one colour per run; axes labelled), and, when any
run has them, ``disc_acc.png`` (one panel per branch; 0.5 means the
discriminator can no longer tell the domains apart) and
``self_training.png`` (what ``m3bat_local``'s unlabeled devices did each
round: would self-training collapse, the smallest class share would fall
to 0). The same figures serve ``fedsense plot`` and docs/img.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from fedsense.report import dotted  # noqa: E402

Series = list[tuple[float, float]]  # (round, value)
DPI = 110
CURVES = (8.0, 4.8)  # inches: the macro-F1 figure
PANEL = (4.0, 3.8)  # inches: one panel of the per-branch and self-training figures


def series(records: Sequence[Mapping[str, Any]], key: str) -> Series:
    """``(round, value)`` of a dotted key over a run's metrics lines (rounds
    without the key are skipped)."""
    out = []
    for rec in records:
        value = dotted(rec, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((float(rec["round"]), float(value)))
    return out


def _panel(ax, title: str, lines: list[tuple[str, Series, str, str]], guide: float | None = None) -> None:
    """One chart: ``(label, points, colour, linestyle)`` per line, values in [0, 1]."""
    for label, points, colour, style in lines:
        if not points:
            continue
        rounds, values = zip(*points)
        ax.plot(rounds, values, linestyle=style, color=colour, marker="o" if style == "-" else None,
                markersize=3 if len(points) > 1 else 6, linewidth=1.8, label=label)
    if guide is not None:
        ax.axhline(guide, color="grey", linestyle=":", linewidth=1)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("round")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def learning_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: str | Path) -> list[Path]:
    """Write the PNGs for ``label -> metrics lines`` into ``out_dir``; returns their paths."""
    if not runs:
        raise ValueError("no runs to plot")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colours = plt.get_cmap("tab10")
    colour = {label: colours(i % 10) for i, label in enumerate(runs)}

    fig, ax = plt.subplots(figsize=CURVES)
    lines = []
    for label, records in runs.items():
        lines.append((f"{label}: target", series(records, "target.macro_f1"), colour[label], "-"))
        lines.append((f"{label}: source", series(records, "source.macro_f1"), colour[label], "--"))
    _panel(ax, "macro-F1 per round (target: unlabeled devices' held-out windows; source dashed)", lines)
    ax.set_ylabel("macro-F1")
    ax.legend(fontsize=8, loc="lower right")
    paths = [_save(fig, out / "macro_f1.png")]

    branches = sorted({b for records in runs.values() for rec in records for b in (dotted(rec, "adapt.disc_acc") or {})})
    if branches:
        fig, axes = plt.subplots(1, len(branches), figsize=(PANEL[0] * len(branches), PANEL[1]), squeeze=False)
        for ax, b in zip(axes[0], branches):
            _panel(ax, f"discriminator accuracy: {b}",
                   [(label, series(records, f"adapt.disc_acc.{b}"), colour[label], "-")
                    for label, records in runs.items()], guide=0.5)
        axes[0][0].set_ylabel("accuracy")
        axes[0][-1].legend(fontsize=8)
        paths.append(_save(fig, out / "disc_acc.png"))

    if any(dotted(rec, "adapt.targets") for records in runs.values() for rec in records):
        keys = (("min_class_share", "smallest predicted class share\n(collapse: 0)"),
                ("confident", "windows with a confident\npseudo-label"),
                ("kept", "targets keeping their\nself-training step"))
        fig, axes = plt.subplots(1, len(keys), figsize=(PANEL[0] * len(keys), PANEL[1]), squeeze=False)
        for ax, (key, title) in zip(axes[0], keys):
            _panel(ax, title, [(label, series(records, f"adapt.targets.{key}"), colour[label], "-")
                               for label, records in runs.items()])
        axes[0][0].set_ylabel("share (mean over targets)")
        axes[0][-1].legend(fontsize=8)
        paths.append(_save(fig, out / "self_training.png"))
    return paths
