"""A real federation through Flower's simulation engine (SuperLink, Ray,
virtual SuperNodes), on synthetic data, and what it leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedsense.rundir import read_metrics
from fedsense_tools import launcher
from fedsense_tools.experiment import convert, run_experiment
from tests.conftest import SYNTHETIC, processes_with_home


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("smoke")
    # An npz dataset (any dataset in docs/design.md's format runs unchanged) and
    # M3BAT, so every scope of the TensorBoard tags has something to show.
    (data,) = convert(SYNTHETIC, [f"data.cache_dir={tmp / 'cache'}"], str(tmp / "fleet.npz"), per_subject=False)
    return run_experiment(
        SYNTHETIC,
        ["data.kind=npz", f"data.path={data}", "data.target_domains=[6]", "fed.rounds=3", "adapt.method=m3bat",
         "output.projector_rounds=[2]", f"data.cache_dir={tmp / 'cache'}"],
        out=str(tmp / "run"),
    )


def test_run_directory_follows_the_contract(smoke_run: Path):
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "tb", "checkpoints"):
        assert (smoke_run / name).exists(), name
    resolved = yaml.safe_load((smoke_run / "config.yaml").read_text())
    assert resolved["fed"]["rounds"] == 3
    assert resolved["output"]["dir"] == str(smoke_run)  # pinned absolute for other processes

    rounds = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    for r in rounds:
        assert r["clients"] == {"sampled": 6, "replied": 6, "failed": 0, "errors": 0, "rejected": 0}
        assert "errors" not in r  # no error texts when nothing went wrong
        assert len(r["nodes"]["sampled"]) == 6 and r["nodes"]["replied"] == r["nodes"]["sampled"]
        assert r["nodes"]["failed"] == []
        assert r["target"]["clients"] == 1 and r["source"]["clients"] == 5
        assert 0.0 <= r["target"]["macro_f1"] <= 1.0
        assert r["comm"]["bytes_up"] > 0 and r["comm"]["bytes_down"] > 0
    # one message a device and round; the last round also sends the evaluate instructions
    assert rounds[2]["comm"]["bytes_down"] > 1.9 * rounds[0]["comm"]["bytes_down"]

    summary = json.loads((smoke_run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["method"] == "m3bat" and summary["rounds"] == 3
    assert summary["target"]["macro_f1"] == rounds[-1]["target"]["macro_f1"]
    assert summary["target"]["accuracy"] == rounds[-1]["target"]["accuracy"]
    assert summary["source"]["macro_f1"] == rounds[-1]["source"]["macro_f1"]
    assert summary["comm"]["bytes_up"] == sum(r["comm"]["bytes_up"] for r in rounds)
    assert summary["comm"]["bytes_down"] == sum(r["comm"]["bytes_down"] for r in rounds)
    assert summary["wall_seconds"] > 0
    assert summary["clients"]["total"] == 6


def test_tensorboard_tags_steps_and_ranges(smoke_run: Path):
    """Read back with TensorBoard's own reader: the tags of the monitoring contract."""
    acc = EventAccumulator(str(smoke_run / "tb"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    values = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    per_round = {tag: v for tag, v in values.items() if not tag.startswith("hparam/")}
    for tag, points in per_round.items():
        # The server round is the step. With the default statistics reference
        # the discriminators first train in round 3: the reference is pooled from
        # round 1's evaluation, which arrives with round 2's replies.
        adversarial = tag.startswith(("adapt/disc_acc/", "train/loss_domain/"))
        assert [step for step, _ in points] == ([3] if adversarial else [1, 2, 3]), tag
    fractions = ["eval/target/macro_f1", "eval/target/accuracy", "eval/source/macro_f1", "adapt/lambda"]
    fractions += [f"{scope}/{b}" for scope in ("adapt/disc_acc",) for b in ("acc", "gyro", "fused")]
    fractions += [f"eval/client/{c}/macro_f1" for c in range(6)]
    fractions += [t for t in per_round if t.startswith("eval/target/f1/")]
    for tag in fractions:
        assert all(0.0 <= v <= 1.0 for _, v in per_round[tag]), tag
    assert {f"eval/target/f1/{c}" for c in range(4)} <= set(per_round)
    for tag in ["train/loss_task"] + [f"train/loss_domain/{b}" for b in ("acc", "gyro", "fused")]:
        assert all(v >= 0.0 for _, v in per_round[tag]), tag
    assert per_round["adapt/lambda"][0][1] == 0.0 < per_round["adapt/lambda"][1][1]  # DANN's schedule
    for tag in ("comm/bytes_up", "comm/bytes_down", "round/seconds"):
        assert all(v > 0 for _, v in per_round[tag]), tag
    assert [v for _, v in per_round["clients/sampled"]] == [6.0, 6.0, 6.0]
    assert [v for _, v in per_round["clients/replied"]] == [6.0, 6.0, 6.0]
    assert [v for _, v in per_round["clients/failed"]] == [0.0, 0.0, 0.0]
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert values["hparam/target_macro_f1"] == [(3, pytest.approx(summary["target"]["macro_f1"]))]
    assert [i.step for i in acc.Images("eval/target/confusion")] == [1, 2, 3]
    assert {"config/text_summary", "clients/nodes/text_summary"} <= set(acc.Tags()["tensors"])
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    # the projector snapshot of round 2: class centroids per branch, labelled by role, client, class
    projector = (smoke_run / "tb" / "projector_config.pbtxt").read_text()
    for branch in ("acc", "gyro", "fused"):
        assert f'tensor_name: "embeddings/{branch}:00002"' in projector  # tag:step
    tsv = smoke_run / "tb" / "00002" / "embeddings%2ffused" / "metadata.tsv"  # the tag, URL-quoted
    rows = [line.split("\t") for line in tsv.read_text().splitlines()]
    assert rows[0] == ["role", "client", "class"] and len(rows) > 1
    assert {r[0] for r in rows[1:]} == {"source", "target"} and {r[1] for r in rows[1:]} == set(map(str, range(6)))
    # coloured by default: every point drawn as its class-coloured sprite
    assert 'image_path: "00002/embeddings%2ffused/sprite.png"\n    single_image_dim: 16' in projector
    assert (tsv.parent / "sprite.png").stat().st_size > 0


def test_checkpoints_are_real(smoke_run: Path):
    latest = np.load(smoke_run / "checkpoints" / "latest.npz")
    last = np.load(smoke_run / "checkpoints" / "round-0003.npz")
    assert set(latest.files) == set(last.files) and len(last.files) > 4
    for key in last.files:
        np.testing.assert_array_equal(latest[key], last[key])


def test_every_started_process_is_stopped(smoke_run: Path):
    assert processes_with_home(smoke_run / "flower") == []


def test_a_failed_run_leaves_a_closed_readable_event_file(tmp_path: Path):
    """Clients cannot answer within a millisecond: the run fails after the run
    directory exists, and its TensorBoard file is still complete."""
    run_dir = tmp_path / "run"
    with pytest.raises(launcher.RunFailed):
        run_experiment(SYNTHETIC, ["fed.timeout=0.001", f"data.cache_dir={tmp_path / 'cache'}"], out=str(run_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"]
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"tensors": 0})
    acc.Reload()
    assert "config/text_summary" in acc.Tags()["tensors"]
    start = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert b"failed" in start  # the run's status reaches the HParams tab
    assert processes_with_home(run_dir / "flower") == []


def test_a_failed_run_is_reported_as_failed(tmp_path: Path):
    """`flwr run` exits 0 for a failed run; the launcher must read the real status."""
    home = tmp_path / "flower"
    link = launcher.SuperLink.start(home)
    try:
        with pytest.raises(launcher.RunFailed, match="finished:failed"):
            launcher.submit_and_wait(
                home=home, config_file=tmp_path / "missing.yaml", overrides=[],
                federation_config=launcher.simulation_federation(2, 1),
            )
    finally:
        stopped = link.stop()
    assert link.process.pid in stopped
    assert processes_with_home(home) == []


def test_plot_and_compare_on_real_run_directories(smoke_run: Path, tmp_path: Path, capsys):
    from PIL import Image

    from fedsense.plots import CURVES, DPI, PANEL
    from fedsense_tools.cli import main

    central = run_experiment(SYNTHETIC, ["fed.mode=centralized", "fed.rounds=2", f"data.cache_dir={tmp_path / 'c'}"],
                             out=str(tmp_path / "central"))
    assert main(["plot", str(smoke_run), str(central), "--out", str(tmp_path / "plots")]) == 0
    panel = (round(PANEL[0] * DPI), round(PANEL[1] * DPI))
    for name in ("macro_f1.png", "disc_acc.png"):  # the M3BAT run has discriminators to show
        with Image.open(tmp_path / "plots" / name) as png:
            assert png.format == "PNG"
            if name == "macro_f1.png":
                assert png.size == (round(CURVES[0] * DPI), round(CURVES[1] * DPI))
            else:  # one panel per branch
                assert png.size[1] == panel[1] and png.size[0] % panel[0] == 0 and png.size[0] >= 2 * panel[0]
            assert len(png.convert("RGB").getcolors(maxcolors=100_000)) > 10  # drawn, not blank
    capsys.readouterr()
    assert main(["compare", str(smoke_run), str(central)]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 4 and rows[0].startswith("| run | method |")
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert rows[2].startswith("| run | m3bat | federated | 0 | 3 | ")
    assert f"| {summary['target']['macro_f1']:.4f} |" in rows[2]
    assert rows[3].startswith("| central | none | centralized | 0 | 2 | ")


def test_a_crashing_and_a_poisoning_client_are_counted_and_the_federation_goes_on(tmp_path: Path):
    run_dir = run_experiment(
        SYNTHETIC,
        ["fed.rounds=2", "faults.crash=0.17", "faults.nan=0.17", f"data.cache_dir={tmp_path / 'cache'}"],
        out=str(tmp_path / "run"),
    )
    rounds = read_metrics(run_dir)
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:  # one of six crashes (an error reply), one sends NaN (refused), four are averaged
        assert r["clients"] == {"sampled": 6, "replied": 4, "failed": 2, "errors": 1, "rejected": 1}
        assert "injected fault" in r["errors"][0] and "NaN" in r["rejected"][0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["source"]["macro_f1"] > 0.5


def test_lying_devices_are_refused_named_and_counted_and_the_federation_goes_on(tmp_path: Path):
    """Twelve devices, five of which lie each in their own way (faults.*_lie,
    malformed); the server holds every reply to what the device declared."""
    lies = ("role_lie", "examples_lie", "confusion_lie", "stats_lie", "malformed")
    run_dir = run_experiment(
        SYNTHETIC,
        ["fed.rounds=2", "data.synthetic.subjects=12", "data.target_domains=[12]", "adapt.method=m3bat_bn",
         "adapt.stats_min_count=8", f"data.cache_dir={tmp_path / 'cache'}",
         *(f"faults.{kind}=0.0834" for kind in lies)],  # one device of twelve each
        out=str(tmp_path / "run"),
    )
    rounds = read_metrics(run_dir)
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        text = " ".join(r.get("rejected", []) + r.get("errors", []))
        assert "contradicts the role it declared" in text  # role_lie, train and evaluate
        assert "training windows it declared" in text  # examples_lie
        assert "test windows it declared" in text  # confusion_lie
        assert "stats." in text  # stats_lie
        assert "missing or not a finite number" in text or "confusion size" in text  # malformed
        assert r["clients"]["rejected"] >= 2 and r["clients"]["replied"] <= 10
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["source"]["macro_f1"] > 0.5
    assert rounds[-1]["source"]["windows"] < 10 ** 6  # no lie was summed in
