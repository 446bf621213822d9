"""The centralized reference: pooled source data only, evaluated like the server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedsense import centralized, engine
from fedsense.centralized import concat, run_centralized
from fedsense.configfile import load
from fedsense.data.base import Dataset
from fedsense.models import DataSpec, build_model, count_parameters
from fedsense.rundir import RunDir, read_metrics

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = REPO / "configs" / "synthetic.yaml"


def test_run_centralized_trains_on_sources_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load(
        SYNTHETIC,
        [
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.target_domains=[2, 6]",
            "fed.rounds=2",
            "fed.mode=centralized",
            "model.channels=[8, 16]",
            "model.embed_dim=16",
        ],
    )
    seen: list[Dataset] = []

    def recording(model, data, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(data)
        return engine.train_supervised(model, data, *args, **kwargs)

    monkeypatch.setattr(centralized, "train_supervised", recording)
    run = RunDir(tmp_path / "run", cfg)
    try:
        summary = run_centralized(cfg, run)
        run.write_summary(summary)
    finally:
        run.close()

    # One training call per round, never on a target subject's windows.
    assert len(seen) == 2
    for data in seen:
        assert set(np.unique(data.subject).tolist()) == {1, 3, 4, 5}
        assert data.y.min() >= 0
        # Source train parts only: 4 subjects x 4 classes x (20 - 6 test - 1 dropped).
        assert len(data) == 4 * 4 * 13

    on_disk = json.loads((run.path / "summary.json").read_text())
    assert on_disk["method"] == "none" and on_disk["mode"] == "centralized"
    assert on_disk["rounds"] == 2
    assert on_disk["clients"] == {"total": 6, "source": 4, "target": 2}
    for role in ("target", "source"):
        for key in ("macro_f1", "accuracy"):
            assert 0.0 <= on_disk[role][key] <= 1.0
    # The synthetic task is easy: measured 1.0 for both after two epochs.
    assert on_disk["source"]["macro_f1"] >= 0.7
    assert "wall_seconds" in on_disk and "bytes_up" in on_disk["comm"]
    spec = DataSpec(shapes={"acc": (3, 64), "gyro": (3, 64)}, num_classes=4)
    assert on_disk["parameters"] == count_parameters(build_model(spec, cfg.model))

    rounds = read_metrics(run.path)
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[-1]["target"]["macro_f1"] == on_disk["target"]["macro_f1"]
    # Targets' held-out parts: 2 clients x 4 classes x 6 windows, summed like the server.
    assert rounds[-1]["target"]["clients"] == 2 and rounds[-1]["target"]["windows"] == 48
    assert rounds[-1]["source"]["clients"] == 4 and rounds[-1]["source"]["windows"] == 96

    ckpt = run.path / "checkpoints"
    assert {p.name for p in ckpt.iterdir()} == {"round-0001.npz", "round-0002.npz", "latest.npz"}
    with np.load(ckpt / "latest.npz") as f:
        assert "classifier.1.weight" in f.files
        assert f["classifier.1.weight"].shape == (4, 32)
        assert not any(k.endswith("num_batches_tracked") for k in f.files)


def test_concat_stacks_in_order() -> None:
    def part(subject: int, n: int) -> Dataset:
        return Dataset(
            x={"acc": np.full((n, 3, 8), subject, np.float32)},
            y=np.arange(n, dtype=np.int64),
            subject=np.full(n, subject, np.int64),
            domain=np.full(n, 10 + subject, np.int64),
            classes=("a", "b", "c"),
        )

    out = concat([part(1, 2), part(2, 3)])
    assert len(out) == 5
    np.testing.assert_array_equal(out.subject, [1, 1, 2, 2, 2])
    np.testing.assert_array_equal(out.domain, [11, 11, 12, 12, 12])
    np.testing.assert_array_equal(out.y, [0, 1, 0, 1, 2])
    assert out.x["acc"].shape == (5, 3, 8) and out.x["acc"][2, 0, 0] == 2
    assert out.classes == ("a", "b", "c")
