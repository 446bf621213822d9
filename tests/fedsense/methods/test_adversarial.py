"""DANN/M3BAT's server side: the schedule in the round config, the statistics
reference and shift weights, domain-balanced weights, and FADE's safeguards
for federated discriminators."""

from __future__ import annotations

import numpy as np
import pytest

from fedsense import protocol
from fedsense.adaptation.schedules import reversal_coefficient
from fedsense.adaptation.statistics import Stats, to_wire
from fedsense.configfile import from_dict
from fedsense.methods import METHODS, Reply
from fedsense.methods.adversarial import domain_balanced, warmup_rounds

BRANCHES = ["acc", "gyro", "fused"]


def state(method: str = "m3bat", rounds: int = 10, **adapt):
    cfg = from_dict({"adapt": {"method": method, **adapt}, "fed": {"rounds": rounds}})
    return METHODS[method].server(cfg, BRANCHES if method == "m3bat" else ["fused"])


def test_round_config_carries_the_schedule_and_weights():
    cfg = state(lambda_max=0.5, weights={"gyro": 2.0}).train_config(4)
    assert cfg[protocol.CFG_COEFF] == pytest.approx(reversal_coefficient(4, 10, 0.5))
    assert cfg["weight.acc"] == 1.0 and cfg["weight.gyro"] == 2.0 and cfg["weight.fused"] == 1.0
    assert protocol.CFG_ADAPT_ACTIVE not in cfg  # the statistics reference has no warm-up
    assert METHODS["none"].server(from_dict({}), []).train_config(4) == {}


def _stats_reply(node: int, target: bool, stats: dict[str, Stats]) -> Reply:
    arrays, counts = to_wire(stats)
    return Reply(node, target, counts, {protocol.STATS: arrays})


def test_statistics_reference_pools_sources_and_weights_follow_the_shift():
    rng = np.random.default_rng(0)
    s = state(alignment="statistics", branch_weights="shift")
    src = {b: Stats.of(rng.normal(size=(100, 3))) for b in BRANCHES}
    tgt = {"acc": Stats.of(rng.normal(size=(100, 3)) + 0.2), "gyro": Stats.of(rng.normal(size=(100, 3)) + 2.0),
           "fused": Stats.of(rng.normal(size=(100, 3)))}
    s.after_evaluate([_stats_reply(1, False, src), _stats_reply(2, False, src), _stats_reply(3, True, tgt)])
    assert s.reference["acc"].count == 200
    w = s.weights()
    assert w["gyro"] > 1.0 > w["acc"] and w["fused"] == 1.0  # the moved modality weighs more
    assert w["acc"] + w["gyro"] == pytest.approx(2.0)
    payload = s.train_payload(2)[protocol.REFERENCE]
    assert set(payload) == {f"stats.{b}.{k}" for b in BRANCHES for k in ("mean", "cov")}
    assert s.train_config(2)["stats.acc.count"] == 200


def test_domain_balanced_weights():
    assert domain_balanced([30, 10, 20], [False, False, True]) == pytest.approx([0.375, 0.125, 0.5])
    assert domain_balanced([3, 1], [False, False]) == [3, 1]


def test_federated_discriminators_warm_up_source_only_then_follow_the_schedule():
    """FADE: start from the source-only model. The first quarter of the rounds
    take no adversarial step; DANN's schedule then runs over the rest."""
    s = state(alignment="federated", rounds=20)
    cfg = from_dict({"adapt": {"method": "m3bat", "alignment": "federated"}, "fed": {"rounds": 20}})
    assert warmup_rounds(cfg.adapt, 20) == 5
    for r in range(1, 6):
        config = s.train_config(r)
        assert config[protocol.CFG_COEFF] == 0.0 and config[protocol.CFG_ADAPT_ACTIVE] == 0
    assert s.train_config(6)[protocol.CFG_COEFF] == pytest.approx(reversal_coefficient(1, 15))
    assert protocol.CFG_ADAPT_ACTIVE not in s.train_config(6)
    assert s.train_config(20)[protocol.CFG_COEFF] == pytest.approx(reversal_coefficient(15, 15))


def _train_reply(node: int, target: bool, loss: float) -> Reply:
    return Reply(node, target, {"loss-domain.fused": loss, "disc-acc.fused": 0.9}, {})


def test_a_collapsed_federated_discriminator_is_reset_to_its_initial_weights():
    s = state("dann", alignment="federated", disc_reset_loss=0.2)
    initial = {"discriminators.fused.net.0.weight": np.zeros((2, 2)), "encoders.w": np.zeros(3)}
    s.set_initial(initial)
    trained = {"discriminators.fused.net.0.weight": np.ones((2, 2)), "encoders.w": np.ones(3)}
    s.train_config(8)
    s.after_train([_train_reply(1, False, 0.5), _train_reply(2, True, 0.5)], [1.0, 1.0])
    assert s.adjust(trained) == {}  # separating at chance: left alone
    s.after_train([_train_reply(1, False, 0.05), _train_reply(2, True, 0.1)], [1.0, 1.0])
    replaced = s.adjust(trained)
    assert set(replaced) == {"discriminators.fused.net.0.weight"}  # never the encoders
    np.testing.assert_array_equal(replaced["discriminators.fused.net.0.weight"], np.zeros((2, 2)))
    assert s.record(8)["resets"] == {"fused": 1}


def test_no_reset_under_the_statistics_reference():
    s = state("dann", alignment="statistics")
    s.set_initial({"discriminators.fused.w": np.zeros(2)})
    s.train_config(3)
    s.after_train([_train_reply(2, True, 0.01)], [1.0])
    assert s.adjust({"discriminators.fused.w": np.ones(2)}) == {}


def test_a_rounds_record_is_of_its_own_training_after_the_next_round_is_configured():
    """One message a round: round r's record is made once round r+1's
    instructions are out; it reports round r's schedule and discriminators."""
    s = state("dann", alignment="federated", rounds=10)
    s.train_config(4)
    s.after_train([_train_reply(1, False, 0.5), _train_reply(2, True, 0.5)], [1.0, 1.0])
    s.train_config(5)
    assert s.record(4)["lambda"] == pytest.approx(reversal_coefficient(2, 8))  # warm-up 2, then 8 rounds
    assert s.record(4)["disc_acc"] == {"fused": pytest.approx(0.9)}
    assert s.record(5)["lambda"] == pytest.approx(reversal_coefficient(3, 8)) and "disc_acc" not in s.record(5)
