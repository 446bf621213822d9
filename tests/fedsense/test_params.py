"""Shared vs local parameters, and loading arrays back into a model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from fedsense.config import Config, ModelConfig
from fedsense.configfile import from_dict
from fedsense.methods import METHODS
from fedsense.models import DataSpec, build_model
from fedsense.params import Sharing, load_arrays, local_arrays, shared_arrays, shared_keys

SPEC = DataSpec(shapes={"acc": (3, 32), "gyro": (3, 16)}, num_classes=4)
CFG = ModelConfig(channels=[8, 16], embed_dim=8, kernel_size=3)
NONE = METHODS["none"]
LOCAL_NORM = METHODS["fedbn_stats"]


def model(seed: int = 0, fusion: str = "concat") -> nn.Module:
    return build_model(SPEC, replace(CFG, fusion=fusion), seed)


def module_keys(m: nn.Module, kind: type | tuple[type, ...]) -> set[str]:
    """State-dict keys of every submodule of type ``kind``."""
    out = set()
    for name, mod in m.named_modules():
        if isinstance(mod, kind):
            out |= {f"{name}.{k}" for k in mod.state_dict()}
    return out


def test_none_shares_everything_but_batch_counters() -> None:
    m = model()
    state = m.state_dict()
    shared = shared_arrays(m, NONE)
    local = local_arrays(m, NONE)
    counters = {k for k in state if k.endswith("num_batches_tracked")}
    assert counters  # the model does have BatchNorm counters
    assert set(local) == counters
    assert set(shared) == set(state) - counters
    assert shared_keys(m, NONE) == set(shared)
    assert any(k.endswith("running_mean") for k in shared)  # FedAvg averages BN stats


def test_local_norm_keeps_batchnorm_on_device() -> None:
    m = model()
    bn = module_keys(m, nn.BatchNorm1d)
    conv_linear = module_keys(m, (nn.Conv1d, nn.Linear))
    assert bn and conv_linear
    assert {k.rsplit(".", 1)[1] for k in bn} == {
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"
    }
    shared = shared_keys(m, LOCAL_NORM)
    stats = {k for k in bn if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    affine = bn - stats
    assert stats and not stats & shared  # statistics stay on the device
    assert affine <= shared  # an unlabeled target could never learn its own affine
    assert conv_linear <= shared
    assert set(local_arrays(m, LOCAL_NORM)) == stats
    assert set(shared_arrays(m, LOCAL_NORM)) | stats == set(m.state_dict())


def test_local_norm_with_attention_fusion() -> None:
    m = model(fusion="attention")
    shared = shared_keys(m, LOCAL_NORM)
    assert "fusion.norm.weight" in shared  # LayerNorm has no running statistics
    assert "fusion.attn.in_proj_weight" in shared
    assert "fusion.token" in shared


def test_shared_arrays_are_copies() -> None:
    m = model()
    arrays = shared_arrays(m, NONE)
    key = "classifier.1.weight"
    arrays[key][:] = 123.0
    assert not torch.any(m.state_dict()[key] == 123.0)


def test_load_arrays_rejects_wrong_shape() -> None:
    m = model()
    arrays = shared_arrays(m, NONE)
    arrays["classifier.1.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"classifier\.1\.weight.*\(3, 3\).*expects \(4, 16\)"):
        load_arrays(m, arrays, strict_keys=shared_keys(m, NONE))


def test_load_arrays_rejects_unknown_key() -> None:
    m = model()
    arrays = shared_arrays(m, NONE)
    arrays["encoders.audio.project.1.weight"] = np.zeros((8, 16), np.float32)
    with pytest.raises(ValueError, match=r"unknown \['encoders\.audio\.project\.1\.weight'\]"):
        load_arrays(m, arrays, strict_keys=shared_keys(m, NONE))


def test_load_arrays_rejects_missing_key() -> None:
    m = model()
    arrays = shared_arrays(m, NONE)
    del arrays["encoders.gyro.project.1.bias"]
    with pytest.raises(ValueError, match=r"missing \['encoders\.gyro\.project\.1\.bias'\]"):
        load_arrays(m, arrays, strict_keys=shared_keys(m, NONE))


def test_failed_load_changes_nothing() -> None:
    m = model(seed=0)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    arrays = shared_arrays(model(seed=1), NONE)
    arrays["classifier.1.bias"] = np.zeros(7, np.float32)  # the one bad array
    with pytest.raises(ValueError):
        load_arrays(m, arrays, strict_keys=shared_keys(m, NONE))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_round_trip_shared_plus_local_restores_outputs() -> None:
    src = model(seed=0)
    # Move BatchNorm statistics and weights away from their initial values.
    src.train()
    g = torch.Generator().manual_seed(0)
    x = {m: 2.0 + torch.randn(16, c, t, generator=g) for m, (c, t) in SPEC.shapes.items()}
    opt = torch.optim.SGD(src.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        src(x).logits.pow(2).mean().backward()
        opt.step()
    src.eval()
    dst = model(seed=5).eval()
    with torch.no_grad():
        expected = src(x).logits
        assert not torch.allclose(dst(x).logits, expected)
    shared = shared_arrays(src, LOCAL_NORM)
    local = local_arrays(src, LOCAL_NORM)
    load_arrays(dst, shared, strict_keys=shared_keys(dst, LOCAL_NORM))
    with torch.no_grad():
        # Shared part alone is not enough: BatchNorm stays the fresh model's.
        assert not torch.allclose(dst(x).logits, expected)
    load_arrays(dst, local, strict_keys=set(local))
    with torch.no_grad():
        assert torch.equal(dst(x).logits, expected)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_fedbn_keeps_affine_parameters_on_labelled_devices_only() -> None:
    """Real FedBN: a labelled device keeps its BatchNorm affine parameters (and
    statistics) as its own; they still travel, so the server's average of
    them reaches devices without labels, which keep only their statistics."""
    m = model()
    bn = module_keys(m, nn.BatchNorm1d)
    affine = {k for k in bn if k.endswith((".weight", ".bias"))}
    stats = {k for k in bn if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    fedbn = METHODS["fedbn"]
    assert affine and affine <= shared_keys(m, fedbn)
    assert not stats & shared_keys(m, fedbn)
    assert set(local_arrays(m, fedbn, labelled=True)) == affine | stats
    assert set(local_arrays(m, fedbn, labelled=False)) == stats
    assert set(local_arrays(m, LOCAL_NORM, labelled=True)) == stats  # the statistics-only variant


def test_m3bat_local_keeps_calibration_and_discriminators_on_the_device() -> None:
    cfg = from_dict({"adapt": {"method": "m3bat_local"}})
    method = METHODS["m3bat_local"]
    m = build_model(SPEC, CFG, 0, **method.model_options(cfg))
    sharing = Sharing(method, cfg)
    own = {k for k in m.state_dict() if k.startswith(("calibration.", "discriminators."))}
    assert {k for k in own if k.startswith("calibration.")} == {
        "calibration.matrix.acc", "calibration.matrix.gyro", "calibration.offset.acc", "calibration.offset.gyro"}
    assert own and not own & shared_keys(m, sharing)
    assert own <= set(local_arrays(m, sharing))
    # everything else is source-only FedAvg's: the same shared keys as `none`
    assert shared_keys(m, sharing) == shared_keys(model(), Sharing(NONE, Config()))
