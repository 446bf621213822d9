"""Evaluation replies in: confusion matrices *summed* per role (source or
target), never averaged, the headline macro-F1 computed from those sums;
per-client scores; the class centroids the embedding projector shows; each
role's device compute."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Message

from fedsense import protocol
from fedsense.combine import Update
from fedsense.metrics import macro_f1, per_class_f1, summarize
from strategies.accounting import RoundStats
from strategies.intake import as_update, client_id, finite, metrics_of, reply_order, role
from strategies.roster import Roster
from strategies.validation import malformed_evaluation

log = logging.getLogger("fedsense.strategy")
ROLES = ("target", "source")


@dataclass
class Evaluations:
    """One round's accepted evaluation replies, summed."""

    num_classes: int
    sums: dict[str, np.ndarray] = field(default_factory=dict)  # role -> K x K confusion
    clients: dict[str, int] = field(default_factory=lambda: {"source": 0, "target": 0})
    per_client: dict[str, dict[str, float]] = field(default_factory=dict)
    projector: dict[str, dict[str, list]] = field(default_factory=dict)  # branch -> points, labels
    accepted: list[Update] = field(default_factory=list)  # for the method's server state

    def __post_init__(self) -> None:
        k = self.num_classes
        self.sums = {"source": np.zeros((k, k), np.int64), "target": np.zeros((k, k), np.int64)}

    def sections(self) -> dict[str, Any]:
        """The round record's ``target``, ``source`` and ``client`` sections."""
        record: dict[str, Any] = {}
        for r in ROLES:
            if self.clients[r]:
                f1 = {str(c): float(v) for c, v in enumerate(per_class_f1(self.sums[r])) if np.isfinite(v)}
                record[r] = {**summarize(self.sums[r]), "clients": self.clients[r], "f1": f1}
        record["client"] = self.per_client
        return record

    def confusion(self) -> dict[str, list]:
        return {r: self.sums[r].tolist() for r in self.sums if self.clients[r]}


def read_evaluations(server_round: int, replies: Sequence[Message], num_classes: int, roster: Roster,
                     stats: RoundStats) -> Evaluations:
    """Sum the replies that are well formed and agree with what their node
    declared; the others are named in ``stats.errors`` and left out."""
    out = Evaluations(num_classes)
    k = num_classes
    for msg in sorted(replies, key=reply_order):
        metrics = metrics_of(msg)
        node = stats.origin(msg)
        problem = malformed_evaluation(metrics, k) or roster.check_evaluate(node, metrics)
        if problem is not None:  # refused, not summed
            stats.errors.append(f"node {msg.metadata.src_node_id}: {problem}")
            log.warning("round %d: refused an evaluation: node %s: %s", server_round, msg.metadata.src_node_id,
                        problem)
            continue
        r = role(metrics)
        out.accepted.append(as_update(msg, node, roster))
        flat = np.asarray(metrics[protocol.CONFUSION], dtype=np.int64).reshape(k, k)
        out.sums[r] += flat
        out.clients[r] += 1
        out.per_client[client_id(msg)] = {"macro_f1": macro_f1(flat)}
        if protocol.EMBEDDINGS in msg.content:
            _add_centroids(out.projector, msg, r)
    return out


def _add_centroids(projector: dict[str, dict[str, list]], msg: Message, r: str) -> None:
    """Append a reply's reported class centroids (rows with a count) per branch,
    labelled ``[role, client, class]``."""
    counts = msg.content[protocol.METRICS].get(protocol.EMBED_COUNT, [])
    if not isinstance(counts, list) or not all(finite(n) for n in counts):
        return  # malformed: shown nowhere rather than misplaced
    client = client_id(msg)
    for key, arr in msg.content[protocol.EMBEDDINGS].items():
        branch = key.removeprefix(protocol.embed_key(""))
        rows = arr.numpy()
        if rows.ndim != 2 or rows.shape[0] != len(counts) or not np.isfinite(rows).all():
            continue  # malformed: shown nowhere rather than misplaced
        entry = projector.setdefault(branch, {"points": [], "labels": []})
        for c, (row, n) in enumerate(zip(rows, counts)):
            if n > 0:
                entry["points"].append(row.tolist())
                entry["labels"].append([r, client, str(c)])


def compute_per_role(metrics: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per role, a device's mean CPU seconds (and train steps) on this message."""
    out: dict[str, dict[str, float]] = {}
    for r in ("source", "target"):
        mine = [m for m in metrics if finite(m.get(protocol.COMPUTE_SECONDS)) and role(m) == r]
        if mine:
            out[r] = {"cpu_seconds": float(np.mean([float(m[protocol.COMPUTE_SECONDS]) for m in mine]))}
            steps = [float(m[protocol.TRAIN_STEPS]) for m in mine if finite(m.get(protocol.TRAIN_STEPS))]
            if steps:
                out[r]["train_steps"] = float(np.mean(steps))
    return out


def weighted_mean(updates: Sequence[Update], key: str, weights: Sequence[float]) -> float:
    """Mean of a metric over updates; 0.0 when every weight is zero."""
    total = sum(weights)
    if total <= 0:
        return 0.0
    return sum(float(u.metrics[key]) * w for u, w in zip(updates, weights)) / total
