"""m3bat_local: a method object with its device steps and its server state,
exercised without Flower on synthetic devices."""

from __future__ import annotations

import copy
import json

import numpy as np
import torch

from fedsense import protocol
from fedsense.configfile import load
from fedsense.data.clients import load_client_data
from fedsense.methods import METHODS, Method, Reply, Step
from fedsense.methods.base import ServerState
from fedsense.models import DataSpec
from fedsense.runmodel import build_run_model, sharing_of
from fedsense.params import shared_arrays
from tests.conftest import SYNTHETIC


def cfg_of(method: str = "m3bat_local", *more: str):
    return load(SYNTHETIC, [f"adapt.method={method}", "adapt.stats_min_count=8", *more])


def step(cfg, pid: int, model=None, payload=None, config=None) -> Step:
    data = load_client_data(cfg, {"partition-id": pid, "num-partitions": 6})
    model = model or build_run_model(DataSpec(data.train.shapes(), 4), cfg)
    return Step(cfg, model, data, {"server-round": 3, "local-epochs": 1, "lr": 0.003, **(config or {})},
                payload or {}, seed=pid)


def test_every_method_is_one_registered_object_with_both_sides():
    for name in METHODS:
        method = METHODS[name]
        assert isinstance(method, Method) and method.name == name and method.description
        assert isinstance(method.server(cfg_of(name), ["fused"]), ServerState)


def test_sources_train_exactly_as_source_only_fedavg():
    """Under m3bat_local the shared model is source-only FedAvg's: a source's
    train step gives bit-identical shared arrays (its calibration stays put)."""
    results = {}
    for name in ("none", "m3bat_local"):
        cfg = cfg_of(name)
        s = step(cfg, 0)
        METHODS[name].train(s)
        results[name] = shared_arrays(s.model, sharing_of(cfg))
    assert results["none"].keys() == results["m3bat_local"].keys()
    for k in results["none"]:
        np.testing.assert_array_equal(results["none"][k], results["m3bat_local"][k])


def _server(cfg):
    """The default method, its model and a fresh server state."""
    method = METHODS["m3bat_local"]
    model = build_run_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), cfg)
    return method, model, method.server(cfg, list(model.discriminators))


def _federation_round(cfg, state, model):
    """One evaluate round: every source reports; returns the source replies."""
    replies = []
    for pid in range(5):
        s = step(cfg, pid, copy.deepcopy(model))
        result = METHODS["m3bat_local"].evaluate(s)
        replies.append(Reply(pid, False, result.metrics, result.records))
    state.after_evaluate(replies)
    return replies


def test_server_pools_source_statistics_and_a_target_adapts_with_them():
    cfg = cfg_of()
    method, model, state = _server(cfg)
    sources = _federation_round(cfg, state, model)
    payload = state.evaluate_payload(4)
    assert set(payload) == {protocol.RAW, protocol.CLASS_STATS}
    counts = payload[protocol.CLASS_STATS]["class.fused.count"]
    assert counts.sum() == sum(r.records[protocol.CLASS_STATS]["class.fused.count"].sum() for r in sources)
    target = step(cfg, 5, copy.deepcopy(model), payload, state.evaluate_config(4))
    before = copy.deepcopy(target.model.state_dict())
    result = method.evaluate(target)
    assert result.keep and any(not torch.equal(v, before[k]) for k, v in target.model.state_dict().items())
    # every reply carries every field, whatever the role
    assert result.records.keys() == sources[0].records.keys()
    assert result.metrics.keys() == sources[0].metrics.keys()
    for name, arrays in result.records.items():
        assert {k: v.shape for k, v in arrays.items()} == {k: v.shape for k, v in sources[0].records[name].items()}
    assert not result.records[protocol.CLASS_STATS]["class.fused.count"].any()  # a target reports no class
    assert any(k.startswith("adapted/") for k in target.state)  # what it evaluated with, for export


