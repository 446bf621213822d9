"""Typed experiment configuration: YAML -> frozen dataclasses, dotted overrides.

Every key has one home here. Unknown keys, wrong types and bad values raise
:class:`ConfigError` naming the dotted key, before anything runs. Facts the
runtime knows (number of nodes, partition id, a device's data path) are not
config: they come from Flower's context.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A configuration key is unknown, mistyped or out of range."""


@dataclass(frozen=True)
class ShiftConfig:
    """A simulated device shift applied to every window of the listed domains.

    Rotation and mirroring act on 3-axis modalities (C == 3), the same for all
    of them, as a phone carried differently turns accelerometer and gyroscope
    together.
    """

    domains: list[int] = field(default_factory=list)  # the domains (data.target_domains' kind of id) it shifts
    modalities: list[str] = field(default_factory=list)  # empty: every modality
    rotate: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # deg about x, y, z
    mirror: list[str] = field(default_factory=list)  # axes to flip, of "x", "y", "z"
    gain: float = 1.0  # every sample times this
    bias: float = 0.0  # plus this (signal units)
    noise: float = 0.0  # std of additive Gaussian noise, in signal units
    resample: float = 1.0  # time-axis stretch: 1.1 = sensor clock 10 % fast
    seed: int = 0  # seeds the noise


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape of the generated multimodal dataset used by fast tests."""

    subjects: int = 6  # one client each
    windows_per_class: int = 20  # per subject
    classes: int = 4  # activities
    modalities: dict[str, list[int]] = field(
        default_factory=lambda: {"acc": [3, 64], "gyro": [3, 64]}
    )  # name -> [channels, time steps]
    subject_shift: float = 0.3  # per-subject offset, so domains differ
    noise: float = 0.5  # std of the per-sample noise


@dataclass(frozen=True)
class DataConfig:
    kind: Literal["synthetic", "hapt", "npz"] = "hapt"  # a loader of fedsense.data.loaders.LOADERS
    path: str = ""  # npz file, or the HAPT .pkl.gz (empty: the installed package's copy)
    target_domains: list[int] = field(default_factory=list)  # devices of these domains are unlabeled targets
    modalities: list[str] = field(default_factory=list)  # empty: all in the dataset
    subjects: list[int] = field(default_factory=list)  # keep only these subjects (empty: all)
    window: int = 128  # HAPT: samples per window (2.56 s at 50 Hz)
    step: int = 64  # HAPT: hop between windows (50 % overlap)
    test_fraction: float = 0.3  # per client and class, the later part held out
    target_labels: Literal["hidden", "visible"] = "hidden"  # visible: the target oracle
    cache_dir: str = ""  # empty: $FEDSENSE_CACHE or ~/.cache/fedsense
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    shifts: list[ShiftConfig] = field(default_factory=list)  # simulated device shifts (fedsense.data.shifts)
    # simulation: modality -> share of devices without it, all windows (fedsense.data.missing)
    drop_modality: dict[str, float] = field(default_factory=dict)
    # simulation: modality -> share of every device's windows without it
    drop_window: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    encoder: str = "conv1d"  # a modality branch of fedsense.models.ENCODERS
    channels: list[int] = field(default_factory=lambda: [32, 48, 64])  # the encoder's layer widths
    kernel_size: int = 5  # of every 1-D convolution
    embed_dim: int = 64  # each branch's embedding width
    fusion: str = "concat"  # concat | attention (fedsense.models.FUSIONS)
    dropout: float = 0.1  # before each projection and the classifier


@dataclass(frozen=True)
class TrainConfig:
    optimizer: Literal["adam", "sgd"] = "adam"  # of a device's local training
    lr: float = 0.003  # its learning rate
    weight_decay: float = 0.0  # L2 penalty of the local optimiser
    batch_size: int = 32  # windows per local step
    local_epochs: int = 1  # passes over a device's windows per round
    device: str = "cpu"  # read by nothing yet: every run computes on the CPU
    qat: bool = False  # quantization-aware training: int8-rounded weights (and inputs) in the loop
    # one-modality paths trained on windows with every modality (fedsense.distillation):
    # none | distill (toward the full model's prediction) | labels (cross-entropy)
    single_modality: Literal["none", "distill", "labels"] = "none"
    single_modality_weight: float = 1.0  # of the one-modality paths' loss
    distill_temperature: float = 2.0  # of train.single_modality distill
    # distil on unlabeled windows too (an unlabeled target's): there the teacher
    # is the model being adapted, and following it undid the adaptation (docs/heterogeneous.md)
    distill_unlabeled: bool = False


@dataclass(frozen=True)
class FedConfig:
    mode: Literal["federated", "centralized"] = "federated"  # centralized: pooled data, no Flower (a reference)
    rounds: int = 20  # server rounds
    fraction_train: float = 1.0  # share of the devices asked to train each round
    fraction_evaluate: float = 1.0  # share asked to evaluate
    min_clients: int = 2  # a round needs at least this many replies
    timeout: float = 600.0  # seconds to wait for replies each round
    query_nodes: int = 0  # nodes asked to describe their data before round 1: 0 all, N a seeded sample
    max_update_norm_ratio: float = 10.0  # refuse updates longer than this x the round's median (0: off)
    min_update_cosine: float = -1.0  # refuse updates whose cosine with the mean of their role's others is below (-1: off)
    aggregation: str = "mean"  # mean | trimmed-mean | median | krum (fedsense.aggregation)
    # mean: a modality's branch is averaged over the devices that have that modality only
    modality_aggregation: bool = True
    trim_fraction: float = 0.2  # trimmed-mean: share of values cut at each end
    byzantine: int = 1  # krum: attackers assumed among a round's replies (per role)
    krum_select: int = 1  # krum: updates averaged: 1 Krum, m > 1 Multi-Krum, 0 all but fed.byzantine
    num_cpus_per_client: int = 1  # Ray CPUs per virtual client
    # Ray's CPU count (0: this machine's cores); clients at once = simulation_cpus / num_cpus_per_client.
    # More than the cores oversubscribes them: slower clients, but a sleeping one (faults.timeout) blocks less.
    simulation_cpus: int = 0
    checkpoint_every: int = 1  # rounds between checkpoints/round-NNNN.npz
    # How devices send their trained arrays (fedsense.compression): float32 as they are;
    # float16 or int8 (per-tensor scale) the change against the global model, in one flat array.
    update_encoding: str = "float32"
    error_feedback: bool = True  # float16/int8: the rounding error joins the next round's update


@dataclass(frozen=True)
class AdaptConfig:
    """Domain adaptation (``fedsense.methods``, docs/methods.md)."""

    method: str = "none"  # a name of fedsense.methods.METHODS
    alignment: Literal["federated", "statistics"] = "statistics"  # dann/m3bat: global or device-local discriminators
    lambda_max: float = 1.0  # scale of DANN's reversal schedule
    domain_weight: float = 1.0  # weight of the adversarial loss against the task loss
    branch_weights: Literal["fixed", "shift"] = "fixed"  # dann/m3bat: shift weighs each branch by its measured shift
    weights: dict[str, float] = field(default_factory=dict)  # branch -> weight (default 1)
    disc_hidden: int = 64  # width of each discriminator's hidden layers
    stats_min_count: int = 32  # fewer windows (of a class, for class statistics): nothing reported
    stats_noise: float = 0.0  # std of Gaussian noise added to reported statistics
    # federated discriminators (alignment: federated), FADE's safeguards:
    warmup: float = 0.25  # share of the rounds trained source-only before adversarial steps
    disc_steps: int = 5  # a device updates the discriminators in its first this many steps (0: all)
    disc_reset_loss: float = 0.2  # a branch whose pooled domain loss falls below this is reset (0: never)
    # m3bat_local (device-local adaptation of unlabeled devices):
    calibration: bool = True  # a linear map of each 3-axis modality, fitted and chosen without labels
    self_training: bool = True  # information maximisation + centroid pseudo-labels on local parameters
    align_branches: Literal["all", "fused", "none"] = "all"  # class-conditional alignment on these branches
    class_conditional: bool = True  # False: align each branch's embeddings as a whole
    moment_weight: float = 1.0  # weight of the class-mean term beside each branch's discriminator
    self_training_epochs: int = 1  # per round; self-training carries on across rounds
    self_training_lr: float = 0.001
    self_training_beta: float = 0.3  # weight of the centroid pseudo-label cross-entropy
    self_training_threshold: float = 0.9  # pseudo-labels only on windows predicted at least this confidently
    self_training_anchor: float = 1.0  # quadratic pull toward the global parameters (a cap on drift)
    # norm: calibration and BatchNorm affine parameters; encoders: the encoders and fusion too, classifier frozen
    self_training_scope: Literal["norm", "encoders"] = "norm"


@dataclass(frozen=True)
class OutputConfig:
    dir: str = ""  # empty: runs/<name>-<timestamp> under the working directory
    name: str = ""  # the run directory's name stem (empty: <data.kind>-<adapt.method>-<fed.mode>)
    message_log: bool = False  # write messages.jsonl: the fields (not values) of every reply
    histograms: bool = False  # TensorBoard histograms of the global weights at each checkpoint
    # TensorBoard projector: at these rounds every device reports, per branch,
    # its class centroids of held-out embeddings (classes with at least
    # projector_min_count windows). Off by default, and so for real fleets.
    projector_rounds: list[int] = field(default_factory=list)
    projector_min_count: int = 5  # fewest windows behind a class centroid


FAULT_KINDS = ("crash", "timeout", "nan", "sign_flip", "scale", "label_flip",
               "role_lie", "examples_lie", "confusion_lie", "stats_lie", "malformed")


@dataclass(frozen=True)
class FaultsConfig:
    """Injected client faults for reliability experiments (simulation only):
    each kind is the fraction of clients that behave so in every round; a
    client has at most one (``fedsense.faults``)."""

    crash: float = 0.0  # training raises
    timeout: float = 0.0  # training replies only after fed.timeout
    nan: float = 0.0  # the update is NaN
    sign_flip: float = 0.0  # the update points the other way
    scale: float = 0.0  # the update is scale_factor times longer
    label_flip: float = 0.0  # trains on labels k -> K-1-k
    # replies that lie (fedsense.faults.lie): the server must refuse and count them
    role_lie: float = 0.0  # claims the other role
    examples_lie: float = 0.0  # claims 1000x its training windows
    confusion_lie: float = 0.0  # adds 10^9 to its confusion matrix's diagonal
    stats_lie: float = 0.0  # claims its statistics stand for 10^12 windows
    malformed: float = 0.0  # a field the server reads missing or of the wrong type
    scale_factor: float = 10.0  # how much longer a "scale" fault makes the update
    seed: int = 0  # which clients are faulty


@dataclass(frozen=True)
class PrivacyConfig:
    """Client-level differential privacy of the model updates (``fedsense.privacy``):
    every device clips its update to ``clipping_norm`` (Flower's fixed
    clipping), the server adds Gaussian noise to the average and reports the
    epsilon spent for ``delta``. Statistics of the statistics reference are
    not covered (``adapt.stats_noise`` is their own protection)."""

    dp: bool = False  # clip on the device, noise on the server, epsilon reported
    noise_multiplier: float = 1.0  # noise std / clipping norm, per unit of a device's share
    clipping_norm: float = 1.0  # L2 bound of one device's update (float arrays)
    delta: float = 1e-5  # of the (epsilon, delta) guarantee


@dataclass(frozen=True)
class Config:
    seed: int = 0  # model initialisation, shuffling, sampling: one seed, the same run
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


# --------------------------------------------------------------------------- #
# Building dataclasses from plain data, with errors that name the key.


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


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (lists, not tuples), for YAML and JSON."""
    return dataclasses.asdict(cfg)


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


def _check_values(cfg: Config) -> None:
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
        (cfg.adapt.stats_min_count >= 2, "adapt.stats_min_count: must be at least 2"),
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
        (cfg.output.projector_min_count >= 2, "output.projector_min_count: must be at least 2"),
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
    # Names checked against their registries (imported late: registries import torch).
    from fedsense.methods import METHODS
    from fedsense.aggregation import AGGREGATORS
    from fedsense.compression import ENCODINGS
    from fedsense.models import ENCODERS, FUSIONS

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
    _check_values(cfg)
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
