"""Reading an experiment: YAML and dotted ``--set`` overrides -> a checked
:class:`fedsense.config.Config`.

Types are checked against the dataclasses' annotations, ranges by
:func:`check_values`, and names (method, encoder, fusion, aggregation,
update encoding) against their registries; every error is a
:class:`ConfigError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from fedsense.aggregation import AGGREGATORS
from fedsense.compression import ENCODINGS
from fedsense.config import FAULT_KINDS, Config, ConfigError, to_dict
from fedsense.methods import METHODS
from fedsense.models import ENCODERS, FUSIONS
from fedsense.protocol import MIN_COUNT


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return the typed value."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if value is None:  # an empty YAML section (`data:` with nothing below)
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        if value not in get_args(tp):
            allowed = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{key}: {value!r} is not one of {allowed}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        k_tp, v_tp = get_args(tp)
        return {
            _coerce(k, k_tp, f"{key}"): _coerce(v, v_tp, f"{key}.{k}") for k, v in value.items()
        }
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not a {_type_name(tp)}")
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads `1e-3` (no dot) as a string; it is a number to a reader
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `--set output.name=123` is a name, not a number
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            valid = ", ".join(sorted(names))
            raise ConfigError(f"unknown config key '{where}' (valid here: {valid})")
    kwargs = {}
    for name, value in data.items():
        where = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], where)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{'.'.join(parts[: i + 1])}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """``"a.b=value"`` -> ``("a.b", parsed)``; the value is read as YAML so lists work."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{key}': value {raw!r} is not valid YAML ({err})") from None
    return key, value


