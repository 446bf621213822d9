"""Every shipped config loads, and the experiment arms differ only where they should."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fedsense.configfile import load
from fedsense_tools.results import ARM_ORDER

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO)) for p in CONFIGS])
def test_config_loads(path: Path) -> None:
    load(path)


def test_experiment_arms_share_one_split_per_scenario() -> None:
    for scenario in ("cross_user", "cross_device", "mirror", "rotation_x", "sensor"):
        arms = [load(p) for p in sorted((REPO / "configs" / "experiments" / scenario).glob("*.yaml"))]
        assert len(arms) == len(ARM_ORDER) == 21  # every arm the results page lists, in every scenario
        base = arms[0].data
        for cfg in arms:
            assert cfg.data.target_domains == base.target_domains == [25, 26, 27, 28, 29, 30]
            assert cfg.data.shifts == base.shifts
            assert cfg.model == arms[0].model and cfg.train == arms[0].train
    device = load(REPO / "configs" / "experiments" / "cross_device" / "source_only.yaml")
    assert device.data.shifts and device.data.shifts[0].rotate == [0.0, 0.0, 45.0]


def test_default_config_is_the_cross_device_default_arm() -> None:
    """`make run` shows the README's headline experiment, not a look-alike."""
    default = load(REPO / "configs" / "default.yaml")
    arm = load(REPO / "configs" / "experiments" / "cross_device" / "m3bat_local.yaml")
    assert default.adapt.method == "m3bat_local"
    assert replace(default, output=arm.output) == arm