def test_a_malformed_source_record_is_refused_and_the_rest_pooled():
    cfg = cfg_of()
    method, model, state = _server(cfg)
    honest = _federation_round(cfg, state, model)
    liar_records = {k: dict(v) for k, v in honest[0].records.items()}
    liar_records[protocol.RAW]["raw.acc.count"] = np.full(4, 10 ** 12)
    state.after_evaluate([Reply(9, False, honest[0].metrics, liar_records), honest[1]])
    assert len(state.refused) == 1 and "node 9" in state.refused[0] and "raw.acc.count" in state.refused[0]
    assert state.raw["acc"].count.sum() == honest[1].records[protocol.RAW]["raw.acc.count"].sum()  # node 1 alone


def test_the_server_state_survives_a_resume_point():
    cfg = cfg_of()
    method, model, first = _server(cfg)
    _federation_round(cfg, first, model)
    doc, arrays = first.snapshot()
    second = method.server(cfg, list(model.discriminators))
    second.restore(json.loads(json.dumps(doc)), arrays)
    a, b = first.evaluate_payload(5), second.evaluate_payload(5)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys()
        for k in a[name]:
            np.testing.assert_allclose(a[name][k], b[name][k], rtol=1e-6)
    assert first.shifts().keys() == second.shifts().keys()


def test_ablation_switches_change_the_model_and_the_steps():
    plain = build_run_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), cfg_of())
    assert plain.calibration is not None and len(plain.discriminators) == 0  # the default aligns nothing
    aligned = build_run_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), cfg_of("m3bat_local",
                                                                                   "adapt.align_branches=all"))
    assert set(aligned.discriminators) == {"acc", "gyro", "fused"}
    no_cal = build_run_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), cfg_of("m3bat_local",
                                                                                  "adapt.calibration=false"))
    assert no_cal.calibration is None
    fused = build_run_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), cfg_of("m3bat_local",
                                                                                 "adapt.align_branches=fused"))
    assert set(fused.discriminators) == {"fused"}
    none = build_run_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), cfg_of("m3bat_local",
                                                                                "adapt.align_branches=none"))
    assert len(none.discriminators) == 0
    cfg = cfg_of("m3bat_local", "adapt.self_training=false", "adapt.calibration=false")
    target = step(cfg, 5)
    before = copy.deepcopy(target.model.state_dict())
    METHODS["m3bat_local"].evaluate(target)
    changed = {k for k, v in target.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed <= {k for k in before if "running_" in k or "num_batches" in k}  # at most its own statistics


def test_self_training_carries_on_across_rounds_only_while_it_helps(monkeypatch):
    """A target keeps its self-training's change of the BatchNorm affine
    parameters and starts the next round from it when the objective is lower
    with it; otherwise the round starts from the global values."""
    import fedsense.methods.local as local

    cfg = cfg_of("m3bat_local", "adapt.calibration=false", "adapt.align_branches=none",
                 "adapt.self_training_threshold=0")
    method = METHODS["m3bat_local"]
    first = step(cfg, 5)
    method.evaluate(first)
    delta = {k: v for k, v in first.state.items() if k.startswith(local.DELTA)}
    assert delta and any(np.abs(v).sum() > 0 for v in delta.values())
    seen = []
    real_self_train = local.self_train

    def spy(model, *args, **kwargs):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return real_self_train(model, *args, **kwargs)

    monkeypatch.setattr(local, "self_train", spy)
    key = next(iter(delta))[len(local.DELTA):]
    for helps in (True, False):
        scores = iter([0.0, 0.0, -1.0 if helps else 1.0])  # global and own statistics, then resumed
        monkeypatch.setattr(local, "im_score", lambda m, d, _s=scores: next(_s))
        again = step(cfg, 5, payload={}, config={"server-round": 4})
        again.state = dict(first.state)
        start = again.model.state_dict()[key].clone()
        method.evaluate(again)
        expected = start + torch.as_tensor(delta[local.DELTA + key]) if helps else start
        torch.testing.assert_close(seen[-1][key], expected)


def test_a_method_is_one_module_found_by_the_package():
    """Every module of fedsense/methods/ with a Method object registers it:
    adding a method is adding a file."""
    import importlib
    import pkgutil

    import fedsense.methods as package

    found = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"fedsense.methods.{info.name}")
        found |= {obj.name for obj in vars(module).values() if isinstance(obj, Method)}
    assert found == set(METHODS) and {"none", "m3bat_local", "fedbn", "fedbn_stats"} <= found
