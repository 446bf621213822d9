"""What a device sends when the server asks for compressed updates
(``fed.update_encoding``): the change in one small array, and error
feedback's residual kept for the next round."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Message, MessageType

from fedsense import protocol
from fedsense.compression import decode
from fl_client.client_app import train
from fl_client.device_state import RESIDUAL_STATE
from tests.fl_client.messages import device_context, global_arrays, server_message


@pytest.fixture
def model_cfg(synthetic_cfg):
    return synthetic_cfg.model


def _compressed(start, encoding: str, server_round: int = 1) -> Message:
    msg = server_message(MessageType.TRAIN, start, server_round)
    msg.content[protocol.CONFIG][protocol.CFG_UPDATE_ENCODING] = encoding
    return msg


def _sent(reply, start, encoding: str) -> dict[str, np.ndarray]:
    record = reply.content[protocol.UPDATE]
    return decode(record[protocol.UPDATE_VALUES].numpy(), record[protocol.UPDATE_SCALES].numpy(), start, encoding)


@pytest.mark.parametrize("encoding, itemsize", [("float16", 2), ("int8", 1)])
def test_a_compressed_update_is_the_change_in_one_small_array(tmp_path, model_cfg, encoding, itemsize):
    start = global_arrays(model_cfg)
    plain = train(server_message(MessageType.TRAIN, start), device_context(0, tmp_path))
    trained = {k: v.numpy() for k, v in plain.content[protocol.ARRAYS].items()}
    reply = train(_compressed(start, encoding), device_context(0, tmp_path))
    assert protocol.ARRAYS not in reply.content.array_records
    values = reply.content[protocol.UPDATE][protocol.UPDATE_VALUES].numpy()
    assert values.dtype.itemsize == itemsize and values.size == sum(v.size for v in start.values())
    sent = _sent(reply, start, encoding)
    for k in start:  # same training, rounded on the way
        step = np.max(np.abs(trained[k] - start[k])) / 127 if encoding == "int8" else 1e-3 * np.max(np.abs(trained[k]))
        assert np.max(np.abs(sent[k] - trained[k])) <= step / 2 + 1e-6, k


def test_error_feedback_adds_last_rounds_rounding_error_to_this_rounds_update(tmp_path, model_cfg):
    """Training does not depend on the encoding, so a float32 twin gives what
    the device learned in round 2; what it sends plus what it keeps must be
    that plus the residual round 1 left in context.state."""
    start = global_arrays(model_cfg)
    feedback, twin = device_context(0, tmp_path), device_context(0, tmp_path)
    train(_compressed(start, "int8"), feedback)
    train(server_message(MessageType.TRAIN, start), twin)
    residual = {k: v.numpy() for k, v in feedback.state[RESIDUAL_STATE].items()}
    assert set(residual) == set(start) and any(np.abs(r).max() > 0 for r in residual.values())

    sent = _sent(train(_compressed(start, "int8", 2), feedback), start, "int8")
    learned = {k: v.numpy() for k, v in train(server_message(MessageType.TRAIN, start, 2), twin).content[protocol.ARRAYS].items()}
    kept = {k: v.numpy() for k, v in feedback.state[RESIDUAL_STATE].items()}
    for k in start:
        np.testing.assert_allclose(sent[k] - start[k] + kept[k], learned[k] - start[k] + residual[k], atol=1e-6)


def test_without_error_feedback_nothing_is_kept(tmp_path, model_cfg):
    start = global_arrays(model_cfg)
    context = device_context(0, tmp_path, "fed.error_feedback=false")
    train(_compressed(start, "int8"), context)
    assert RESIDUAL_STATE not in context.state


def test_an_unknown_encoding_is_refused_by_the_device_naming_it(tmp_path, model_cfg):
    start = global_arrays(model_cfg)
    reply = train(_compressed(start, "int3"), device_context(0, tmp_path))
    assert reply.has_error() and "update encoding 'int3'" in reply.error.reason
