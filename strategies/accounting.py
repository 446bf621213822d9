"""What one round cost and who took part: bytes on the wire, the fields that
left each device, the nodes asked and the nodes that answered usefully."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message, RecordDict


def record_nbytes(content: RecordDict) -> int:
    """Payload bytes of a RecordDict: array bytes plus 8 bytes per number."""
    total = 0
    for record in content.array_records.values():
        total += sum(len(a.data) for a in record.values())
    for record in list(content.metric_records.values()) + list(content.config_records.values()):
        for value in record.values():
            total += 8 * (len(value) if isinstance(value, list) else 1)
    return total


def reply_inventory(content: RecordDict) -> dict[str, Any]:
    """Every field of a reply: ``"record:key"`` -> array shape, ``"number"`` or
    ``["list", length]`` (the values themselves are not kept)."""
    out: dict[str, Any] = {}
    for name, record in content.array_records.items():
        for key, arr in record.items():
            out[f"{name}:{key}"] = list(arr.shape)
    for name, record in list(content.metric_records.items()) + list(content.config_records.items()):
        for key, value in record.items():
            out[f"{name}:{key}"] = ["list", len(value)] if isinstance(value, list) else "number"
    return out


@dataclass
class RoundStats:
    """What happened in one round, filled as the round proceeds."""

    started: float = field(default_factory=time.time)
    ended: float | None = None  # set when the round ends before its record is made (one message a round)
    bytes_up: int = 0
    bytes_down: int = 0
    bytes_up_train: int = 0  # of bytes_up: the train replies (model updates)
    sampled: list[int] = field(default_factory=list)  # node ids asked to train
    replied: list[int] = field(default_factory=list)  # node ids whose train reply was usable
    errors: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # train replies refused by validation
    outgoing: list[Message] = field(default_factory=list)  # this round's instructions (ids set once sent)
    train: dict[str, Any] = field(default_factory=dict)
    # train/evaluate -> role -> mean CPU seconds and gradient steps of a device
    compute: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    _asked: dict[str, int] = field(default_factory=dict, repr=False)  # instruction id -> node (see origin)

    def sent(self, messages: list[Message]) -> None:
        """Instructions leaving the server."""
        self.outgoing += messages
        self.bytes_down += sum(record_nbytes(m.content) for m in messages)

    def origin(self, reply: Message) -> int:
        """The node a reply is about. The SuperLink answers for a node that
        vanished (heartbeat lost) as node 1; the instruction it replies to
        names the node that was asked. Instructions get their ids once Flower
        sends them, so the id -> node map is rebuilt when a reply names an id
        it does not hold yet (once per round normally, not once per reply)."""
        asked = reply.metadata.reply_to_message_id
        if asked and asked not in self._asked:
            self._asked = {m.metadata.message_id: int(m.metadata.dst_node_id)
                           for m in reversed(self.outgoing) if m.metadata.message_id}  # the first one wins
        return self._asked.get(asked, int(reply.metadata.src_node_id)) if asked else int(reply.metadata.src_node_id)

    def section(self, totals: dict[str, int]) -> dict[str, Any]:
        """The round record's accounting sections (``comm``, ``clients``,
        ``nodes``, ``errors``, ``rejected``, ``seconds``); adds the bytes to ``totals``."""
        for key in ("bytes_up", "bytes_down", "bytes_up_train"):
            totals[key] = totals.get(key, 0) + getattr(self, key)
        failed = sorted(set(self.sampled) - set(self.replied))
        record: dict[str, Any] = {
            "comm": {"bytes_up": self.bytes_up, "bytes_down": self.bytes_down, "bytes_up_train": self.bytes_up_train},
            # Counters are counts of nodes, never averaged; "nodes" names them.
            "clients": {
                "sampled": len(self.sampled),
                "replied": len(self.replied),
                "failed": len(failed),
                "errors": len(self.errors),  # error replies of train and evaluate
                "rejected": len(self.rejected),  # train replies refused by validation
            },
            "nodes": {"sampled": self.sampled, "replied": self.replied, "failed": failed},
        }
        if self.errors:
            record["errors"] = list(self.errors)  # "node <id>: <reason>", metrics.jsonl only
        if self.rejected:
            record["rejected"] = list(self.rejected)
        record["seconds"] = round((self.ended if self.ended is not None else time.time()) - self.started, 3)
        return record
