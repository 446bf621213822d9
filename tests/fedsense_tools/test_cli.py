"""The command line: clear errors for bad input, the converter, centralized runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedsense.data.npz import load_npz
from fedsense_tools.cli import main
from tests.conftest import SYNTHETIC, write_hapt_run


def test_unknown_key_is_an_error_naming_it(capsys):
    assert main(["run", str(SYNTHETIC), "--set", "fed.roundz=3"]) == 2
    err = capsys.readouterr().err
    assert "fed.roundz" in err and "Traceback" not in err


def test_bad_type_is_an_error_naming_the_key(capsys):
    assert main(["run", str(SYNTHETIC), "--set", "fed.rounds=many"]) == 2
    assert "fed.rounds" in capsys.readouterr().err


def test_missing_config_file_is_an_error(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_bad_seeds_are_an_error(capsys):
    assert main(["run", str(SYNTHETIC), "--seeds", "0,x"]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_npz_dataset_without_path_is_an_error(capsys):
    assert main(["run", str(SYNTHETIC), "--set", "data.kind=npz"]) == 2
    assert "data.path" in capsys.readouterr().err


def test_convert_writes_contract_files_that_load_back(tmp_path):
    cache = f"data.cache_dir={tmp_path / 'c'}"
    assert main(["convert", str(SYNTHETIC), "--set", cache, "--out", str(tmp_path / "all.npz")]) == 0
    full = load_npz(tmp_path / "all.npz")
    assert full.modalities == ("acc", "gyro") and len(full.subjects()) == 6
    assert main(["convert", str(SYNTHETIC), "--set", cache, "--out", str(tmp_path / "dev"), "--per-subject"]) == 0
    parts = sorted((tmp_path / "dev").glob("subject-*.npz"))
    assert len(parts) == 6
    one = load_npz(tmp_path / "dev" / "subject-3.npz")
    assert one.subjects() == [3]
    np.testing.assert_array_equal(one.x["acc"], full.x["acc"][full.subject == 3])


def test_centralized_run_and_npz_round_trip_through_the_cli(tmp_path, capsys):
    """An npz written by `convert` runs as `data.kind: npz`, centralized (no Flower)."""
    cache = f"data.cache_dir={tmp_path / 'c'}"
    assert main(["convert", str(SYNTHETIC), "--set", cache, "--out", str(tmp_path / "d.npz")]) == 0
    out = tmp_path / "run"
    code = main(["run", str(SYNTHETIC), "--set", "data.kind=npz", "--set", f"data.path={tmp_path / 'd.npz'}",
                 "--set", "fed.mode=centralized", "--set", "fed.rounds=3", "--out", str(out),
                 "--set", "data.shifts=[{domains: [6], rotate: [0, 0, 90]}]"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "centralized" and summary["rounds"] == 3
    assert summary["target"]["macro_f1"] > 0.5  # 4 classes: chance is 0.25
    printed = capsys.readouterr().out
    assert f"fedsense board {tmp_path / 'run'}" in printed  # the venv's, no activation needed
    # A synthetic shift on top of a dataset of one's own is said at the start, with the way out.
    assert "synthetic shift of domains [6]: turned 90 deg about z (--set data.shifts=[] runs your data" in printed


def test_an_existing_run_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    assert main(["run", str(SYNTHETIC), "--set", "fed.mode=centralized", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "{}"


def test_plot_and_compare_name_what_is_not_a_run_directory(tmp_path, capsys):
    from fedsense_tools.cli import main
    from fedsense_tools.commands import run_labels

    assert main(["compare", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    for arm in ("dann", "m3bat"):
        (tmp_path / arm / "seed-0").mkdir(parents=True)
    labels = run_labels([str(tmp_path / "dann" / "seed-0"), str(tmp_path / "m3bat" / "seed-0")])
    assert list(labels) == ["dann/seed-0", "m3bat/seed-0"]


def test_resume_takes_a_run_directory_and_nothing_else(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path), str(SYNTHETIC)]) == 2
    assert "no CONFIG, --set, --out or --seeds" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "not a fedsense run directory" in capsys.readouterr().err
    assert main(["run"]) == 2
    assert "give an experiment CONFIG.yaml" in capsys.readouterr().err


def test_export_writes_the_file_and_a_report_and_names_what_is_missing(tmp_path, capsys, hapt_model):
    pytest.importorskip("onnxruntime")
    runs = write_hapt_run(tmp_path / "run", hapt_model, "fedbn_stats")
    assert main(["export", str(runs.path)]) == 2
    assert "--device N" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err

    assert main(["export", str(runs.path), "--device", "26", "--int8"]) == 0
    out = capsys.readouterr().out
    written = runs.path / "export" / "model-device-26-int8.onnx"
    assert f"wrote {written}" in out and "same class" in out
    report = json.loads((written.parent / (written.name + ".json")).read_text())
    assert report["bytes"] == written.stat().st_size and report["format"] == "int8"
    assert report["parity"]["windows"] > 50 and report["parity"]["same_class"] >= 0.95


def test_an_empty_config_and_an_impossible_federation_stop_before_flower_starts(tmp_path, capsys):
    import time

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    started = time.time()
    assert main(["run", str(empty), "--out", str(tmp_path / "a")]) == 2
    assert "the file is empty" in capsys.readouterr().err
    assert main(["run", str(SYNTHETIC), "--set", "fed.min_clients=100", "--set",
                 f"data.cache_dir={tmp_path / 'c'}", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "fed.min_clients=100: the data have 6 clients" in err and "Traceback" not in err
    assert time.time() - started < 30  # seconds, not Flower's five-minute wait for nodes
    assert not (tmp_path / "b" / "flower").exists()  # no SuperLink was started


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("fedsense 0.")


def test_results_without_runs_never_replaces_a_fuller_page(tmp_path, capsys):
    page = tmp_path / "results.md"
    from fedsense_tools.results import RUNS_MARK

    page.write_text(f"# Results\n{RUNS_MARK}12 -->\nthe tables of twelve runs\n")
    before = page.read_bytes()
    assert main(["results", "--scenarios", "cross_device", "--arms", "source_only", "--no-run",
                 "--out", str(tmp_path / "none"), "--doc", str(page)]) == 0
    assert page.read_bytes() == before
    err = capsys.readouterr().err
    assert "left as it is: it reports 12 completed runs" in err and f"delete {page} to write it anyway" in err


def test_plot_refuses_a_run_without_a_completed_round(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    (run / "summary.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: no nodes\nmore"}))
    assert main(["plot", str(run)]) == 2
    err = capsys.readouterr().err
    assert "nothing to plot" in err and "failed: RuntimeError: no nodes" in err
    assert not (run / "plots").exists()


def test_board_serves_each_run_under_its_folder_name_on_loopback(tmp_path, capsys):
    """`fedsense board` starts a real TensorBoard on 127.0.0.1 whose runs are
    named by their folders (not "." as with --logdir RUN_DIR/tb), and leaves
    no view behind."""
    import subprocess
    import sys
    import time
    import urllib.request

    from fedsense.configfile import load
    from fedsense.rundir import RunDir
    from fedsense_tools.launcher import free_port

    runs = []
    for arm in ("adabn", "m3bat_local"):
        d = tmp_path / arm / "seed-0"
        run = RunDir(d, load(SYNTHETIC, [f"output.dir={d}"]))
        run.log_round(1, {"target": {"macro_f1": 0.5}})
        run.close()
        runs.append(str(d))
    assert main(["board", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fedsense_tools.cli", "board", *runs, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, names = time.time() + 60, None
        while time.time() < deadline and names is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2) as reply:
                    names = json.loads(reply.read())
            except OSError:
                time.sleep(0.5)
        assert names is not None, "TensorBoard did not answer"
        assert sorted(names) == ["adabn/seed-0", "m3bat_local/seed-0"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_progress_estimates_from_the_rounds_not_the_start_up(tmp_path, capsys):
    """The ETA is the rounds to go times the mean round (the first, with its
    one-off costs, left out once there are others), whatever start-up took."""
    from fedsense_tools.experiment import Progress

    progress = Progress(tmp_path, rounds=10)
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"round": 1, "seconds": 40.0, "target": {"macro_f1": 0.5}}, {"round": 2, "seconds": 10.0},
             {"round": 3, "seconds": 12.0}]
    for i in range(1, 4):
        metrics.write_text("".join(json.dumps(rec) + "\n" for rec in lines[:i]))
        progress()
    out = capsys.readouterr().out.splitlines()
    assert [line.split("ETA")[1].split()[0] for line in out] == ["360s", "80s", "77s"]  # 9x40, 8x10, 7x11
    assert "target macro-F1 0.5000" in out[0] and "source macro-F1   -" in out[0]


def test_every_argument_and_option_says_what_it_is_for():
    import argparse

    from fedsense_tools.cli import build_parser

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield f"{path} {action.dest}", action.help

    found = dict(walk(build_parser(), "fedsense"))
    assert len(found) > 40
    assert [name for name, text in found.items() if not text] == []
    assert not [name for name, text in found.items() if "``" in text]  # no reStructuredText in --help


def test_an_interrupted_run_says_in_one_line_how_to_continue_it(tmp_path, capsys, monkeypatch):
    import argparse
    import sys
    from pathlib import Path

    from fedsense_tools import commands
    from fedsense_tools.experiment import RUNNING

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "resume.npz").write_bytes(b"")

    def interrupted(args):
        RUNNING["dir"] = run_dir
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "_cmd_run", interrupted)
    try:
        assert commands.dispatch(argparse.Namespace(command="run")) == 130
    finally:
        RUNNING.pop("dir", None)
    err = capsys.readouterr().err.strip().splitlines()
    venv_fedsense = Path(sys.executable).parent / "fedsense"
    assert err == [f"fedsense: stopped; continue it with: {venv_fedsense} run --resume {run_dir}"]
