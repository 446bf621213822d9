"""Local training and evaluation on small synthetic data."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from fedsense.centralized import concat
from fedsense.config import ModelConfig, SyntheticConfig, TrainConfig
from fedsense.data.base import Dataset
from fedsense.data.partition import partition
from fedsense.data.synthetic import make_synthetic
from fedsense.engine import as_tensors, evaluate, make_optimizer, train_supervised
from fedsense.metrics import summarize
from fedsense.models import DataSpec, build_model

K = 4
MODEL = ModelConfig(channels=[8, 16], embed_dim=16, kernel_size=3)
TRAIN = TrainConfig(batch_size=16)
LR = 0.01


@pytest.fixture(scope="module")
def data() -> tuple[Dataset, Dataset]:
    """(train, held-out) parts of two synthetic subjects, split in time order."""
    cfg = SyntheticConfig(
        subjects=2, windows_per_class=12, classes=K, modalities={"acc": [3, 32], "gyro": [3, 32]}
    )
    ds = make_synthetic(cfg, seed=0)
    splits = partition(ds, [], 0.3)
    return (
        concat([ds.subset(s.train) for s in splits]),
        concat([ds.subset(s.test) for s in splits]),
    )


def fresh(ds: Dataset, seed: int = 0, cfg: ModelConfig = MODEL) -> torch.nn.Module:
    return build_model(DataSpec(ds.shapes(), K), cfg, seed)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def with_labels(ds: Dataset, y: np.ndarray) -> Dataset:
    return replace(ds, y=np.asarray(y, dtype=np.int64))


def test_training_lowers_loss_and_generalises(data: tuple[Dataset, Dataset]) -> None:
    train, test = data
    model = fresh(train)
    before = evaluate(model, test, K)
    first = train_supervised(model, train, TRAIN, epochs=1, lr=LR, seed=0)
    train_supervised(model, train, TRAIN, epochs=5, lr=LR, seed=1)
    last = train_supervised(model, train, TRAIN, epochs=1, lr=LR, seed=2)
    after = evaluate(model, test, K)
    # Measured: first-epoch loss ~1.3, last ~0.05; held-out accuracy 0.25-0.4 -> 1.0.
    assert first["num_examples"] == len(train) == 56
    assert first["steps"] == 4  # ceil(56 / 16) batches
    assert last["loss_task"] < 0.5 * first["loss_task"]
    assert after["loss"] < 0.5 * before["loss"]
    summary = summarize(after["confusion"])
    assert summary["accuracy"] >= 0.85
    assert summary["macro_f1"] >= 0.85
    assert summarize(before["confusion"])["accuracy"] < 0.6  # it was learned, not given


def test_all_unlabeled_trains_nothing(data: tuple[Dataset, Dataset]) -> None:
    train, _ = data
    model = fresh(train)
    before = weights(model)
    result = train_supervised(
        model, with_labels(train, np.full(len(train), -1)), TRAIN, epochs=2, lr=LR, seed=0
    )
    assert result["num_examples"] == 0
    assert result["steps"] == 0
    assert same(weights(model), before)  # BatchNorm statistics included


def test_unlabeled_windows_are_never_read(data: tuple[Dataset, Dataset]) -> None:
    train, _ = data
    y = train.y.copy()
    y[::2] = -1  # half the windows unlabeled...
    x = {m: a.copy() for m, a in train.x.items()}
    for a in x.values():
        a[::2] = np.nan  # ...and poisoned: reading one would make the weights NaN
    model = fresh(train)
    result = train_supervised(model, replace(train, x=x, y=y), TRAIN, epochs=2, lr=LR, seed=0)
    assert result["num_examples"] == int(np.sum(y >= 0)) == 28
    assert result["steps"] == 2 * 2
    assert all(torch.isfinite(v.float()).all() for v in model.state_dict().values())


def test_single_window_batch_is_skipped(data: tuple[Dataset, Dataset]) -> None:
    train, _ = data
    y = np.full(len(train), -1)
    y[:17] = train.y[:17]  # 17 labelled windows, batch 16: the last batch has one window
    result = train_supervised(fresh(train), with_labels(train, y), TRAIN, epochs=3, lr=LR, seed=0)
    assert result["steps"] == 3
    assert result["num_examples"] == 17


def test_same_seed_bit_identical_different_seed_differs(data: tuple[Dataset, Dataset]) -> None:
    train, _ = data
    cfg = replace(MODEL, dropout=0.3)  # dropout draws randomness too

    def run(seed: int) -> dict[str, torch.Tensor]:
        model = fresh(train, seed=0, cfg=cfg)
        train_supervised(model, train, TRAIN, epochs=2, lr=LR, seed=seed)
        return weights(model)

    a = run(1)
    torch.rand(100)  # the caller's global RNG state must not matter
    b = run(1)
    c = run(2)
    assert same(a, b)
    assert not same(a, c)


def test_training_does_not_disturb_global_rng(data: tuple[Dataset, Dataset]) -> None:
    train, _ = data
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    train_supervised(fresh(train), train, TRAIN, epochs=1, lr=LR, seed=3)
    torch.testing.assert_close(torch.rand(3), expected)


def test_evaluate_skips_unlabeled(data: tuple[Dataset, Dataset]) -> None:
    _, test = data
    model = fresh(test)
    y = test.y.copy()
    y[[0, 3, 4, 10, 31]] = -1
    labelled = int(np.sum(y >= 0))
    out = evaluate(model, with_labels(test, y), K)
    cm = out["confusion"]
    assert cm.shape == (K, K) and cm.dtype == np.int64
    assert out["windows"] == labelled == int(cm.sum()) == len(test) - 5
    np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(y[y >= 0], minlength=K))
    # Same as evaluating only the labelled rows.
    only = evaluate(model, test.subset(np.flatnonzero(y >= 0)), K)
    np.testing.assert_array_equal(only["confusion"], cm)
    assert only["loss"] == pytest.approx(out["loss"])


def test_evaluate_independent_of_batch_size_and_pure(data: tuple[Dataset, Dataset]) -> None:
    train, test = data
    model = fresh(train)
    train_supervised(model, train, TRAIN, epochs=1, lr=LR, seed=0)
    before = weights(model)
    big = evaluate(model, test, K)
    small = evaluate(model, test, K, batch_size=5)
    np.testing.assert_array_equal(big["confusion"], small["confusion"])
    assert big["loss"] == pytest.approx(small["loss"], rel=1e-5)
    assert same(weights(model), before)  # no BatchNorm statistics updated
    assert not model.training


def test_evaluate_with_no_labels(data: tuple[Dataset, Dataset]) -> None:
    _, test = data
    out = evaluate(fresh(test), with_labels(test, np.full(len(test), -1)), K)
    assert out["windows"] == 0 and out["loss"] == 0.0
    assert not out["confusion"].any()


def test_as_tensors_and_optimizer(data: tuple[Dataset, Dataset]) -> None:
    train, _ = data
    t = as_tensors(train, np.array([2, 5]))
    assert set(t) == {"acc", "gyro"}
    assert t["acc"].shape == (2, 3, 32) and t["acc"].dtype == torch.float32
    np.testing.assert_array_equal(t["gyro"].numpy(), train.x["gyro"][[2, 5]])
    model = fresh(train)
    assert isinstance(make_optimizer(model, TRAIN, 0.1), torch.optim.Adam)
    sgd = make_optimizer(model, replace(TRAIN, optimizer="sgd", weight_decay=0.01), 0.1)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["lr"] == 0.1 and sgd.param_groups[0]["weight_decay"] == 0.01
