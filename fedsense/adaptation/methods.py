"""The registry of adaptation methods and what each one implies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedsense.registry import Registry


@dataclass(frozen=True)
class Method:
    """Properties of an adaptation method that the rest of the system reads.

    Unlabeled targets train when the method is adversarial, and renormalise
    (forward passes only) when it keeps normalisation local.

    Attributes:
        name: the ``adapt.method`` value.
        local_norm: BatchNorm running statistics stay on the device
            (FedBN/AdaBN style): a shifted target renormalises with its own.
        branches: which embeddings get a domain discriminator behind a
            gradient reversal layer: none, the fused one (DANN), or every
            modality branch plus the fused one (M3BAT).
        generated_norm: unlabeled targets receive BatchNorm statistics the
            server generates from a description of their raw data
            (:mod:`fedsense.generator`): no forward pass of the model to adapt,
            no gradient.
        target_renorm: unlabeled targets recompute BatchNorm statistics on
            their own windows before evaluating, forward passes only, while
            sources share theirs (AdaBN, Li et al. 2018): adaptation for a
            device that cannot run backpropagation.
    """

    name: str
    local_norm: bool = False
    branches: Literal["none", "fused", "all"] = "none"
    target_renorm: bool = False
    generated_norm: bool = False

    @property
    def adversarial(self) -> bool:
        return self.branches != "none"


METHODS: Registry[Method] = Registry("adaptation method")
for _m in (
    Method("none"),  # source-only FedAvg: targets only evaluate
    Method("dann", branches="fused"),
    Method("m3bat", branches="all"),
    Method("fedbn", local_norm=True),
    Method("adabn", target_renorm=True),  # source-only FedAvg; targets renormalise, no gradient step
    Method("generated", generated_norm=True),  # source-only FedAvg; targets get generated statistics
    # M3BAT on top of device-local normalisation statistics (FedBN/AdaBN):
    # the branches align what renormalising alone leaves shifted.
    Method("m3bat_bn", local_norm=True, branches="all"),
):
    METHODS.register(_m.name)(_m)


def needs_statistics(method: Method, alignment: str, branch_weights: str) -> bool:
    """Whether clients report embedding statistics in their evaluate replies:
    the statistics reference needs them, and so do shift-following branch weights."""
    return method.adversarial and (alignment == "statistics" or branch_weights == "shift")
