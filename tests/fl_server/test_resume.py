"""Kill a real simulated federation's command mid-round with SIGKILL: what
it started stops by itself. Resume it, and get the uninterrupted run's
result: global weights, every round's numbers, the summary and
TensorBoard's view."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedsense.config import ConfigError
from fedsense.rundir import read_metrics
from fedsense_tools.experiment import resume_experiment, run_experiment
from fedsense_tools.launcher import RAY_TMP_NOTE
from tests.conftest import SYNTHETIC, processes_with_home

ROUNDS = 4


def _overrides(tmp: Path) -> list[str]:
    # The default method with its alignment on, int8 updates and error
    # feedback: server state (raw and class references, shift weights,
    # schedule) and device state (calibration and its candidates,
    # discriminators, what a target evaluated with, rounding residual) must
    # all survive the kill.
    return [f"fed.rounds={ROUNDS}", "adapt.method=m3bat_local", "adapt.align_branches=all", "adapt.stats_min_count=8",
            "fed.update_encoding=int8", f"data.cache_dir={tmp / 'cache'}"]


def _kill_the_command(cli: subprocess.Popen, home: Path, timeout: float = 60) -> int:
    """SIGKILL the command alone, as a power cut of its terminal would; then
    everything it started must stop by itself (its watchdog). Returns how
    many of the run's processes were alive at the kill."""
    started = processes_with_home(home)
    cli.kill()
    cli.wait(timeout=30)
    deadline = time.time() + timeout
    while processes_with_home(home) and time.time() < deadline:
        time.sleep(0.5)
    assert not processes_with_home(home), f"left running after the command was killed: {processes_with_home(home)}"
    return len(started)


def _wait_for(condition, what: str, cli: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert cli.poll() is None, f"the run ended (code {cli.returncode}) before {what}"
        assert time.time() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.2)


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]
            if not t.startswith(("round/", "hparam/", "compute/"))}  # times differ


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, list[int]]:
    tmp = tmp_path_factory.mktemp("resume")
    full = run_experiment(SYNTHETIC, _overrides(tmp), out=str(tmp / "full"))

    killed = tmp / "killed"
    fedsense = Path(sys.executable).parent / "fedsense"
    sets = [arg for o in _overrides(tmp) for arg in ("--set", o)]
    cli = subprocess.Popen([str(fedsense), "run", str(SYNTHETIC), *sets, "--out", str(killed)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Round 3 is under way: a device has trained in it and kept its new
        # local state on disk, while the server's resume point is round 1
        # (one message a round: round 2's evaluation comes back with round 3's replies).
        _wait_for(lambda: any(killed.glob("devices/*/local-0003-0.npz")), "training in round 3", cli)
        alive = _kill_the_command(cli, killed / "flower")
        lines = len(read_metrics(killed))
        time.sleep(5)
        assert len(read_metrics(killed)) == lines  # no round finished after the kill
        ray_tmp = Path((killed / "flower" / RAY_TMP_NOTE).read_text().strip())
        assert ray_tmp.name.startswith("fsray-") and not ray_tmp.exists()  # Ray's directory went with the run
    finally:
        if cli.poll() is None:
            cli.kill()
    return full, killed, alive


def test_a_killed_run_resumes_to_the_uninterrupted_result(runs):
    full, killed, alive = runs
    assert alive > 3  # the SuperLink, the simulation and Ray were running at the kill
    assert not (killed / "summary.json").exists()
    interrupted_at = max(r["round"] for r in read_metrics(killed))
    assert interrupted_at < ROUNDS
    # The stop recorded nothing it caused: a device killed by the teardown
    # mid-round would have ended that round short of it (and made it the
    # resume point), so every recorded round has every device's evaluation.
    for r in read_metrics(killed):
        assert sorted(r["client"]) == [str(c) for c in range(6)] and r["clients"]["failed"] == 0, r

    resume_experiment(killed)

    summary = json.loads((killed / "summary.json").read_text())
    expected = json.loads((full / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == ROUNDS
    assert 1 <= summary["resumed_after"] <= interrupted_at
    for key in ("target", "source", "comm"):
        assert summary[key] == expected[key], key

    with np.load(full / "checkpoints" / "latest.npz") as a, np.load(killed / "checkpoints" / "latest.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=1e-7, err_msg=k)

    drop = ("seconds", "nodes", "compute")  # wall and CPU time and Flower's node ids differ between runs
    got = [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(killed)]
    want = [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(full)]
    assert [r["round"] for r in got] == list(range(1, ROUNDS + 1))
    assert got == want

    # TensorBoard shows each round once: what the killed run logged after its
    # resume point was purged.
    resumed, reference = _scalars(killed), _scalars(full)
    assert resumed.keys() == reference.keys()
    for tag, points in reference.items():
        assert [s for s, _ in resumed[tag]] == [s for s, _ in points], tag
        np.testing.assert_allclose([v for _, v in resumed[tag]], [v for _, v in points], rtol=1e-6, err_msg=tag)
    assert not processes_with_home(killed / "flower")


def test_resume_refuses_what_it_cannot_continue(runs, tmp_path):
    full, _, _ = runs
    with pytest.raises(ConfigError, match="all 4 rounds are complete"):
        resume_experiment(full)
    with pytest.raises(ConfigError, match="not a fedsense run directory"):
        resume_experiment(tmp_path)
    (tmp_path / "config.yaml").write_text((full / "config.yaml").read_text().replace(str(full), str(tmp_path)))
    with pytest.raises(ConfigError, match="no resume point"):
        resume_experiment(tmp_path)
