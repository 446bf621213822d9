"""Heterogeneous devices in real simulated federations: devices without a
sensor with distillation and modality-aware averaging; backprop-free
targets with generated normalisation."""

from __future__ import annotations

import json

from fedsense.data.missing import devices_without
from fedsense.rundir import read_metrics
from fedsense_tools.experiment import run_experiment
from tests.conftest import SYNTHETIC


def test_half_the_devices_without_a_gyroscope_federate_and_distil(tmp_path):
    run = run_experiment(
        SYNTHETIC,
        ["fed.rounds=2", "adapt.method=m3bat", "adapt.alignment=statistics", "data.drop_modality={gyro: 0.5}",
         "data.drop_window={acc: 0.1}", "train.single_modality=distill", f"data.cache_dir={tmp_path / 'cache'}"],
        out=str(tmp_path / "run"),
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["clients"]["failed"] == 0
    assert len(devices_without("gyro", 0.5, 6, 0)) == 3
    for r in read_metrics(run):
        assert r["clients"]["replied"] == 6 and r["clients"]["errors"] == 0
        assert r["target"]["windows"] > 0 and r["compute"]["train"]["source"]["train_steps"] > 0


def test_backprop_free_targets_get_generated_statistics_each_round(tmp_path):
    run = run_experiment(
        SYNTHETIC, ["fed.rounds=3", "adapt.method=generated", f"data.cache_dir={tmp_path / 'cache'}"],
        out=str(tmp_path / "run"),
    )
    rounds = read_metrics(run)
    assert [r["generated"] for r in rounds] == [{"targets": 1, "sources_fitted": 5}] * 3
    for r in rounds:
        assert r["compute"]["train"]["target"]["train_steps"] == 0  # the target never steps
        assert r["compute"]["evaluate"]["target"]["cpu_seconds"] > 0
    assert json.loads((run / "summary.json").read_text())["target"]["macro_f1"] > 0.6
