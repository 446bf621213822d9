"""What a run's config makes of the core: the model it trains (the method's
discriminators and calibration; int8-rounded weights with ``train.qat``)
and the rule of which of its parameters travel. It sits above both the
models and the methods, so neither needs to import the other late.
"""

from __future__ import annotations

from fedsense.config import Config
from fedsense.methods import METHODS
from fedsense.models.net import DataSpec, MultimodalNet, build_model
from fedsense.params import Sharing
from fedsense.quantization import prepare_qat


def build_run_model(spec: DataSpec, cfg: Config, qat: bool | None = None) -> MultimodalNet:
    """The model a run trains: ``cfg.model`` plus the discriminators that
    ``cfg.adapt.method`` needs, initialised from ``cfg.seed``; with
    ``train.qat`` (or ``qat``) it computes with int8-rounded weights
    (:mod:`fedsense.quantization`)."""
    model = build_model(spec, cfg.model, cfg.seed, **METHODS[cfg.adapt.method].model_options(cfg))
    if cfg.train.qat if qat is None else qat:
        prepare_qat(model)
    return model


def sharing_of(cfg: Config) -> Sharing:
    """The sharing rule of the run ``cfg`` describes."""
    return Sharing(METHODS[cfg.adapt.method], cfg)
