"""Check client updates before they are averaged: nothing malformed or wildly
out of scale gets in silently.

A train reply is refused when its arrays do not have exactly the keys,
shapes and dtypes of the global arrays sent that round, when any value is
NaN or infinite, when a number the aggregation uses (example count, role,
task windows, task loss) is missing or not a sane value,
or when its update (reply minus the global arrays) is longer than
``max_norm_ratio`` times the median update length of the round's replies of
its role (sources and targets update differently)
(checked among replies that changed anything, when there are at least three:
with two, the median cannot tell the attacker from the honest one).

:func:`direction_cosines` measures how each update points relative to the
mean update of the other replies of its role (leave-one-out, since each
update correlates with any average it is part of through its own
device-specific part). A sign-flipped update has the length of an honest
one, and non-IID devices spread each coordinate so widely that
per-coordinate rules (trimmed mean, median) cannot single it out, but over
tens of thousands of coordinates its direction gives it away; the strategy
keeps each client's running mean of these cosines (``fed.min_update_cosine``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedsense import protocol


def _update(reply: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> np.ndarray:
    """The float part of ``reply - reference`` as one vector (BatchNorm step counters are no direction)."""
    parts = [reply[k].astype(np.float64).ravel() - ref.astype(np.float64).ravel()
             for k, ref in reference.items() if np.issubdtype(ref.dtype, np.floating)]
    return np.concatenate(parts) if parts else np.zeros(0)


def _update_norm(reply: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    return float(np.linalg.norm(_update(reply, reference)))


def _number(metrics: Mapping[str, object], key: str) -> float | None:
    try:
        value = float(metrics.get(key))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


REQUIRED_TRAIN = (protocol.NUM_EXAMPLES, protocol.TASK_WINDOWS, protocol.LOSS_TASK, protocol.IS_TARGET)


def malformed(
    arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], metrics: Mapping[str, object],
    required: Sequence[str] = (),
) -> str | None:
    """Why one reply cannot be averaged with ``reference``'s arrays, or None.

    ``metrics`` must hold a finite non-negative ``num-examples`` and
    ``task-windows``, a finite ``loss-task``, ``is-target`` 0 or 1, and every
    key of ``required`` (what the aggregation and the method read: windows
    per modality, discriminator numbers) as a finite number.
    """
    missing = sorted(set(reference) - set(arrays))
    extra = sorted(set(arrays) - set(reference))
    if missing or extra:
        return f"array keys differ from the global model (missing {missing[:3]}, unexpected {extra[:3]})"
    for key, ref in reference.items():
        got = arrays[key]
        if got.shape != ref.shape:
            return f"{key}: shape {got.shape}, expected {ref.shape}"
        if got.dtype != ref.dtype:
            return f"{key}: dtype {got.dtype}, expected {ref.dtype}"
        if np.issubdtype(got.dtype, np.floating) and not np.isfinite(got).all():
            return f"{key}: NaN or infinite values"
    for key in (*REQUIRED_TRAIN, *required):
        if _number(metrics, key) is None or isinstance(metrics.get(key), bool):
            return f"{key} {metrics.get(key)!r} is missing or not a finite number"
    for key, ok in (
        (protocol.NUM_EXAMPLES, lambda v: v >= 0),
        (protocol.TASK_WINDOWS, lambda v: v >= 0),
        (protocol.LOSS_TASK, lambda v: True),
        (protocol.IS_TARGET, lambda v: v in (0.0, 1.0)),
    ):
        if key not in metrics and key != protocol.NUM_EXAMPLES:
            continue
        value = _number(metrics, key) if key in metrics else None
        if value is None or not ok(value):
            return f"{key} {metrics.get(key)!r} is not a valid value"
    return None


def unclipped(arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], bound: float) -> str | None:
    """Under differential privacy every device clips its update to ``bound``;
    one longer than that did not, and the noise would not cover it."""
    norm = _update_norm(arrays, reference)
    if norm > bound * (1 + 1e-4):
        return f"update norm {norm:.4g} exceeds privacy.clipping_norm {bound:g}: the device did not clip it"
    return None


def malformed_evaluation(metrics: Mapping[str, object], num_classes: int) -> str | None:
    """Why an evaluate reply cannot be summed, or None: its role must be 0 or
    1 and its confusion matrix ``num_classes**2`` finite non-negative counts."""
    if _number(metrics, protocol.IS_TARGET) not in (0.0, 1.0):
        return f"{protocol.IS_TARGET} {metrics.get(protocol.IS_TARGET)!r} is not a valid value"
    partition = _number(metrics, protocol.PARTITION)
    if protocol.PARTITION in metrics and (partition is None or partition % 1 != 0):
        return f"{protocol.PARTITION} {metrics.get(protocol.PARTITION)!r} is not a valid value"
    flat = metrics.get(protocol.CONFUSION)
    if not isinstance(flat, (list, tuple)) or len(flat) != num_classes * num_classes:
        size = len(flat) if isinstance(flat, (list, tuple)) else "no"
        return f"confusion size {size}, expected {num_classes * num_classes}"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        return "confusion holds values that are not numbers"
    values = np.asarray(flat, dtype=np.float64)
    if not np.isfinite(values).all() or (values < 0).any() or (values != np.round(values)).any():
        return "confusion holds values that are not counts"
    for key in (protocol.NUM_EXAMPLES, protocol.EVAL_WINDOWS, protocol.EVAL_LOSS):
        if _number(metrics, key) is None:
            return f"{key} {metrics.get(key)!r} is missing or not a finite number"
    return None


def screen(
    replies: Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, object]]],
    reference: Mapping[str, np.ndarray],
    max_norm_ratio: float,
    groups: Sequence[str] | None = None,
    required: Sequence[str] = (),
) -> list[str | None]:
    """One verdict per ``(arrays, metrics)`` reply: None to keep it, else why it is refused.

    ``groups`` (e.g. each reply's role) compares each update with the median
    of its own group: an unlabeled target's adversarial-only update is much
    shorter than a labelled source's, and neither is an outlier for that.
    """
    verdicts = [malformed(arrays, reference, metrics, required) for arrays, metrics in replies]
    if max_norm_ratio <= 0:
        return verdicts
    labels = list(groups) if groups is not None else [""] * len(replies)
    for group in sorted(set(labels)):
        where = f" of {group} updates" if group else ""
        # Replies that changed nothing (an unlabeled device without an
        # adversarial step) neither count towards the median nor fail it.
        updates = {i: u for i, (arrays, _) in enumerate(replies)
                   if labels[i] == group and verdicts[i] is None and (u := _update(arrays, reference)).any()}
        if len(updates) < 3:
            continue
        norms = {i: float(np.linalg.norm(u)) for i, u in updates.items()}
        median = float(np.median(list(norms.values())))
        for i, norm in norms.items():
            if norm > max_norm_ratio * median:
                verdicts[i] = f"update norm {norm:.3g} is over {max_norm_ratio:g} x the round's median{where} {median:.3g}"
    return verdicts


def direction_cosines(
    replies: Sequence[Mapping[str, np.ndarray]],
    reference: Mapping[str, np.ndarray],
    groups: Sequence[str],
) -> list[float | None]:
    """Per reply, the cosine between its update and the mean update of the
    other replies of its group (None when the update is zero or its group
    has fewer than three changed replies)."""
    out: list[float | None] = [None] * len(replies)
    for group in sorted(set(groups)):
        updates = {i: u for i, arrays in enumerate(replies)
                   if groups[i] == group and (u := _update(arrays, reference)).any()}
        if len(updates) < 3:
            continue
        total = np.sum(list(updates.values()), axis=0)
        for i, u in updates.items():
            others = total - u
            scale = float(np.linalg.norm(others) * np.linalg.norm(u))
            out[i] = float(u @ others) / scale if scale > 0 else None
    return out
