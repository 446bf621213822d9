"""MultimodalNet: one encoder branch per modality, a fusion module, a classifier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from fedsense import protocol
from fedsense.adaptation.calibration import Calibration, calibrated_modalities
from fedsense.adaptation.discriminators import FUSED, build_discriminators
from fedsense.config import ModelConfig
from fedsense.models.encoders import ENCODERS
from fedsense.models.fusion import FUSIONS


@dataclass(frozen=True)
class DataSpec:
    """What a model must know about the data: modality shapes and classes."""

    shapes: dict[str, tuple[int, int]]  # modality -> (channels, time steps)
    num_classes: int

    def to_metrics(self) -> dict[str, int]:
        """Flat numbers for a query reply (keys from ``fedsense.protocol``)."""
        out = {protocol.SPEC_NUM_CLASSES: self.num_classes}
        for m, (c, t) in self.shapes.items():
            kc, kt = protocol.shape_keys(m)
            out[kc], out[kt] = c, t
        return out

    @classmethod
    def from_metrics(cls, metrics: dict[str, int | float]) -> "DataSpec":
        """Inverse of :meth:`to_metrics`."""
        shapes: dict[str, tuple[int, int]] = {}
        for key in metrics:
            if key.startswith("shape.") and key.endswith(".channels"):
                m = key[len("shape.") : -len(".channels")]
                kc, kt = protocol.shape_keys(m)
                shapes[m] = (int(metrics[kc]), int(metrics[kt]))
        return cls(shapes=shapes, num_classes=int(metrics[protocol.SPEC_NUM_CLASSES]))


@dataclass
class NetOutput:
    logits: Tensor  # (B, num_classes)
    branches: dict[str, Tensor]  # modality -> (B, embed_dim)
    fused: Tensor  # (B, fused_dim)


class MultimodalNet(nn.Module):
    """``{modality: (B, C_m, T_m)} -> logits (B, K)``, looping over modalities.

    ``mask`` gives, per modality, a ``(B,)`` tensor with 1 where that modality
    is present; absent inputs may be any tensor of the right shape (zeros).

    With ``calibrate``, every 3-axis input first goes through the device's
    :class:`~fedsense.adaptation.calibration.Calibration` (identity at start).
    With ``class_conditional``, each discriminator also takes the window's
    (pseudo-)label, one-hot: class-conditional alignment (CDAN-style).
    """

    def __init__(
        self,
        spec: DataSpec,
        cfg: ModelConfig,
        adversarial: Literal["none", "fused", "all"] = "none",
        disc_hidden: int = 64,
        calibrate: bool = False,
        class_conditional: bool = False,
    ) -> None:
        super().__init__()
        if not spec.shapes:
            raise ValueError("MultimodalNet needs at least one modality")
        self.spec = spec
        self.num_classes = spec.num_classes
        self.modalities = list(spec.shapes)
        axes = calibrated_modalities(spec.shapes) if calibrate else []
        self.calibration = Calibration(axes) if axes else None
        encoder_cls = ENCODERS[cfg.encoder]
        self.encoders = nn.ModuleDict(
            {
                m: encoder_cls(c, list(cfg.channels), cfg.kernel_size, cfg.embed_dim, cfg.dropout)
                for m, (c, _t) in spec.shapes.items()
            }
        )
        self.fusion = FUSIONS[cfg.fusion](self.modalities, cfg.embed_dim)
        self.classifier = nn.Sequential(
            nn.Dropout(cfg.dropout), nn.Linear(self.fusion.out_dim, spec.num_classes)
        )
        # Domain discriminators (training only; not part of the inference model).
        dims: dict[str, int] = {}
        if adversarial == "all":
            dims.update({m: cfg.embed_dim for m in self.modalities})
        if adversarial in ("all", "fused"):
            dims[FUSED] = self.fusion.out_dim
        self.class_conditional = class_conditional
        extra = spec.num_classes if class_conditional else 0
        self.discriminators = build_discriminators({b: d + extra for b, d in dims.items()}, disc_hidden)

    def features(self, out: NetOutput) -> dict[str, Tensor]:
        """The embeddings that have a discriminator, keyed like ``discriminators``."""
        every = {**out.branches, FUSED: out.fused}
        return {name: every[name] for name in self.discriminators}

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor] | None = None) -> NetOutput:
        if self.calibration is not None:
            x = self.calibration(x)
        return self.head({m: self.branch(m, x[m], mask) for m in self.modalities}, mask)

    def branch(self, modality: str, x: Tensor, mask: dict[str, Tensor] | None = None) -> Tensor:
        """One modality's embedding ``(B, D)`` of (already calibrated) inputs ``(B, C, T)``."""
        if mask is None:
            return self.encoders[modality](x)
        return self._branch(modality, x, mask[modality])

    def head(self, branches: dict[str, Tensor], mask: dict[str, Tensor] | None = None) -> NetOutput:
        """Fusion and classifier on the branches' embeddings."""
        fused = self.fusion(branches, mask)
        return NetOutput(logits=self.classifier(fused), branches=branches, fused=fused)

    def _branch(self, modality: str, x: Tensor, present: Tensor) -> Tensor:
        """A branch run on the windows that have its modality only (zeros
        elsewhere): missing windows never reach its BatchNorm statistics."""
        rows = present > 0
        if bool(rows.all()):
            return self.encoders[modality](x)
        out = x.new_zeros(x.shape[0], self.encoders[modality].embed_dim)
        if int(rows.sum()) >= (2 if self.training else 1):  # BatchNorm cannot train on one window
            out[rows] = self.encoders[modality](x[rows])
        return out


def build_model(
    spec: DataSpec,
    cfg: ModelConfig,
    seed: int = 0,
    adversarial: Literal["none", "fused", "all"] = "none",
    disc_hidden: int = 64,
    calibrate: bool = False,
    class_conditional: bool = False,
) -> MultimodalNet:
    """A freshly initialised model; the same seed gives the same weights.

    ``adversarial`` adds domain discriminators (see ``Method.branches``);
    ``calibrate`` an input calibration, ``class_conditional`` label inputs to
    the discriminators (see :class:`MultimodalNet`).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultimodalNet(spec, cfg, adversarial, disc_hidden, calibrate, class_conditional)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of the inference model (discriminators excluded:
    they exist only while adapting)."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if p.requires_grad and not protocol.is_discriminator(name)
    )
