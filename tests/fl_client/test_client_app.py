"""The ClientApp handlers, called directly with hand-built Messages and Contexts."""

from __future__ import annotations

import os

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MessageType, RecordDict

from fedsense import protocol
from fedsense.config import ConfigError
from fedsense.data.base import DatasetError
from fedsense.methods import METHODS
from fedsense.models import DataSpec, build_model
from fedsense.params import shared_arrays
from fl_client.client_app import evaluate, query, train
from fl_client.device_state import LOCAL_STATE
from tests.conftest import SYNTHETIC
from tests.fl_client.messages import device_context, global_arrays, server_message


@pytest.fixture
def model_cfg(synthetic_cfg):
    return synthetic_cfg.model


def test_train_reply_has_shared_arrays_and_metrics(tmp_path, model_cfg):
    start = global_arrays(model_cfg)
    reply = train(server_message(MessageType.TRAIN, start), device_context(0, tmp_path))
    arrays = {k: v.numpy() for k, v in reply.content[protocol.ARRAYS].items()}
    assert set(arrays) == set(start)
    assert any(not np.array_equal(arrays[k], start[k]) for k in start), "training changed nothing"
    metrics = reply.content[protocol.METRICS]
    assert metrics[protocol.NUM_EXAMPLES] > 0
    assert metrics[protocol.IS_TARGET] == 0
    assert metrics[protocol.PARTITION] == 0
    assert metrics[protocol.TRAIN_STEPS] > 0


def test_target_client_does_not_train_source_only(tmp_path, model_cfg):
    start = global_arrays(model_cfg)
    reply = train(server_message(MessageType.TRAIN, start), device_context(5, tmp_path))  # subject 6: target
    metrics = reply.content[protocol.METRICS]
    assert metrics[protocol.IS_TARGET] == 1
    assert metrics[protocol.NUM_EXAMPLES] == 0
    arrays = {k: v.numpy() for k, v in reply.content[protocol.ARRAYS].items()}
    assert all(np.array_equal(arrays[k], start[k]) for k in start)


def test_train_is_deterministic_per_round_and_client(tmp_path, model_cfg):
    start = global_arrays(model_cfg)
    a = train(server_message(MessageType.TRAIN, start), device_context(1, tmp_path))
    b = train(server_message(MessageType.TRAIN, start), device_context(1, tmp_path))
    c = train(server_message(MessageType.TRAIN, start, server_round=2), device_context(1, tmp_path))
    key = next(iter(start))
    assert np.array_equal(a.content[protocol.ARRAYS][key].numpy(), b.content[protocol.ARRAYS][key].numpy())
    assert not np.array_equal(a.content[protocol.ARRAYS][key].numpy(), c.content[protocol.ARRAYS][key].numpy())


def test_evaluate_returns_flat_confusion_of_held_out_windows(tmp_path, model_cfg):
    reply = evaluate(server_message(MessageType.EVALUATE, global_arrays(model_cfg)), device_context(5, tmp_path))
    metrics = reply.content[protocol.METRICS]
    confusion = np.asarray(metrics[protocol.CONFUSION])
    assert confusion.shape == (16,)
    assert confusion.sum() == metrics[protocol.EVAL_WINDOWS] == metrics[protocol.NUM_EXAMPLES] > 0
    assert metrics[protocol.IS_TARGET] == 1
    assert protocol.ARRAYS not in reply.content


def test_query_describes_data_without_samples(tmp_path):
    reply = query(server_message(protocol.QUERY_MESSAGE, None), device_context(2, tmp_path))
    metrics = dict(reply.content[protocol.METRICS])
    spec = DataSpec.from_metrics(metrics)
    assert spec.shapes == {"acc": (3, 64), "gyro": (3, 64)}
    assert spec.num_classes == 4
    assert not reply.content.array_records
    assert all(not isinstance(v, list) for v in metrics.values()), "a query reply carries no lists"


def _device_context(data_path: str, tmp_path) -> Context:
    ctx = device_context(0, tmp_path)
    return Context(run_id=1, node_id=7, node_config={protocol.NODE_DATA_PATH: data_path},
                   state=RecordDict(), run_config=ctx.run_config)


@pytest.mark.parametrize("handler, kind", [(train, MessageType.TRAIN), (evaluate, MessageType.EVALUATE),
                                           (query, protocol.QUERY_MESSAGE)])
