"""Self-training on device-local parameters and the unlabeled choices it
makes, on a small model trained on synthetic windows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from fedsense.adaptation.calibration import Fit
from fedsense.adaptation.selftraining import (
    SelfTraining,
    _candidate_scores,
    choose_calibration,
    im_score,
    information_loss,
    local_parameters,
    self_train,
)
from fedsense.config import ModelConfig, SyntheticConfig
from fedsense.data.synthetic import make_synthetic
from fedsense.engine import evaluate, train_supervised
from fedsense.config import TrainConfig
from fedsense.metrics import macro_f1
from fedsense.models import DataSpec, build_model

CFG = ModelConfig(channels=[8, 16], embed_dim=16, kernel_size=3)


@pytest.fixture(scope="module")
def trained():
    """A small model trained on five synthetic subjects; subject 6's windows as a device's."""
    ds = make_synthetic(SyntheticConfig(subjects=6, windows_per_class=30, classes=4, subject_shift=0.1, noise=0.3), 0)
    sources, device = ds.subset(ds.subject != 6), ds.subset(ds.subject == 6)
    model = build_model(DataSpec(ds.shapes(), 4), CFG, 0, calibrate=True)
    train_supervised(model, sources, TrainConfig(), epochs=8, lr=3e-3, seed=0)
    return model, device


def _mirror(ds, modality: str, axis: int):
    x = dict(ds.x)
    x[modality] = x[modality].copy()
    x[modality][:, axis] *= -1
    return replace(ds, x=x)


def f1(model, ds) -> float:
    return macro_f1(evaluate(model, ds, model.num_classes)["confusion"])


def test_information_loss_rewards_confident_and_diverse_predictions():
    confident_diverse = torch.tensor([[9.0, 0, 0], [0, 9.0, 0], [0, 0, 9.0]])
    collapsed = torch.tensor([[9.0, 0, 0]] * 3)
    e1, d1 = information_loss(confident_diverse)
    e2, d2 = information_loss(collapsed)
    assert e1 < 0.01 and e2 < 0.01
    assert d1 == pytest.approx(np.log(3), rel=1e-3) and d2 < 0.01  # collapse has no diversity


def test_batched_candidate_scores_equal_one_by_one_scores(trained):
    model, device = trained
    model = __import__("copy").deepcopy(model)
    candidates = [(np.diag([1.0, -1.0, 1.0]), np.zeros(3)), (1.2 * np.eye(3), np.full(3, 0.1)), (np.eye(3), np.zeros(3))]
    batched = _candidate_scores(model, device, "gyro", candidates, chunk=2)
    single = []
    for c in candidates:
        model.calibration.set_maps({"gyro": c})
        single.append(im_score(model, device))
    np.testing.assert_allclose(batched, single, atol=1e-5)


@pytest.fixture(scope="module")
def hapt_sources():
    """A model with a calibration trained centrally on twelve real HAPT
    source users (4 epochs, ~20 s), and those users' training windows."""
    from fedsense import configfile as config_mod
    from fedsense.centralized import concat
    from fedsense.data.clients import load_client_data
    from tests.conftest import REPO

    cfg = config_mod.load(REPO / "configs" / "default.yaml", ["data.shifts=[]"])
    users = [load_client_data(cfg, {"partition-id": p, "num-partitions": 30}).train for p in range(0, 24, 2)]
    pooled = concat(users)
    model = build_model(DataSpec(pooled.shapes(), 6), cfg.model, 0, calibrate=True)
    train_supervised(model, pooled, cfg.train, epochs=4, lr=3e-3, seed=0)
    return model, users


