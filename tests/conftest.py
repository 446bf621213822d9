"""Shared fixtures: the synthetic config, with every cache under the test's tmp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedsense import config as config_mod
from fedsense import configfile

REPO = Path(__file__).resolve().parent.parent
SYNTHETIC = REPO / "configs" / "synthetic.yaml"

# Nothing a test starts may phone home.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def processes_with_home(home: Path, below: bool = False) -> list[int]:
    """Pids whose environment names ``home`` (or, with ``below``, any folder
    under it) as FLWR_HOME: everything a run or fleet started, children included."""
    from fedsense_tools.processes import processes_with_env

    return [pid for pid, value in processes_with_env("FLWR_HOME").items()
            if value == str(home) or (below and value.startswith(f"{home}/"))]


@pytest.fixture
def synthetic_cfg(tmp_path: Path) -> config_mod.Config:
    return configfile.load(SYNTHETIC, [f"data.cache_dir={tmp_path / 'cache'}"])


@pytest.fixture(scope="session")
def hapt_model(tmp_path_factory):
    """The default experiment's model, trained centrally on eight real HAPT
    source users for two epochs (seconds)."""
    from fedsense.deploy import RunModels
    from fedsense.engine import train_supervised
    from fedsense.models import DataSpec
    from fedsense.runmodel import build_run_model

    cfg = configfile.load(REPO / "configs" / "default.yaml", ["adapt.method=none"])
    runs = RunModels(tmp_path_factory.mktemp("data"), cfg, {}, per_device=False)
    model = build_run_model(DataSpec(runs.client_data(0).train.shapes(), num_classes=6), cfg)
    for pid in range(0, 24, 3):
        train_supervised(model, runs.client_data(pid).train, cfg.train, epochs=2, lr=3e-3, seed=pid)
    return model


def write_hapt_run(path: Path, model, method: str):
    """A run directory as a federation of the default experiment leaves it:
    config, last global arrays and (local-norm methods) each device's own
    BatchNorm statistics, recomputed on its windows."""
    import copy

    import numpy as np

    from fedsense.methods import METHODS
    from fedsense.adaptation.training import renormalize
    from fedsense.deploy import RunModels
    from fedsense.devicestate import save_local
    from fedsense.params import local_arrays, shared_arrays
    from fedsense.runmodel import sharing_of

    cfg = configfile.load(REPO / "configs" / "default.yaml", [f"adapt.method={method}"])
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(configfile.dump(cfg))
    sharing = sharing_of(cfg)
    (path / "checkpoints").mkdir()
    np.savez(path / "checkpoints" / "latest.npz", **shared_arrays(model, sharing))
    runs = RunModels.open(path)
    if METHODS[method].device_models:
        device = copy.deepcopy(model)
        for pid in range(runs.clients()):
            renormalize(device, runs.client_data(pid).train)
            save_local(path / "devices" / str(pid), 20, "evaluate", local_arrays(device, sharing))
    return runs