def test_bad_device_data_is_an_error_reply_naming_the_problem(tmp_path, model_cfg, handler, kind):
    broken = tmp_path / "broken.npz"
    np.savez(broken, x_acc=np.zeros((4, 3, 64), np.float32), subject=np.zeros(4, np.int64))  # no "y"
    for path, named in [(str(tmp_path / "absent.npz"), "absent.npz"), (str(broken), "'y'")]:
        reply = handler(server_message(kind, global_arrays(model_cfg)), _device_context(path, tmp_path))
        assert reply.has_error() and not reply.has_content()
        assert reply.error.code == protocol.ERROR_BAD_INPUT
        assert reply.error.reason.startswith("DatasetError: ") and named in reply.error.reason
        assert "Traceback" not in reply.error.reason


def test_a_bug_is_not_disguised_as_bad_input(tmp_path, model_cfg):
    # Only bad input becomes an error reply; anything else still raises (Flower
    # then reports it with its traceback in the device's log).
    arrays = global_arrays(model_cfg)
    del arrays[next(iter(arrays))]
    with pytest.raises(Exception) as info:
        train(server_message(MessageType.TRAIN, arrays), device_context(0, tmp_path))
    assert not isinstance(info.value, (ConfigError, DatasetError))


def test_mismatched_global_arrays_fail_with_clear_error(tmp_path, model_cfg):
    arrays = global_arrays(model_cfg)
    key = next(iter(arrays))
    arrays[key] = np.zeros((1, 2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        train(server_message(MessageType.TRAIN, arrays), device_context(0, tmp_path))


def test_local_state_is_kept_in_context_and_reloaded_next_round(tmp_path, model_cfg):
    ctx = device_context(0, tmp_path)
    start = global_arrays(model_cfg)
    train(server_message(MessageType.TRAIN, start), ctx)
    assert LOCAL_STATE in ctx.state  # num_batches_tracked lives on the device
    local = {k: v.numpy() for k, v in ctx.state[LOCAL_STATE].items()}
    assert local and all(k.endswith("num_batches_tracked") for k in local)
    assert all(v.shape == () and int(v) > 0 for v in local.values())
    train(server_message(MessageType.TRAIN, start, server_round=2), ctx)  # loads the state back
    again = {k: int(v.numpy()) for k, v in ctx.state[LOCAL_STATE].items()}
    assert all(again[k] == 2 * int(local[k]) for k in local)  # counted on across rounds


def test_fedbn_target_evaluates_with_statistics_of_its_own_windows(tmp_path, model_cfg):
    """AdaBN: the target's BatchNorm statistics are recomputed on its windows
    under the weights being evaluated, and stay on the device."""
    from fedsense.params import shared_arrays as shared

    ctx = device_context(5, tmp_path, "adapt.method=fedbn_stats")  # subject 6: the target
    arrays = shared(build_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), model_cfg), METHODS["fedbn_stats"])
    assert not any(k.endswith("running_mean") for k in arrays)  # statistics never travel
    evaluate(server_message(MessageType.EVALUATE, arrays), ctx)
    local = {k: v.numpy() for k, v in ctx.state[LOCAL_STATE].items()}
    means = [v for k, v in local.items() if k.endswith("running_mean")]
    assert means and all(np.abs(m).sum() > 0 for m in means)  # not the 0/1 of a fresh layer


def test_a_device_logs_each_message_with_its_process_start_up_cost(tmp_path, model_cfg, capfd):
    from fedsense.data.npz import save_npz
    from fedsense.data.synthetic import make_synthetic_subject
    from fl_client.client_app import process_age

    age = process_age()
    assert age is not None and 0 < age < 24 * 3600  # this test process started a while ago, not in the future
    path = save_npz(make_synthetic_subject(load_cfg().data.synthetic, 0, 2), tmp_path / "device.npz")
    reply = query(server_message(protocol.QUERY_MESSAGE, None), _device_context(str(path), tmp_path))
    assert not reply.has_error()
    line = [ln for ln in capfd.readouterr().err.splitlines() if "fedsense client" in ln][-1]
    assert line.startswith(f"fedsense client INFO {protocol.QUERY_MESSAGE} took ")
    assert f"; process {os.getpid()} started " in line  # one process a message: the pid groups its parts


