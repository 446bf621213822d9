"""FedAvg with fedsense's hooks: round config, honest evaluation, accounting.

Only ``configure_*`` and ``aggregate_*`` are overridden; Flower's
``Strategy.start`` runs the rounds. One update's path: a train reply is read
and checked once into an :class:`fedsense.combine.Update`
(:mod:`strategies.intake`), :func:`fedsense.combine.combine` makes the new
global arrays from the round's updates and :class:`fedsense.combine.Plan`.
Evaluation replies are summed per role (:mod:`strategies.evaluation`); what
the round cost is counted in :mod:`strategies.accounting`.

With one message a round (``one_message``) the evaluate instruction of round
r is not sent: ``configure_evaluate`` keeps it and the train instructions of
round r+1 carry it (:mod:`strategies.bundle`), so round r's record — the
evaluation of the arrays after round r, as with two messages — is made when
round r+1's replies arrive, before they are aggregated; the last round ends
with evaluate instructions as before.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedsense import protocol
from fedsense.aggregation import AGGREGATORS, AggregationSettings
from fedsense.combine import Plan, Update, combine
from fedsense.compression import CODECS, UNCOMPRESSED
from fedsense.config import PrivacyConfig
from fedsense.methods import ServerState
from fedsense.privacy import epsilon, largest_share, noise_std
import strategies.resume as resume
from strategies.accounting import RoundStats, record_nbytes, reply_inventory
from strategies.bundle import carry_evaluation, split_reply
from strategies.evaluation import compute_per_role, read_evaluations, weighted_mean
from strategies.intake import Screening, metrics_of, train_updates, usable
from strategies.roster import Roster

log = logging.getLogger("fedsense.strategy")


class RoundFailed(RuntimeError):
    """Too few clients replied usefully for a round to count."""


def _record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


class FedSenseStrategy(FedAvg):
    """FedAvg that also sends round config, sums confusions and reports each round.

    Args:
        num_classes: K of the ``K*K`` confusion matrices clients return.
        method_state: the adaptation method's server side (:class:`fedsense.methods.ServerState`);
            ``None`` for plain FedAvg.
        on_round_end: called after each round's evaluation with ``(server_round, record, arrays)``.
        on_reply: called with ``(message type, inventory)`` for every reply with content.
        min_replies: fewer accepted train replies than this fail the run.
        projector_rounds: rounds whose evaluation also asks for class centroids of embeddings.
        projector_min_count: fewest windows behind a reported centroid.
        aggregation, aggregation_settings, modality_aware: the :class:`fedsense.combine.Plan`'s rule.
        max_update_norm_ratio, min_update_cosine, required_train: the checks of
            :class:`strategies.intake.Screening` (see :mod:`strategies.validation`).
        privacy: with ``dp`` on, devices clip their updates and the average gets
            Gaussian noise (:mod:`fedsense.privacy`); records report the epsilon spent.
        update_encoding: how devices send their trained arrays (:mod:`fedsense.compression`).
        rounds_done: rounds completed before this strategy started (a resumed run).
        roster: what each node declared before round 1 (:mod:`strategies.roster`).
        one_message: evaluate inside the next round's train instructions (see the module).
        last_round: the run's last round (it ends with evaluate instructions).
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
        one_message: bool = False,
        last_round: int = 0,
        **fedavg: Any,
    ) -> None:
        super().__init__(**fedavg)
        AGGREGATORS[aggregation]  # unknown names fail here, listing the valid ones
        if update_encoding != UNCOMPRESSED:
            CODECS[update_encoding]  # unknown names fail here, listing the valid ones
        self.num_classes, self.min_replies, self.method_state = num_classes, min_replies, method_state
        self.on_round_end, self.on_reply = on_round_end, on_reply
        self.projector_rounds, self.projector_min_count = set(projector_rounds), projector_min_count
        self.aggregation, self.aggregation_settings = aggregation, aggregation_settings
        self.update_encoding, self.modality_aware = update_encoding, modality_aware
        self.privacy = privacy if privacy is not None and privacy.dp else None
        self.roster = roster if roster is not None else Roster()
        self.screening = Screening(self.roster, max_update_norm_ratio, min_update_cosine, update_encoding,
                                   self.privacy.clipping_norm if self.privacy else None, tuple(required_train))
        self.stats = RoundStats()
        self.totals = {"bytes_up": 0, "bytes_down": 0, "bytes_up_train": 0}
        self.current_arrays: ArrayRecord | None = None
        self.history: list[dict[str, Any]] = []
        self.releases = 0  # noisy averages released so far (privacy accounting)
        # OS entropy: noise that anyone knowing the config's seed could regenerate protects nothing.
        self.noise_rng = np.random.default_rng()
        self.rounds_done = rounds_done
        self.reputation: dict[str, tuple[float, int]] = {}  # client -> (sum, count) of direction cosines
        self.one_message, self.last_round = one_message, last_round
        # an evaluate instruction's config and payloads, for the next round's train instructions to carry
        self.carried: tuple[ConfigRecord, dict[str, ArrayRecord]] | None = None
        # the round whose evaluation they bring back (stats None: recorded before a resume, left out)
        self.pending: tuple[int, RoundStats | None] | None = None
        self.in_flight: tuple[ConfigRecord, dict[str, ArrayRecord]] | None = None  # what the instructions out carry
        self._random_at_send = random.getstate()

    # ------------------------------------------------------------ resuming
    def snapshot(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return resume.snapshot(self)

    def restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        resume.restore(self, state, arrays)

    def random_state(self) -> Any:
        """Python's random state for the resume point: with instructions out
        that carry an evaluation, as it was before they were sampled."""
        return self._random_at_send if self.in_flight is not None else random.getstate()

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.rounds_done
        if self.pending is not None and self.pending[1] is not None:
            self.pending[1].ended = time.time()  # the round whose evaluation rides along ends here
        self._random_at_send = random.getstate()  # Flower samples the nodes with it
        self.stats = RoundStats()
        self.current_arrays = arrays
        extra = self.method_state.train_config(server_round) if self.method_state else {}
        if self.privacy is not None:
            extra[protocol.CFG_CLIPPING_NORM] = self.privacy.clipping_norm
        if self.update_encoding != UNCOMPRESSED:
            extra[protocol.CFG_UPDATE_ENCODING] = self.update_encoding
        messages = list(super().configure_train(server_round, arrays, ConfigRecord({**dict(config), **extra}), grid))
        if messages:  # one RecordDict is shared by all messages
            for name, arrays_of in (self.method_state.train_payload(server_round) if self.method_state else {}).items():
                messages[0].content[name] = _record(arrays_of)
        if self.carried is not None:
            (evaluate_config, payload), self.carried = self.carried, None
            carry_evaluation(messages, evaluate_config, payload, self._own_records)
            self.in_flight = (evaluate_config, payload)
        self.stats.sampled = sorted(m.metadata.dst_node_id for m in messages)
        self.stats.sent(messages)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.rounds_done
        valid = usable(list(replies), self.stats, self.on_reply if self.pending is None else None)
        if self.pending is not None:  # the replies bring the last round's evaluation: that round ends first
            (evaluated, stats), self.pending = self.pending, None
            valid = self._evaluation_parts(evaluated, valid, stats)
            self.in_flight = None
        self.stats.bytes_up_train = sum(record_nbytes(m.content) for m in valid)
        current = {k: a.numpy() for k, a in self.current_arrays.items()} if self.current_arrays is not None else None
        updates = train_updates(server_round, valid, current, self.screening, self.stats, self.reputation)
        self.stats.replied = sorted(u.node for u in updates)
        if len(updates) < self.min_replies:
            raise RoundFailed(
                f"round {server_round}: {len(updates)} of {len(self.stats.sampled)} clients replied usefully "
                f"(at least {self.min_replies} needed). Errors: {self.stats.errors[:5]} "
                f"Refused: {self.stats.rejected[:5]}"
            )
        weights = [u.weight for u in updates]
        if sum(weights) <= 0:  # nobody had labelled windows to learn from: keep the global model
            log.warning("round %d: no client trained on any window", server_round)
            return None, MetricRecord({"clients-trained": 0})
        trained = sum(w > 0 for w in weights)
        task = [float(u.metrics[protocol.TASK_WINDOWS]) for u in updates]
        self.stats.train = {"loss_task": weighted_mean(updates, protocol.LOSS_TASK, task), "clients_trained": trained}
        self.stats.compute["train"] = compute_per_role([u.metrics for u in updates])
        plan = self._plan(updates, weights)
        if self.method_state is not None:
            self.stats.train.update(self.method_state.after_train(list(updates), weights))
        arrays = combine(updates, plan, current, self.noise_rng)
        assert arrays is not None  # some weight is positive
        self.current_arrays = _record(arrays)
        return self.current_arrays, MetricRecord({"loss-task": self.stats.train["loss_task"], "clients-trained": trained})

    def _plan(self, updates: list[Update], weights: list[float]) -> Plan:
        """This round's :class:`fedsense.combine.Plan` (counts a privacy release)."""
        balanced = (self.method_state.discriminator_weights(weights, [u.target for u in updates])
                    if self.method_state is not None else None)
        std = None
        if self.privacy is not None:  # noise for one device's largest share of the average
            share = largest_share(weights)
            if balanced and sum(balanced) > 0:
                share = max(share, largest_share(balanced))
            std = noise_std(self.privacy.noise_multiplier, self.privacy.clipping_norm, share)
            self.releases += 1
            self.stats.train["privacy"] = {"noise_std": std}
        return Plan(rule=self.aggregation, settings=self.aggregation_settings, modality_aware=self.modality_aware,
                    discriminator_weights=balanced, noise_std=std,
                    adjust=self.method_state.adjust if self.method_state is not None else None)

    # --------------------------------------------------------------- evaluate
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.rounds_done
        if server_round in self.projector_rounds:
            config = ConfigRecord({**dict(config), protocol.CFG_PROJECTOR: self.projector_min_count})
        if self.method_state is not None:
            config = ConfigRecord({**dict(config), **self.method_state.evaluate_config(server_round)})
        if self.one_message and server_round < self.last_round and self.fraction_evaluate > 0:
            # kept for the next round's train instructions, which send these very arrays
            self.carried = (ConfigRecord({**dict(config), protocol.CFG_ROUND: server_round}),
                            self._evaluate_payload(server_round))
            return []
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))
        if messages:
            for name, record in self._evaluate_payload(server_round).items():
                messages[0].content[name] = record  # one RecordDict is shared by all messages
            for msg in messages:
                own = self._own_records(int(msg.metadata.dst_node_id))
                if own:  # this node's own records (the content is shared: copy it)
                    msg.content = RecordDict({**dict(msg.content.items()), **own})
        self.stats.sent(messages)
        return messages

    def _evaluate_payload(self, server_round: int) -> dict[str, ArrayRecord]:
        if self.method_state is None:
            return {}
        return {name: _record(a) for name, a in self.method_state.evaluate_payload(server_round).items()}

    def _own_records(self, node: int) -> dict[str, ArrayRecord]:
        own = self.method_state.evaluate_payload_for(node) if self.method_state is not None else {}
        return {name: _record(a) for name, a in own.items()}

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.rounds_done
        if self.carried is not None:  # nothing was sent: the evaluation rides with the next instructions
            self.pending = (server_round, self.stats)
            return None
        valid = usable(list(replies), self.stats, self.on_reply)
        return self._evaluated(server_round, valid, self.stats)

    def _evaluation_parts(self, server_round: int, replies: list[Message], stats: RoundStats | None) -> list[Message]:
        """End round ``server_round`` (``stats``) with the evaluations these
        replies to the next round's instructions carry; returns their train
        parts (``stats`` None: the round was recorded before a resume)."""
        trains, evaluations = [], []
        for reply in replies:
            evaluation, train = split_reply(reply)
            trains.append(train)
            if self.on_reply is not None:  # the message log lists the two replies the message stands for
                for part in (train, evaluation):
                    if part is not None and part.has_content():
                        self.on_reply(part.metadata.message_type, reply_inventory(part.content))
            if stats is None:
                continue
            if evaluation is None:
                stats.errors.append(f"node {stats.origin(reply)}: the reply carries no evaluation")
            elif evaluation.has_error():
                stats.errors.append(f"node {stats.origin(reply)}: evaluation: {evaluation.error.reason}")
            else:
                evaluations.append(evaluation)
        if stats is not None:
            stats.outgoing += self.stats.outgoing  # the instructions these reply to name their nodes
            self._evaluated(server_round, evaluations, stats)
        return trains

    def _evaluated(self, server_round: int, valid: list[Message], stats: RoundStats) -> MetricRecord:
        """Round ``server_round``'s evaluation replies in, its record out."""
        evaluations = read_evaluations(server_round, valid, self.num_classes, self.roster, stats)
        stats.compute["evaluate"] = compute_per_role([metrics_of(m) for m in valid])
        if self.method_state is not None:
            self.method_state.after_evaluate(evaluations.accepted)
            for problem in getattr(self.method_state, "refused", []):
                stats.errors.append(problem)
                log.warning("round %d: %s", server_round, problem)
        record = self._round_record(server_round, evaluations.sections(), stats)
        record["confusion"] = evaluations.confusion()
        if evaluations.projector:
            record["projector"] = evaluations.projector
        self.history.append(record)
        if self.on_round_end is not None and self.current_arrays is not None:
            self.on_round_end(server_round, record, self.current_arrays)
        return MetricRecord({f"{r}-{name}": float(record[r][name]) for r in ("target", "source") if r in record
                             for name in ("macro_f1", "accuracy")})

    def _round_record(self, server_round: int, record: dict[str, Any], stats: RoundStats) -> dict[str, Any]:
        """The round's record beyond the evaluation sums: training, compute,
        the method's sections, privacy spent and the round's accounting."""
        record["train"] = {k: v for k, v in stats.train.items() if k != "privacy"}
        if any(stats.compute.values()):
            record["compute"] = stats.compute
        if self.method_state is not None:
            record.update(self.method_state.extra_record())
        if self.privacy is not None:
            spent = epsilon(self.privacy.noise_multiplier, self.releases, self.privacy.delta)
            record["privacy"] = {
                "epsilon": spent if np.isfinite(spent) else None,  # None: no noise, no guarantee
                "delta": self.privacy.delta,
                "noise_std": stats.train.get("privacy", {}).get("noise_std", 0.0),
                "releases": self.releases,
            }
        adapt = self.method_state.record(server_round) if self.method_state is not None else {}
        if adapt:
            record["adapt"] = adapt
        record.update(stats.section(self.totals))
        return record
