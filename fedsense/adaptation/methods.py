"""The registry of adaptation methods and what each one implies."""

from __future__ import annotations

from dataclasses import dataclass

from fedsense.registry import Registry


@dataclass(frozen=True)
class Method:
    """Properties of an adaptation method that the rest of the system reads.

    Attributes:
        name: the ``adapt.method`` value.
        targets_train: whether unlabeled target clients take a training step.
        local_norm: BatchNorm statistics and affine parameters stay on the
            device (FedBN/AdaBN style) instead of being averaged.
    """

    name: str
    targets_train: bool = False
    local_norm: bool = False


METHODS: Registry[Method] = Registry("adaptation method")
METHODS.register("none")(Method("none"))
