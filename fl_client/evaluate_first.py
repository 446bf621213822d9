"""One message a round on the device: a train instruction that carries an
evaluation (``strategies.bundle``) is answered as the two messages it
replaces, in their order — first the evaluate instruction of the arrays it
received, then the train instruction — and the two replies go back as one.

``evaluate_first(dispatch)`` is a Flower mod, the ClientApp's outermost: the
evaluate part goes through ``dispatch`` (the ClientApp itself, so the
evaluate handler and its mods run as for an evaluate message), the train
part through the rest of the train handler's chain. An evaluation the
device refuses (bad input) is reported in the reply and the device still
trains; a train part that fails fails the whole message.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedsense import protocol


def _part(msg: Message, message_type: str, content: RecordDict) -> Message:
    """One part of ``msg`` as a message of its own (all its metadata — ids,
    deadline, task ids — but the message type)."""
    metadata = copy.copy(msg.metadata)
    metadata.message_type = message_type
    return Message(content, metadata=metadata)


def split_instruction(msg: Message) -> tuple[Message | None, Message]:
    """``(evaluate instruction, train instruction)`` of a train instruction;
    None when it carries no evaluation. Both parts get the arrays."""
    content = msg.content
    carried = {n[len(protocol.EVALUATION):]: r for n, r in content.items() if n.startswith(protocol.EVALUATION)}
    if protocol.CONFIG not in carried:
        return None, msg
    train = RecordDict({n: r for n, r in content.items() if not n.startswith(protocol.EVALUATION)})
    evaluate = RecordDict({protocol.ARRAYS: content[protocol.ARRAYS], **carried}) if protocol.ARRAYS in content \
        else RecordDict(carried)
    return _part(msg, MessageType.EVALUATE, evaluate), _part(msg, MessageType.TRAIN, train)


def evaluate_first(dispatch: Callable[[Message, Context], Message]) -> Mod:
    """The mod answering a train instruction with an evaluation (see the module)."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN or not msg.has_content():
            return call_next(msg, context)
        evaluate, train = split_instruction(msg)
        if evaluate is None:
            return call_next(msg, context)
        evaluated = dispatch(evaluate, context)
        trained = call_next(train, context)
        if trained.has_error():
            return Message(trained.error, reply_to=msg)
        if evaluated.has_error():
            part = {protocol.EVALUATION_ERROR: ConfigRecord({protocol.ERROR_CODE: int(evaluated.error.code),
                                                             protocol.ERROR_REASON: str(evaluated.error.reason)})}
        else:
            part = {protocol.EVALUATION + n: r for n, r in evaluated.content.items()}
        return Message(RecordDict({**dict(trained.content.items()), **part}), reply_to=msg)

    return mod
