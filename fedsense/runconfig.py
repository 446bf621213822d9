"""Read the experiment config named by Flower's run config.

``config-file`` is a path to the YAML experiment; ``overrides`` is a string
of ``key=value`` lines; the flat knobs ``num-server-rounds``, ``method``,
``data-path`` and ``targets`` (what ``flwr run . --run-config`` users set)
override one key each when set. Parsed configs are cached per process: one Ray
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


def knob_overrides(run_config: Mapping[str, object]) -> list[str]:
    """The flat run-config knobs (``num-server-rounds``, ``method``,
    ``data-path``, ``targets``) that are set, as config overrides."""
    out = []
    rounds = run_config.get(protocol.RUN_ROUNDS, 0)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ConfigError(f"run config {protocol.RUN_ROUNDS}={rounds!r}: expected a whole number of rounds "
                          "(0: the config file's fed.rounds)")
    if rounds:
        out.append(f"fed.rounds={rounds}")
    for knob, key in ((protocol.RUN_METHOD, "adapt.method"), (protocol.RUN_DATA_PATH, "data.path")):
        value = run_config.get(knob, "")
        if not isinstance(value, str):
            raise ConfigError(f'run config {knob}={value!r}: expected a quoted string, e.g. {knob}="..."')
        if value:
            out.append(f"{key}={value}")
    targets = run_config.get(protocol.RUN_TARGETS, "")
    if not isinstance(targets, str):
        raise ConfigError(f'run config {protocol.RUN_TARGETS}={targets!r}: expected a quoted list, e.g. '
                          f'{protocol.RUN_TARGETS}="25,26"')
    if targets.strip():
        parts = [t.strip() for t in targets.split(",")]
        if not all(p.lstrip("-").isdigit() for p in parts):
            raise ConfigError(f"run config {protocol.RUN_TARGETS}={targets!r}: expected comma-separated domain ids")
        out.append(f"data.target_domains=[{', '.join(parts)}]")
    return out


def config_from_run(run_config: Mapping[str, object]) -> Config:
    """The :class:`Config` described by a Flower ``run_config``: the config
    file, then ``overrides``, then the flat knobs that are set."""
    if protocol.RUN_CONFIG_FILE not in run_config:
        raise ConfigError(f"run config has no '{protocol.RUN_CONFIG_FILE}' key")
    file = str(run_config[protocol.RUN_CONFIG_FILE])
    overrides = [*config_mod.split_overrides(str(run_config.get(protocol.RUN_OVERRIDES, ""))),
                 *knob_overrides(run_config)]
    key = (file, "\n".join(overrides))
    if key not in _CACHE:
        _CACHE[key] = config_mod.load(resolve_config_path(file), overrides)
    return _CACHE[key]
