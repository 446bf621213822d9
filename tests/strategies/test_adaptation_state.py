"""Server-side adaptation: schedule in the round config, reference pooling,
shift weights, and domain-balanced discriminator averaging."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from fedsense import protocol
from fedsense.adaptation import METHODS
from fedsense.adaptation.schedules import reversal_coefficient
from fedsense.adaptation.statistics import Stats
from fedsense.config import AdaptConfig
from strategies import AdaptationState
from strategies.adaptation import domain_balanced
from tests.strategies.test_fedsense_strategy import _meta, make


def state(**adapt) -> AdaptationState:
    return AdaptationState(AdaptConfig(method="m3bat", **adapt), METHODS["m3bat"], ["acc", "gyro", "fused"], 10)


def test_round_config_carries_the_schedule_and_weights():
    cfg = state(lambda_max=0.5, weights={"gyro": 2.0}).round_config(4)
    assert cfg[protocol.CFG_COEFF] == pytest.approx(reversal_coefficient(4, 10, 0.5))
    assert cfg["weight.acc"] == 1.0 and cfg["weight.gyro"] == 2.0 and cfg["weight.fused"] == 1.0
    plain = AdaptationState(AdaptConfig(), METHODS["none"], [], 10)
    assert plain.round_config(4) == {}


def test_statistics_reference_pools_sources_and_weights_follow_the_shift():
    rng = np.random.default_rng(0)
    s = state(alignment="statistics", branch_weights="shift")
    src = {b: Stats.of(rng.normal(size=(100, 3))) for b in ("acc", "gyro", "fused")}
    tgt = {"acc": Stats.of(rng.normal(size=(100, 3)) + 0.2), "gyro": Stats.of(rng.normal(size=(100, 3)) + 2.0),
           "fused": Stats.of(rng.normal(size=(100, 3)))}
    s.update([src, src], [tgt])
    assert s.reference["acc"].count == 200
    w = s.weights()
    assert w["gyro"] > 1.0 > w["acc"] and w["fused"] == 1.0  # the moved modality weighs more
    assert w["acc"] + w["gyro"] == pytest.approx(2.0)
    assert set(s.reference_arrays()) == {f"stats.{b}.{k}" for b in ("acc", "gyro", "fused") for k in ("mean", "cov")}
    assert s.round_config(2)["stats.acc.count"] == 200


def test_domain_balanced_weights():
    assert domain_balanced([30, 10, 20], [False, False, True]) == pytest.approx([0.375, 0.125, 0.5])
    assert domain_balanced([3, 1], [False, False]) == [3, 1]


def train_reply(node, disc, other, n, target):
    content = RecordDict({
        protocol.ARRAYS: ArrayRecord({"discriminators.fused.w": Array(np.array([disc], np.float32)),
                                      "encoders.w": Array(np.array([other], np.float32))}),
        protocol.METRICS: MetricRecord({
            protocol.NUM_EXAMPLES: n, protocol.TASK_WINDOWS: 0 if target else n, protocol.LOSS_TASK: 0.0 if target else 2.0, protocol.TRAIN_STEPS: 1, protocol.IS_TARGET: target,
            protocol.PARTITION: node, "loss-domain.fused": 0.1, "disc-acc.fused": 1.0 if target else 0.0,
        }),
    })
    from flwr.app import Message
    return Message(content=content, metadata=_meta(node))


def test_federated_discriminators_average_with_both_domains_counting_half():
    s = make(adaptation=AdaptationState(AdaptConfig(method="dann", alignment="federated"), METHODS["dann"], ["fused"], 10))
    arrays, _ = s.aggregate_train(1, [
        train_reply(1, disc=0.0, other=0.0, n=300, target=0),
        train_reply(2, disc=0.0, other=0.0, n=500, target=0),
        train_reply(3, disc=1.0, other=1.0, n=200, target=1),
    ])
    assert arrays["encoders.w"].numpy()[0] == pytest.approx(0.2)  # by windows
    assert arrays["discriminators.fused.w"].numpy()[0] == pytest.approx(0.5)  # balanced
    assert s.stats.adapt_acc["fused"] == pytest.approx(0.5)
    assert s.stats.train["loss_task"] == pytest.approx(2.0)  # targets' windows carry no task loss


def test_branches_without_an_adversarial_step_report_no_discriminator_numbers():
    """Statistics reference, first round: no reference yet, no step, nothing to
    average; an accuracy of 0 would read as a perfectly wrong discriminator."""
    s = make(adaptation=AdaptationState(AdaptConfig(method="dann", alignment="statistics"), METHODS["dann"], ["fused"], 10))
    first = train_reply(3, disc=1.0, other=1.0, n=200, target=1)
    first.content[protocol.METRICS] = MetricRecord(
        {**dict(first.content[protocol.METRICS]), "loss-domain.fused": 0.0, "disc-acc.fused": 0.0})
    s.aggregate_train(1, [train_reply(1, disc=0.0, other=0.0, n=300, target=0), first])
    assert s.stats.adapt_acc == {} and s.stats.train["loss_domain"] == {}
    s.aggregate_train(2, [train_reply(1, disc=0.0, other=0.0, n=300, target=0),
                          train_reply(3, disc=1.0, other=1.0, n=200, target=1)])
    assert s.stats.adapt_acc == {"fused": pytest.approx(1.0)}  # only the target stepped
