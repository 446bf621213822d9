"""Local adaptation steps on synthetic data: adversarial training, AdaBN."""

from __future__ import annotations

import numpy as np
import torch

from fedsense.adaptation.statistics import Stats
from fedsense.adaptation.training import Adversarial, embedding_stats, renormalize, train_adversarial
from fedsense.config import ModelConfig, SyntheticConfig, TrainConfig
from fedsense.data.synthetic import make_synthetic
from fedsense.models import DataSpec, build_model

SPEC = DataSpec({"acc": (3, 64), "gyro": (3, 64)}, num_classes=4)
SMALL = ModelConfig(channels=[8, 8], embed_dim=8, dropout=0.0)


def data():
    return make_synthetic(SyntheticConfig(subjects=2, windows_per_class=8), seed=0)


def weights_of(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_unlabeled_target_trains_encoders_and_discriminators_but_not_the_classifier():
    ds = data()
    ds = type(ds)(x=ds.x, y=np.full_like(ds.y, -1), subject=ds.subject, domain=ds.domain, classes=ds.classes)
    model = build_model(SPEC, SMALL, seed=1, adversarial="all")
    before = weights_of(model)
    out = train_adversarial(
        model, ds, np.ones(len(ds), np.float32), TrainConfig(batch_size=16),
        Adversarial(coeff=0.5, weights={"acc": 1.0, "gyro": 1.0, "fused": 1.0}), epochs=1, lr=0.01, seed=0,
    )
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("encoders.acc.") for k in changed)
    assert any(k.startswith("discriminators.gyro.") for k in changed)
    assert not any(k.startswith("classifier.") for k in changed)  # no labels, no task gradient
    assert out["num_examples"] == len(ds) and out["loss_task"] == 0.0
    assert set(out["disc_acc"]) == {"acc", "gyro", "fused"}


def test_zero_coefficient_leaves_encoders_to_the_task_alone():
    """coeff 0: the discriminators learn, but send nothing back to the encoders."""
    ds = data()
    cfg = TrainConfig(batch_size=16)
    plain = build_model(SPEC, SMALL, seed=1, adversarial="fused")
    adv = build_model(SPEC, SMALL, seed=1, adversarial="fused")
    domain = np.zeros(len(ds), np.float32)
    train_adversarial(plain, ds, domain, cfg, Adversarial(0.0, {"fused": 0.0}), epochs=1, lr=0.01, seed=3)
    train_adversarial(adv, ds, domain, cfg, Adversarial(0.0, {"fused": 1.0}), epochs=1, lr=0.01, seed=3)
    for k, v in plain.state_dict().items():
        if k.startswith("encoders."):
            torch.testing.assert_close(v, adv.state_dict()[k])


def test_statistics_reference_is_used_when_present():
    ds = data()
    model = build_model(SPEC, SMALL, seed=1, adversarial="all")
    stats = embedding_stats(model, ds)
    assert set(stats) == {"acc", "gyro", "fused"} and stats["fused"].count == len(ds)
    ref = {b: Stats(s.count, s.mean + 3.0, s.cov) for b, s in stats.items()}
    weights = {"acc": 1, "gyro": 1, "fused": 1}
    target = train_adversarial(
        model, ds, np.ones(len(ds), np.float32), TrainConfig(batch_size=16),
        Adversarial(0.3, weights, reference=ref), epochs=1, lr=0.01, seed=0,
    )
    assert set(target["loss_domain"]) == {"acc", "gyro", "fused"}
    source = train_adversarial(  # the sources are the reference: no adversarial step
        model, ds, np.zeros(len(ds), np.float32), TrainConfig(batch_size=16),
        Adversarial(0.3, weights, reference=ref), epochs=1, lr=0.01, seed=0,
    )
    assert source["loss_domain"] == {}
    none_yet = train_adversarial(
        model, ds, np.ones(len(ds), np.float32), TrainConfig(batch_size=16),
        Adversarial(0.3, {"acc": 1, "gyro": 1, "fused": 1}, reference={}), epochs=1, lr=0.01, seed=0,
    )
    assert none_yet["loss_domain"] == {}  # first round: nothing to align to yet


def test_renormalize_recomputes_batchnorm_statistics_without_gradients():
    ds = data()
    shifted = type(ds)(x={m: a * 3.0 + 2.0 for m, a in ds.x.items()}, y=ds.y, subject=ds.subject,
                       domain=ds.domain, classes=ds.classes)
    model = build_model(SPEC, SMALL, seed=1)
    before = weights_of(model)
    assert renormalize(model, shifted) == len(ds)
    after = model.state_dict()
    stats_keys = [k for k in before if k.endswith("running_mean")]
    assert all(not torch.equal(before[k], after[k]) for k in stats_keys)
    params = [k for k in before if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(before[k], after[k]) for k in params)
    bn = model.encoders["acc"].features[1]
    assert bn.momentum == 0.1  # restored after the cumulative pass


def test_reversal_coefficient_scales_an_unlabeled_clients_step_even_under_adam():
    """A device without labels follows coeff x the reversed gradient: Adam would
    normalise the coefficient away and step as far at lambda 0.01 as at 1."""
    ds = data()
    ds = type(ds)(x=ds.x, y=np.full_like(ds.y, -1), subject=ds.subject, domain=ds.domain, classes=ds.classes)
    cfg = TrainConfig(optimizer="adam", batch_size=len(ds))  # one step
    deltas = []
    for coeff in (0.1, 0.2):
        model = build_model(SPEC, SMALL, seed=1, adversarial="all")
        before = weights_of(model)
        train_adversarial(
            model, ds, np.ones(len(ds), np.float32), cfg,
            Adversarial(coeff, {"acc": 1.0, "gyro": 1.0, "fused": 1.0}), epochs=1, lr=0.01, seed=0,
        )
        deltas.append(model.state_dict()["encoders.acc.project.1.weight"] - before["encoders.acc.project.1.weight"])
    assert deltas[0].abs().max() > 0
    torch.testing.assert_close(deltas[1], 2 * deltas[0])


def test_discriminators_learn_in_their_first_steps_only():
    """FADE's few discriminator steps: after ``disc_steps`` steps the
    discriminators stay put while the encoders keep following the reversed
    gradient."""
    ds = data()
    snapshots = {}
    for limit in (1, 0):
        model = build_model(SPEC, SMALL, seed=1, adversarial="fused")
        start = weights_of(model)
        domain = (ds.subject == 2).astype(np.float32)
        calls = []
        hook = model.discriminators["fused"].net[0].weight.register_hook(lambda g: calls.append(1))
        out = train_adversarial(model, ds, domain, TrainConfig(batch_size=8),
                                Adversarial(coeff=0.5, weights={"fused": 1.0}), epochs=1, lr=0.01, seed=0,
                                disc_steps=limit)
        hook.remove()
        assert out["steps"] > 2 and len(calls) == out["steps"]  # the gradient is computed every step
        snapshots[limit] = (start, weights_of(model))
    one_step = snapshots[1]
    # One step changes a discriminator by one optimiser step; every step by many: compare the distance moved.
    moved = {limit: float((after["discriminators.fused.net.0.weight"] - start["discriminators.fused.net.0.weight"])
                          .norm()) for limit, (start, after) in snapshots.items()}
    assert 0 < moved[1] < moved[0] / 2
    assert not torch.equal(one_step[0]["encoders.acc.project.1.weight"], one_step[1]["encoders.acc.project.1.weight"])
