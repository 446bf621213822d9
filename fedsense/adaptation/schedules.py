"""Schedules: pure functions of the server round, computed by the strategy."""

from __future__ import annotations

import math


def progress(server_round: int, total_rounds: int) -> float:
    """Training progress ``p`` in [0, 1]: 0 at round 1, 1 at the last round."""
    if total_rounds <= 1:
        return 1.0
    return min(max((server_round - 1) / (total_rounds - 1), 0.0), 1.0)


def dann_lambda(p: float, gamma: float = 10.0) -> float:
    """DANN's reversal coefficient ``2 / (1 + exp(-gamma p)) - 1`` (0 -> ~1)."""
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def reversal_coefficient(server_round: int, total_rounds: int, scale: float = 1.0) -> float:
    """The coefficient sent to clients in round ``server_round``."""
    return scale * dann_lambda(progress(server_round, total_rounds))
