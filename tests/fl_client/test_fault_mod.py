"""The fault-injection mod: the ClientApp called as Flower calls it (``app``,
mods applied), against the handlers called directly (no mod)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, MessageType, RecordDict

from fedsense import protocol
from fedsense.compression import decode
from fedsense.configfile import load
from fedsense.data.clients import load_client_data
from fl_client.client_app import app, evaluate, train
from fl_client.fault_mod import client_fault
from tests.conftest import SYNTHETIC
from tests.fl_client.messages import device_context, global_arrays, server_message


@pytest.fixture
def start(synthetic_cfg):
    return global_arrays(synthetic_cfg.model)


def _arrays(reply) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in reply.content[protocol.ARRAYS].items()}


def _floats(arrays):
    return {k: v for k, v in arrays.items() if np.issubdtype(v.dtype, np.floating)}


def test_without_faults_the_mod_changes_nothing(tmp_path, start):
    direct = train(server_message(MessageType.TRAIN, start), device_context(0, tmp_path))
    through = app(server_message(MessageType.TRAIN, start), device_context(0, tmp_path))
    assert set(_arrays(through)) == set(start)
    for k, v in _arrays(direct).items():
        np.testing.assert_array_equal(_arrays(through)[k], v)
    assert dict(through.content[protocol.METRICS]).keys() == dict(direct.content[protocol.METRICS]).keys()


def test_a_sign_flip_client_sends_the_opposite_change(tmp_path, start):
    honest = _arrays(train(server_message(MessageType.TRAIN, start), device_context(0, tmp_path)))
    flipped = _arrays(app(server_message(MessageType.TRAIN, start), device_context(0, tmp_path, "faults.sign_flip=1.0")))
    for key, value in _floats(flipped).items():
        np.testing.assert_allclose(value, 2 * start[key] - honest[key], rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(flipped[k], honest[k]) for k in _floats(flipped))


def test_a_tampered_compressed_update_is_still_one_compressed_update(tmp_path, start):
    honest = _arrays(train(server_message(MessageType.TRAIN, start), device_context(0, tmp_path)))
    msg = server_message(MessageType.TRAIN, start)
    msg.content[protocol.CONFIG][protocol.CFG_UPDATE_ENCODING] = "float16"
    reply = app(msg, device_context(0, tmp_path, "faults.sign_flip=1.0"))
    assert protocol.ARRAYS not in reply.content.array_records
    record = reply.content[protocol.UPDATE]
    sent = decode(record[protocol.UPDATE_VALUES].numpy(), record[protocol.UPDATE_SCALES].numpy(), start, "float16")
    for key in _floats(start):
        change = honest[key] - start[key]
        np.testing.assert_allclose(sent[key] - start[key], -change, atol=2e-3 * max(np.abs(change).max(), 1e-3))


def test_a_crashing_client_raises_before_training(tmp_path, start):
    context = device_context(0, tmp_path, "faults.crash=1.0")
    with pytest.raises(RuntimeError, match="injected fault: client 0 crashes"):
        app(server_message(MessageType.TRAIN, start), context)
    assert len(context.state) == 0  # the handler never ran
    assert not evaluate(server_message(MessageType.EVALUATE, start), context).has_error()  # evaluate is untouched


def test_a_label_flip_client_loads_flipped_labels_and_trains_on_them(tmp_path, start):
    honest_cfg = load(SYNTHETIC, [f"data.cache_dir={tmp_path / 'cache'}"])
    flip_cfg = load(SYNTHETIC, [f"data.cache_dir={tmp_path / 'cache'}", "faults.label_flip=1.0"])
    node = {protocol.NODE_PARTITION_ID: 0, protocol.NODE_NUM_PARTITIONS: 6}
    honest, flipped = load_client_data(honest_cfg, node), load_client_data(flip_cfg, node)
    np.testing.assert_array_equal(flipped.train.y, 3 - honest.train.y)
    np.testing.assert_array_equal(flipped.test.y, honest.test.y)  # held-out labels are the truth
    a = train(server_message(MessageType.TRAIN, start), device_context(0, tmp_path))
    b = app(server_message(MessageType.TRAIN, start), device_context(0, tmp_path, "faults.label_flip=1.0"))
    assert a.content[protocol.METRICS][protocol.LOSS_TASK] != b.content[protocol.METRICS][protocol.LOSS_TASK]


def test_lies_change_what_the_reply_says_not_what_was_trained(tmp_path, start):
    honest = train(server_message(MessageType.TRAIN, start), device_context(0, tmp_path))
    role = app(server_message(MessageType.TRAIN, start), device_context(0, tmp_path, "faults.role_lie=1.0"))
    assert role.content[protocol.METRICS][protocol.IS_TARGET] == 1 - honest.content[protocol.METRICS][protocol.IS_TARGET]
    for k, v in _arrays(honest).items():
        np.testing.assert_array_equal(_arrays(role)[k], v)
    examples = app(server_message(MessageType.TRAIN, start), device_context(0, tmp_path, "faults.examples_lie=1.0"))
    assert (examples.content[protocol.METRICS][protocol.NUM_EXAMPLES]
            == 1000 * honest.content[protocol.METRICS][protocol.NUM_EXAMPLES])
    truth = evaluate(server_message(MessageType.EVALUATE, start), device_context(0, tmp_path))
    forged = app(server_message(MessageType.EVALUATE, start), device_context(0, tmp_path, "faults.confusion_lie=1.0"))
    true_cm, forged_cm = (np.asarray(r.content[protocol.METRICS][protocol.CONFUSION]) for r in (truth, forged))
    k = 4
    np.testing.assert_array_equal(forged_cm - true_cm, np.eye(k, dtype=np.int64).ravel() * 10 ** 9)


def test_only_a_simulated_client_named_by_faults_has_one(tmp_path):
    assert client_fault(device_context(0, tmp_path)) is None  # faults: all zero
    named = client_fault(device_context(0, tmp_path, "faults.sign_flip=1.0"))
    assert named is not None and named[1:] == (0, "sign_flip")
    real = device_context(0, tmp_path, "faults.sign_flip=1.0")
    real.node_config[protocol.NODE_DATA_PATH] = str(tmp_path / "device.npz")  # a real device: never faulty
    assert client_fault(real) is None
    unnamed = Context(run_id=1, node_id=1, node_config={protocol.NODE_PARTITION_ID: 0}, state=RecordDict(),
                      run_config={protocol.RUN_CONFIG_FILE: str(SYNTHETIC), protocol.RUN_OVERRIDES: "faults.crash=1.0"})
    assert client_fault(unnamed) is None  # no number of partitions: not a simulation


def test_a_bad_run_config_is_left_to_the_handler_to_refuse(tmp_path, start):
    reply = app(server_message(MessageType.TRAIN, start), device_context(0, tmp_path, "faults.crash=2.0"))
    assert reply.has_error() and "faults.crash" in reply.error.reason
