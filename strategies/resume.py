"""A strategy's resume point: what continues a run after its last complete
round (history, byte totals, privacy releases, direction reputation, the
method's server state); the global arrays are checkpointed beside it.

With one message a round the point is taken while the next round's
instructions are out, carrying the evaluation that completed the round: the
point keeps that evaluation's config and payloads (``carried``) and the
random state from before those instructions were sampled, so a resumed run
sends the next round exactly as the uninterrupted run did — the evaluation
it brings back again is of a round already recorded, and is left out."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord

from fedsense.methods import ServerState


class Resumable(Protocol):
    """What of a strategy its resume point holds (FedSenseStrategy has it)."""

    history: list[dict[str, Any]]
    totals: dict[str, int]
    releases: int
    reputation: dict[str, tuple[float, int]]
    rounds_done: int
    method_state: ServerState | None
    in_flight: tuple[ConfigRecord, dict[str, ArrayRecord]] | None
    carried: tuple[ConfigRecord, dict[str, ArrayRecord]] | None
    pending: tuple[int, Any] | None


CARRIED = "carried/"  # resume arrays of the carried payloads: carried/<record>/<key>


def snapshot(strategy: Resumable) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """JSON-able state and arrays (the method's statistics reference)."""
    state: dict[str, Any] = {
        "history": [{k: v for k, v in rec.items() if k != "projector"} for rec in strategy.history],
        "totals": dict(strategy.totals),
        "releases": strategy.releases,
        "reputation": {k: list(v) for k, v in strategy.reputation.items()},
    }
    arrays: dict[str, np.ndarray] = {}
    if strategy.method_state is not None:
        state["method"], arrays = strategy.method_state.snapshot()
    if strategy.in_flight is not None:
        config, payload = strategy.in_flight
        state["carried"] = dict(config)
        arrays = {**arrays, **{f"{CARRIED}{name}/{k}": a.numpy() for name, record in payload.items()
                               for k, a in record.items()}}
    return state, arrays


def restore(strategy: Resumable, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Continue from a :func:`snapshot`; the rounds are counted on."""
    strategy.history = list(state["history"])
    strategy.totals = {**strategy.totals, **{k: int(v) for k, v in state["totals"].items()}}
    strategy.releases = int(state.get("releases", 0))
    strategy.reputation = {k: (float(v[0]), int(v[1])) for k, v in state.get("reputation", {}).items()}
    strategy.rounds_done = len(strategy.history)
    carried = {k: v for k, v in arrays.items() if k.startswith(CARRIED)}
    if strategy.method_state is not None and "method" in state:
        strategy.method_state.restore(state["method"], {k: v for k, v in arrays.items() if k not in carried})
    if "carried" in state:
        payload: dict[str, dict[str, Array]] = {}
        for key, value in carried.items():
            name, _, leaf = key[len(CARRIED):].partition("/")
            payload.setdefault(name, {})[leaf] = Array(np.asarray(value))
        strategy.carried = (ConfigRecord(state["carried"]), {n: ArrayRecord(r) for n, r in payload.items()})
        strategy.pending = (strategy.rounds_done, None)  # recorded already: its evaluation is left out
