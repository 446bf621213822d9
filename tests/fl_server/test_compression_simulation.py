"""Compressed updates in a real simulated federation: int8 replies are
decoded, a poisoned one is refused by name, and the upload counts the bytes
that travelled."""

from __future__ import annotations

import json

import numpy as np

from fedsense.rundir import read_metrics
from fedsense_tools.experiment import run_experiment
from tests.conftest import SYNTHETIC


def test_int8_updates_with_error_feedback_train_and_a_nan_update_is_refused(tmp_path):
    run = run_experiment(
        SYNTHETIC,
        ["fed.rounds=3", "adapt.method=m3bat", "adapt.alignment=federated", "fed.update_encoding=int8",
         "faults.nan=0.2", f"data.cache_dir={tmp_path / 'cache'}"],
        out=str(tmp_path / "run"),
    )
    summary = json.loads((run / "summary.json").read_text())
    rounds = read_metrics(run)
    assert summary["status"] == "completed" and len(rounds) == 3
    for r in rounds:  # one of six clients sends NaN: its int8 scale is not finite
        assert r["clients"]["replied"] == 5 and r["clients"]["rejected"] == 1
        assert "a scale is negative or not finite" in r["rejected"][0]
    assert summary["target"]["macro_f1"] > 0.6  # an untrained model is near 0.25 on four classes

    with np.load(run / "checkpoints" / "latest.npz") as arrays:
        values = sum(arrays[k].size for k in arrays.files)
        tensors = len(arrays.files)
    # six replies a round, each one byte a value plus a float32 scale per tensor,
    # array headers and a dozen numbers; float32 arrays would be four bytes a value
    for r in rounds:
        sent = r["comm"]["bytes_up_train"]
        assert 6 * values <= sent <= 6 * (values + 4 * tensors + 1500)
        assert 6 * 4 * values / sent >= 3.5
    assert summary["comm"]["bytes_up_train"] == sum(r["comm"]["bytes_up_train"] for r in rounds)