def load_cfg():
    from fedsense.configfile import load

    return load(SYNTHETIC)


def _update_norm(reply, start) -> float:
    arrays = {k: v.numpy() for k, v in reply.content[protocol.ARRAYS].items()}
    return float(np.sqrt(sum(np.sum((arrays[k].astype(np.float64) - start[k]) ** 2)
                             for k in start if np.issubdtype(start[k].dtype, np.floating))))


def test_the_update_is_clipped_when_the_server_asks(tmp_path, model_cfg):
    start = global_arrays(model_cfg)
    free = _update_norm(train(server_message(MessageType.TRAIN, start), device_context(0, tmp_path)), start)
    msg = server_message(MessageType.TRAIN, start)
    msg.content[protocol.CONFIG][protocol.CFG_CLIPPING_NORM] = free / 4
    clipped = _update_norm(train(msg, device_context(0, tmp_path)), start)
    assert clipped == pytest.approx(free / 4, rel=1e-4)


def test_device_state_outlives_the_run_on_the_devices_disk(tmp_path, model_cfg):
    """A resumed run is a new Flower run with an empty context.state: the
    device's own parameters come back from its disk (fedsense.devicestate)."""
    start = global_arrays(model_cfg)
    run = f"output.dir={tmp_path / 'run'}"
    first = device_context(0, tmp_path, run)
    train(server_message(MessageType.TRAIN, start), first)
    counts = {k: int(v.numpy()) for k, v in first.state[LOCAL_STATE].items()}
    assert (tmp_path / "run" / "devices" / "0" / "local-0001-0.npz").exists()

    resumed = device_context(0, tmp_path, run)  # new run, same device
    train(server_message(MessageType.TRAIN, start, server_round=2), resumed)
    assert {k: int(v.numpy()) for k, v in resumed.state[LOCAL_STATE].items()} == {k: 2 * c for k, c in counts.items()}

    elsewhere = device_context(0, tmp_path, f"output.dir={tmp_path / 'other'}")  # nothing stored there: starts over
    train(server_message(MessageType.TRAIN, start, server_round=2), elsewhere)
    assert {k: int(v.numpy()) for k, v in elsewhere.state[LOCAL_STATE].items()} == counts


@pytest.mark.parametrize("method", ["none", "m3bat"])
def test_a_device_without_a_modality_trains_and_evaluates(tmp_path, model_cfg, method):
    """Every simulated device loses its gyroscope: the gyro branch is neither
    run nor trained, the reply says so, and evaluation works on acc alone."""
    from fedsense.params import Sharing

    model = build_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, num_classes=4), model_cfg, seed=0,
                        adversarial=METHODS[method].branches)
    from fedsense.configfile import load

    cfg = load(SYNTHETIC, [f"adapt.method={method}", "adapt.alignment=federated"])
    start = shared_arrays(model, Sharing(METHODS[method], cfg))
    settings = f"data.drop_modality={{gyro: 1.0}}\nadapt.method={method}\nadapt.alignment=federated"
    msg = server_message(MessageType.TRAIN, start)
    msg.content[protocol.CONFIG][protocol.CFG_COEFF] = 0.5
    reply = train(msg, device_context(1, tmp_path, settings))
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    metrics = reply.content[protocol.METRICS]
    assert metrics[protocol.modality_windows_key("gyro")] == 0 and metrics[protocol.modality_windows_key("acc")] > 0
    trained = {k: v.numpy() for k, v in reply.content[protocol.ARRAYS].items()}
    gyro = [k for k in start if k.startswith(("encoders.gyro.", "discriminators.gyro."))]
    assert gyro and all(np.array_equal(trained[k], start[k]) for k in gyro)  # never run, never trained
    assert any(not np.array_equal(trained[k], start[k]) for k in start if k.startswith("encoders.acc."))
    if method == "m3bat":  # no adversarial step on the missing branch; the others took theirs
        assert metrics[protocol.loss_domain_key("gyro")] == 0.0 and metrics[protocol.loss_domain_key("acc")] > 0
    result = evaluate(server_message(MessageType.EVALUATE, trained), device_context(1, tmp_path, settings))
    assert sum(result.content[protocol.METRICS][protocol.CONFUSION]) > 0


