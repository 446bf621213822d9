"""An adaptation method: one object that owns its client-side steps and its
server-side state, registered under its ``adapt.method`` name.

No Flower here. The ClientApp unpacks a message into a :class:`Step`, calls
:meth:`Method.train` or :meth:`Method.evaluate` and packs the
:class:`Result`; the strategy turns each reply into a :class:`Reply` once and
hands those to the method's :class:`ServerState`. Adding a method is adding
one module under ``fedsense/methods/`` that registers its object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from torch import nn

from fedsense import protocol
from fedsense.config import Config
from fedsense.data.clients import ClientData
from fedsense.engine import train_supervised
from fedsense.models.net import MultimodalNet
from fedsense.protocol import is_discriminator

Records = dict[str, dict[str, np.ndarray]]  # record name -> array key -> array
Branches = Literal["none", "fused", "all"]
_STATS = ("running_mean", "running_var")
# A device keeps its method's own arrays (Step.state) beside its kept
# parameters, under this prefix; among them, ADAPTED holds the inference
# parameters it evaluated with last (what ``fedsense export --device`` exports).
METHOD_STATE = "method/"
ADAPTED = METHOD_STATE + "adapted/"


def step_seed(seed: int, partition_id: int, server_round: int, phase: int) -> int:
    """A device's :attr:`Step.seed`: distinct and reproducible per run seed,
    round, message (``phase`` 0 train, 1 evaluate) and device."""
    return seed * 1_000_003 + server_round * 1_009 + max(partition_id, 0) + phase * 7_919


def is_norm_statistic(key: str) -> bool:
    """A BatchNorm running mean or variance."""
    return key.endswith(_STATS) and not is_discriminator(key)


def is_norm_affine(model: MultimodalNet, key: str) -> bool:
    """A BatchNorm weight or bias of ``model``."""
    module, _, leaf = key.rpartition(".")
    if leaf not in ("weight", "bias") or is_discriminator(key):
        return False
    owner = dict(model.named_modules()).get(module)
    return isinstance(owner, nn.modules.batchnorm._BatchNorm)


@dataclass
class Step:
    """One message's work on a device, as a method sees it.

    Attributes:
        cfg: the run's configuration.
        model: the global model with the device's kept parameters loaded.
        data: the device's windows (a target's training labels are -1).
        config: the instruction's config record (numbers and strings).
        payload: the instruction's array records beyond the model.
        seed: this device's seed for this round and message.
        state: the method's device-only arrays that are not model parameters
            (e.g. calibration candidates); the ClientApp keeps them between
            messages and on the device's disk, like the kept parameters.
    """

    cfg: Config
    model: MultimodalNet
    data: ClientData
    config: Mapping[str, Any]
    payload: Records
    seed: int
    state: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        """Whether this device's training labels may be used."""
        return self.data.role == "source" or self.cfg.data.target_labels == "visible"

    @property
    def server_round(self) -> int:
        return int(self.config.get("server-round", 0))


@dataclass
class Result:
    """What a step sends back beyond the model: metrics and array records;
    ``keep``: the step changed the device's kept parameters (save them)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    records: Records = field(default_factory=dict)
    keep: bool = False


@dataclass(frozen=True)
class Reply:
    """A reply as the server's method state sees it: decoded once, plain numbers."""

    node: int
    target: bool
    metrics: Mapping[str, Any]
    records: Records
    windows: int = 10_000_000  # the training windows the device declared (a bound on its counts)


