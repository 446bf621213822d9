"""The run directory contract: files, metrics lines, TensorBoard, checkpoints, summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedsense.config import Config
from fedsense.configfile import from_dict, load
from fedsense.rundir import RunDir, build_summary, read_metrics

CFG = from_dict(None, ["adapt.method=none", "fed.rounds=2", "seed=5", "output.name=t"])


@pytest.fixture
def run(tmp_path: Path):
    r = RunDir(tmp_path / "run", CFG)
    yield r
    r.close()


def scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_creates_layout_and_resolved_config(run: RunDir, tmp_path: Path) -> None:
    root = tmp_path / "run"
    assert run.path == root.resolve()
    assert (root / "config.yaml").is_file()
    assert (root / "metrics.jsonl").read_text() == ""
    assert (root / "tb").is_dir() and run.tb_dir == root.resolve() / "tb"
    assert (root / "checkpoints").is_dir()
    assert load(root / "config.yaml") == CFG  # the resolved config, loadable again


def test_log_round_appends_json_lines(run: RunDir) -> None:
    run.log_round(1, {"target": {"macro_f1": 0.5, "accuracy": 0.6}, "note": "x"})
    run.log_round(2, {"target": {"macro_f1": 0.7, "accuracy": 0.8}, "note": "y"})
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == {
        "round": 1, "target": {"macro_f1": 0.5, "accuracy": 0.6}, "note": "x"
    }
    assert read_metrics(run.path)[1]["target"]["macro_f1"] == 0.7
    assert [r["round"] for r in read_metrics(run.path)] == [1, 2]


def test_log_round_writes_tensorboard_scalars(run: RunDir) -> None:
    run.log_round(1, {"target": {"macro_f1": 0.25}, "train": {"loss_task": 1.5}, "status": "ok"})
    run.log_round(2, {"target": {"macro_f1": 0.75}, "train": {"loss_task": 0.5}, "flag": True})
    found = scalars(run.tb_dir)  # log_round flushes: readable while the run goes on
    assert set(found) == {"eval/target/macro_f1", "train/loss_task"}  # strings and bools skipped
    assert found["eval/target/macro_f1"] == [(1, pytest.approx(0.25)), (2, pytest.approx(0.75))]
    assert found["train/loss_task"] == [(1, pytest.approx(1.5)), (2, pytest.approx(0.5))]


def test_checkpoints_round_trip_and_latest(run: RunDir) -> None:
    rng = np.random.default_rng(0)
    first = {"w": rng.normal(size=(3, 4)).astype(np.float32), "n": np.arange(3)}
    second = {"w": rng.normal(size=(3, 4)).astype(np.float32), "n": np.arange(3) + 7}
    p1 = run.save_checkpoint(1, first)
    p2 = run.save_checkpoint(2, second)
    assert p1.name == "round-0001.npz" and p2.name == "round-0002.npz"
    with np.load(p1) as f:
        assert set(f.files) == {"w", "n"}
        np.testing.assert_array_equal(f["w"], first["w"])
        assert f["w"].dtype == np.float32
    with np.load(run.path / "checkpoints" / "latest.npz") as f:
        np.testing.assert_array_equal(f["w"], second["w"])
        np.testing.assert_array_equal(f["n"], second["n"])
    assert (run.path / "checkpoints" / "latest.npz").read_bytes() == p2.read_bytes()
    # No temporary files are left behind.
    assert sorted(p.name for p in (run.path / "checkpoints").iterdir()) == [
        "latest.npz", "round-0001.npz", "round-0002.npz"
    ]


def test_summary_has_design_keys_nested(run: RunDir) -> None:
    history = [
        {
            "target": {"macro_f1": 0.1, "accuracy": 0.2},
            "source": {"macro_f1": 0.3, "accuracy": 0.4},
        },
        {
            "target": {"macro_f1": 0.5, "accuracy": 0.6},
            "source": {"macro_f1": 0.7, "accuracy": 0.8},
        },
    ]
    summary = build_summary(CFG, history, {"bytes_up": 1000, "bytes_down": 2000}, status="done")
    path = run.write_summary(summary)
    assert path == run.path / "summary.json"
    data = json.loads(path.read_text())
    assert data["method"] == "none"
    assert data["rounds"] == 2
    assert data["target"]["macro_f1"] == 0.5  # the last round's, not the first
    assert data["target"]["accuracy"] == 0.6
    assert data["source"]["macro_f1"] == 0.7
    assert data["comm"]["bytes_up"] == 1000
    assert data["comm"]["bytes_down"] == 2000
    assert isinstance(data["wall_seconds"], (int, float)) and data["wall_seconds"] >= 0
    assert data["seed"] == 5 and data["status"] == "done"


def test_summary_without_rounds_or_role_has_nulls() -> None:
    empty = build_summary(Config(), [], {})
    assert empty["rounds"] == 0
    assert empty["target"] == {"macro_f1": None, "accuracy": None}
    assert empty["comm"] == {"bytes_up": 0, "bytes_down": 0, "bytes_up_train": 0}
    no_target = build_summary(Config(), [{"source": {"macro_f1": 0.9, "accuracy": 1.0}}], {})
    assert no_target["target"]["macro_f1"] is None
    assert no_target["source"]["macro_f1"] == 0.9
    json.dumps(no_target)  # still plain JSON



def test_images_text_histograms_and_hparams_reach_the_event_file(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run", CFG)
    run.log_image("eval/target/confusion", np.zeros((3, 16, 24), np.uint8), 1)
    run.log_text("clients/nodes", "**sampled** (1): 7", 1)
    run.log_histograms(1, {"w": np.arange(10, dtype=np.float32), "n": np.arange(3)})
    run.write_summary({"status": "completed", "rounds": 2, "target": {"macro_f1": 0.8}, "source": {"macro_f1": None}})
    run.close()
    acc = EventAccumulator(str(run.tb_dir), size_guidance={"images": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    (image,) = acc.Images("eval/target/confusion")
    assert (image.step, image.width, image.height) == (1, 24, 16)
    assert tags["histograms"] == ["weights/w"]  # integer counters are not weights
    assert {"config/text_summary", "clients/nodes/text_summary"} <= set(tags["tensors"])
    assert [(e.step, e.value) for e in acc.Scalars("hparam/target_macro_f1")] == [(2, pytest.approx(0.8))]
    assert "hparam/source_macro_f1" not in tags["scalars"]  # unknown: not invented
    hp = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hp)
    assert b"adapt.method" in hp["_hparams_/session_start_info"]


def test_a_run_directory_is_its_owners_only(tmp_path):
    import stat

    from fedsense.config import Config
    from fedsense.rundir import RunDir

    run = RunDir(tmp_path / "run", Config())
    run.close()
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700
