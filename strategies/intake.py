"""Replies in: each one read once, checked once, and either turned into a
typed :class:`fedsense.combine.Update` or refused with its node and reason.

Nothing a reply says is taken on trust: an error reply is counted, a
compressed update that does not decode is refused, and every update goes
through :func:`strategies.validation.screen`, the node's declaration
(:mod:`strategies.roster`), the privacy clipping bound and, when on, the
direction reputation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Message

from fedsense import protocol
from fedsense.combine import Update
from fedsense.compression import UNCOMPRESSED, UpdateError, decode
from strategies.accounting import RoundStats, record_nbytes, reply_inventory
from strategies.roster import Roster
from strategies.validation import direction_cosines, screen, unclipped

log = logging.getLogger("fedsense.strategy")


def finite(value: Any) -> bool:
    """A number a record may report (not a list, not NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def metrics_of(msg: Message) -> dict[str, Any]:
    return dict(msg.content[protocol.METRICS]) if protocol.METRICS in msg.content.metric_records else {}


def role(metrics: Mapping[str, Any]) -> str:
    """``"target"`` or ``"source"``: the population a reply is compared and aggregated with."""
    return "target" if metrics.get(protocol.IS_TARGET) == 1 else "source"


def reply_order(msg: Message) -> tuple[float, int]:
    """Replies arrive in whatever order clients finish; sorted by this, the
    floating-point sums, and so the whole run, are reproducible."""
    partition = metrics_of(msg).get(protocol.PARTITION, -1)
    number = float(partition) if isinstance(partition, (int, float)) and np.isfinite(partition) else -1.0
    return number, int(msg.metadata.src_node_id)


def client_id(msg: Message) -> str:
    """A client's name in metrics: its partition id in a simulation, else its node id."""
    partition = reply_order(msg)[0]
    return str(int(partition)) if partition >= 0 and partition % 1 == 0 else f"node-{msg.metadata.src_node_id}"


def last_line(reason: str, limit: int = 300) -> str:
    """The message of a client's error, not its whole remote traceback."""
    lines = [ln.strip() for ln in reason.replace("\\n", "\n").splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Message:" in line:
            return line.split("Message:", 1)[1].strip().strip("'>")[:limit]
    return (lines[-1] if lines else reason)[:limit]


def as_update(msg: Message, node: int, roster: Roster, arrays: Mapping[str, np.ndarray] | None = None) -> Update:
    """A reply as the server uses it: plain numbers and arrays, the windows
    the device declared (the bound on its counts), its trained arrays."""
    metrics = metrics_of(msg)
    records = {name: {k: a.numpy() for k, a in record.items()}
               for name, record in msg.content.array_records.items() if name not in (protocol.ARRAYS, protocol.UPDATE)}
    known = roster.declared.get(node)
    prefix = protocol.modality_windows_key("")
    weight = metrics.get(protocol.NUM_EXAMPLES, 0.0)
    return Update(node=node, target=role(metrics) == "target", metrics=metrics, records=records,
                  windows=known.train_windows if known is not None else Update.windows,
                  arrays=dict(arrays or {}), weight=float(weight) if finite(weight) else 0.0,
                  modality_windows={k[len(prefix):]: float(v) for k, v in metrics.items()
                                    if k.startswith(prefix) and finite(v)},
                  client=client_id(msg))


def usable(replies: Sequence[Message], stats: RoundStats,
           on_reply: Callable[[str, dict[str, Any]], None] | None) -> list[Message]:
    """Replies with content; error replies are counted and logged. Bytes of
    every reply are counted and its fields reported to ``on_reply``."""
    valid = []
    for msg in replies:
        if msg.has_content():
            stats.bytes_up += record_nbytes(msg.content)
            if on_reply is not None:
                on_reply(msg.metadata.message_type, reply_inventory(msg.content))
        if msg.has_error():
            reason = f"node {stats.origin(msg)}: {last_line(msg.error.reason)}"
            stats.errors.append(reason)
            log.warning("client error: %s", reason)
        else:
            valid.append(msg)
    return valid


@dataclass
class Screening:
    """How train replies are checked (see :mod:`strategies.validation`)."""

    roster: Roster
    max_update_norm_ratio: float = 10.0
    min_update_cosine: float = -1.0  # -1: no direction reputation
    encoding: str = UNCOMPRESSED
    clipping_norm: float | None = None  # privacy.dp: updates must be clipped to this
    required: tuple[str, ...] = ()


def trained_arrays(msg: Message, encoding: str, reference: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A train reply's arrays: as sent, or decoded against ``reference`` (global + change)."""
    content = msg.content
    if encoding == UNCOMPRESSED:
        return {k: a.numpy() for k, a in content[protocol.ARRAYS].items()} if protocol.ARRAYS in content.array_records else {}
    if protocol.UPDATE not in content.array_records:
        raise UpdateError(f"no '{protocol.UPDATE}' record in a reply to an {encoding} round")
    record = content[protocol.UPDATE]
    missing = {protocol.UPDATE_VALUES, protocol.UPDATE_SCALES} - set(record.keys())
    if missing:
        raise UpdateError(f"'{protocol.UPDATE}' record lacks {sorted(missing)}")
    return decode(record[protocol.UPDATE_VALUES].numpy(), record[protocol.UPDATE_SCALES].numpy(), reference, encoding)


def train_updates(server_round: int, replies: Sequence[Message], reference: Mapping[str, np.ndarray] | None,
                  rules: Screening, stats: RoundStats, reputation: dict[str, tuple[float, int]]) -> list[Update]:
    """The updates the server accepts this round, in :func:`reply_order`;
    each refused one is named in ``stats.rejected`` with its reason.
    ``reference``: the arrays the round started from (None: a round the
    server did not configure — nothing to check against, taken as sent)."""
    if reference is None:
        return [as_update(m, stats.origin(m), rules.roster, trained_arrays(m, UNCOMPRESSED, {}))
                for m in sorted(replies, key=reply_order)]
    candidates: list[tuple[Message, dict[str, np.ndarray]]] = []
    for msg in replies:
        try:
            candidates.append((msg, trained_arrays(msg, rules.encoding, reference)))
        except UpdateError as err:
            _refuse(server_round, stats, msg, str(err))
    if not candidates:
        return []
    metrics = [metrics_of(m) for m, _ in candidates]
    roles = [role(mt) for mt in metrics]
    verdicts = screen([(a, mt) for (_, a), mt in zip(candidates, metrics)], dict(reference),
                      rules.max_update_norm_ratio, groups=roles, required=rules.required)
    for i, (msg, arrays) in enumerate(candidates):  # the server decides what it trusts: what the device declared
        if verdicts[i] is None:
            verdicts[i] = rules.roster.check_train(stats.origin(msg), metrics[i])
        if verdicts[i] is None and rules.clipping_norm is not None:
            verdicts[i] = unclipped(arrays, reference, rules.clipping_norm)
    if rules.min_update_cosine > -1:
        _judge_directions(candidates, reference, roles, verdicts, rules.min_update_cosine, reputation)
    kept = []
    for (msg, arrays), verdict in zip(candidates, verdicts):
        if verdict is None:
            kept.append((msg, arrays))
        else:
            _refuse(server_round, stats, msg, verdict)
    kept.sort(key=lambda pair: reply_order(pair[0]))
    return [as_update(msg, stats.origin(msg), rules.roster, arrays) for msg, arrays in kept]


def _refuse(server_round: int, stats: RoundStats, msg: Message, reason: str) -> None:
    named = f"node {msg.metadata.src_node_id}: {reason}"
    stats.rejected.append(named)
    log.warning("round %d: refused an update: %s", server_round, named)


def _judge_directions(candidates: list[tuple[Message, dict[str, np.ndarray]]], reference: Mapping[str, np.ndarray],
                      roles: list[str], verdicts: list[str | None], threshold: float,
                      reputation: dict[str, tuple[float, int]]) -> None:
    """Refuse updates of clients whose updates point, on average over the
    rounds so far, away from the others of their role (a client's running
    mean cosine below ``threshold``). One round's cosine is noisy once
    training converges; an attacker's is negative round after round."""
    open_ = [i for i, v in enumerate(verdicts) if v is None]
    cosines = direction_cosines([candidates[i][1] for i in open_], dict(reference), [roles[i] for i in open_])
    for i, cosine in zip(open_, cosines):
        if cosine is None:
            continue
        name = client_id(candidates[i][0])
        total, count = reputation.get(name, (0.0, 0))
        total, count = total + cosine, count + 1
        reputation[name] = (total, count)
        if total / count < threshold:
            verdicts[i] = (f"update points away from the other {roles[i]} updates: cosine {cosine:.3f} this round, "
                           f"mean {total / count:.3f} over {count} rounds < {threshold:g}")
