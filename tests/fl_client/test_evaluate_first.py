"""One message a round, the device's half: a train instruction carrying an
evaluation is answered exactly as an evaluate message followed by a train
message would be, in one reply."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Error, Message, MessageType

from fedsense import protocol
from fl_client.evaluate_first import evaluate_first, split_instruction
from fl_client.client_app import app, evaluate, train
from fl_client.device_state import LOCAL_STATE
from strategies.bundle import carry_evaluation
from tests.fl_client.messages import device_context, global_arrays, server_message


def _carrying(arrays, server_round: int) -> Message:
    """Round ``server_round``'s train instruction carrying the evaluation of ``arrays`` as round ``server_round - 1``."""
    msg = server_message(MessageType.TRAIN, arrays, server_round=server_round)
    evaluate_config = server_message(MessageType.EVALUATE, None, server_round=server_round - 1).content[protocol.CONFIG]
    carry_evaluation([msg], evaluate_config, {}, lambda node: {})
    return msg


def _numbers(record) -> dict:
    return {k: v for k, v in record.items() if k != protocol.COMPUTE_SECONDS}


@pytest.mark.parametrize("pid, method", [(0, "m3bat_local"), (5, "m3bat_local"), (5, "adabn"), (1, "none"), (0, "fedbn")])
def test_one_message_is_answered_as_evaluate_then_train(tmp_path, synthetic_cfg, pid, method):
    arrays = global_arrays(synthetic_cfg.model)
    overrides = f"adapt.method={method}"
    one = device_context(pid, tmp_path / "one", overrides)
    reply = app(_carrying(arrays, server_round=2), one)
    two = device_context(pid, tmp_path / "two", overrides)
    evaluated = evaluate(server_message(MessageType.EVALUATE, arrays, server_round=1), two)
    trained = train(server_message(MessageType.TRAIN, arrays, server_round=2), two)

    content = reply.content
    assert _numbers(content[protocol.EVALUATION + protocol.METRICS]) == _numbers(evaluated.content[protocol.METRICS])
    assert _numbers(content[protocol.METRICS]) == _numbers(trained.content[protocol.METRICS])
    for key, array in trained.content[protocol.ARRAYS].items():
        np.testing.assert_array_equal(content[protocol.ARRAYS][key].numpy(), array.numpy())
    for name in evaluated.content.array_records:
        assert protocol.EVALUATION + name in content.array_records
    kept_one = {k: v.numpy() for k, v in one.state[LOCAL_STATE].items()}
    kept_two = {k: v.numpy() for k, v in two.state[LOCAL_STATE].items()}
    assert kept_one.keys() == kept_two.keys()
    for key in kept_one:  # the device keeps what the two messages would have left
        np.testing.assert_array_equal(kept_one[key], kept_two[key])


def test_an_instruction_without_an_evaluation_is_a_plain_train_message(synthetic_cfg):
    msg = server_message(MessageType.TRAIN, global_arrays(synthetic_cfg.model))
    assert split_instruction(msg) == (None, msg)
    evaluate_part, train_part = split_instruction(_carrying(global_arrays(synthetic_cfg.model), server_round=3))
    assert evaluate_part.metadata.message_type == MessageType.EVALUATE
    assert evaluate_part.content[protocol.CONFIG][protocol.CFG_ROUND] == 2
    assert train_part.content[protocol.CONFIG][protocol.CFG_ROUND] == 3
    assert not any(n.startswith(protocol.EVALUATION) for n in train_part.content.keys())


def test_an_evaluation_refused_on_the_device_is_reported_and_the_device_still_trains(tmp_path, synthetic_cfg):
    def refuse(msg: Message, context) -> Message:
        return Message(Error(code=protocol.ERROR_BAD_INPUT, reason="DatasetError: no test windows"), reply_to=msg)

    ctx = device_context(0, tmp_path)
    reply = evaluate_first(refuse)(_carrying(global_arrays(synthetic_cfg.model), 2), ctx, train)
    error = reply.content[protocol.EVALUATION_ERROR]
    assert error[protocol.ERROR_CODE] == protocol.ERROR_BAD_INPUT and "no test windows" in error[protocol.ERROR_REASON]
    assert protocol.ARRAYS in reply.content.array_records and reply.content[protocol.METRICS][protocol.NUM_EXAMPLES] > 0


def test_a_failed_train_part_fails_the_message(tmp_path, synthetic_cfg):
    def fail(msg: Message, context) -> Message:
        return Message(Error(code=protocol.ERROR_BAD_INPUT, reason="ConfigError: bad"), reply_to=msg)

    ctx = device_context(0, tmp_path)
    msg = _carrying(global_arrays(synthetic_cfg.model), 2)
    reply = evaluate_first(lambda m, c: app(m, c))(msg, ctx, fail)
    assert reply.has_error() and reply.error.reason == "ConfigError: bad"
    assert reply.metadata.reply_to_message_id == msg.metadata.message_id
