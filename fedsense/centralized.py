"""Centralized reference: the sources' pooled training data in one process.

The same model, optimiser and evaluation as the federation, with no Flower:
one epoch over the pooled data per "round", the targets' held-out parts
evaluated per client and summed exactly as the server does. No federation
can see this data, so its number is the reference the federation is judged by.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from fedsense.adaptation import METHODS
from fedsense.config import Config
from fedsense.data.base import Dataset
from fedsense.data.clients import ClientData, load_client_data, num_clients
from fedsense.engine import evaluate, train_supervised
from fedsense.metrics import summarize
from fedsense.models import DataSpec, build_model, count_parameters
from fedsense.params import shared_arrays
from fedsense.rundir import RunDir, build_summary

log = logging.getLogger("fedsense.centralized")


def concat(parts: list[Dataset]) -> Dataset:
    """Rows of several datasets stacked, in the given order."""
    first = parts[0]
    return Dataset(
        x={m: np.concatenate([p.x[m] for p in parts]) for m in first.x},
        y=np.concatenate([p.y for p in parts]),
        subject=np.concatenate([p.subject for p in parts]),
        domain=np.concatenate([p.domain for p in parts]),
        classes=first.classes,
    )


def run_centralized(cfg: Config, run: RunDir, on_round: Callable[[], None] | None = None) -> dict:
    """Train on pooled source data for ``fed.rounds * train.local_epochs`` epochs,
    logging one metrics line per round like a federation. Returns the summary."""
    clients: list[ClientData] = [
        load_client_data(cfg, {"partition-id": i}) for i in range(num_clients(cfg))
    ]
    pooled = concat([c.train for c in clients if c.role == "source"])
    num_classes = len(pooled.classes) or int(pooled.y.max()) + 1
    spec = DataSpec(shapes=pooled.shapes(), num_classes=num_classes)
    model = build_model(spec, cfg.model, seed=cfg.seed)
    method = METHODS[cfg.adapt.method]
    history: list[dict] = []
    for r in range(1, cfg.fed.rounds + 1):
        result = train_supervised(
            model, pooled, cfg.train, epochs=cfg.train.local_epochs, lr=cfg.train.lr,
            seed=cfg.seed * 1_000_003 + r,
        )
        record: dict = {"train": {"loss_task": result["loss_task"]}}
        for role in ("target", "source"):
            members = [c for c in clients if c.role == role]
            if members:
                cm = sum(evaluate(model, c.test, num_classes)["confusion"] for c in members)
                record[role] = {**summarize(cm), "clients": len(members)}
        history.append(record)
        run.log_round(r, record)
        if r % cfg.fed.checkpoint_every == 0 or r == cfg.fed.rounds:
            run.save_checkpoint(r, shared_arrays(model, method))
        if on_round is not None:
            on_round()
        log.info(
            "epoch-round %d/%d target macro-F1 %s source macro-F1 %s", r, cfg.fed.rounds,
            record.get("target", {}).get("macro_f1"), record.get("source", {}).get("macro_f1"),
        )
    clients_info = {
        "total": len(clients),
        "source": sum(c.role == "source" for c in clients),
        "target": sum(c.role == "target" for c in clients),
    }
    return build_summary(
        cfg, history, {}, clients=clients_info, parameters=count_parameters(model), status="completed"
    )
