"""One message a round (``fed.messages_per_round: 1``): the evaluation of
the arrays a train instruction sends travels inside it.

:func:`carry_evaluation` puts an evaluate instruction's records (its config
and payloads) into the train instructions under :data:`protocol.EVALUATION`;
the device evaluates the arrays it received before it trains
(``fl_client.evaluate_first``) and replies with both. :func:`split_reply` cuts each
reply back into an evaluate reply and a train reply, each a ``Message`` with
the reply's own metadata, so the strategy reads them exactly as it reads the
replies of two separate messages. Nothing in the evaluation part is trusted
more than an evaluate reply: the same checks read it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MessageType, Metadata, RecordDict

from fedsense import protocol

MAX_REASON = 300  # characters of a device's reason kept


def carry_evaluation(messages: list[Message], config: ConfigRecord, payload: Mapping[str, ArrayRecord],
                     own: Callable[[int], Mapping[str, ArrayRecord]]) -> list[Message]:
    """The train instructions ``messages`` with an evaluation of their arrays:
    ``config`` and ``payload`` for every node, ``own(node)`` for one node
    (its own records; the instructions share one RecordDict, so a node with
    its own records gets a copy)."""
    if not messages:
        return messages
    shared = messages[0].content
    shared[protocol.EVALUATION + protocol.CONFIG] = config
    for name, record in payload.items():
        shared[protocol.EVALUATION + name] = record
    for msg in messages:
        extra = own(int(msg.metadata.dst_node_id))
        if extra:
            msg.content = RecordDict({**dict(msg.content.items()),
                                      **{protocol.EVALUATION + n: r for n, r in extra.items()}})
    return messages


def _as(metadata: Metadata, message_type: str) -> Metadata:
    """A copy of a reply's metadata (task ids included) naming another message type."""
    copied = copy.copy(metadata)
    copied.message_type = message_type
    return copied


def _device_error(record: ConfigRecord) -> Error:
    """The evaluation error a device reported, as an ``Error`` (what it says
    is cut to size and typed: a device could send anything)."""
    code = record.get(protocol.ERROR_CODE)
    reason = record.get(protocol.ERROR_REASON)
    return Error(code=int(code) if isinstance(code, int) and not isinstance(code, bool) else protocol.ERROR_BAD_INPUT,
                 reason=(reason if isinstance(reason, str) else "an evaluation error without a reason")[:MAX_REASON])


def split_reply(reply: Message) -> tuple[Message | None, Message]:
    """``(evaluate reply, train reply)`` of a reply to a train instruction that
    carried an evaluation: the evaluate part an error reply if the device
    reported its evaluation refused, None if the reply has no evaluation part
    at all. An error reply (the whole message failed) is its own train part
    and has no evaluation."""
    if reply.has_error() or not reply.has_content():
        return None, reply
    content = reply.content
    train = RecordDict({n: r for n, r in content.items()
                        if not n.startswith(protocol.EVALUATION) and n != protocol.EVALUATION_ERROR})
    part = {n[len(protocol.EVALUATION):]: r for n, r in content.items() if n.startswith(protocol.EVALUATION)}
    evaluation: Message | None = None
    metadata = _as(reply.metadata, MessageType.EVALUATE)
    if protocol.EVALUATION_ERROR in content.config_records:
        evaluation = Message(_device_error(content.config_records[protocol.EVALUATION_ERROR]), metadata=metadata)
    elif part:
        evaluation = Message(RecordDict(part), metadata=metadata)
    return evaluation, Message(train, metadata=_as(reply.metadata, reply.metadata.message_type))
