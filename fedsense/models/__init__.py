"""Per-modality encoders, fusion and the multimodal network."""

from fedsense.models.encoders import ENCODERS
from fedsense.models.fusion import FUSIONS
from fedsense.models.net import (
    DataSpec,
    MultimodalNet,
    NetOutput,
    build_model,
    count_parameters,
)

__all__ = [
    "ENCODERS",
    "FUSIONS",
    "DataSpec",
    "MultimodalNet",
    "NetOutput",
    "build_model",
    "count_parameters",
]
