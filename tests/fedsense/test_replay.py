"""A replay of a run's unlabeled devices gives, with no option changed, the
target numbers the real Flower federation recorded, round by round; it
refuses what it cannot reproduce."""

from __future__ import annotations

import shutil

import pytest

from fedsense.config import ConfigError
from fedsense.configfile import dump, load
from fedsense.replay import default_out, replay
from fedsense.rundir import read_metrics
from fedsense_tools.experiment import run_experiment
from tests.conftest import SYNTHETIC

ROUNDS = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    return run_experiment(SYNTHETIC, ["adapt.method=m3bat_local", f"fed.rounds={ROUNDS}", "adapt.stats_min_count=8",
                                      f"data.cache_dir={tmp / 'cache'}"], out=str(tmp / "run"))


def test_a_replay_with_nothing_changed_gives_the_federations_target_numbers(run):
    recorded = read_metrics(run)
    replayed = replay(run)
    assert [r["round"] for r in replayed] == [r["round"] for r in recorded] == list(range(1, ROUNDS + 1))
    for real, again in zip(recorded, replayed):
        assert again["target"]["windows"] == real["target"]["windows"] > 0
        assert again["target"]["macro_f1"] == pytest.approx(real["target"]["macro_f1"], abs=1e-12)
        assert again["target"]["accuracy"] == pytest.approx(real["target"]["accuracy"], abs=1e-12)
    # what the targets' adaptation did is the same too (the round's records, from round 2 on)
    last = recorded[-1]["adapt"]["targets"]
    assert replayed[-1]["adapt"]["selftrain.im_after"] == pytest.approx(last["im_after"], abs=1e-9)
    assert replayed[-1]["adapt"]["selftrain.kept"] == pytest.approx(last["kept"], abs=1e-12)


def test_another_option_replays_to_other_numbers(run):
    plain = replay(run, ["adapt.self_training=false", "adapt.calibration=false"])
    default = replay(run)
    assert [r["target"]["windows"] for r in plain] == [r["target"]["windows"] for r in default]
    assert plain[-1]["adapt"]["selftrain.kept"] == 0.0 and default[-1]["adapt"]["selftrain.kept"] > 0.0


def test_only_adaptation_options_of_replayable_methods_are_replayed(run, tmp_path):
    with pytest.raises(ConfigError, match="adapt.*not 'train.lr'"):
        replay(run, ["train.lr=0.1"])
    with pytest.raises(ConfigError, match="method 'dann' cannot be replayed"):
        replay(run, ["adapt.method=dann"])
    other = tmp_path / "dann-run"
    other.mkdir()
    (other / "config.yaml").write_text(dump(load(run / "config.yaml", ["adapt.method=dann"])))
    with pytest.raises(ConfigError, match="the run's method 'dann'"):
        replay(other)
    with pytest.raises(ConfigError, match="every device trains and evaluates"):
        replay(_with(run, tmp_path, "fed.fraction_evaluate=0.5"))
    with pytest.raises(FileNotFoundError, match="round-0002.npz: missing"):
        broken = _with(run, tmp_path, "fed.rounds=3", copy_checkpoints=True)
        (broken / "checkpoints" / "round-0002.npz").unlink()
        replay(broken)
    assert default_out(run, []).name == "as-run.json"
    assert default_out(run, ["adapt.self_training_scope=encoders"]).name == "self_training_scope-encoders.json"


def _with(run, tmp_path, override: str, copy_checkpoints: bool = False):
    """A copy of ``run``'s directory with ``override`` in its config."""
    out = tmp_path / override.replace("=", "-")
    out.mkdir()
    (out / "config.yaml").write_text(dump(load(run / "config.yaml", [override])))
    if copy_checkpoints:
        shutil.copytree(run / "checkpoints", out / "checkpoints")
    return out
