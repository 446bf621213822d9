"""The strategy with an adversarial method's server side: domain-balanced
averaging of federated discriminators and the discriminator numbers of a
round (the method's own tests: tests/fedsense/methods/test_adversarial.py)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from fedsense import protocol
from fedsense.configfile import from_dict
from fedsense.methods import METHODS
from tests.strategies.test_fedsense_strategy import _meta, make


def dann(alignment: str):
    cfg = from_dict({"adapt": {"method": "dann", "alignment": alignment, "warmup": 0.0}, "fed": {"rounds": 10}})
    return METHODS["dann"].server(cfg, ["fused"])


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
    s = make(method_state=dann("federated"))
    arrays, _ = s.aggregate_train(1, [
        train_reply(1, disc=0.0, other=0.0, n=300, target=0),
        train_reply(2, disc=0.0, other=0.0, n=500, target=0),
        train_reply(3, disc=1.0, other=1.0, n=200, target=1),
    ])
    assert arrays["encoders.w"].numpy()[0] == pytest.approx(0.2)  # by windows
    assert arrays["discriminators.fused.w"].numpy()[0] == pytest.approx(0.5)  # balanced
    assert s.method_state.record(1)["disc_acc"]["fused"] == pytest.approx(0.5)
    assert s.stats.train["loss_task"] == pytest.approx(2.0)  # targets' windows carry no task loss


def test_branches_without_an_adversarial_step_report_no_discriminator_numbers():
    """Statistics reference, first round: no reference yet, no step, nothing to
    average; an accuracy of 0 would read as a perfectly wrong discriminator."""
    s = make(method_state=dann("statistics"))
    first = train_reply(3, disc=1.0, other=1.0, n=200, target=1)
    first.content[protocol.METRICS] = MetricRecord(
        {**dict(first.content[protocol.METRICS]), "loss-domain.fused": 0.0, "disc-acc.fused": 0.0})
    s.aggregate_train(1, [train_reply(1, disc=0.0, other=0.0, n=300, target=0), first])
    assert "disc_acc" not in s.method_state.record(1) and s.stats.train["loss_domain"] == {}
    s.aggregate_train(2, [train_reply(1, disc=0.0, other=0.0, n=300, target=0),
                          train_reply(3, disc=1.0, other=1.0, n=200, target=1)])
    assert s.method_state.record(2)["disc_acc"] == {"fused": pytest.approx(1.0)}  # only the target stepped
