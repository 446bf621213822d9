"""The strategy's differential privacy (clipping asked, noise added,
epsilon reported) and its resume snapshot."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from fedsense import protocol
from fedsense.methods import METHODS, Reply
from fedsense.adaptation.statistics import Stats, to_wire
from fedsense.config import ConfigError, PrivacyConfig
from fedsense.configfile import from_dict
from fedsense.privacy import epsilon
from tests.strategies.test_fedsense_strategy import eval_reply, make, train_reply

DP = PrivacyConfig(dp=True, noise_multiplier=1.0, clipping_norm=2.0, delta=1e-5)


def test_the_clipping_norm_travels_under_flowers_key(monkeypatch):
    assert protocol.CFG_CLIPPING_NORM == KEY_CLIPPING_NORM  # Flower's client-side fixed clipping contract
    captured = []
    monkeypatch.setattr(FedAvg, "configure_train", lambda self, r, a, config, g: captured.append(dict(config)) or [])
    make(privacy=DP).configure_train(1, ArrayRecord(), ConfigRecord({"num-classes": 2}), grid=None)
    make().configure_train(1, ArrayRecord(), ConfigRecord({"num-classes": 2}), grid=None)
    assert captured[0][protocol.CFG_CLIPPING_NORM] == 2.0
    assert protocol.CFG_CLIPPING_NORM not in captured[1]


def test_the_average_gets_noise_for_the_largest_share_and_epsilon_is_reported():
    records = []
    s = make(privacy=DP, on_round_end=lambda r, rec, a: records.append(rec))
    for r in (1, 2):
        # the devices send back the global arrays they received (no update): all the change is noise
        w = s.current_arrays["w"].numpy() if s.current_arrays is not None else np.zeros(100_000)
        arrays, _ = s.aggregate_train(r, [train_reply(1, w, n=1), train_reply(2, w, n=3)])
        arrays = ArrayRecord({"w": Array(arrays["w"].numpy() - w)})
        s.aggregate_evaluate(r, [eval_reply(1, np.eye(2, dtype=int) * 5, 0)])
        # one device holds 3/4 of the average: std = z * C * 3/4
        assert float(arrays["w"].numpy().std()) == pytest.approx(1.0 * 2.0 * 0.75, rel=0.02)
    assert [rec["privacy"]["releases"] for rec in records] == [1, 2]
    assert records[1]["privacy"]["epsilon"] == pytest.approx(epsilon(1.0, 2, 1e-5))
    assert records[0]["privacy"]["epsilon"] < records[1]["privacy"]["epsilon"]
    assert records[1]["privacy"]["noise_std"] == pytest.approx(1.5)
    json.dumps(records)  # plain JSON for metrics.jsonl


def test_without_dp_nothing_is_added():
    s = make()
    arrays, _ = s.aggregate_train(1, [train_reply(1, np.zeros(10), n=1), train_reply(2, np.zeros(10), n=3)])
    assert not arrays["w"].numpy().any()


def test_dp_needs_the_plain_mean():
    with pytest.raises(ConfigError, match="privacy.dp: needs fed.aggregation 'mean'"):
        from_dict({"privacy": {"dp": True}, "fed": {"aggregation": "median"}})
    with pytest.raises(ConfigError, match="privacy.clipping_norm"):
        from_dict({"privacy": {"clipping_norm": 0}})
    with pytest.raises(ConfigError, match="privacy.delta"):
        from_dict({"privacy": {"delta": 1.5}})


def _adapting():
    cfg = from_dict({"adapt": {"method": "m3bat", "alignment": "statistics"}, "fed": {"rounds": 6}})
    return METHODS["m3bat"].server(cfg, ["acc", "fused"])


def test_a_restored_strategy_continues_the_rounds_and_the_reference():
    rng = np.random.default_rng(0)
    first = make(method_state=_adapting(), privacy=DP)
    stats = {b: Stats.of(rng.normal(size=(50, 3))) for b in ("acc", "fused")}
    arrays_, counts = to_wire(stats)
    first.method_state.after_evaluate([Reply(1, False, counts, {protocol.STATS: arrays_})])
    first.aggregate_train(1, [train_reply(1, np.zeros(4), n=2), train_reply(2, np.ones(4), n=2)])
    first.aggregate_evaluate(1, [eval_reply(1, np.eye(2, dtype=int), 0)])
    state, arrays = first.snapshot()
    state = json.loads(json.dumps(state))  # through the resume file's JSON

    second = make(method_state=_adapting(), privacy=DP)
    second.restore(state, arrays)
    assert second.rounds_done == 1 and second.releases == 1 and second.totals == first.totals
    assert second.history == json.loads(json.dumps(first.history))
    for b in ("acc", "fused"):
        assert second.method_state.reference[b].count == 50
        np.testing.assert_array_equal(second.method_state.reference[b].cov, first.method_state.reference[b].cov)
    assert second.method_state.train_config(2) == first.method_state.train_config(2)
    # Flower's start() counts from 1 again; the hooks carry on from round 2
    seen = []
    second.on_round_end = lambda r, rec, a: seen.append(r)
    second.aggregate_train(1, [train_reply(1, np.zeros(4), n=2)])
    second.aggregate_evaluate(1, [eval_reply(1, np.eye(2, dtype=int), 0)])
    assert seen == [2] and len(second.history) == 2


def test_under_dp_an_update_longer_than_the_clipping_norm_is_refused():
    """Every device clips to privacy.clipping_norm; the noise is calibrated to
    it. An update that is longer was not clipped and is refused."""
    s = make(privacy=DP)
    s.current_arrays = ArrayRecord({"w": Array(np.zeros(4, np.float32))})
    bound = DP.clipping_norm
    clipped = train_reply(1, np.full(4, bound / 2), n=2)  # norm = bound exactly
    unclipped = train_reply(2, np.full(4, bound), n=2)  # norm = 2 x bound
    s.aggregate_train(1, [clipped, unclipped])
    assert len(s.stats.rejected) == 1 and "node 2: update norm" in s.stats.rejected[0]
    assert "exceeds privacy.clipping_norm" in s.stats.rejected[0]
