"""MultimodalNet: one encoder branch per modality, a fusion module, a classifier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from fedsense import protocol
from fedsense.adaptation.discriminators import FUSED, build_discriminators
from fedsense.config import Config, ModelConfig
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
    """

    def __init__(
        self,
        spec: DataSpec,
        cfg: ModelConfig,
        adversarial: Literal["none", "fused", "all"] = "none",
        disc_hidden: int = 64,
    ) -> None:
        super().__init__()
        if not spec.shapes:
            raise ValueError("MultimodalNet needs at least one modality")
        self.spec = spec
        self.modalities = list(spec.shapes)
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
        self.discriminators = build_discriminators(dims, disc_hidden)

    def features(self, out: NetOutput) -> dict[str, Tensor]:
        """The embeddings that have a discriminator, keyed like ``discriminators``."""
        every = {**out.branches, FUSED: out.fused}
        return {name: every[name] for name in self.discriminators}

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor] | None = None) -> NetOutput:
        if mask is None:
            branches = {m: self.encoders[m](x[m]) for m in self.modalities}
        else:
            branches = {m: self._branch(m, x[m], mask[m]) for m in self.modalities}
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
) -> MultimodalNet:
    """A freshly initialised model; the same seed gives the same weights.

    ``adversarial`` adds domain discriminators (see ``Method.branches``).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultimodalNet(spec, cfg, adversarial, disc_hidden)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of the inference model (discriminators excluded:
    they exist only while adapting)."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if p.requires_grad and not name.startswith("discriminators.")
    )


def build_run_model(spec: DataSpec, cfg: Config, qat: bool | None = None) -> MultimodalNet:
    """The model a run trains: ``cfg.model`` plus the discriminators that
    ``cfg.adapt.method`` needs, initialised from ``cfg.seed``; with
    ``train.qat`` (or ``qat``) it computes with int8-rounded weights
    (:mod:`fedsense.quantization`)."""
    from fedsense.adaptation import METHODS
    from fedsense.quantization import prepare_qat

    method = METHODS[cfg.adapt.method]
    model = build_model(spec, cfg.model, cfg.seed, method.branches, cfg.adapt.disc_hidden)
    if cfg.train.qat if qat is None else qat:
        prepare_qat(model)
    return model
