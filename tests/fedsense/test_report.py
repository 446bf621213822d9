"""Markdown tables of run summaries."""

from __future__ import annotations

import pytest

from fedsense.report import arm_table, dotted, fmt, mean_std


def summary(f1: float, status: str = "completed") -> dict:
    return {"status": status, "rounds": 2, "target": {"macro_f1": f1, "accuracy": f1},
            "source": {"macro_f1": 0.9, "accuracy": 0.9}, "comm": {"bytes_up": 1e6, "bytes_down": 3e6},
            "compute": {"target_cpu_seconds_per_round": 1.25}}


def test_mean_and_std_over_completed_runs_only():
    runs = [summary(0.8), summary(0.9), summary(0.1, status="failed")]
    m, s, n = mean_std(runs, "target.macro_f1")
    assert (m, n) == (pytest.approx(0.85), 2) and s == pytest.approx(0.05)
    assert mean_std([summary(0.5, "failed")], "target.macro_f1") is None
    assert dotted({"a": {"b": 3}}, "a.b") == 3 and dotted({"a": 1}, "a.b") is None


def test_a_single_run_is_not_shown_with_a_spread_of_zero():
    assert fmt(mean_std([summary(0.92)], "target.macro_f1")) == "0.920 (one run)"
    assert fmt(mean_std([summary(0.8), summary(0.8)], "target.macro_f1")) == "0.800 ± 0.000"


def test_table_has_a_row_per_arm_and_shows_failures():
    table = arm_table({"source_only": [summary(0.5), summary(0.7)], "m3bat": [summary(0.8), summary(0.0, "failed")]})
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| source_only | 0.600 ± 0.100 |") and "| 2.00 | 1.25 | 2 |" in lines[2]
    assert lines[3].endswith("| 1 (1 failed) |")
