"""Ask the connected clients what their data look like (shapes, counts; no samples)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedsense import protocol
from fedsense.models import DataSpec
from strategies.accounting import reply_inventory
from strategies.roster import Declared, declaration

log = logging.getLogger("fedsense.server")


def wait_for_nodes(grid: Grid, minimum: int, settle: float = 2.0, timeout: float = 300.0) -> list[int]:
    """Node ids once at least ``minimum`` are connected and the count has been
    stable for ``settle`` seconds (simulated nodes register one by one)."""
    deadline = time.time() + timeout
    last, stable_since = -1, time.time()
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) != last:
            last, stable_since = len(nodes), time.time()
        if len(nodes) >= minimum and time.time() - stable_since >= settle:
            return nodes
        if time.time() > deadline:
            raise TimeoutError(f"only {len(nodes)} of at least {minimum} nodes connected after {timeout:.0f}s")
        time.sleep(0.2)


def nodes_to_query(nodes: list[int], sample: int, seed: int) -> list[int]:
    """Every node (``sample`` 0 or at least the fleet), else a sample of
    ``sample`` nodes fixed by ``seed``: a fleet of thousands need not all
    describe their data before the first round."""
    if sample <= 0 or sample >= len(nodes):
        return list(nodes)
    return sorted(random.Random(seed).sample(sorted(nodes), sample))


def query_clients(
    grid: Grid,
    nodes: list[int],
    timeout: float,
    on_reply: Callable[[str, dict], None] | None = None,
) -> tuple[DataSpec, dict[str, int], dict[int, Declared]]:
    """One query round: every node's data specification, checked for agreement.

    Returns the common spec (every modality some node has, the largest class
    count any node knows), the number of source and target clients, and each
    node's declaration (role, training and test windows), which the server
    holds its replies to from then on (:mod:`strategies.roster`). A node whose
    reply is no valid declaration is counted as failed.
    """
    messages = [
        Message(RecordDict({protocol.CONFIG: ConfigRecord()}), dst_node_id=n, message_type=protocol.QUERY_MESSAGE)
        for n in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    errors = [f"node {r.metadata.src_node_id}: {r.error.reason}" for r in replies if r.has_error()]
    declared: dict[int, Declared] = {}
    good = []
    for r in replies:
        if r.has_error():
            continue
        metrics = dict(r.content[protocol.METRICS]) if protocol.METRICS in r.content.metric_records else {}
        found = declaration(metrics)
        if isinstance(found, str):
            errors.append(f"node {r.metadata.src_node_id}: query reply refused: {found}")
            continue
        declared[int(r.metadata.src_node_id)] = found
        good.append(r)
    if on_reply is not None:
        for r in good:
            on_reply(protocol.QUERY_MESSAGE, reply_inventory(r.content))
    for e in errors:
        log.error("query failed on %s", e)
    if not good:
        raise RuntimeError(f"no client could describe its data: {errors[:3] or 'no replies'}")
    specs = []
    for r in good:
        try:
            specs.append(DataSpec.from_metrics(dict(r.content[protocol.METRICS])))
        except (KeyError, TypeError, ValueError) as err:
            raise RuntimeError(f"node {r.metadata.src_node_id}: its data specification is malformed ({err})") from None
    # The model takes every modality some device has; a device without one
    # runs with it masked. The same modality must have one shape everywhere.
    shapes: dict[str, tuple[int, int]] = {}
    for r, s in zip(good, specs):
        for m, shape in s.shapes.items():
            if shapes.setdefault(m, shape) != shape:
                raise RuntimeError(
                    f"node {r.metadata.src_node_id} has modality '{m}' of shape {shape}, others {shapes[m]}: "
                    "every device must give a modality the model's input shape"
                )
    roles = {"source": 0, "target": 0, "failed": len(errors)}
    for d in declared.values():
        roles["target" if d.target else "source"] += 1
    return DataSpec(shapes=shapes, num_classes=max(s.num_classes for s in specs)), roles, declared