class ServerState:
    """A method's server side: what it adds to instructions, what it learns
    from replies, what it reports per round and what a resume point keeps.
    The base class does nothing (source-only FedAvg). ``refused`` lists the
    reply records the last hook refused (malformed), for the round's errors."""

    refused: list[str] = []

    def train_config(self, server_round: int) -> dict[str, float | int]:
        return {}

    def train_payload(self, server_round: int) -> Records:
        """Array records sent with every train instruction."""
        return {}

    def evaluate_config(self, server_round: int) -> dict[str, float | int]:
        return {}

    def evaluate_payload(self, server_round: int) -> Records:
        """Array records sent with every evaluate instruction."""
        return {}

    def evaluate_payload_for(self, node: int) -> Records:
        """Array records for one node's evaluate instruction only."""
        return {}

    def discriminator_weights(self, weights: list[float], is_target: list[bool]) -> list[float] | None:
        """Per-reply weights of the shared discriminator arrays (None: no
        shared discriminators)."""
        return None

    def after_train(self, replies: list[Reply], weights: list[float]) -> dict[str, Any]:
        """Learn from the round's train replies; returns numbers for the round's train record."""
        return {}

    def set_initial(self, arrays: Mapping[str, np.ndarray]) -> None:
        """The shared arrays of the freshly initialised model (before round 1)."""

    def adjust(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Aggregated arrays the method replaces (e.g. a discriminator reset), by key."""
        return {}

    def after_evaluate(self, replies: list[Reply]) -> None:
        """Learn from the round's evaluate replies."""

    def record(self, server_round: int) -> dict[str, Any]:
        """Round ``server_round``'s ``adapt`` section ({}: none). With one
        message a round it is asked for once the next round's instructions
        are out (after ``train_config(server_round + 1)``)."""
        return {}

    def extra_record(self) -> dict[str, Any]:
        """Further top-level sections of the round record."""
        return {}

    def snapshot(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {}

    def restore(self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        pass


def supervised_result(result: Mapping[str, Any]) -> Result:

    return Result({
        protocol.NUM_EXAMPLES: int(result["num_examples"]),
        protocol.TASK_WINDOWS: int(result.get("task_windows", result["num_examples"])),
        protocol.LOSS_TASK: float(result["loss_task"]),
        protocol.TRAIN_STEPS: int(result["steps"]),
    })


IDLE = {"loss_task": 0.0, "steps": 0, "num_examples": 0, "task_windows": 0}


class Method:
    """Source-only FedAvg; every method refines some of these steps.

    Attributes:
        name: the ``adapt.method`` value.
        branches: embeddings with a domain discriminator in the model: none,
            the fused one (DANN), or every modality plus the fused one (M3BAT).
        pooled_adversarial: the centralized reference of this method trains
            adversarially on pooled source and target windows.
        device_models: a device evaluates with parameters of its own
            (BatchNorm statistics, calibration), so its model is its own.
        own_options: the ``adapt.*`` options only this method reads (another
            method's runs do not depend on them).
        replayable: labelled devices train exactly as source-only FedAvg,
            every parameter they train shared, and unlabeled devices send
            nothing the shared model uses: the global model of every round
            does not depend on what unlabeled devices do, so
            :mod:`fedsense.replay` can re-run them on a run's checkpoints.
    """

    name: str = "none"
    branches: Branches = "none"
    pooled_adversarial: bool = False
    device_models: bool = False  # devices evaluate with parameters of their own (export needs --device)
    replayable: bool = False  # see above; True for none, adabn and m3bat_local
    own_options: tuple[str, ...] = ()
    description: str = "source-only FedAvg: labelled devices train, unlabeled ones only evaluate"

    # ---------------------------------------------------------- the model
    def model_options(self, cfg: Config) -> dict[str, Any]:
        """Keyword arguments of :func:`fedsense.models.build_model` beyond the model config."""
        return {"adversarial": self.branches, "disc_hidden": cfg.adapt.disc_hidden}

    def shared(self, key: str, cfg: Config) -> bool:
        """Whether parameter ``key`` travels to the server and is aggregated."""
        return not key.endswith("num_batches_tracked")  # a counter: averaging it means nothing

    def kept(self, key: str, cfg: Config, model: MultimodalNet, labelled: bool) -> bool:
        """Whether a device keeps its own value of ``key`` between messages
        (loaded over the global one); default: what is not shared."""
        return not self.shared(key, cfg)

    def train_metrics(self, branches: list[str]) -> list[str]:
        """Metric keys every train reply of this method carries beyond the
        common ones (the server refuses a reply without them)."""
        return []

    # ---------------------------------------------------------- the device
    def train(self, step: Step) -> Result:
        """A train instruction: labelled devices train on their labels."""
        if not step.labelled:
            return supervised_result(IDLE)
        epochs = int(step.config.get("local-epochs", step.cfg.train.local_epochs))
        lr = float(step.config.get("lr", step.cfg.train.lr))
        return supervised_result(train_supervised(step.model, step.data.train, step.cfg.train,
                                                  epochs=epochs, lr=lr, seed=step.seed))

    def evaluate(self, step: Step) -> Result:
        """An evaluate instruction: prepare ``step.model`` for evaluating the
        device's held-out windows (in place) and report what the server needs."""
        return Result()

    # ---------------------------------------------------------- the server
    def server(self, cfg: Config, branches: list[str]) -> ServerState:
        return ServerState()
