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
    exact = f"FLWR_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if exact in env or (below and any(v.startswith(exact + b"/") for v in env)):
                found.append(int(entry.name))
    return found


@pytest.fixture
def synthetic_cfg(tmp_path: Path) -> config_mod.Config:
    return config_mod.load(SYNTHETIC, [f"data.cache_dir={tmp_path / 'cache'}"])
