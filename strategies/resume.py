"""A strategy's resume point: what continues a run after its last complete
round (history, byte totals, privacy releases, direction reputation, the
method's server state); the global arrays are checkpointed beside it."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from fedsense.methods import ServerState


class Resumable(Protocol):
    """What of a strategy its resume point holds (FedSenseStrategy has it)."""

    history: list[dict[str, Any]]
    totals: dict[str, int]
    releases: int
    reputation: dict[str, tuple[float, int]]
    rounds_done: int
    method_state: ServerState | None


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
    return state, arrays


def restore(strategy: Resumable, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Continue from a :func:`snapshot`; the rounds are counted on."""
    strategy.history = list(state["history"])
    strategy.totals = {**strategy.totals, **{k: int(v) for k, v in state["totals"].items()}}
    strategy.releases = int(state.get("releases", 0))
    strategy.reputation = {k: (float(v[0]), int(v[1])) for k, v in state.get("reputation", {}).items()}
    strategy.rounds_done = len(strategy.history)
    if strategy.method_state is not None and "method" in state:
        strategy.method_state.restore(state["method"], arrays)