def test_a_real_device_without_a_sensor_runs_the_federations_model_with_it_masked(tmp_path, model_cfg):
    """Its file has no x_gyro at all; the server's config names the model's inputs."""
    from fedsense.data.base import Dataset
    from fedsense.data.clients import load_client_data
    from fedsense.data.npz import save_npz
    from fedsense.runconfig import config_from_run

    cfg = config_from_run(device_context(2, tmp_path).run_config)
    whole = load_client_data(cfg, {"partition-id": 2, "num-partitions": 6}).train
    only_acc = Dataset(x={"acc": whole.x["acc"]}, y=whole.y, subject=whole.subject, domain=whole.domain)
    path = save_npz(only_acc, tmp_path / "watch.npz")
    start = global_arrays(model_cfg)
    ctx = _device_context(str(path), tmp_path)
    asked = query(server_message(protocol.QUERY_MESSAGE, None), ctx).content[protocol.METRICS]
    assert "shape.acc.channels" in asked and "shape.gyro.channels" not in asked  # it says what it has
    msg = server_message(MessageType.TRAIN, start)
    msg.content[protocol.CONFIG].update({"shape.acc.channels": 3, "shape.acc.steps": 64,
                                         "shape.gyro.channels": 3, "shape.gyro.steps": 64})
    reply = train(msg, ctx)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    assert reply.content[protocol.METRICS][protocol.modality_windows_key("gyro")] == 0
    trained = {k: v.numpy() for k, v in reply.content[protocol.ARRAYS].items()}
    assert all(np.array_equal(trained[k], start[k]) for k in start if k.startswith("encoders.gyro."))
    wrong = server_message(MessageType.TRAIN, start)
    wrong.content[protocol.CONFIG].update({"shape.acc.channels": 3, "shape.acc.steps": 128,
                                           "shape.gyro.channels": 3, "shape.gyro.steps": 64})
    refused = train(wrong, ctx)
    assert refused.has_error() and "modality 'acc' has windows of shape (3, 64)" in refused.error.reason


def test_an_adabn_target_adapts_with_forward_passes_only(tmp_path, model_cfg, monkeypatch):
    """Checked, not assumed: any backward pass on the device would raise."""
    import torch

    from fedsense.engine import evaluate as evaluate_model

    def refuse(*args, **kwargs):
        raise AssertionError("a backward pass ran on a backprop-free device")

    start = global_arrays(model_cfg)
    ctx = device_context(5, tmp_path, "adapt.method=adabn")  # partition 5: the synthetic target
    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    monkeypatch.setattr(torch.autograd, "backward", refuse)
    reply = train(server_message(MessageType.TRAIN, start), ctx)
    metrics = reply.content[protocol.METRICS]
    assert metrics[protocol.IS_TARGET] == 1 and metrics[protocol.TRAIN_STEPS] == 0 and metrics[protocol.NUM_EXAMPLES] == 0
    adapted = evaluate(server_message(MessageType.EVALUATE, start), ctx).content[protocol.METRICS]
    # the same target without renormalising: the global statistics
    from fedsense.data.clients import load_client_data
    from fedsense.runconfig import config_from_run

    monkeypatch.undo()
    data = load_client_data(config_from_run(ctx.run_config), {"partition-id": 5, "num-partitions": 6})
    model = build_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), model_cfg, seed=0)
    plain = evaluate_model(model, data.test, 4)
    assert adapted[protocol.CONFUSION] != [int(v) for v in np.asarray(plain["confusion"]).ravel()]
    assert adapted[protocol.COMPUTE_SECONDS] > 0