def test_fit_and_choice_undo_turned_phones_without_labels(hapt_sources):
    """Real HAPT: the six target users' phones turned 45 degrees about z with a
    1.15 gain (the default experiment's shift). The sources' raw statistics,
    likelihood fits on each user's unlabeled windows and the
    information-maximisation choice bring macro-F1 (confusions summed over
    the users) back near the unturned users'; no target label is read."""
    from fedsense import configfile as config_mod
    from fedsense.adaptation.calibration import fit_candidates, pool_raw, raw_stats
    from fedsense.data.clients import load_client_data
    from tests.conftest import REPO

    trained, sources = hapt_sources
    reference = {m: pool_raw([raw_stats(u.x[m], u.y, 6, 10) for u in sources]) for m in ("acc", "gyro")}
    plain = config_mod.load(REPO / "configs" / "default.yaml", ["data.shifts=[]"])
    shifted = config_mod.load(REPO / "configs" / "default.yaml")  # users 25-30 turned
    cms = {"clean": 0, "turned": 0, "calibrated": 0}
    for pid in range(24, 30):
        clean = load_client_data(plain, {"partition-id": pid, "num-partitions": 30}).test
        turned = load_client_data(shifted, {"partition-id": pid, "num-partitions": 30})
        assert turned.train.y.max() == -1  # the target's training windows carry no label
        fits = {m: fit_candidates(turned.train.x[m], reference[m]) for m in ("acc", "gyro")}
        assert fits["acc"] and not fits["gyro"]  # a gyroscope's window means do not pin a frame down
        model = __import__("copy").deepcopy(trained)
        cms["clean"] = cms["clean"] + evaluate(model, clean, 6)["confusion"]
        cms["turned"] = cms["turned"] + evaluate(model, turned.test, 6)["confusion"]
        choose_calibration(model, turned.train, fits, {"acc": 1.0, "gyro": 1.0 / 1.15})
        cms["calibrated"] = cms["calibrated"] + evaluate(model, turned.test, 6)["confusion"]
    f = {k: macro_f1(v) for k, v in cms.items()}
    assert f["turned"] < f["clean"] - 0.2
    assert f["calibrated"] >= f["clean"] - 0.03, f


def test_a_likelihood_fit_competes_and_the_current_map_wins_ties(trained):
    model, device = trained
    model = __import__("copy").deepcopy(model)
    fits = {"acc": [Fit(np.eye(3), np.zeros(3), 0.0)]}
    chosen = choose_calibration(model, device, fits, {}, sweep=False)
    assert chosen["acc"] == "current" and chosen["gyro"] == "current"  # the identity is current and as good
    assert model.calibration.is_identity()


def test_self_training_moves_only_device_local_parameters(trained):
    model, device = trained
    model = __import__("copy").deepcopy(model)
    unlabeled = replace(device, y=np.full_like(device.y, -1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = self_train(model, unlabeled, SelfTraining(epochs=2, threshold=0.0, anchor=0.0), seed=0)
    local = {n for n, p in model.named_parameters() if any(p is q for q in local_parameters(model))}
    assert local and all(n.startswith("calibration.") or ".features." in n for n in local)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed <= local  # never a weight the federation shares, never a running statistic
    assert out["kept"] in (0.0, 1.0) and (out["kept"] == 0.0) == (not changed)
    assert not any(p.requires_grad for p in model.calibration.parameters())  # frozen again


def test_self_training_is_undone_when_its_objective_gets_worse(trained, monkeypatch):
    import fedsense.adaptation.selftraining as st

    model, device = trained
    model = __import__("copy").deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = iter([-1.0, -0.5])  # before, after: worse
    monkeypatch.setattr(st, "im_score", lambda m, d: next(scores))
    out = st.self_train(model, device, SelfTraining(epochs=1, lr=0.05, threshold=0.0), seed=0)
    assert out["kept"] == 0.0 and out["drift"] > 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_self_training_does_not_collapse_onto_one_class(trained):
    """The diversity term, the confidence threshold and the anchor: after
    many epochs at a high learning rate every class is still predicted."""
    model, device = trained
    model = __import__("copy").deepcopy(model)
    out = self_train(model, replace(device, y=np.full_like(device.y, -1)),
                     SelfTraining(epochs=10, lr=0.01), seed=1)
    assert out["min_class_share"] > 0.1
    assert f1(model, device) >= f1(trained[0], device) - 0.05


def test_the_encoders_scope_moves_the_encoders_never_the_classifier(trained, monkeypatch):
    import fedsense.adaptation.selftraining as st

    model, device = trained
    model = __import__("copy").deepcopy(model)
    moved = {id(p) for p in local_parameters(model, "encoders")}
    names = {n for n, p in model.named_parameters() if id(p) in moved}
    assert any(n.startswith("encoders.") and ".features.0." in n for n in names)  # convolutions too
    assert not any(n.startswith("classifier.") for n in names)
    scores = iter([0.0, -1.0])  # before, after: better, so the step is kept
    monkeypatch.setattr(st, "im_score", lambda m, d: next(scores))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = st.self_train(model, replace(device, y=np.full_like(device.y, -1)),
                        SelfTraining(epochs=1, threshold=0.0, anchor=0.0, lr=0.01, scope="encoders"), seed=0)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert out["kept"] == 1.0 and any(k.startswith("encoders.") and ".features.0." in k for k in changed)
    assert not any(k.startswith("classifier.") for k in changed)