def check_values(cfg: Config) -> None:
    """Range checks that types alone do not express."""
    checks: list[tuple[bool, str]] = [
        (cfg.fed.rounds >= 1, "fed.rounds: must be at least 1"),
        (0.0 < cfg.fed.fraction_train <= 1.0, "fed.fraction_train: must be in (0, 1]"),
        (0.0 <= cfg.fed.fraction_evaluate <= 1.0, "fed.fraction_evaluate: must be in [0, 1]"),
        (cfg.fed.min_clients >= 1, "fed.min_clients: must be at least 1"),
        (cfg.fed.timeout > 0, "fed.timeout: must be positive"),
        (cfg.fed.query_nodes >= 0, "fed.query_nodes: must be 0 (all nodes) or a positive sample size"),
        (cfg.fed.max_update_norm_ratio == 0 or cfg.fed.max_update_norm_ratio > 1,
         "fed.max_update_norm_ratio: must be 0 (off) or above 1"),
        (0 <= cfg.fed.trim_fraction < 0.5, "fed.trim_fraction: must be in [0, 0.5)"),
        (-1.0 <= cfg.fed.min_update_cosine < 1.0, "fed.min_update_cosine: must be in [-1, 1) (-1: off)"),
        *((0.0 <= getattr(cfg.faults, k) <= 1.0, f"faults.{k}: must be a fraction of clients in [0, 1]")
          for k in FAULT_KINDS),
        (sum(getattr(cfg.faults, k) for k in FAULT_KINDS) <= 1.0,
         "faults: the fractions add up to more than 1 (a client has at most one fault)"),
        (cfg.faults.scale_factor > 0, "faults.scale_factor: must be positive"),
        (cfg.fed.byzantine >= 0, "fed.byzantine: must be 0 or more"),
        (cfg.fed.krum_select >= 0, "fed.krum_select: must be 0 (all but fed.byzantine) or more"),
        (cfg.privacy.noise_multiplier >= 0, "privacy.noise_multiplier: must be non-negative"),
        (cfg.privacy.clipping_norm > 0, "privacy.clipping_norm: must be positive"),
        (0 < cfg.privacy.delta < 1, "privacy.delta: must be in (0, 1)"),
        (not cfg.privacy.dp or cfg.fed.aggregation == "mean",
         f"privacy.dp: needs fed.aggregation 'mean' (the noise is calibrated to one device's share of an "
         f"average; '{cfg.fed.aggregation}' has another sensitivity)"),
        (not cfg.privacy.dp or cfg.fed.update_encoding == "float32",
         "privacy.dp: needs fed.update_encoding 'float32' (rounding a clipped update, and error feedback's "
         "residual, can take it past privacy.clipping_norm, which the noise is calibrated to)"),
        (cfg.fed.num_cpus_per_client > 0, "fed.num_cpus_per_client: must be positive"),
        (cfg.fed.simulation_cpus >= 0, "fed.simulation_cpus: must be 0 (this machine's cores) or positive"),
        (cfg.fed.checkpoint_every >= 1, "fed.checkpoint_every: must be at least 1"),
        (cfg.train.lr > 0, "train.lr: must be positive"),
        (cfg.train.weight_decay >= 0, "train.weight_decay: must be non-negative"),
        (cfg.train.batch_size >= 1, "train.batch_size: must be at least 1"),
        (cfg.train.local_epochs >= 1, "train.local_epochs: must be at least 1"),
        (cfg.train.single_modality_weight >= 0, "train.single_modality_weight: must be non-negative"),
        (cfg.train.distill_temperature > 0, "train.distill_temperature: must be positive"),
        (0.0 < cfg.data.test_fraction < 1.0, "data.test_fraction: must be in (0, 1)"),
        (cfg.data.window >= 8, "data.window: must be at least 8 samples"),
        *((0.0 <= v <= 1.0, f"data.{key}.{m}: must be a fraction in [0, 1]")
          for key in ("drop_modality", "drop_window") for m, v in getattr(cfg.data, key).items()),
        (1 <= cfg.data.step <= cfg.data.window, "data.step: must be in [1, data.window]"),
        (cfg.model.kernel_size >= 1, "model.kernel_size: must be at least 1"),
        (cfg.model.embed_dim >= 1, "model.embed_dim: must be at least 1"),
        (len(cfg.model.channels) >= 1, "model.channels: needs at least one layer"),
        (all(c >= 1 for c in cfg.model.channels), "model.channels: every width must be >= 1"),
        (0.0 <= cfg.model.dropout < 1.0, "model.dropout: must be in [0, 1)"),
        (cfg.adapt.lambda_max >= 0, "adapt.lambda_max: must be non-negative"),
        (cfg.adapt.domain_weight >= 0, "adapt.domain_weight: must be non-negative"),
        (cfg.adapt.disc_hidden >= 1, "adapt.disc_hidden: must be at least 1"),
        (cfg.adapt.stats_min_count >= MIN_COUNT,
         f"adapt.stats_min_count: must be at least {MIN_COUNT} (a mean and covariance of two windows give both back)"),
        (cfg.adapt.stats_noise >= 0, "adapt.stats_noise: must be non-negative"),
        (0.0 <= cfg.adapt.warmup < 1.0, "adapt.warmup: must be a share of the rounds in [0, 1)"),
        (cfg.adapt.disc_steps >= 0, "adapt.disc_steps: must be 0 (every step) or positive"),
        (cfg.adapt.disc_reset_loss >= 0, "adapt.disc_reset_loss: must be 0 (never) or positive"),
        (cfg.adapt.moment_weight >= 0, "adapt.moment_weight: must be non-negative"),
        (cfg.adapt.self_training_epochs >= 1, "adapt.self_training_epochs: must be at least 1"),
        (cfg.adapt.self_training_lr > 0, "adapt.self_training_lr: must be positive"),
        (cfg.adapt.self_training_beta >= 0, "adapt.self_training_beta: must be non-negative"),
        (0.0 <= cfg.adapt.self_training_threshold <= 1.0, "adapt.self_training_threshold: must be in [0, 1]"),
        (cfg.adapt.self_training_anchor >= 0, "adapt.self_training_anchor: must be non-negative"),
        (all(w >= 0 for w in cfg.adapt.weights.values()), "adapt.weights: must be non-negative"),
        (
            all(1 <= r <= cfg.fed.rounds for r in cfg.output.projector_rounds),
            f"output.projector_rounds: every round must be in [1, fed.rounds={cfg.fed.rounds}]",
        ),
        (cfg.output.projector_min_count >= MIN_COUNT, f"output.projector_min_count: must be at least {MIN_COUNT}"),
        (cfg.data.synthetic.subjects >= 1, "data.synthetic.subjects: must be at least 1"),
        (cfg.data.synthetic.classes >= 2, "data.synthetic.classes: must be at least 2"),
        (
            cfg.data.synthetic.windows_per_class >= 4,
            "data.synthetic.windows_per_class: must be at least 4",
        ),
    ]
    for i, shift in enumerate(cfg.data.shifts):
        key = f"data.shifts[{i}]"
        checks += [
            (len(shift.rotate) == 3, f"{key}.rotate: needs three angles (x, y, z degrees)"),
            (set(shift.mirror) <= {"x", "y", "z"}, f"{key}.mirror: axes must be x, y or z"),
            (shift.noise >= 0, f"{key}.noise: must be non-negative"),
            (shift.resample > 0, f"{key}.resample: must be positive"),
        ]
    checks.append(
        (len(cfg.data.synthetic.modalities) >= 1, "data.synthetic.modalities: needs at least one modality")
    )
    for name, shape in cfg.data.synthetic.modalities.items():
        ok = len(shape) == 2 and shape[0] >= 1 and shape[1] >= 8
        checks.append((ok, f"data.synthetic.modalities.{name}: must be [channels>=1, steps>=8]"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    # names checked against their registries
    if cfg.fed.update_encoding not in ENCODINGS:
        raise ConfigError(f"fed.update_encoding: unknown '{cfg.fed.update_encoding}' (valid: {', '.join(ENCODINGS)})")
    for key, name, registry in (
        ("fed.aggregation", cfg.fed.aggregation, AGGREGATORS),
        ("model.encoder", cfg.model.encoder, ENCODERS),
        ("model.fusion", cfg.model.fusion, FUSIONS),
        ("adapt.method", cfg.adapt.method, METHODS),
    ):
        if name not in registry:
            raise ConfigError(f"{key}: unknown '{name}' (valid: {', '.join(sorted(registry))})")


def from_dict(data: dict[str, Any] | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a checked :class:`Config` from a plain mapping plus dotted overrides."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping at the top level")
    tree: dict[str, Any] = yaml.safe_load(yaml.safe_dump(dict(data or {})))  # deep copy
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    cfg = _build(Config, tree)
    check_values(cfg)
    return cfg


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML experiment file and apply ``key=value`` overrides."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:  # an empty file would silently run every default: say so instead
        raise ConfigError(f"{path}: the file is empty; an experiment names at least its data and method "
                          f"(start from configs/default.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return from_dict(data, overrides)


def dump(cfg: Config) -> str:
    """The resolved configuration as YAML (what ``config.yaml`` in a run holds)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def split_overrides(text: str) -> list[str]:
    """The ``overrides`` run-config string (one ``key=value`` per line) as a list."""
    return [line.strip() for line in text.splitlines() if line.strip()]
