"""Generated normalisation on the server: fitted on sources, sent to each target alone."""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord

from fedsense import protocol
from fedsense.methods import Reply
from fedsense.methods.generated import GenerationState
from tests.strategies.test_fedsense_strategy import make


def _reply(node: int, descriptor: np.ndarray, mean: np.ndarray | None, target: int) -> Reply:
    records = {}
    if mean is not None:
        records[protocol.NORM] = {"bn.running_mean": mean.astype(np.float32),
                                  "bn.running_var": np.exp(mean).astype(np.float32)}
    return Reply(node=node, target=bool(target), metrics={protocol.DESCRIPTOR: [float(v) for v in descriptor]},
                 records=records)


def test_targets_get_statistics_generated_from_their_descriptor_by_what_sources_showed():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3))
    sources = [(d := rng.normal(size=4), d @ w) for _ in range(12)]
    probe = rng.normal(size=4)
    replies = [_reply(i + 10, d, m, 0) for i, (d, m) in enumerate(sources)] + [_reply(99, probe, None, 1)]
    state = GenerationState(ridge=1e-6)
    state.after_evaluate(replies)
    assert state.sources_fitted == 12 and set(state.generated) == {99}
    np.testing.assert_allclose(state.generated[99]["bn.running_mean"], probe @ w, atol=1e-3)
    np.testing.assert_allclose(state.generated[99]["bn.running_var"], np.exp(probe @ w), rtol=1e-3)


def test_too_few_sources_or_broken_descriptors_generate_nothing():
    state = GenerationState()
    one = [_reply(1, np.ones(4), np.zeros(3), 0), _reply(2, np.ones(4), None, 1)]
    state.after_evaluate(one)
    assert state.generated == {}
    broken = [_reply(i, np.full(4, np.nan), np.zeros(3), 0) for i in range(5)]
    state.after_evaluate(broken)
    assert state.generated == {} and state.sources_fitted == 0


def test_only_the_target_it_was_generated_for_receives_it(monkeypatch):
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.serverapp.strategy import FedAvg
    from flwr.supercore.task_identity import TaskIdentity

    for field in ("_run_id", "_node_id", "_task_id"):  # what a ServerApp process has
        monkeypatch.setattr(TaskIdentity, field, 1)
    shared = RecordDict({protocol.CONFIG: ConfigRecord({"num-classes": 2})})
    sent = [Message(shared, dst_node_id=n, message_type="evaluate") for n in (5, 6)]
    monkeypatch.setattr(FedAvg, "configure_evaluate", lambda self, r, a, c, g: sent)
    state = GenerationState()
    state.generated = {6: {"bn.running_mean": np.ones(3, np.float32)}}
    messages = list(make(method_state=state).configure_evaluate(1, ArrayRecord(), ConfigRecord(), grid=None))
    assert protocol.GENERATED not in messages[0].content.array_records
    assert protocol.GENERATED in messages[1].content.array_records
    assert protocol.GENERATED not in shared.array_records  # the shared content is left alone


def test_a_device_below_the_floor_describes_nothing(synthetic_cfg):
    """Fewer training windows than adapt.stats_min_count: no descriptor, no
    statistics; a target keeps the global statistics."""
    from dataclasses import replace

    import torch

    from fedsense.data.clients import load_client_data
    from fedsense.methods import METHODS, Step
    from fedsense.models import DataSpec, build_model

    cfg = replace(synthetic_cfg, adapt=replace(synthetic_cfg.adapt, method="generated"))
    data = load_client_data(cfg, {"partition-id": 0, "num-partitions": 6})
    model = build_model(DataSpec(shapes=data.train.shapes(), num_classes=4), cfg.model)
    for floor, described in ((len(data.train), True), (len(data.train) + 1, False)):
        floored = replace(cfg, adapt=replace(cfg.adapt, stats_min_count=floor))
        step = Step(cfg=floored, model=model, data=data, config={}, payload={}, seed=0, state={})
        with torch.no_grad():
            result = METHODS["generated"].evaluate(step)
        assert (protocol.DESCRIPTOR in result.metrics) is described
        assert (protocol.NORM in result.records) is described