def test_a_generated_target_takes_the_servers_statistics_without_a_backward_pass(tmp_path, model_cfg, monkeypatch):
    import torch

    from fedsense.generator import norm_keys

    def refuse(*args, **kwargs):
        raise AssertionError("a backward pass ran on a backprop-free device")

    start = global_arrays(model_cfg)
    source, target = device_context(0, tmp_path, "adapt.method=generated"), device_context(5, tmp_path, "adapt.method=generated")
    told = evaluate(server_message(MessageType.EVALUATE, start), source).content
    assert set(told[protocol.NORM].keys()) == set(norm_keys(build_model(
        DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), model_cfg)))
    assert len(told[protocol.METRICS][protocol.DESCRIPTOR]) == 2 * (3 + 3)

    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    monkeypatch.setattr(torch.autograd, "backward", refuse)
    train(server_message(MessageType.TRAIN, start), target)
    plain = evaluate(server_message(MessageType.EVALUATE, start), target).content
    assert protocol.NORM not in plain.array_records  # a target sends its descriptor only
    generated = {k: v.numpy() for k, v in told[protocol.NORM].items()}  # say, the source's statistics
    msg = server_message(MessageType.EVALUATE, start)
    msg.content[protocol.GENERATED] = ArrayRecord({k: Array(v) for k, v in generated.items()})
    given = evaluate(msg, target).content[protocol.METRICS]
    monkeypatch.undo()
    # the same as evaluating the global model with those statistics loaded
    from fedsense.data.clients import load_client_data
    from fedsense.engine import evaluate as evaluate_model
    from fedsense.params import load_arrays
    from fedsense.runconfig import config_from_run

    model = build_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), model_cfg, seed=0)
    load_arrays(model, {**start, **generated}, strict_keys=set(start))
    data = load_client_data(config_from_run(target.run_config), {"partition-id": 5, "num-partitions": 6})
    expected = evaluate_model(model, data.test, 4)["confusion"]
    assert given[protocol.CONFUSION] == [int(v) for v in np.asarray(expected).ravel()]
    assert given[protocol.CONFUSION] != plain[protocol.METRICS][protocol.CONFUSION]


def test_a_device_never_sends_statistics_of_fewer_windows_than_its_own_floor(tmp_path, model_cfg):
    """The run config and the server's messages come from the server: they
    may raise the floor on the windows behind a statistic, never lower it
    below the device's (protocol.MIN_COUNT, or its node config's min-count)."""
    from fedsense.configfile import from_dict
    from fedsense.runmodel import build_run_model, sharing_of

    projector, rows, windows = {}, {}, {}
    for floor in (None, 7):  # the server asks for centroids of at least 1 window; 6 held-out windows a class
        msg = server_message(MessageType.EVALUATE, global_arrays(model_cfg))
        msg.content[protocol.CONFIG] = ConfigRecord({**dict(msg.content[protocol.CONFIG]), protocol.CFG_PROJECTOR: 1})
        ctx = device_context(0, tmp_path)
        if floor is not None:
            ctx.node_config = {**ctx.node_config, protocol.NODE_MIN_COUNT: floor}
        metrics = evaluate(msg, ctx).content[protocol.METRICS]
        projector[floor] = metrics[protocol.EMBED_COUNT]
        rows[floor] = np.asarray(metrics[protocol.CONFUSION]).reshape(4, 4).sum(axis=1).tolist()
        windows[floor] = metrics[protocol.EVAL_WINDOWS]
    assert projector[None] == [6, 6, 6, 6] and projector[7] == [0, 0, 0, 0]
    assert rows[None] == [6, 6, 6, 6] and rows[7] == [0, 0, 0, 0]  # no confusion row of fewer windows either
    assert windows[None] == windows[7] == 24  # the loss and window count are of every window

    overrides = "adapt.method=m3bat\nadapt.alignment=statistics\nadapt.stats_min_count=8"
    run_cfg = from_dict({"model": {"channels": [16, 32], "embed_dim": 32},
                         "adapt": {"method": "m3bat", "alignment": "statistics"}})
    start = shared_arrays(build_run_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), run_cfg),
                          sharing_of(run_cfg))
    sent = {}
    for floor in (None, 1000):
        ctx = device_context(0, tmp_path, overrides)
        if floor is not None:
            ctx.node_config = {**ctx.node_config, protocol.NODE_MIN_COUNT: floor}
        metrics = evaluate(server_message(MessageType.EVALUATE, start), ctx).content[protocol.METRICS]
        sent[floor] = {k: v for k, v in metrics.items() if k.startswith("stats.") and k.endswith("count")}
    assert sent[None] and all(v > 0 for v in sent[None].values())  # 64 training windows >= 8
    assert sent[1000].keys() == sent[None].keys() and not any(sent[1000].values())  # nothing below the device's floor

    bad = device_context(0, tmp_path)
    bad.node_config = {**bad.node_config, protocol.NODE_MIN_COUNT: "few"}
    reply = evaluate(server_message(MessageType.EVALUATE, global_arrays(model_cfg)), bad)
    assert reply.has_error() and "min-count" in reply.error.reason
