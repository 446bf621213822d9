"""The reversal schedule is a pure function of the server round."""

from __future__ import annotations

import math

import pytest

from fedsense.adaptation.schedules import dann_lambda, progress, reversal_coefficient


def test_dann_lambda_matches_the_formula() -> None:
    for p in (0.0, 0.1, 0.5, 1.0):
        assert dann_lambda(p) == pytest.approx(2 / (1 + math.exp(-10 * p)) - 1)
    assert dann_lambda(0.0) == 0.0 and dann_lambda(1.0) > 0.9999


def test_progress_runs_from_first_to_last_round() -> None:
    assert progress(1, 20) == 0.0 and progress(20, 20) == 1.0
    assert progress(11, 21) == pytest.approx(0.5)
    assert progress(1, 1) == 1.0


def test_coefficient_depends_on_the_round_only() -> None:
    seq = [reversal_coefficient(r, 10, 0.5) for r in range(1, 11)]
    again = [reversal_coefficient(r, 10, 0.5) for r in reversed(range(1, 11))][::-1]
    assert seq == again  # no hidden counter: any call order gives the same values
    assert seq == sorted(seq) and seq[0] == 0.0 and seq[-1] == pytest.approx(0.5 * dann_lambda(1.0))
