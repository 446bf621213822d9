"""Replay the unlabeled devices of a finished run with other adaptation
options, without Flower and without training anything shared again.

Under a *replayable* method (:attr:`fedsense.methods.Method.replayable`:
``none``, ``adabn``, ``m3bat_local``) the labelled devices train plain
FedAvg and an unlabeled device sends nothing the shared model uses, so the
global model of every round is the same whatever the unlabeled devices do:
the run's ``checkpoints/round-NNNN.npz``. A replay takes those, lets every
labelled device report what the method's server state pools (recomputed
under the new options), and steps every unlabeled device through the rounds
as the ClientApp would — the same seeds, the same device-local state carried
from round to round, the same evaluation with the same privacy floor — so a
replay with no option changed gives the run's own target numbers (a test
checks it against a real Flower run, round by round).

What it is for: choosing ``adapt.*`` options on the validation scenario at
a fraction of a federation's cost (no labelled device trains). Reported
numbers still come from real federations (``fedsense results``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedsense import protocol
from fedsense.config import FAULT_KINDS, Config, ConfigError
from fedsense.configfile import load
from fedsense.data.clients import ClientData, load_client_data, num_clients
from fedsense.engine import evaluate as evaluate_model
from fedsense.floors import device_floor, floor_rows, raise_floor
from fedsense.methods import METHODS, Reply, Step
from fedsense.devicestate import kept_arrays, load_kept
from fedsense.methods.base import step_seed
from fedsense.metrics import summarize
from fedsense.models import DataSpec
from fedsense.params import load_arrays
from fedsense.runmodel import build_run_model, sharing_of

EVALUATE = 1  # the phase of an evaluate message in a device's seed


def replay_config(run_dir: Path, overrides: list[str]) -> Config:
    """The run's configuration with ``overrides``, checked: both methods
    replayable, only ``adapt.*`` options changed, every device in every
    round (the replay does not sample)."""
    original = load(run_dir / "config.yaml")
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith("adapt."):
            raise ConfigError(f"replay changes adaptation options only (adapt.*), not '{key}': anything else "
                              "changes what the labelled devices train; run a federation for that")
    cfg = load(run_dir / "config.yaml", overrides)
    for name, c in (("the run's", original), ("the replayed", cfg)):
        if not METHODS[c.adapt.method].replayable:
            ok = ", ".join(n for n in METHODS if METHODS[n].replayable)
            raise ConfigError(f"{name} method '{c.adapt.method}' cannot be replayed: its devices change the shared "
                              f"model or its statistics (replayable: {ok})")
    if cfg.fed.mode != "federated" or cfg.fed.fraction_train < 1.0 or cfg.fed.fraction_evaluate < 1.0:
        raise ConfigError("replay needs a federated run in which every device trains and evaluates every round "
                          f"(this one: mode {cfg.fed.mode}, fraction_train {cfg.fed.fraction_train}, "
                          f"fraction_evaluate {cfg.fed.fraction_evaluate})")
    if cfg.data.target_labels == "visible":
        raise ConfigError("replay needs unlabeled targets: with data.target_labels visible they train")
    if any(getattr(cfg.faults, kind) > 0 for kind in FAULT_KINDS):
        raise ConfigError("replay reproduces honest devices only: the run injected faults")
    return cfg


def _checkpoint(run_dir: Path, server_round: int) -> dict[str, np.ndarray]:
    path = run_dir / "checkpoints" / f"round-{server_round:04d}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a replay needs the global model of every round "
                                f"(output.checkpoint_every: 1)")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


class _Device:
    """One unlabeled device between rounds: its data and what it keeps."""

    def __init__(self, data: ClientData) -> None:
        self.data = data
        self.kept: dict[str, np.ndarray] = {}


def replay(run_dir: str | Path, overrides: list[str] | None = None,
           progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Per round: the unlabeled devices' ``target`` scores (summed confusion
    matrices) and the means of their adaptation numbers."""
    run_dir = Path(run_dir)
    cfg = replay_config(run_dir, list(overrides or []))
    floor = device_floor({})  # a simulated device's node config sets no floor of its own
    cfg = raise_floor(cfg, floor)
    method, sharing = METHODS[cfg.adapt.method], sharing_of(cfg)
    datas = [load_client_data(cfg, {protocol.NODE_PARTITION_ID: p}) for p in range(num_clients(cfg))]
    num_classes = max(max(d.test.num_classes, d.train.num_classes) for d in datas)  # as the query round counts
    spec = DataSpec(datas[0].train.shapes(), num_classes)
    if any(d.train.shapes() != spec.shapes for d in datas):
        raise ConfigError("replay needs devices that share their modalities (this run's differ)")
    sources = [d for d in datas if d.role == "source"]
    targets = [_Device(d) for d in datas if d.role != "source"]
    probe = build_run_model(spec, cfg)
    server = method.server(cfg, list(probe.discriminators))

    def model_of(arrays: dict[str, np.ndarray]):
        model = build_run_model(spec, cfg)
        load_arrays(model, arrays, strict_keys=set())
        return model

    rows: list[dict[str, Any]] = []
    target_replies: list[Reply] = []
    previous: dict[str, np.ndarray] = {}
    for server_round in range(1, cfg.fed.rounds + 1):
        if server_round > 1:  # what the server pooled from last round's evaluations (of `previous`)
            replies = []
            for d in sources:
                step = Step(cfg, model_of(previous), d, {protocol.CFG_ROUND: server_round - 1}, {},
                            seed=step_seed(cfg.seed, d.partition_id, server_round - 1, EVALUATE))
                result = method.evaluate(step)
                replies.append(Reply(d.partition_id, False, result.metrics, result.records, len(d.train)))
            server.after_evaluate(replies + target_replies)
        payload, config = server.evaluate_payload(server_round), server.evaluate_config(server_round)
        arrays = _checkpoint(run_dir, server_round)
        cm = np.zeros((num_classes, num_classes), np.int64)
        numbers: dict[str, list[float]] = {}
        target_replies = []
        previous = arrays
        for device in targets:
            model = model_of(arrays)
            state = load_kept(model, device.kept)
            data = device.data
            step = Step(cfg, model, data, {protocol.CFG_ROUND: server_round, **config}, copy.deepcopy(payload),
                        seed=step_seed(cfg.seed, data.partition_id, server_round, EVALUATE), state=state)
            result = method.evaluate(step)
            if result.keep:
                device.kept = kept_arrays(step, sharing)
            cm += floor_rows(np.asarray(evaluate_model(model, data.test, num_classes)["confusion"]), floor)
            target_replies.append(Reply(data.partition_id, True, result.metrics, result.records, len(data.train)))
            for k, v in result.metrics.items():
                if isinstance(v, (int, float)):
                    numbers.setdefault(k, []).append(float(v))
        row = {"round": server_round, "target": summarize(cm),
               "adapt": {k: float(np.mean(v)) for k, v in sorted(numbers.items())}}
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def default_out(run_dir: Path, overrides: list[str]) -> Path:
    """``RUN_DIR/replays/<the options changed>.json`` (``as-run.json`` for none)."""
    label = "_".join(o.removeprefix("adapt.").replace("=", "-") for o in overrides) or "as-run"
    return run_dir / "replays" / ("".join(c if c.isalnum() or c in "-_." else "-" for c in label) + ".json")


def last_rounds_mean(rows: list[dict[str, Any]], count: int = 10) -> float:
    """Mean target macro-F1 of the last ``count`` rounds (a steadier number
    than the last round's alone: the global model moves every round)."""
    return float(np.mean([r["target"]["macro_f1"] for r in rows[-count:]]))


def write(rows: list[dict[str, Any]], run_dir: Path, overrides: list[str], out: Path) -> None:
    """``out`` as JSON: the run replayed, the options changed, the rounds
    and the mean target macro-F1 of the last ten."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run": str(run_dir), "overrides": overrides, "mean_last_10": last_rounds_mean(rows),
                               "rounds": rows}, indent=1) + "\n")
