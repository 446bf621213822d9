"""FedAvg with fedsense's hooks: round config, honest evaluation, accounting.

Only ``configure_*`` and ``aggregate_*`` are overridden; Flower's
``Strategy.start`` runs the rounds. Evaluation replies carry confusion
matrices that are *summed* per role (source/target), never averaged, and the
headline macro-F1 is computed from those sums.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedsense import protocol
from fedsense.aggregation import AGGREGATORS, AggregationSettings, by_group, modality_mean
from fedsense.compression import CODECS, UNCOMPRESSED, UpdateError, decode
from fedsense.config import PrivacyConfig
from fedsense.methods import Reply, ServerState
from fedsense.methods.base import is_discriminator
from fedsense.metrics import macro_f1, per_class_f1, summarize
from fedsense.privacy import add_noise, epsilon, largest_share, noise_std
from strategies.roster import Roster
from strategies.validation import direction_cosines, malformed_evaluation, screen, unclipped

log = logging.getLogger("fedsense.strategy")


class RoundFailed(RuntimeError):
    """Too few clients replied usefully for a round to count."""


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


def _last_line(reason: str, limit: int = 300) -> str:
    """The message of a client's error, not its whole remote traceback."""
    lines = [ln.strip() for ln in reason.replace("\\n", "\n").splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Message:" in line:
            return line.split("Message:", 1)[1].strip().strip("'>")[:limit]
    return (lines[-1] if lines else reason)[:limit]


def _weighted_mean(contents: list[RecordDict], key: str, weights: list[float]) -> float:
    """Mean of a metric over replies; 0.0 when every weight is zero."""
    total = sum(weights)
    if total <= 0:
        return 0.0
    return sum(float(c[protocol.METRICS][key]) * w for c, w in zip(contents, weights)) / total


def _client_id(msg: Message) -> str:
    """A client's name in metrics: its partition id in a simulation, else its node id."""
    partition = _reply_order(msg)[0]
    return str(int(partition)) if partition >= 0 and partition % 1 == 0 else f"node-{msg.metadata.src_node_id}"


def _add_centroids(projector: dict[str, dict[str, list]], msg: Message, role: str) -> None:
    """Append a reply's reported class centroids (rows with a count) per branch,
    labelled ``[role, client, class]``."""
    counts = msg.content[protocol.METRICS].get(protocol.EMBED_COUNT, [])
    if not isinstance(counts, list) or not all(_finite(n) for n in counts):
        return  # malformed: shown nowhere rather than misplaced
    client = _client_id(msg)
    for key, arr in msg.content[protocol.EMBEDDINGS].items():
        branch = key.removeprefix(protocol.embed_key(""))
        rows = arr.numpy()
        if rows.ndim != 2 or rows.shape[0] != len(counts) or not np.isfinite(rows).all():
            continue  # malformed: shown nowhere rather than misplaced
        entry = projector.setdefault(branch, {"points": [], "labels": []})
        for c, (row, n) in enumerate(zip(rows, counts)):
            if n > 0:
                entry["points"].append(row.tolist())
                entry["labels"].append([role, client, str(c)])


def _compute_per_role(contents: list[RecordDict]) -> dict[str, dict[str, float]]:
    """Per role, a device's mean CPU seconds (and train steps) on this message."""
    out: dict[str, dict[str, float]] = {}
    for role in ("source", "target"):
        mine = [c[protocol.METRICS] for c in contents
                if protocol.METRICS in c.metric_records and _finite(c[protocol.METRICS].get(protocol.COMPUTE_SECONDS))
                and _role(c[protocol.METRICS]) == role]
        if mine:
            out[role] = {"cpu_seconds": float(np.mean([float(m[protocol.COMPUTE_SECONDS]) for m in mine]))}
            steps = [float(m[protocol.TRAIN_STEPS]) for m in mine if _finite(m.get(protocol.TRAIN_STEPS))]
            if steps:
                out[role]["train_steps"] = float(np.mean(steps))
    return out


def _finite(value: Any) -> bool:
    """A number a record may report (not a list, not NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _role(metrics: Any) -> str:
    """``"target"`` or ``"source"``: the population a reply is compared and aggregated with."""
    return "target" if metrics.get(protocol.IS_TARGET) == 1 else "source"


def _as_reply(msg: Message, node: int, roster: Roster) -> Reply:
    """A reply as the method's server state sees it: plain numbers and
    arrays, and the windows the device declared (the bound on its counts)."""
    metrics = dict(msg.content[protocol.METRICS]) if protocol.METRICS in msg.content.metric_records else {}
    records = {name: {k: a.numpy() for k, a in record.items()}
               for name, record in msg.content.array_records.items() if name not in (protocol.ARRAYS, protocol.UPDATE)}
    known = roster.declared.get(node)
    windows = known.train_windows if known is not None else Reply.windows
    return Reply(node=node, target=_role(metrics) == "target", metrics=metrics, records=records, windows=windows)


def _reply_order(msg: Message) -> tuple[float, int]:
    metrics = msg.content[protocol.METRICS] if protocol.METRICS in msg.content.metric_records else {}
    partition = metrics.get(protocol.PARTITION, -1)
    number = float(partition) if isinstance(partition, (int, float)) and np.isfinite(partition) else -1.0
    return number, int(msg.metadata.src_node_id)


@dataclass
class RoundStats:
    """What happened in one round, filled as the round proceeds."""

    started: float = field(default_factory=time.time)
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


class FedSenseStrategy(FedAvg):
    """FedAvg that also sends round config, sums confusions and reports each round.

    Args:
        num_classes: K of the ``K*K`` confusion matrices clients return.
        method_state: the adaptation method's server side
            (:class:`fedsense.methods.ServerState`): what it adds to
            instructions, learns from replies and reports; ``None`` for plain FedAvg.
        on_round_end: called after each round's evaluation with
            ``(server_round, record, arrays)``; the ServerApp logs and checkpoints there.
        on_reply: called with ``(message type, inventory)`` for every reply with
            content: what left a device, for ``output.message_log``.
        min_replies: fewer successful train replies than this fail the run.
        projector_rounds: rounds whose evaluation also asks every device for
            class centroids of its embeddings (``record["projector"]``).
        projector_min_count: fewest windows behind a reported centroid.
        aggregation: how shared arrays are combined (``fedsense.aggregation``);
            ``mean`` is Flower's weighted FedAvg average.
        aggregation_settings: trimmed-mean's cut and krum's assumed attackers.
        max_update_norm_ratio: train replies whose update is longer than this
            times the round's median are refused (0: no norm bound); see
            :mod:`strategies.validation` for every check.
        min_update_cosine: train replies of clients whose updates' cosine with
            the mean update of the other replies of their role is, averaged
            over the rounds so far, below this are refused (-1: off).
        privacy: with ``dp`` on, devices are asked to clip their updates and
            the average gets Gaussian noise (:mod:`fedsense.privacy`); each
            round's record reports the epsilon spent so far.
        modality_aware: with ``mean``, average each modality's branch over the
            devices that have that modality only (by their windows with it),
            once some device lacks one (:func:`fedsense.aggregation.modality_mean`).
        update_encoding: how devices send their trained arrays
            (:mod:`fedsense.compression`); compressed updates are decoded
            against the round's global arrays before anything else looks at them.
        rounds_done: rounds completed before this strategy started (a resumed
            run): Flower's ``start`` counts from 1, every hook adds this.
        roster: what each node declared before round 1 (role, windows);
            replies that contradict it are refused (:mod:`strategies.roster`).
        required_train: metric keys every train reply must carry as finite
            numbers beyond the common ones (windows per modality, the
            method's own numbers).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        min_replies: int = 1,
        method_state: ServerState | None = None,
        on_round_end: Callable[[int, dict[str, Any], ArrayRecord], None] | None = None,
        on_reply: Callable[[str, dict[str, Any]], None] | None = None,
        projector_rounds: Iterable[int] = (),
        projector_min_count: int = 5,
        max_update_norm_ratio: float = 10.0,
        min_update_cosine: float = -1.0,
        aggregation: str = "mean",
        aggregation_settings: AggregationSettings = AggregationSettings(),
        privacy: PrivacyConfig | None = None,
        update_encoding: str = UNCOMPRESSED,
        modality_aware: bool = True,
        rounds_done: int = 0,
        roster: Roster | None = None,
        required_train: Sequence[str] = (),
        **fedavg: Any,
    ) -> None:
        super().__init__(**fedavg)
        self.num_classes = num_classes
        self.min_replies = min_replies
        self.method_state = method_state
        self.on_round_end = on_round_end
        self.on_reply = on_reply
        self.projector_rounds = set(projector_rounds)
        self.projector_min_count = projector_min_count
        self.max_update_norm_ratio = max_update_norm_ratio
        self.min_update_cosine = min_update_cosine
        AGGREGATORS[aggregation]  # unknown names fail here, listing the valid ones
        self.aggregation = aggregation
        self.aggregation_settings = aggregation_settings
        if update_encoding != UNCOMPRESSED:
            CODECS[update_encoding]  # unknown names fail here, listing the valid ones
        self.update_encoding = update_encoding
        self.modality_aware = modality_aware
        self.stats = RoundStats()
        self.totals = {"bytes_up": 0, "bytes_down": 0, "bytes_up_train": 0}
        self.current_arrays: ArrayRecord | None = None
        self.history: list[dict[str, Any]] = []
        self.privacy = privacy if privacy is not None and privacy.dp else None
        self.releases = 0  # noisy averages released so far (privacy accounting)
        # OS entropy: noise that anyone knowing the config's seed could regenerate protects nothing.
        self.noise_rng = np.random.default_rng()
        self.rounds_done = rounds_done
        self.reputation: dict[str, tuple[float, int]] = {}  # client -> (sum, count) of direction cosines
        self.roster = roster if roster is not None else Roster()
        self.required_train = tuple(required_train)

    # ------------------------------------------------------------ resuming
    def snapshot(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What :meth:`restore` needs to continue after the last complete
        round: JSON-able state and arrays (the statistics reference)."""
        state: dict[str, Any] = {
            "history": [{k: v for k, v in rec.items() if k != "projector"} for rec in self.history],
            "totals": dict(self.totals),
            "releases": self.releases,
            "reputation": {k: list(v) for k, v in self.reputation.items()},
        }
        arrays: dict[str, np.ndarray] = {}
        if self.method_state is not None:
            state["method"], arrays = self.method_state.snapshot()
        return state, arrays

    def restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Continue from a :meth:`snapshot`: history, totals, privacy
        accounting and statistics reference; the rounds are counted on."""
        self.history = list(state["history"])
        self.totals = {**self.totals, **{k: int(v) for k, v in state["totals"].items()}}
        self.releases = int(state.get("releases", 0))
        self.reputation = {k: (float(v[0]), int(v[1])) for k, v in state.get("reputation", {}).items()}
        self.rounds_done = len(self.history)
        if self.method_state is not None and "method" in state:
            self.method_state.restore(state["method"], arrays)

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.rounds_done
        self.stats = RoundStats()
        self.current_arrays = arrays
        extra = self.method_state.train_config(server_round) if self.method_state else {}
        if self.privacy is not None:
            extra[protocol.CFG_CLIPPING_NORM] = self.privacy.clipping_norm
        if self.update_encoding != UNCOMPRESSED:
            extra[protocol.CFG_UPDATE_ENCODING] = self.update_encoding
        config = ConfigRecord({**dict(config), **extra})
        messages = list(super().configure_train(server_round, arrays, config, grid))
        payload = self.method_state.train_payload(server_round) if self.method_state else {}
        if messages:  # one RecordDict is shared by all messages
            for name, arrays_of in payload.items():
                messages[0].content[name] = ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays_of.items()})
        self.stats.sampled = sorted(m.metadata.dst_node_id for m in messages)
        self.stats.outgoing = list(messages)
        self.stats.bytes_down += sum(record_nbytes(m.content) for m in messages)
        return messages

    def _split_replies(self, replies: Iterable[Message]) -> list[Message]:
        valid = []
        for msg in replies:
            self.stats.bytes_up += record_nbytes(msg.content) if msg.has_content() else 0
            if self.on_reply is not None and msg.has_content():
                self.on_reply(msg.metadata.message_type, reply_inventory(msg.content))
            if msg.has_error():
                reason = f"node {self._origin(msg)}: {_last_line(msg.error.reason)}"
                self.stats.errors.append(reason)
                log.warning("client error: %s", reason)
            else:
                valid.append(msg)
        return valid

    def _decode_updates(self, server_round: int, replies: list[Message]) -> list[Message]:
        """Compressed replies with their UPDATE record replaced by the ARRAYS it
        stands for (global + change); one that cannot be decoded is refused,
        named and counted like any other bad update."""
        if self.update_encoding == UNCOMPRESSED or self.current_arrays is None:
            return replies
        reference = {k: a.numpy() for k, a in self.current_arrays.items()}
        kept = []
        for msg in replies:
            content = msg.content
            try:
                if protocol.UPDATE not in content.array_records:
                    raise UpdateError(f"no '{protocol.UPDATE}' record in a reply to an {self.update_encoding} round")
                record = content[protocol.UPDATE]
                missing = {protocol.UPDATE_VALUES, protocol.UPDATE_SCALES} - set(record.keys())
                if missing:
                    raise UpdateError(f"'{protocol.UPDATE}' record lacks {sorted(missing)}")
                arrays = decode(record[protocol.UPDATE_VALUES].numpy(), record[protocol.UPDATE_SCALES].numpy(),
                                reference, self.update_encoding)
            except UpdateError as err:
                reason = f"node {msg.metadata.src_node_id}: {err}"
                self.stats.rejected.append(reason)
                log.warning("round %d: refused an update: %s", server_round, reason)
                continue
            content.pop(protocol.UPDATE)
            content[protocol.ARRAYS] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
            kept.append(msg)
        return kept

    def _refuse_bad_updates(self, server_round: int, replies: list[Message]) -> list[Message]:
        """The replies that pass :func:`strategies.validation.screen`; the others
        are logged with their node and reason, counted, and left out."""
        if self.current_arrays is None or not replies:
            return replies
        reference = {k: a.numpy() for k, a in self.current_arrays.items()}
        candidates, roles = [], []
        for msg in replies:
            content = msg.content
            arrays = ({k: a.numpy() for k, a in content[protocol.ARRAYS].items()}
                      if protocol.ARRAYS in content.array_records else {})
            metrics = dict(content[protocol.METRICS]) if protocol.METRICS in content.metric_records else {}
            candidates.append((arrays, metrics))
            roles.append(_role(metrics))
        verdicts = screen(candidates, reference, self.max_update_norm_ratio, groups=roles,
                          required=self.required_train)
        for i, msg in enumerate(replies):  # the server decides what it trusts: what the device declared
            if verdicts[i] is None:
                verdicts[i] = self.roster.check_train(self._origin(msg), candidates[i][1])
            if verdicts[i] is None and self.privacy is not None:
                verdicts[i] = unclipped(candidates[i][0], reference, self.privacy.clipping_norm)
        if self.min_update_cosine > -1:
            self._judge_directions(candidates, reference, roles, verdicts, replies)
        kept = []
        for msg, verdict in zip(replies, verdicts):
            if verdict is None:
                kept.append(msg)
                continue
            reason = f"node {msg.metadata.src_node_id}: {verdict}"
            self.stats.rejected.append(reason)
            log.warning("round %d: refused an update: %s", server_round, reason)
        return kept

    def _judge_directions(self, candidates: list, reference: dict, roles: list[str], verdicts: list,
                          replies: list[Message]) -> None:
        """Refuse updates of clients whose updates point, on average over the
        rounds so far, away from the others of their role (a client's running
        mean cosine below ``min_update_cosine``). One round's cosine is noisy
        once training converges; an attacker's is negative round after round."""
        usable = [i for i, v in enumerate(verdicts) if v is None]
        cosines = direction_cosines([candidates[i][0] for i in usable], reference, [roles[i] for i in usable])
        for i, cosine in zip(usable, cosines):
            if cosine is None:
                continue
            name = _client_id(replies[i])
            total, count = self.reputation.get(name, (0.0, 0))
            total, count = total + cosine, count + 1
            self.reputation[name] = (total, count)
            if total / count < self.min_update_cosine:
                verdicts[i] = (f"update points away from the other {roles[i]} updates: cosine {cosine:.3f} this round, "
                               f"mean {total / count:.3f} over {count} rounds < {self.min_update_cosine:g}")

    def _origin(self, reply: Message) -> int:
        """The node a reply is about. The SuperLink answers for a node that
        vanished (heartbeat lost) as node 1; the instruction it replies to
        names the node that was asked."""
        for sent in self.stats.outgoing:
            if sent.metadata.message_id and sent.metadata.message_id == reply.metadata.reply_to_message_id:
                return int(sent.metadata.dst_node_id)
        return int(reply.metadata.src_node_id)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.rounds_done
        replies = list(replies)
        before = self.stats.bytes_up
        split = self._split_replies(replies)
        self.stats.bytes_up_train = self.stats.bytes_up - before
        decoded = self._decode_updates(server_round, split)
        valid = self._refuse_bad_updates(server_round, decoded)
        self.stats.replied = sorted(m.metadata.src_node_id for m in valid)
        if len(valid) < self.min_replies:
            raise RoundFailed(
                f"round {server_round}: {len(valid)} of {len(self.stats.sampled)} clients replied usefully "
                f"(at least {self.min_replies} needed). Errors: {self.stats.errors[:5]} "
                f"Refused: {self.stats.rejected[:5]}"
            )
        # Replies arrive in whatever order clients finish; a fixed order makes
        # the floating-point average, and so the whole run, reproducible.
        valid.sort(key=_reply_order)
        contents = [m.content for m in valid]
        weights = [float(c[protocol.METRICS][protocol.NUM_EXAMPLES]) for c in contents]
        if sum(weights) <= 0:
            # Nobody had labelled windows to learn from: keep the global model.
            log.warning("round %d: no client trained on any window", server_round)
            return None, MetricRecord({"clients-trained": 0})
        weighted = [c for c, w in zip(contents, weights) if w > 0]
        if self.aggregation == "mean":
            arrays = aggregate_arrayrecords(weighted, protocol.NUM_EXAMPLES)
        else:
            # robust rules within each role (see fedsense.aggregation.by_group)
            combined = by_group(
                self.aggregation,
                [{k: a.numpy() for k, a in c[protocol.ARRAYS].items()} for c in weighted],
                [w for w in weights if w > 0],
                [_role(c[protocol.METRICS]) for c in weighted],
                self.aggregation_settings,
            )
            arrays = ArrayRecord({k: Array(v) for k, v in combined.items()})
        task = [float(c[protocol.METRICS][protocol.TASK_WINDOWS]) for c in contents]
        self.stats.train = {
            "loss_task": _weighted_mean(contents, protocol.LOSS_TASK, task),
            "clients_trained": len(weighted),
        }
        self.stats.compute["train"] = _compute_per_role(contents)
        disc_weights: list[float] | None = None  # per reply, when federated discriminators are averaged
        if self.method_state is not None:
            is_target = [_role(c[protocol.METRICS]) == "target" for c in contents]
            balanced = self.method_state.discriminator_weights(weights, is_target)
            keys = [k for k in arrays if is_discriminator(k)]
            if balanced is not None and keys:
                # federated discriminators: sources and targets weigh half each
                norm = sum(balanced) or 1.0
                disc_weights = balanced
                for key in keys:
                    arrays[key] = Array(
                        sum(c[protocol.ARRAYS][key].numpy() * (w / norm) for c, w in zip(contents, balanced) if w > 0)
                    )
            typed = [_as_reply(m, self._origin(m), self.roster) for m in valid]
            self.stats.train.update(self.method_state.after_train(typed, weights))
        if self.modality_aware and self.aggregation == "mean":
            self._average_branches_over_their_devices(arrays, contents, weights, disc_weights)
        if self.method_state is not None:  # e.g. a discriminator reset
            for key, value in self.method_state.adjust({k: a.numpy() for k, a in arrays.items()}).items():
                arrays[key] = Array(np.asarray(value))
        if self.privacy is not None:
            arrays = self._add_privacy_noise(arrays, weights, disc_weights)
        self.current_arrays = arrays
        return arrays, MetricRecord(
            {"loss-task": self.stats.train["loss_task"], "clients-trained": len(weighted)}
        )

    def _average_branches_over_their_devices(
        self, arrays: ArrayRecord, contents: list[RecordDict], weights: list[float], disc_weights: list[float] | None
    ) -> None:
        """Replace, in ``arrays``, each modality branch's average by the one over
        the devices that have that modality. Nothing changes (bit for bit)
        while every device has every modality in every window."""
        metrics = [c[protocol.METRICS] for c in contents]
        prefix = protocol.modality_windows_key("")
        modalities = sorted(k[len(prefix):] for k in metrics[0] if k.startswith(prefix))
        windows = [{m: float(mt[protocol.modality_windows_key(m)]) for m in modalities} for mt in metrics]
        if self.current_arrays is None or all(
            windows[i][m] == weights[i] for i in range(len(contents)) if weights[i] > 0 for m in modalities
        ):
            return
        current = {k: a.numpy() for k, a in self.current_arrays.items()}
        replies = [{k: a.numpy() for k, a in c[protocol.ARRAYS].items()} for c in contents]
        trained = [i for i, w in enumerate(weights) if w > 0]
        encoders = modality_mean([{k: v for k, v in replies[i].items() if not k.startswith("discriminators.")}
                                  for i in trained], [windows[i] for i in trained], current, modalities)
        discriminators: dict[str, np.ndarray] = {}
        if disc_weights is not None:  # federated discriminators: their balanced domain weights
            discriminators = modality_mean([{k: v for k, v in r.items() if k.startswith("discriminators.")}
                                            for r in replies], windows, current, modalities, weights=disc_weights)
        for key, value in {**encoders, **discriminators}.items():
            arrays[key] = Array(np.asarray(value))

    def _add_privacy_noise(
        self, arrays: ArrayRecord, weights: list[float], disc_weights: list[float] | None
    ) -> ArrayRecord:
        """Gaussian noise on the average for one device's largest share of it
        (window weights; the balanced domain weights of federated discriminators)."""
        assert self.privacy is not None
        share = largest_share(weights)
        if disc_weights and sum(disc_weights) > 0:
            share = max(share, largest_share(disc_weights))
        std = noise_std(self.privacy.noise_multiplier, self.privacy.clipping_norm, share)
        noisy = add_noise({k: a.numpy() for k, a in arrays.items()}, std, self.noise_rng)
        self.releases += 1
        self.stats.train["privacy"] = {"noise_std": std}
        return ArrayRecord({k: Array(v) for k, v in noisy.items()})

    # --------------------------------------------------------------- evaluate
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.rounds_done
        if server_round in self.projector_rounds:
            config = ConfigRecord({**dict(config), protocol.CFG_PROJECTOR: self.projector_min_count})
        if self.method_state is not None:
            config = ConfigRecord({**dict(config), **self.method_state.evaluate_config(server_round)})
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))
        if self.method_state is not None and messages:
            for name, arrays_of in self.method_state.evaluate_payload(server_round).items():
                # one RecordDict is shared by all messages
                messages[0].content[name] = ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays_of.items()})
            for msg in messages:
                own = self.method_state.evaluate_payload_for(int(msg.metadata.dst_node_id))
                if own:  # this node's own records (the content is shared: copy it)
                    content = RecordDict(dict(msg.content.items()))
                    for name, arrays_of in own.items():
                        content[name] = ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays_of.items()})
                    msg.content = content
        self.stats.outgoing += messages
        self.stats.bytes_down += sum(record_nbytes(m.content) for m in messages)
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.rounds_done
        valid = self._split_replies(list(replies))
        k = self.num_classes
        sums = {"source": np.zeros((k, k), np.int64), "target": np.zeros((k, k), np.int64)}
        clients = {"source": 0, "target": 0}
        per_client: dict[str, dict[str, float]] = {}
        projector: dict[str, dict[str, list]] = {}
        accepted: list[Reply] = []
        for msg in sorted(valid, key=_reply_order):
            metrics = msg.content[protocol.METRICS] if protocol.METRICS in msg.content.metric_records else {}
            problem = malformed_evaluation(dict(metrics), k) or self.roster.check_evaluate(self._origin(msg),
                                                                                           dict(metrics))
            if problem is not None:  # refused, not summed
                self.stats.errors.append(f"node {msg.metadata.src_node_id}: {problem}")
                log.warning("round %d: refused an evaluation: node %s: %s", server_round, msg.metadata.src_node_id,
                            problem)
                continue
            role = _role(metrics)
            accepted.append(_as_reply(msg, self._origin(msg), self.roster))
            flat = np.asarray(metrics[protocol.CONFUSION], dtype=np.int64)
            sums[role] += flat.reshape(k, k)
            clients[role] += 1
            per_client[_client_id(msg)] = {"macro_f1": macro_f1(flat.reshape(k, k))}
            if protocol.EMBEDDINGS in msg.content:
                _add_centroids(projector, msg, role)
        self.stats.compute["evaluate"] = _compute_per_role([m.content for m in valid])
        if self.method_state is not None:
            self.method_state.after_evaluate(accepted)
            for problem in getattr(self.method_state, "refused", []):
                self.stats.errors.append(problem)
                log.warning("round %d: %s", server_round, problem)
        record: dict[str, Any] = {}
        for role in ("target", "source"):
            if clients[role]:
                f1 = {str(c): float(v) for c, v in enumerate(per_class_f1(sums[role])) if np.isfinite(v)}
                record[role] = {**summarize(sums[role]), "clients": clients[role], "f1": f1}
        record["client"] = per_client
        record["train"] = {k: v for k, v in self.stats.train.items() if k != "privacy"}
        if any(self.stats.compute.values()):
            record["compute"] = self.stats.compute
        if self.method_state is not None:
            record.update(self.method_state.extra_record())
        if self.privacy is not None:
            spent = epsilon(self.privacy.noise_multiplier, self.releases, self.privacy.delta)
            record["privacy"] = {
                "epsilon": spent if np.isfinite(spent) else None,  # None: no noise, no guarantee
                "delta": self.privacy.delta,
                "noise_std": self.stats.train.get("privacy", {}).get("noise_std", 0.0),
                "releases": self.releases,
            }
        adapt = self.method_state.record() if self.method_state is not None else {}
        if adapt:
            record["adapt"] = adapt
        self.totals["bytes_up"] += self.stats.bytes_up
        self.totals["bytes_down"] += self.stats.bytes_down
        self.totals["bytes_up_train"] += self.stats.bytes_up_train
        record["comm"] = {"bytes_up": self.stats.bytes_up, "bytes_down": self.stats.bytes_down,
                          "bytes_up_train": self.stats.bytes_up_train}
        # Counters are counts of nodes, never averaged; "nodes" names them.
        failed = sorted(set(self.stats.sampled) - set(self.stats.replied))
        record["clients"] = {
            "sampled": len(self.stats.sampled),
            "replied": len(self.stats.replied),
            "failed": len(failed),
            "errors": len(self.stats.errors),  # error replies of train and evaluate
            "rejected": len(self.stats.rejected),  # train replies refused by validation
        }
        record["nodes"] = {"sampled": self.stats.sampled, "replied": self.stats.replied, "failed": failed}
        if self.stats.errors:
            record["errors"] = list(self.stats.errors)  # "node <id>: <reason>", metrics.jsonl only
        if self.stats.rejected:
            record["rejected"] = list(self.stats.rejected)
        record["seconds"] = round(time.time() - self.stats.started, 3)
        record["confusion"] = {r: sums[r].tolist() for r in sums if clients[r]}
        if projector:
            record["projector"] = projector
        self.history.append(record)
        if self.on_round_end is not None and self.current_arrays is not None:
            self.on_round_end(server_round, record, self.current_arrays)
        flat = {
            f"{role}-{name}": float(record[role][name])
            for role in ("target", "source")
            if role in record
            for name in ("macro_f1", "accuracy")
        }
        return MetricRecord(flat)
