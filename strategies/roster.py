"""What the server knows of each device, fixed before round 1.

A device declares its role and its windows once, in the query round (a real
device's role comes from its operator's node config). From then on the
server trusts that declaration, not a reply: a reply claiming the other
role, more examples than the device has training windows, or a confusion
matrix or statistics over more windows than it holds is refused, named and
counted. A node that was not queried (``fed.query_nodes`` samples a large
fleet) is known from its first reply on: trust on first use, said in the
round's record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from fedsense import protocol

MAX_WINDOWS = 10_000_000  # more windows than any device holds: a declaration above is a lie


@dataclass(frozen=True)
class Declared:
    """A device's declaration: its role and how many windows it trains and tests on."""

    target: bool
    train_windows: int
    test_windows: int
    partition: int = -1  # the number it gave itself (a simulated client's partition id), -1: none

    def label(self, node: int) -> str:
        """How metrics and TensorBoard name the node: its partition and role."""
        who = f"client {self.partition}" if self.partition >= 0 else f"node {node}"
        return f"{who} ({'target' if self.target else 'source'})"


def _whole(value: object) -> int | None:
    """A whole number in [0, MAX_WINDOWS] (ints, or floats with no fraction), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0 or value > MAX_WINDOWS or value != int(value):
        return None
    return int(value)


def declaration(metrics: Mapping[str, object]) -> Declared | str:
    """A query reply's declaration, or why it is not one."""
    role = metrics.get(protocol.IS_TARGET)
    if role not in (0, 1) or isinstance(role, bool):
        return f"{protocol.IS_TARGET} {role!r} is not 0 or 1"
    train, test = _whole(metrics.get(protocol.SPEC_TRAIN_WINDOWS)), _whole(metrics.get(protocol.SPEC_TEST_WINDOWS))
    if train is None or test is None:
        return (f"window counts {metrics.get(protocol.SPEC_TRAIN_WINDOWS)!r}/{metrics.get(protocol.SPEC_TEST_WINDOWS)!r}"
                f" are not whole numbers in [0, {MAX_WINDOWS}]")
    partition = _whole(metrics.get(protocol.PARTITION))
    return Declared(bool(role), train, test, -1 if partition is None else partition)


class Roster:
    """node id -> :class:`Declared`; checks replies against it."""

    def __init__(self, declared: Mapping[int, Declared] | None = None) -> None:
        self.declared: dict[int, Declared] = dict(declared or {})
        self.first_use: set[int] = set()  # nodes known from a reply, not a query

    def _role(self, node: int, metrics: Mapping[str, object]) -> tuple[Declared | None, str | None]:
        claimed = metrics.get(protocol.IS_TARGET)
        if claimed not in (0, 1) or isinstance(claimed, bool):
            return None, f"{protocol.IS_TARGET} {claimed!r} is not 0 or 1"
        known = self.declared.get(node)
        if known is not None and bool(claimed) != known.target:
            declared = "target" if known.target else "source"
            return known, f"{protocol.IS_TARGET} {claimed} contradicts the role it declared ({declared})"
        return known, None

    def check_train(self, node: int, metrics: Mapping[str, object]) -> str | None:
        """Why a train reply contradicts what ``node`` declared, or None."""
        known, problem = self._role(node, metrics)
        if problem:
            return problem
        if known is None:
            count = _whole(metrics.get(protocol.NUM_EXAMPLES))
            if count is None:
                return f"{protocol.NUM_EXAMPLES} {metrics.get(protocol.NUM_EXAMPLES)!r} is not a window count"
            self.declared[node] = known = Declared(bool(metrics[protocol.IS_TARGET]), count, MAX_WINDOWS)
            self.first_use.add(node)
        for key in (protocol.NUM_EXAMPLES, protocol.TASK_WINDOWS,
                    *(k for k in metrics if k.startswith(protocol.modality_windows_key("")))):
            if key in metrics:
                count = _whole(metrics[key])
                if count is None or count > known.train_windows:
                    return f"{key} {metrics[key]!r} is not a count of at most the {known.train_windows} " \
                           f"training windows it declared"
        return None

    def check_evaluate(self, node: int, metrics: Mapping[str, object]) -> str | None:
        """Why an evaluate reply contradicts what ``node`` declared, or None."""
        known, problem = self._role(node, metrics)
        if problem:
            return problem
        test = known.test_windows if known is not None else MAX_WINDOWS
        train = known.train_windows if known is not None else MAX_WINDOWS
        for key in (protocol.NUM_EXAMPLES, protocol.EVAL_WINDOWS):
            count = _whole(metrics.get(key))
            if count is None or count > test:
                return f"{key} {metrics.get(key)!r} is not a count of at most the {test} test windows it declared"
        flat = metrics.get(protocol.CONFUSION)
        if isinstance(flat, list):
            counts = [_whole(v) for v in flat]
            if any(c is None for c in counts) or sum(counts) > test:  # type: ignore[arg-type]
                return f"{protocol.CONFUSION} does not count at most the {test} test windows it declared"
        for key, value in metrics.items():
            if key.startswith("stats.") and key.endswith(".count"):
                count = _whole(value)
                if count is None or count > train:
                    return f"{key} {value!r} is not a count of at most the {train} training windows it declared"
        return None
