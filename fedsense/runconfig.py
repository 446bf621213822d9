"""Read the experiment config named by Flower's run config (two keys only).

``config-file`` is a path to the YAML experiment; ``overrides`` is a string
of ``key=value`` lines. Parsed configs are cached per process: one Ray
actor serves many messages of the same run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fedsense import configfile as config_mod
from fedsense import protocol
from fedsense.config import Config, ConfigError

_CACHE: dict[tuple[str, str], Config] = {}

# Where ``flwr run .`` finds configs/default.yaml: next to the packages, also
# inside an installed FAB, whose directory is not the caller's working directory.
APP_ROOT = Path(__file__).resolve().parent.parent


def resolve_config_path(name: str) -> Path:
    """An absolute path as given; a relative one against the app root."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else APP_ROOT / path


def config_from_run(run_config: Mapping[str, object]) -> Config:
    """The :class:`Config` described by a Flower ``run_config``."""
    if protocol.RUN_CONFIG_FILE not in run_config:
        raise ConfigError(f"run config has no '{protocol.RUN_CONFIG_FILE}' key")
    file = str(run_config[protocol.RUN_CONFIG_FILE])
    overrides = str(run_config.get(protocol.RUN_OVERRIDES, ""))
    key = (file, overrides)
    if key not in _CACHE:
        _CACHE[key] = config_mod.load(
            resolve_config_path(file), config_mod.split_overrides(overrides)
        )
    return _CACHE[key]
