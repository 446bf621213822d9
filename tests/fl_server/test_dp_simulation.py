"""privacy.dp in a real simulated federation: devices clip, the server adds
noise, and the epsilon spent reaches metrics.jsonl, summary.json and TensorBoard."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedsense.privacy import epsilon
from fedsense.rundir import read_metrics
from fedsense_tools.experiment import run_experiment
from tests.conftest import SYNTHETIC


def test_a_dp_run_reports_epsilon(tmp_path):
    run = run_experiment(SYNTHETIC, ["fed.rounds=2", "privacy.dp=true", "privacy.noise_multiplier=0.8",
                                     "privacy.clipping_norm=0.5", "privacy.delta=1e-4",
                                     f"data.cache_dir={tmp_path / 'cache'}"], out=str(tmp_path / "run"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["privacy"]["epsilon"] == pytest.approx(epsilon(0.8, 2, 1e-4))
    assert summary["privacy"]["delta"] == 1e-4 and summary["privacy"]["releases"] == 2
    assert summary["privacy"]["clipping_norm"] == 0.5 and summary["privacy"]["noise_multiplier"] == 0.8
    rounds = read_metrics(run)
    assert [r["privacy"]["releases"] for r in rounds] == [1, 2]
    # 5 sources with (nearly) equal windows: one device's share is about 1/5
    assert all(0.8 * 0.5 / 5 <= r["privacy"]["noise_std"] < 0.8 * 0.5 / 3 for r in rounds)
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    eps = [(e.step, e.value) for e in acc.Scalars("privacy/epsilon")]
    assert [s for s, _ in eps] == [1, 2]
    assert eps[1][1] == pytest.approx(summary["privacy"]["epsilon"], rel=1e-6) and eps[0][1] < eps[1][1]
