"""The experiment configuration's vocabulary: frozen dataclasses, one home
per key, and nothing else (every module may import it).

Reading a YAML file and ``--set`` overrides into a checked :class:`Config`
is :mod:`fedsense.configfile`: unknown keys, wrong types and bad values
raise :class:`ConfigError` naming the dotted key, before anything runs.
Facts the runtime knows (number of nodes, partition id, a device's data
path) are not config: they come from Flower's context.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


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
    fraction_evaluate: float = 1.0  # share asked to evaluate (with one message a round: the last round only)
    # 1: a device evaluates the model it receives inside its train message and
    # replies with both (round r's evaluation arrives with round r+1's replies;
    # the last round ends with one evaluate message); 2: a train and an evaluate message a round
    messages_per_round: Literal[1, 2] = 1
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
    align_branches: Literal["all", "fused", "none"] = "none"  # class-conditional alignment on these branches
    class_conditional: bool = True  # False: align each branch's embeddings as a whole
    moment_weight: float = 1.0  # weight of the class-mean term beside each branch's discriminator
    self_training_epochs: int = 1  # per round; self-training carries on across rounds
    self_training_lr: float = 0.001
    self_training_beta: float = 0.3  # weight of the centroid pseudo-label cross-entropy
    self_training_threshold: float = 0.9  # pseudo-labels only on windows predicted at least this confidently
    self_training_anchor: float = 1.0  # quadratic pull toward the global parameters (a cap on drift)
    # encoders: the encoders and fusion too, classifier frozen (SHOT); norm: calibration and BatchNorm affine only
    self_training_scope: Literal["norm", "encoders"] = "encoders"


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


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (lists, not tuples), for YAML and JSON."""
    return dataclasses.asdict(cfg)
