"""Server side of generated normalisation (``adapt.method: generated``).

Each round's evaluate replies bring every device's descriptor and, from the
sources, the BatchNorm statistics of their own windows; the generator
(:class:`fedsense.generator.NormGenerator`) is refitted on the sources and
each target's statistics are generated from its descriptor, to travel in
that target's next evaluate instruction.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import Message

from fedsense import protocol
from fedsense.generator import NormGenerator, flatten, unflatten

log = logging.getLogger("fedsense.strategy")


class GenerationState:
    """The generator and, per target node, its generated statistics."""

    def __init__(self, ridge: float = 1.0) -> None:
        self.generator = NormGenerator(ridge=ridge)
        self.generated: dict[int, dict[str, np.ndarray]] = {}
        self.sources_fitted = 0

    def update(self, replies: list[Message], node_of) -> None:
        """Refit on the sources among ``replies``; generate for the targets.
        ``node_of(reply)`` is the node a reply is about."""
        pairs, targets, keys, shapes = [], [], None, {}
        for msg in replies:
            metrics = msg.content[protocol.METRICS]
            if protocol.DESCRIPTOR not in metrics:
                continue
            descriptor = np.asarray(metrics[protocol.DESCRIPTOR], np.float64)
            if not np.all(np.isfinite(descriptor)):
                continue  # a broken description teaches nothing and gets nothing
            if protocol.NORM in msg.content.array_records:
                stats = {k: a.numpy() for k, a in msg.content[protocol.NORM].items()}
                keys = keys or list(stats)
                if list(stats) != keys or not all(np.all(np.isfinite(v)) for v in stats.values()):
                    continue
                shapes = {k: stats[k].shape for k in keys}
                pairs.append((descriptor, flatten(stats, keys)))
            elif int(metrics[protocol.IS_TARGET]):
                targets.append((node_of(msg), descriptor))
        if len(pairs) < 2 or keys is None:
            return  # nothing to learn from yet: targets keep the global statistics
        dims = {p[0].shape for p in pairs}
        if len(dims) != 1:
            log.warning("generated normalisation: descriptors of different sizes %s; not refitted", dims)
            return
        self.generator.fit(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
        self.sources_fitted = len(pairs)
        self.generated = {node: unflatten(self.generator.predict(d), shapes, keys)
                          for node, d in targets if d.shape == next(iter(dims))}
