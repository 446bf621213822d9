"""Centralized reference: the pooled training data in one process.

The same model, optimiser and evaluation as the federation, with no Flower:
one epoch over the pooled data per "round", the targets' held-out parts
evaluated per client and summed exactly as the server does. No federation
can see this data, so its number is the reference the federation is judged by.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from fedsense.adaptation.schedules import reversal_coefficient
from fedsense.adaptation.training import Adversarial, train_adversarial
from fedsense.config import Config
from fedsense.data.base import Dataset
from fedsense.data.clients import ClientData, load_client_data, num_clients
from fedsense.engine import evaluate, train_supervised
from fedsense.methods import METHODS
from fedsense.metrics import summarize
from fedsense.models import DataSpec, count_parameters
from fedsense.runmodel import build_run_model, sharing_of
from fedsense.params import shared_arrays
from fedsense.rundir import RunDir, build_summary, checkpoint_due

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
    """Train on pooled source data (plus the targets' unlabeled windows for
    adversarial methods) for ``fed.rounds * train.local_epochs`` epochs,
    logging one metrics line per round like a federation. Returns the summary."""
    clients: list[ClientData] = [
        load_client_data(cfg, {"partition-id": i}) for i in range(num_clients(cfg))
    ]
    method = METHODS[cfg.adapt.method]
    # Adversarial methods also see the targets' unlabeled training windows,
    # as in the federation; everything else trains on the sources alone.
    members = [c for c in clients if c.role == "source" or (method.pooled_adversarial and c.role == "target")]
    pooled = concat([c.train for c in members])
    domain = np.concatenate(
        [c.domain_labels() for c in members]
    )
    num_classes = len(pooled.classes) or int(pooled.y.max()) + 1
    spec = DataSpec(shapes=pooled.shapes(), num_classes=num_classes)
    model = build_run_model(spec, cfg)
    sharing = sharing_of(cfg)
    history: list[dict] = []
    for r in range(1, cfg.fed.rounds + 1):
        kwargs = dict(epochs=cfg.train.local_epochs, lr=cfg.train.lr, seed=cfg.seed * 1_000_003 + r)
        record: dict = {}
        if method.pooled_adversarial:
            # Pooled data hold both domains: the discriminators learn from the
            # true domain labels (classic DANN/M3BAT), the upper bound.
            adv = Adversarial(
                coeff=reversal_coefficient(r, cfg.fed.rounds, cfg.adapt.lambda_max),
                weights={b: float(cfg.adapt.weights.get(b, 1.0)) for b in model.discriminators},
                domain_weight=cfg.adapt.domain_weight,
            )
            result = train_adversarial(model, pooled, domain, cfg.train, adv, **kwargs)
            record["adapt"] = {"lambda": adv.coeff, "disc_acc": result["disc_acc"]}
        else:
            result = train_supervised(model, pooled, cfg.train, **kwargs)
        record["train"] = {"loss_task": result["loss_task"]}
        for role in ("target", "source"):
            group = [c for c in clients if c.role == role]
            if group:
                cm = sum(evaluate(model, c.test, num_classes)["confusion"] for c in group)
                record[role] = {**summarize(cm), "clients": len(group)}
        history.append(record)
        run.log_round(r, record)
        if checkpoint_due(cfg, r):
            run.save_checkpoint(r, shared_arrays(model, sharing))
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
