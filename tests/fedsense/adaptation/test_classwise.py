"""Class-conditional statistics and the class-conditional multi-branch alignment term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsense.adaptation.classwise import Alignment, ClassStats, alignment_term, class_stats, pool_class_stats
from fedsense.config import ModelConfig, SyntheticConfig
from fedsense.data.synthetic import make_synthetic
from fedsense.engine import as_tensors
from fedsense.models import DataSpec, build_model

CFG = ModelConfig(channels=[8, 16], embed_dim=8, kernel_size=3)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(SyntheticConfig(subjects=3, windows_per_class=12, classes=3), 0)


def model(class_conditional: bool = True):
    return build_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 3), CFG, 0, adversarial="all",
                       class_conditional=class_conditional)


def test_class_statistics_pool_to_those_of_the_union(data):
    m = model()
    a, b = data.subset(data.subject == 1), data.subset(data.subject != 1)
    pooled = {k: pool_class_stats([class_stats(m, a, 3, 2)[k], class_stats(m, b, 3, 2)[k]]) for k in ("acc", "fused")}
    whole = class_stats(m, data, 3, 2)
    for k in pooled:
        np.testing.assert_array_equal(pooled[k].count, whole[k].count)
        np.testing.assert_allclose(pooled[k].mean, whole[k].mean, atol=1e-9)
        np.testing.assert_allclose(pooled[k].var, whole[k].var, atol=1e-9)


def test_a_class_below_the_minimum_count_is_empty(data):
    few = data.subset(np.flatnonzero((data.y != 2) | (np.arange(len(data)) % 12 == 0)))  # class 2: 3 windows
    stats = class_stats(model(), few, 3, 5)["fused"]
    assert stats.count[2] == 0 and not stats.mean[2].any() and stats.count[0] > 0


def _reference(m, data) -> dict[str, ClassStats]:
    return class_stats(m, data, 3, 2)


def test_the_term_trains_local_discriminators_and_reverses_into_the_embeddings(data):
    """Discriminator weights get the plain gradient; the embeddings get the
    reversed one (their gradient points the other way than without reversal)."""
    m = model()
    m.eval()
    reference = _reference(m, data)
    x = as_tensors(data.subset(np.arange(24)))
    labels = torch.as_tensor(data.y[:24])
    confident = torch.ones(24, dtype=torch.bool)
    grads = {}
    for coeff in (1.0, 0.0):
        m.zero_grad()
        out = m(x)
        out.fused.retain_grad()
        term = alignment_term(m, Alignment(reference, {"acc": 1.0, "gyro": 1.0, "fused": 1.0}, coeff=coeff,
                                           moment_weight=0.0))
        loss, numbers = term(out, labels, confident, torch.Generator().manual_seed(0))
        loss.backward()
        grads[coeff] = out.fused.grad.clone()
        assert set(numbers) >= {"disc_acc.fused", "loss_domain.fused", "moment.acc"}
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.discriminators.parameters())
    assert torch.count_nonzero(grads[0.0]) == 0  # no reversal: no gradient reaches the embedding
    assert torch.count_nonzero(grads[1.0]) > 0


def test_only_confident_windows_of_classes_the_reference_has_are_aligned(data):
    m = model()
    reference = _reference(m, data)
    reference = {b: ClassStats(np.array([s.count[0], 0, 0]), s.mean, s.var) for b, s in reference.items()}
    out = m(as_tensors(data.subset(np.arange(24))))
    term = alignment_term(m, Alignment(reference, {"fused": 1.0}, coeff=1.0))
    labels = torch.full((24,), 1)  # a class the reference lacks
    loss, numbers = term(out, labels, torch.ones(24, dtype=torch.bool), torch.Generator())
    assert float(loss) == 0.0 and numbers == {}
    loss, numbers = term(out, torch.zeros(24, dtype=torch.long), torch.zeros(24, dtype=torch.bool), torch.Generator())
    assert float(loss) == 0.0  # nothing confident
    loss, numbers = term(out, torch.zeros(24, dtype=torch.long), torch.ones(24, dtype=torch.bool), torch.Generator())
    assert float(loss) > 0 and "moment.fused" in numbers


def test_the_moment_term_is_zero_when_the_class_means_match(data):
    m = model()
    m.eval()
    sub = data.subset(np.arange(30))
    reference = class_stats(m, sub, 3, 2)
    out = m(as_tensors(sub))
    term = alignment_term(m, Alignment(reference, {"fused": 1.0}, coeff=1.0, adversarial=False))
    loss, numbers = term(out, torch.as_tensor(sub.y), torch.ones(30, dtype=torch.bool), torch.Generator())
    assert numbers["moment.fused"] == pytest.approx(0.0, abs=1e-10) and float(loss) == pytest.approx(0.0, abs=1e-10)


def test_a_unit_the_sources_barely_use_cannot_dominate_the_moment_term(data):
    """The moment term weighs a class mean's distance against the class's
    total variance: a target one total standard deviation off along a unit
    the sources do not use (reference variance 0) scores about 1, where a
    per-dimension weighting would give that unit alone 1 / 1e-4."""
    m = model()
    m.eval()
    sub = data.subset(np.arange(30))
    reference = class_stats(m, sub, 3, 2)["fused"]
    out = m(as_tensors(sub))
    dead = 0
    var = np.ones_like(reference.var)  # the sources' spread: 1 per unit, none on the dead one
    var[:, dead] = 0.0
    floored = np.maximum(var, 1e-4)  # the term's floor of a variance (VAR_FLOOR)
    offset = np.sqrt(floored.sum(1))  # one total standard deviation per class
    mean = reference.mean.copy()
    mean[:, dead] -= offset  # the batch's class means are that far off along the dead unit only
    term = alignment_term(m, Alignment({"fused": ClassStats(reference.count, mean, var)}, {"fused": 1.0},
                                       coeff=1.0, adversarial=False))
    _loss, numbers = term(out, torch.as_tensor(sub.y), torch.ones(30, dtype=torch.bool), torch.Generator())
    assert numbers["moment.fused"] == pytest.approx(1.0, rel=1e-3)
    per_dimension = np.mean(offset ** 2 / floored[:, dead] / var.shape[1])
    assert per_dimension > 100 * numbers["moment.fused"]
