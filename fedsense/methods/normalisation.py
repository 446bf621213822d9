"""Adaptation by normalisation alone: ``adabn``, ``fedbn`` and ``fedbn_stats``.

- ``adabn`` (Li et al. 2018): source-only FedAvg whose unlabeled targets
  recompute BatchNorm statistics on their own windows before evaluating,
  forward passes only: adaptation for a device that cannot run
  backpropagation.
- ``fedbn_stats``: BatchNorm running statistics stay on every device; the
  affine parameters are averaged. On a target this is exactly AdaBN (train-
  mode BatchNorm uses batch statistics, so the shared weights are those of
  source-only FedAvg).
- ``fedbn`` (Li et al., ICLR 2021): a labelled device keeps its BatchNorm
  affine parameters too, its own across rounds. They still travel, so the
  server's average of them is there for devices without labels, which
  cannot learn their own: targets use it with their own statistics.
"""

from __future__ import annotations

from fedsense.adaptation.training import renormalize
from fedsense.config import Config
from fedsense.methods.base import IDLE, Method, Result, Step, is_norm_affine, is_norm_statistic, supervised_result
from fedsense.models.net import MultimodalNet


class AdaBN(Method):
    name = "adabn"
    replayable = True
    description = "source-only FedAvg; unlabeled targets recompute BatchNorm statistics (forward passes only)"

    def evaluate(self, step: Step) -> Result:
        if not step.labelled:
            renormalize(step.model, step.data.train)
        return Result()


class LocalStatistics(Method):
    """BatchNorm statistics stay on each device (``fedbn_stats``)."""

    name = "fedbn_stats"
    device_models = True
    description = "BatchNorm running statistics stay on each device; affine parameters averaged"

    def shared(self, key: str, cfg: Config) -> bool:
        return super().shared(key, cfg) and not is_norm_statistic(key)

    def train(self, step: Step) -> Result:
        if step.labelled:
            return super().train(step)
        # An unlabeled target renormalises on its windows (forward passes
        # only); the shared weights are unchanged, so the reply carries no
        # weight in the average.
        renormalize(step.model, step.data.train)
        return supervised_result(IDLE)

    def evaluate(self, step: Step) -> Result:
        if step.labelled:
            return Result()
        # statistics of this device's own windows under *these* weights
        # (the ones from training were computed under last round's)
        renormalize(step.model, step.data.train)
        return Result(keep=True)


class FedBN(LocalStatistics):
    """FedBN proper: labelled devices keep their affine parameters too."""

    name = "fedbn"
    description = "FedBN: BatchNorm statistics and (labelled devices) affine parameters stay on each device"

    def kept(self, key: str, cfg: Config, model: MultimodalNet, labelled: bool) -> bool:
        return super().kept(key, cfg, model, labelled) or (labelled and is_norm_affine(model, key))


ADABN = AdaBN()
FEDBN_STATS = LocalStatistics()
FEDBN = FedBN()
