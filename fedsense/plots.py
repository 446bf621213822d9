"""Learning curves of runs as PNG files, drawn from their metrics.jsonl.

Line charts are drawn with Pillow (a requirement of tensorboard), so no
plotting library is needed: ``learning_curves`` writes ``macro_f1.png``
(target solid, source dashed, a colour per run) and, when any run adapts,
``disc_acc.png`` (one panel per branch; 0.5 means the discriminator can no
longer tell the domains apart) and, for ``m3bat_local``, ``self_training.png``
(what the unlabeled devices' self-training did each round).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsense.report import dotted

SIZE = (900, 520)  # width, height of every PNG
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]

Series = list[tuple[float, float]]  # (round, value)


@dataclass
class Line:
    label: str
    points: Series
    colour: tuple[int, int, int]
    dashed: bool = False


@dataclass
class Panel:
    title: str
    lines: list[Line] = field(default_factory=list)
    y_range: tuple[float, float] = (0.0, 1.0)
    guide: float | None = None  # a dotted horizontal reference line


def series(records: Sequence[Mapping[str, Any]], key: str) -> Series:
    """``(round, value)`` of a dotted key over a run's metrics lines (rounds
    without the key are skipped)."""
    out = []
    for rec in records:
        value = dotted(rec, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((float(rec["round"]), float(value)))
    return out


def learning_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: str | Path) -> list[Path]:
    """Write the PNGs for ``label -> metrics lines`` into ``out_dir``; returns their paths."""
    if not runs:
        raise ValueError("no runs to plot")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colour = {label: COLOURS[i % len(COLOURS)] for i, label in enumerate(runs)}
    f1 = Panel("macro-F1 per round (target solid, source dashed)")
    for label, records in runs.items():
        f1.lines.append(Line(f"{label} target", series(records, "target.macro_f1"), colour[label]))
        f1.lines.append(Line(f"{label} source", series(records, "source.macro_f1"), colour[label], dashed=True))
    paths = [_save([f1], out / "macro_f1.png")]
    branches = sorted({b for records in runs.values() for rec in records for b in (dotted(rec, "adapt.disc_acc") or {})})
    if branches:
        panels = [
            Panel(f"discriminator accuracy: {b}", guide=0.5,
                  lines=[Line(label, series(records, f"adapt.disc_acc.{b}"), colour[label])
                         for label, records in runs.items()])
            for b in branches
        ]
        paths.append(_save(panels, out / "disc_acc.png"))
    if any(dotted(rec, "adapt.targets") for records in runs.values() for rec in records):
        # m3bat_local's unlabeled devices: would self-training collapse, it would show here
        panels = [
            Panel(title, lines=[Line(label, series(records, f"adapt.targets.{key}"), colour[label])
                                for label, records in runs.items()])
            for key, title in (("min_class_share", "targets: smallest predicted class share (collapse: 0)"),
                               ("confident", "targets: share of windows with a confident pseudo-label"),
                               ("kept", "targets: share keeping their self-training step"))
        ]
        paths.append(_save(panels, out / "self_training.png"))
    return paths


def _save(panels: list[Panel], path: Path) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    width = SIZE[0] // len(panels)
    for i, panel in enumerate(panels):
        _draw_panel(draw, font, panel, (i * width, 0, (i + 1) * width, SIZE[1]))
    image.save(path, format="PNG")
    return path


def _draw_panel(draw, font, panel: Panel, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    legend_rows = len([ln for ln in panel.lines if ln.points])
    left, right, top, bottom = x0 + 50, x1 - 15, y0 + 30, y1 - 40 - 14 * legend_rows
    draw.text((left, y0 + 8), panel.title, fill="black", font=font)
    rounds = [r for ln in panel.lines for r, _ in ln.points] or [1.0]
    r_lo, r_hi = min(rounds), max(max(rounds), min(rounds) + 1)
    v_lo, v_hi = panel.y_range

    def at(r: float, v: float) -> tuple[float, float]:
        v = min(max(v, v_lo), v_hi)
        return (left + (r - r_lo) / (r_hi - r_lo) * (right - left),
                bottom - (v - v_lo) / (v_hi - v_lo) * (bottom - top))

    for k in range(6):  # horizontal grid with value labels
        v = v_lo + (v_hi - v_lo) * k / 5
        _, y = at(r_lo, v)
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
        draw.text((x0 + 8, y - 6), f"{v:.1f}", fill="black", font=font)
    for r in _round_ticks(r_lo, r_hi):
        x, _ = at(r, v_lo)
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        draw.text((x - 6, bottom + 6), f"{r:g}", fill="black", font=font)
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) // 2 - 20, bottom + 20), "round", fill="black", font=font)
    if panel.guide is not None:
        _, y = at(r_lo, panel.guide)
        for x in range(int(left), int(right), 8):
            draw.line([(x, y), (min(x + 3, right), y)], fill=(120, 120, 120))
    row = bottom + 36
    for line in panel.lines:
        if not line.points:
            continue
        xy = [at(r, v) for r, v in line.points]
        _polyline(draw, xy, line.colour, line.dashed)
        _polyline(draw, [(left, row + 6), (left + 24, row + 6)], line.colour, line.dashed)
        draw.text((left + 30, row), line.label, fill="black", font=font)
        row += 14


def _polyline(draw, xy: list[tuple[float, float]], colour, dashed: bool) -> None:
    if len(xy) == 1:
        x, y = xy[0]
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        return
    if not dashed:
        draw.line(xy, fill=colour, width=2)
        return
    for (ax, ay), (bx, by) in zip(xy, xy[1:]):
        length = max(((bx - ax) ** 2 + (by - ay) ** 2) ** 0.5, 1e-9)
        for start in range(0, int(length), 10):
            t0, t1 = start / length, min(start + 6, length) / length
            draw.line([(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)],
                      fill=colour, width=2)


def _round_ticks(lo: float, hi: float) -> list[float]:
    step = max(1, round((hi - lo) / 10))
    return [float(r) for r in range(int(lo), int(hi) + 1, step)]
