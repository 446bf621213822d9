"""``generated``: cloud-generated normalisation for devices that cannot
train (CDC-MMPG's idea, :mod:`fedsense.generator`).

Source-only FedAvg. In every evaluation each device describes its raw
windows (numpy, no model); sources also report the BatchNorm statistics of
their windows under the global model. The server refits a ridge generator
descriptor -> statistics each round and puts each target's generated
statistics into that target's next evaluate instruction only; the target
evaluates with them: no forward pass to adapt, no gradient.
"""

from __future__ import annotations

import copy
import logging

import numpy as np

from fedsense import protocol
from fedsense.adaptation.training import renormalize
from fedsense.config import Config
from fedsense.floors import enough_windows
from fedsense.generator import NormGenerator, describe, flatten, norm_keys, unflatten
from fedsense.methods.base import Method, Records, Reply, Result, ServerState, Step
from fedsense.params import load_arrays

log = logging.getLogger("fedsense.strategy")


class Generated(Method):
    name = "generated"
    description = "source-only FedAvg; targets get BatchNorm statistics generated from a description of their data"

    def evaluate(self, step: Step) -> Result:
        """A device of fewer training windows than ``adapt.stats_min_count``
        (never below its own floor) describes nothing: it sends neither
        descriptor nor statistics, and a target among them keeps the global
        statistics."""
        if not enough_windows(len(step.data.train), step.cfg.adapt.stats_min_count):
            return Result()
        result = Result(metrics={protocol.DESCRIPTOR: [float(v) for v in describe(step.data.train)]})
        if step.labelled:
            own = copy.deepcopy(step.model)
            renormalize(own, step.data.train)
            state = own.state_dict()
            result.records[protocol.NORM] = {k: state[k].numpy() for k in norm_keys(own)}
        elif protocol.GENERATED in step.payload:
            load_arrays(step.model, step.payload[protocol.GENERATED], strict_keys=set(norm_keys(step.model)))
        return result

    def server(self, cfg: Config, branches: list[str]) -> ServerState:
        return GenerationState()


class GenerationState(ServerState):
    """The generator and, per target node, its generated statistics."""

    def __init__(self, ridge: float = 1.0) -> None:
        self.generator = NormGenerator(ridge=ridge)
        self.generated: dict[int, dict[str, np.ndarray]] = {}
        self.sources_fitted = 0

    def evaluate_payload_for(self, node: int) -> Records:
        stats = self.generated.get(node)
        return {protocol.GENERATED: stats} if stats is not None else {}

    def after_evaluate(self, replies: list[Reply]) -> None:
        """Refit on the sources among ``replies``; generate for the targets."""
        pairs, targets, keys, shapes = [], [], None, {}
        for reply in replies:
            if protocol.DESCRIPTOR not in reply.metrics:
                continue
            descriptor = np.asarray(reply.metrics[protocol.DESCRIPTOR], np.float64)
            if descriptor.ndim != 1 or not np.all(np.isfinite(descriptor)):
                continue  # a broken description teaches nothing and gets nothing
            if protocol.NORM in reply.records:
                stats = reply.records[protocol.NORM]
                keys = keys or list(stats)
                if list(stats) != keys or not all(np.all(np.isfinite(v)) for v in stats.values()):
                    continue
                shapes = {k: stats[k].shape for k in keys}
                pairs.append((descriptor, flatten(stats, keys)))
            elif reply.target:
                targets.append((reply.node, descriptor))
        if len(pairs) < 2 or keys is None:
            return  # nothing to learn from yet: targets keep the global statistics
        dims = {p[0].shape for p in pairs}
        if len(dims) != 1 or len({p[1].shape for p in pairs}) != 1:
            log.warning("generated normalisation: replies of different sizes %s; not refitted", dims)
            return
        self.generator.fit(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
        self.sources_fitted = len(pairs)
        self.generated = {node: unflatten(self.generator.predict(d), shapes, keys)
                          for node, d in targets if d.shape == next(iter(dims))}

    def record(self, server_round: int) -> dict:
        return {}

    def extra_record(self) -> dict:
        return {"generated": {"targets": len(self.generated), "sources_fitted": self.sources_fitted}}


GENERATED = Generated()
