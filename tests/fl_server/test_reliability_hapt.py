"""Slow: 20 % sign-flipping attackers in the default HAPT federation (the
README's Reliability table; `make test-slow`, about 15 minutes).

The same six source users (faults.seed 0) either are absent (the honest
federation: `faults.crash`, they never reply) or send their update reversed
(`faults.sign_flip`). The plain mean lets the attack in; the direction
screen refuses exactly the attackers every round and ends where the honest
federation ends. (Against all 30 users the honest federation is itself 4.8
points lower: the attackers' own data are lost to any defense.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsense.rundir import read_metrics
from fedsense_tools.experiment import run_experiment

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "configs" / "default.yaml"


def _run(tmp: Path, name: str, *overrides: str) -> tuple[dict, list[dict]]:
    run = run_experiment(DEFAULT, list(overrides), out=str(tmp / name))
    return json.loads((run / "summary.json").read_text()), read_metrics(run)


@pytest.mark.slow
def test_the_direction_screen_keeps_sign_flipping_attackers_out(tmp_path):
    honest, _ = _run(tmp_path, "honest", "faults.crash=0.2")
    attacked, _ = _run(tmp_path, "mean", "faults.sign_flip=0.2")
    screened, rounds = _run(tmp_path, "screen", "faults.sign_flip=0.2", "fed.min_update_cosine=0")
    f1 = lambda s: s["target"]["macro_f1"]  # noqa: E731
    assert f1(attacked) < f1(honest) - 0.10  # the mean degrades
    assert abs(f1(screened) - f1(honest)) <= 0.03  # the screen keeps the honest result
    for r in rounds:  # the six attackers and nobody else, every round
        assert (r["clients"]["rejected"], r["clients"]["replied"]) == (6, 24), r["round"]
