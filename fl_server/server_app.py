"""ServerApp: config -> run directory -> strategy.start -> summary.

Thin on purpose: every decision lives in ``fedsense`` (config, model,
metrics) or ``strategies`` (aggregation). The run directory is closed, and
the summary written, even when the federation fails.
"""

from __future__ import annotations

import json
import logging
import random

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedsense import protocol
from fedsense.methods import METHODS
from fedsense.aggregation import AggregationSettings
from fedsense.board import confusion_image, nodes_text
from fedsense.data.loaders import class_names
from fedsense.checkpoint import ResumePoint, load_resume, save_resume
from fedsense.config import ConfigError
from fedsense.models import count_parameters
from fedsense.runmodel import build_run_model, sharing_of
from fedsense.params import shared_arrays
from fedsense.rundir import RunDir, build_summary, checkpoint_due, resolve_run_dir
from fedsense.runconfig import config_from_run
from fl_server import delivery
from fl_server.grid import prompt
from fl_server.spec import nodes_to_query, query_clients, wait_for_nodes
from strategies import FedSenseStrategy
from strategies.roster import Roster

log = logging.getLogger("fedsense.server")
if not log.handlers:  # the ServerApp runs in Flower's process: give our lines a home
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("fedsense %(levelname)s %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False

app = ServerApp()
delivery.install()  # a simulation's delivery sweep through an index (Flower 1.42; see fl_server/delivery.py)


def _resume_point(context: Context, run_path, rounds: int) -> ResumePoint | None:
    """The point a resumed run continues from (``fedsense run --resume``), else None."""
    if str(context.run_config.get(protocol.RUN_RESUME, "")) != "1":
        return None
    point = load_resume(run_path)
    if point.server_round >= rounds:
        raise ConfigError(f"{run_path}: all {rounds} rounds are complete; nothing to resume")
    return point


@app.main()
def main(grid: Grid, context: Context) -> None:
    grid = prompt(grid)  # a deployment's replies are pulled every 0.2 s, not every 3 s
    cfg = config_from_run(context.run_config)
    point = _resume_point(context, resolve_run_dir(cfg), cfg.fed.rounds)
    run = RunDir(resolve_run_dir(cfg), cfg, resume_after=point.server_round if point else None)
    log.info("fedsense run directory: %s%s", run.path, f" (resuming after round {point.server_round})" if point else "")
    # Flower samples clients with Python's global RNG: seeded, and carried in the resume point.
    random.seed(cfg.seed)
    status = {"status": "failed", "error": None}
    strategy: FedSenseStrategy | None = None
    extra: dict = {}
    try:
        def on_reply(kind: str, fields: dict) -> None:
            with (run.path / "messages.jsonl").open("a") as f:
                f.write(json.dumps({"type": kind, "fields": fields}) + "\n")

        log_replies = on_reply if cfg.output.message_log else None
        nodes = wait_for_nodes(grid, minimum=cfg.fed.min_clients)
        asked = nodes_to_query(nodes, cfg.fed.query_nodes, cfg.seed)
        spec, roles, declared = query_clients(grid, asked, timeout=cfg.fed.timeout, on_reply=log_replies)
        method = METHODS[cfg.adapt.method]
        model = build_run_model(spec, cfg)
        sampled = {"queried": len(asked)} if len(asked) < len(nodes) else {}  # roles count the queried ones
        extra = {"clients": {"total": len(nodes), **sampled, **roles}, "parameters": count_parameters(model)}
        log.info("%d clients (%s); model has %d parameters", len(nodes), roles, extra["parameters"])

        names = class_names(cfg.data)

        def on_round_end(server_round: int, record: dict, arrays: ArrayRecord) -> None:
            run.log_round(server_round, {k: v for k, v in record.items() if k not in ("confusion", "projector")})
            for branch, snap in record.get("projector", {}).items():
                run.log_embedding(f"embeddings/{branch}", np.asarray(snap["points"], np.float32),
                                  snap["labels"], ["role", "client", "class"], server_round)
            for role, cm in record.get("confusion", {}).items():
                run.log_image(f"eval/{role}/confusion", confusion_image(
                    np.asarray(cm), names if len(names) == len(cm) else (), f"{role} devices, round {server_round}"),
                    server_round)
            labels = {node: d.label(node) for node, d in declared.items()}
            run.log_text("clients/nodes", nodes_text(record["nodes"], labels), server_round)
            weights = {k: a.numpy() for k, a in arrays.items()}
            if checkpoint_due(cfg, server_round):
                run.save_checkpoint(server_round, weights)
                if cfg.output.histograms:
                    run.log_histograms(server_round, weights)
            state, extra_arrays = strategy.snapshot()
            save_resume(run.path, server_round, weights, {"strategy": state, "random": strategy.random_state()},
                        extra_arrays)
            target = record.get("target", {}).get("macro_f1")
            source = record.get("source", {}).get("macro_f1")
            nodes = record["nodes"]
            log.info(
                "round %d/%d  %.1fs  target macro-F1 %s  source macro-F1 %s  replied %d/%d%s",
                server_round, cfg.fed.rounds, record["seconds"],
                f"{target:.4f}" if target is not None else "-",
                f"{source:.4f}" if source is not None else "-",
                len(nodes["replied"]), len(nodes["sampled"]),
                f"  failed: {nodes['failed']}" if nodes["failed"] else "",
            )

        method_state = method.server(cfg, list(model.discriminators))
        strategy = FedSenseStrategy(
            num_classes=spec.num_classes,
            on_reply=log_replies,
            method_state=method_state,
            min_replies=cfg.fed.min_clients,
            on_round_end=on_round_end,
            projector_rounds=cfg.output.projector_rounds,
            projector_min_count=cfg.output.projector_min_count,
            max_update_norm_ratio=cfg.fed.max_update_norm_ratio,
            min_update_cosine=cfg.fed.min_update_cosine,
            aggregation=cfg.fed.aggregation,
            aggregation_settings=AggregationSettings(cfg.fed.trim_fraction, cfg.fed.byzantine, cfg.fed.krum_select),
            privacy=cfg.privacy,
            update_encoding=cfg.fed.update_encoding,
            modality_aware=cfg.fed.modality_aggregation,
            roster=Roster(declared),
            required_train=[protocol.modality_windows_key(m) for m in model.modalities]
            + method.train_metrics(list(model.discriminators)),
            one_message=cfg.fed.messages_per_round == 1,
            last_round=cfg.fed.rounds,
            fraction_train=cfg.fed.fraction_train,
            fraction_evaluate=cfg.fed.fraction_evaluate,
            min_train_nodes=min(cfg.fed.min_clients, len(nodes)),
            min_evaluate_nodes=min(cfg.fed.min_clients, len(nodes)),
            min_available_nodes=min(cfg.fed.min_clients, len(nodes)),
            weighted_by_key=protocol.NUM_EXAMPLES,
            arrayrecord_key=protocol.ARRAYS,
            configrecord_key=protocol.CONFIG,
        )
        # the model's inputs: a device lacking a modality masks it (fedsense.data.missing.conform)
        common = {protocol.CFG_NUM_CLASSES: spec.num_classes, **spec.to_metrics()}
        sharing = sharing_of(cfg)
        start = shared_arrays(model, sharing)
        method_state.set_initial(start)
        if point is not None:
            if set(point.arrays) != set(start):
                raise ConfigError(f"{run.path}: the resume point's arrays do not fit the run's model "
                                  f"({sorted(set(point.arrays) ^ set(start))[:5]})")
            start = point.arrays
            strategy.restore(point.state["strategy"], point.extra)
            version, internal, gauss = point.state["random"]
            random.setstate((version, tuple(internal), gauss))
            extra["resumed_after"] = point.server_round
        initial = ArrayRecord({k: Array(v) for k, v in start.items()})
        strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=cfg.fed.rounds - (point.server_round if point else 0),
            timeout=cfg.fed.timeout,
            train_config=ConfigRecord(
                {**common, protocol.CFG_LR: cfg.train.lr, protocol.CFG_LOCAL_EPOCHS: cfg.train.local_epochs}
            ),
            evaluate_config=ConfigRecord(common),
        )
        status = {"status": "completed", "error": None}
    except Exception as err:
        status = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        raise
    finally:
        history = strategy.history if strategy else []
        totals = strategy.totals if strategy else {"bytes_up": 0, "bytes_down": 0}
        if cfg.privacy.dp and history:
            extra["privacy"] = {**history[-1].get("privacy", {}), "noise_multiplier": cfg.privacy.noise_multiplier,
                                "clipping_norm": cfg.privacy.clipping_norm}
        run.write_summary(build_summary(cfg, history, totals, **extra, **status))
        run.close()
