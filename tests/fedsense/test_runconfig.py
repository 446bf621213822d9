"""Flower's run config -> the experiment config: the file, its overrides,
then the flat knobs `flwr run . --run-config` users set."""

from __future__ import annotations

import tomllib

import pytest

from fedsense import protocol
from fedsense.config import ConfigError
from fedsense.runconfig import config_from_run, knob_overrides
from tests.conftest import REPO, SYNTHETIC


def _run(**knobs) -> dict:
    return {protocol.RUN_CONFIG_FILE: str(SYNTHETIC), protocol.RUN_OVERRIDES: "fed.rounds=3", **knobs}


def test_unset_knobs_keep_the_file_and_set_ones_override_it():
    assert knob_overrides(_run()) == []
    cfg = config_from_run(_run(**{"num-server-rounds": 0, "method": "", "data-path": "", "targets": ""}))
    assert cfg.fed.rounds == 3 and cfg.adapt.method == config_from_run(_run()).adapt.method
    cfg = config_from_run(_run(**{"num-server-rounds": 2, "method": "adabn", "targets": "5, 6"}))
    assert (cfg.fed.rounds, cfg.adapt.method, cfg.data.target_domains) == (2, "adabn", [5, 6])


@pytest.mark.parametrize("knob, value, named", [
    ("num-server-rounds", -1, "whole number"), ("num-server-rounds", "two", "whole number"),
    ("method", 3, "quoted string"), ("targets", "5;six", "comma-separated"), ("targets", 5, "quoted list"),
])
def test_a_bad_knob_is_an_error_naming_it(knob, value, named):
    with pytest.raises(ConfigError, match=f"{knob}=.*{named}"):
        config_from_run(_run(**{knob: value}))
    with pytest.raises(ConfigError, match="unknown method|adapt.method"):
        config_from_run(_run(method="nope"))


def test_the_app_config_declares_every_knob_unset():
    """Flower accepts --run-config keys only when the app config declares them."""
    app = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    knobs = {protocol.RUN_ROUNDS: 0, protocol.RUN_METHOD: "", protocol.RUN_DATA_PATH: "", protocol.RUN_TARGETS: ""}
    assert {k: app[k] for k in knobs} == knobs
    assert knob_overrides(app) == []
