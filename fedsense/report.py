"""Tables from run summaries: mean ± std over seeds, as Markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def dotted(tree: Mapping[str, Any], key: str) -> Any:
    """``dotted(summary, "target.macro_f1")``; None where a part is missing."""
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def mean_std(summaries: Sequence[Mapping[str, Any]], key: str) -> tuple[float, float, int] | None:
    """(mean, std, n) of a numeric summary key over completed runs."""
    values = [
        float(v)
        for s in summaries
        if s.get("status") == "completed" and (v := dotted(s, key)) is not None
    ]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values)), len(values)


def fmt(stat: tuple[float, float, int] | None, scale: float = 1.0, digits: int = 3) -> str:
    if stat is None:
        return "—"
    m, s, n = stat
    if n == 1:  # one run has no spread; "± 0.000" would claim one
        return f"{m * scale:.{digits}f} (one run)"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def per_round_bytes(summary: Mapping[str, Any]) -> float | None:
    comm, rounds = summary.get("comm") or {}, summary.get("rounds") or 0
    if not rounds or not comm:
        return None
    return (comm.get("bytes_up", 0) + comm.get("bytes_down", 0)) / rounds


def arm_table(arms: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """One Markdown table: a row per arm, mean ± std over its runs."""
    lines = [
        "| arm | target macro-F1 | target accuracy | source macro-F1 | MB per round (up+down) "
        "| target device CPU s per round | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, runs in arms.items():
        done = [r for r in runs if r.get("status") == "completed"]
        missing = sum(r.get("status") == "missing" for r in runs)  # not run yet
        failed = len(runs) - len(done) - missing
        mb = [b / 1e6 for r in done if (b := per_round_bytes(r))]
        count = f"{len(done)}" + (f" of {len(runs)}" if missing else "") + (f" ({failed} failed)" if failed else "")
        cells = [fmt(mean_std(runs, k)) for k in ("target.macro_f1", "target.accuracy", "source.macro_f1")]
        cpu = mean_std(runs, "compute.target_cpu_seconds_per_round")
        lines.append(f"| {arm} | {' | '.join(cells)} | {f'{np.mean(mb):.2f}' if mb else '—'} "
                     f"| {'—' if cpu is None else f'{cpu[0]:.2f}'} | {count} |")
    return "\n".join(lines)


def runs_table(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """One Markdown table: a row per run (label -> its summary.json)."""
    lines = [
        "| run | method | mode | seed | rounds | target macro-F1 | target accuracy | source macro-F1 "
        "| MB per round (up+down) | wall s | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    number = lambda v, d=4: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    for label, s in summaries.items():
        mb = per_round_bytes(s)
        cells = [
            label, s.get("method", "—"), s.get("mode", "—"), s.get("seed", "—"), s.get("rounds", "—"),
            number(dotted(s, "target.macro_f1")), number(dotted(s, "target.accuracy")),
            number(dotted(s, "source.macro_f1")), number(None if mb is None else mb / 1e6, 2),
            number(s.get("wall_seconds"), 0), s.get("status", "—"),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
