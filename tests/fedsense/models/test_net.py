"""MultimodalNet: shapes, size, masking, seeding, and modalities as data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedsense import protocol
from fedsense.config import ModelConfig
from fedsense.models import (
    ENCODERS,
    FUSIONS,
    DataSpec,
    MultimodalNet,
    build_model,
    count_parameters,
)

SMALL = ModelConfig(channels=[8, 16], embed_dim=8, kernel_size=3)
FUSION_NAMES = ["concat", "attention"]

# The default HAR model: HAPT accelerometer + gyroscope windows, 6 activities.
HAPT_SPEC = DataSpec(shapes={"acc": (3, 128), "gyro": (3, 128)}, num_classes=6)
# Measured once; a change means the architecture changed (update deliberately).
HAPT_DEFAULT_PARAMETERS = 56_710


def small(fusion: str) -> ModelConfig:
    return ModelConfig(channels=[8, 16], embed_dim=8, kernel_size=3, fusion=fusion)


def inputs(spec: DataSpec, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, c, t, generator=g) for m, (c, t) in spec.shapes.items()}


@pytest.mark.parametrize("fusion", FUSION_NAMES)
def test_output_shapes(fusion: str) -> None:
    spec = DataSpec(shapes={"acc": (3, 32), "gyro": (3, 32)}, num_classes=5)
    model = build_model(spec, small(fusion)).eval()
    out = model(inputs(spec, 7))
    assert out.logits.shape == (7, 5)
    assert set(out.branches) == {"acc", "gyro"}
    for emb in out.branches.values():
        assert emb.shape == (7, 8)
    fused_dim = 16 if fusion == "concat" else 8  # concat stacks, attention pools
    assert out.fused.shape == (7, fused_dim)
    assert model.fusion.out_dim == fused_dim


def test_default_hapt_model_is_compact() -> None:
    model = build_model(HAPT_SPEC, ModelConfig())
    n = count_parameters(model)
    assert n < 100_000
    assert n == HAPT_DEFAULT_PARAMETERS


def test_count_parameters_ignores_frozen_and_buffers() -> None:
    model = build_model(HAPT_SPEC, ModelConfig())
    total = count_parameters(model)
    frozen = sum(p.numel() for p in model.classifier.parameters())
    for p in model.classifier.parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == total - frozen
    # Buffers (BatchNorm running stats) are in the state dict but not counted.
    assert sum(v.numel() for v in model.state_dict().values()) > total


@pytest.mark.parametrize("fusion", FUSION_NAMES)
def test_masked_modality_does_not_influence_logits(fusion: str) -> None:
    spec = DataSpec(shapes={"acc": (3, 32), "gyro": (3, 16)}, num_classes=4)
    model = build_model(spec, small(fusion)).eval()
    x = inputs(spec, 4)
    # Row 0: both present; row 1: acc masked; row 2: gyro masked; row 3: both masked.
    mask = {"acc": torch.tensor([1.0, 0.0, 1.0, 0.0]), "gyro": torch.tensor([1.0, 1.0, 0.0, 0.0])}
    changed = dict(x, acc=5.0 * torch.randn(4, 3, 32, generator=torch.Generator().manual_seed(9)))
    with torch.no_grad():
        before = model(x, mask).logits
        after = model(changed, mask).logits
    # Rows where acc is absent do not move...
    torch.testing.assert_close(after[[1, 3]], before[[1, 3]], rtol=0, atol=1e-6)
    # ...and rows where acc is present do (so the check above can fail).
    assert (after[[0, 2]] - before[[0, 2]]).abs().max() > 1e-3


@pytest.mark.parametrize("fusion", FUSION_NAMES)
def test_default_mask_is_all_present(fusion: str) -> None:
    spec = DataSpec(shapes={"acc": (3, 32), "gyro": (3, 16)}, num_classes=4)
    model = build_model(spec, small(fusion)).eval()
    x = inputs(spec, 3)
    ones = {m: torch.ones(3) for m in spec.shapes}
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, model(x, ones).logits)


def test_all_masked_attention_is_finite_and_input_independent() -> None:
    spec = DataSpec(shapes={"acc": (3, 32), "gyro": (3, 16)}, num_classes=4)
    model = build_model(spec, small("attention")).eval()
    none = {m: torch.zeros(3) for m in spec.shapes}
    with torch.no_grad():
        a = model(inputs(spec, 3, seed=1), none).logits
        b = model(inputs(spec, 3, seed=2), none).logits
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b)


def test_build_model_same_seed_same_weights_different_seed_differs() -> None:
    spec = DataSpec(shapes={"acc": (3, 32), "gyro": (3, 32)}, num_classes=4)
    a = build_model(spec, small("attention"), seed=3).state_dict()
    torch.manual_seed(12345)  # global RNG state must not matter
    b = build_model(spec, small("attention"), seed=3).state_dict()
    c = build_model(spec, small("attention"), seed=4).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_build_model_leaves_global_rng_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_model(DataSpec(shapes={"acc": (3, 16)}, num_classes=2), SMALL, seed=99)
    torch.testing.assert_close(torch.rand(3), expected)


def test_branches_keyed_by_modality() -> None:
    spec = DataSpec(shapes={"gyro": (3, 16), "acc": (3, 32), "audio": (1, 64)}, num_classes=3)
    model = build_model(spec, SMALL)
    assert isinstance(model.encoders, nn.ModuleDict)
    assert list(model.encoders.keys()) == ["gyro", "acc", "audio"]
    assert model.modalities == ["gyro", "acc", "audio"]
    # Each branch is built for its own channel count.
    for m, (c, _t) in spec.shapes.items():
        conv = next(mod for mod in model.encoders[m].modules() if isinstance(mod, nn.Conv1d))
        assert conv.in_channels == c
    names = [k for k, _ in model.named_parameters()]
    assert any(k.startswith("encoders.audio.") for k in names)


@pytest.mark.parametrize("fusion", FUSION_NAMES)
@pytest.mark.parametrize(
    "shapes",
    [
        {"acc": (3, 20)},
        {"acc": (3, 64), "audio": (1, 200), "ppg": (2, 9)},
    ],
)
def test_one_and_three_modalities_of_different_shapes(
    fusion: str, shapes: dict[str, tuple[int, int]]
) -> None:
    spec = DataSpec(shapes=shapes, num_classes=3)
    model = build_model(spec, small(fusion)).eval()
    with torch.no_grad():
        out = model(inputs(spec, 2))
    assert out.logits.shape == (2, 3)
    assert set(out.branches) == set(shapes)
    assert torch.isfinite(out.logits).all()
    # The net trains on such input too (BatchNorm in train mode, backward works).
    model.train()
    loss = model(inputs(spec, 4)).logits.sum()
    loss.backward()
    assert all(p.grad is not None for p in model.encoders.parameters())


def test_no_modality_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one modality"):
        MultimodalNet(DataSpec(shapes={}, num_classes=2), SMALL)


def test_registries_list_valid_names_on_unknown() -> None:
    assert "conv1d" in ENCODERS
    with pytest.raises(KeyError, match="conv1d"):
        ENCODERS["lstm"]
    with pytest.raises(KeyError, match="attention.*concat"):
        FUSIONS["sum"]


def test_dataspec_metrics_round_trip() -> None:
    spec = DataSpec(shapes={"acc": (3, 128), "audio": (1, 400), "gyro": (3, 64)}, num_classes=6)
    metrics = spec.to_metrics()
    assert metrics[protocol.SPEC_NUM_CLASSES] == 6
    assert metrics[protocol.shape_keys("audio")[0]] == 1
    assert metrics[protocol.shape_keys("audio")[1]] == 400
    assert all(isinstance(v, int) for v in metrics.values())
    # Other keys of a query reply (and floats off the wire) do not disturb it.
    wire = {k: float(v) for k, v in metrics.items()}
    wire[protocol.SPEC_TRAIN_WINDOWS] = 100.0
    back = DataSpec.from_metrics(wire)
    assert back == spec
    assert list(back.shapes) == list(spec.shapes)


def test_a_branch_runs_on_the_windows_that_have_its_modality_only():
    """Missing windows are zeros under a zero mask: they must not reach the
    branch's BatchNorm statistics nor change the other windows' outputs."""
    import copy

    import torch

    from fedsense.config import ModelConfig
    from fedsense.models import DataSpec, build_model

    spec = DataSpec({"acc": (3, 32), "gyro": (3, 32)}, num_classes=4)
    model = build_model(spec, ModelConfig(channels=[8, 16], embed_dim=16, dropout=0.0), seed=0)
    twin = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    x = {m: torch.randn(10, 3, 32, generator=g) for m in spec.shapes}
    present = torch.tensor([1, 1, 0, 1, 0, 1, 1, 1, 0, 1], dtype=torch.float32)
    x["gyro"][present == 0] = 0.0
    model.train(), twin.train()
    out = model(x, {"acc": torch.ones(10), "gyro": present})
    rows = present > 0
    alone = twin.encoders["gyro"](x["gyro"][rows])
    torch.testing.assert_close(out.branches["gyro"][rows], alone)
    assert not out.branches["gyro"][~rows].any()
    gyro_bn, twin_bn = model.encoders["gyro"].features[1], twin.encoders["gyro"].features[1]
    torch.testing.assert_close(gyro_bn.running_mean, twin_bn.running_mean)  # zeros left out
    nobody = model(x, {"acc": torch.ones(10), "gyro": torch.zeros(10)})  # a device without the sensor
    assert not nobody.branches["gyro"].any() and torch.isfinite(nobody.logits).all()
