"""The server holds replies to what each device declared before round 1."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord

from fedsense import protocol
from strategies.roster import Declared, Roster, declaration
from tests.strategies.test_fedsense_strategy import eval_reply, make, train_reply

ROSTER = {1: Declared(False, 100, 40), 2: Declared(False, 100, 40), 3: Declared(True, 80, 30)}


def strategy(**kw):
    s = make(num_classes=2, min_replies=1, roster=Roster(ROSTER), **kw)
    s.current_arrays = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    return s


def test_a_declaration_is_a_role_and_two_window_counts():
    ok = declaration({protocol.IS_TARGET: 1, protocol.SPEC_TRAIN_WINDOWS: 80, protocol.SPEC_TEST_WINDOWS: 30})
    assert ok == Declared(True, 80, 30) and ok.label(12345) == "node 12345 (target)"
    numbered = declaration({protocol.IS_TARGET: 0, protocol.SPEC_TRAIN_WINDOWS: 80, protocol.SPEC_TEST_WINDOWS: 30,
                            protocol.PARTITION: 3})
    assert numbered == Declared(False, 80, 30, 3) and numbered.label(12345) == "client 3 (source)"
    odd = declaration({protocol.IS_TARGET: 0, protocol.SPEC_TRAIN_WINDOWS: 8, protocol.SPEC_TEST_WINDOWS: 3,
                       protocol.PARTITION: -2.5})
    assert odd.partition == -1  # a number that is no partition id names nothing
    assert "is-target" in declaration({protocol.IS_TARGET: 2, protocol.SPEC_TRAIN_WINDOWS: 1, protocol.SPEC_TEST_WINDOWS: 1})
    assert "window counts" in declaration({protocol.IS_TARGET: 0, protocol.SPEC_TRAIN_WINDOWS: 1e12,
                                           protocol.SPEC_TEST_WINDOWS: 1})


def test_a_role_lie_and_an_examples_lie_are_refused_and_do_not_move_the_average():
    s = strategy()
    liar = train_reply(2, np.array([100.0, 100.0]), n=100, target=1)  # a source claiming to be a target
    greedy = train_reply(3, np.array([-50.0, -50.0]), n=10 ** 12, target=1)  # 10^12 windows
    arrays, _ = s.aggregate_train(1, [train_reply(1, np.array([1.0, 2.0]), n=100), liar, greedy])
    np.testing.assert_allclose(arrays["w"].numpy(), [1.0, 2.0])
    assert len(s.stats.rejected) == 2
    assert "node 2: is-target 1 contradicts the role it declared (source)" in s.stats.rejected[0]
    assert "num-examples 1000000000000 is not a count of at most the 80 training windows" in s.stats.rejected[1]


def test_confusion_and_statistics_beyond_the_declared_windows_are_refused_not_summed():
    seen = []
    s = strategy(on_round_end=lambda r, rec, arrays: seen.append(rec))
    honest = eval_reply(1, np.array([[10, 2], [3, 20]]), 0)
    inflated = eval_reply(2, np.array([[10 ** 9, 0], [0, 5]]), 0)
    inflated.content[protocol.METRICS] = MetricRecord({**dict(inflated.content[protocol.METRICS]),
                                                       protocol.NUM_EXAMPLES: 5, protocol.EVAL_WINDOWS: 5})
    counted = eval_reply(3, np.array([[5, 0], [0, 5]]), 1)
    counted.content[protocol.METRICS] = MetricRecord({**dict(counted.content[protocol.METRICS]), "stats.fused.count": 10 ** 12})
    s.aggregate_evaluate(1, [honest, inflated, counted])
    (rec,) = seen
    assert rec["confusion"] == {"source": [[10, 2], [3, 20]]}
    assert any("node 2: confusion does not count at most the 40 test windows" in e for e in rec["errors"])
    assert any("node 3: stats.fused.count 1000000000000" in e for e in rec["errors"])


def test_a_node_never_queried_is_held_to_its_first_reply():
    roster = Roster()
    assert roster.check_train(7, {protocol.IS_TARGET: 0, protocol.NUM_EXAMPLES: 50}) is None
    assert roster.declared[7] == Declared(False, 50, 10_000_000) and roster.first_use == {7}
    assert "contradicts" in roster.check_train(7, {protocol.IS_TARGET: 1, protocol.NUM_EXAMPLES: 50})
    assert "at most the 50 training windows" in roster.check_train(7, {protocol.IS_TARGET: 0, protocol.NUM_EXAMPLES: 51})
