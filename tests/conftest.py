"""Shared fixtures: the synthetic config, with every cache under the test's tmp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedsense import config as config_mod

REPO = Path(__file__).resolve().parent.parent
SYNTHETIC = REPO / "configs" / "synthetic.yaml"

# Nothing a test starts may phone home.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def processes_with_home(home: Path, below: bool = False) -> list[int]:
    """Pids whose environment names ``home`` (or, with ``below``, any folder
    under it) as FLWR_HOME: everything a run or fleet started, children included."""
    from fl_server.processes import processes_with_env

    return [pid for pid, value in processes_with_env("FLWR_HOME").items()
            if value == str(home) or (below and value.startswith(f"{home}/"))]


@pytest.fixture
def synthetic_cfg(tmp_path: Path) -> config_mod.Config:
    return config_mod.load(SYNTHETIC, [f"data.cache_dir={tmp_path / 'cache'}"])
