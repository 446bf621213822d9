"""Federated wall time against the physical limit: the same client updates
computed back to back in one plain process (no Flower, Ray or messages).

    python benchmarks/overhead.py [--clients 10,100,1000] [--rounds 3,3,1]

Every client of a synthetic fleet (HAPT-shaped windows: acc and gyro, 3 x 128,
6 classes, 180 windows per client; the default model) is sampled every
round. The pure-compute pass does, per client and round, what the ClientApp
does for a train and an evaluate message — load the client's data, build the
model, load the global weights, train one local epoch, evaluate — with one
torch thread, and times each part. The physical limit of a round is that
single-thread work spread over all cores; ``overhead_ratio`` is the
federated round's seconds over it. Beside it, the same rounds by a bare
Flower app (``benchmarks/bare_flower``: Flower's FedAvg, the same model, data
slices and local epoch, nothing of fedsense's federation code) on a
SuperLink of its own, launched as fedsense's runs are: ``bare_flower_ratio``
is its round over the limit, ``over_bare_flower`` fedsense's round over
its. Writes benchmarks/results/overhead.json.
"""

from __future__ import annotations

from dataclasses import replace

import argparse
import json
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path

from common import REPO, ProcessWatch, machine, write_result

import numpy as np  # noqa: E402
import torch  # noqa: E402

SYNTHETIC = REPO / "configs" / "synthetic.yaml"
BARE_APP = REPO / "benchmarks" / "bare_flower"
# HAPT-shaped synthetic windows and the default model (configs/default.yaml)
BASE = [
    "data.synthetic.modalities={acc: [3, 128], gyro: [3, 128]}",
    "data.synthetic.classes=6",
    "data.synthetic.windows_per_class=30",
    "data.target_domains=[]",
    "model.channels=[32, 48, 64]",
    "model.embed_dim=64",
    "adapt.method=none",
    "fed.min_clients=2",
]


def pure_compute(overrides: list[str]) -> dict[str, float]:
    """Seconds per part for one round of every client's work, one thread, no Flower."""
    from fedsense.configfile import load
    from fedsense.data.clients import load_client_data, num_clients
    from fedsense.engine import evaluate, train_supervised
    from fedsense.models import DataSpec
    from fedsense.runmodel import build_run_model, sharing_of
    from fedsense.params import load_arrays, shared_arrays, shared_keys

    torch.set_num_threads(1)
    cfg = load(SYNTHETIC, overrides)
    n = num_clients(cfg)
    sharing = sharing_of(cfg)
    parts = {"data": 0.0, "model": 0.0, "train": 0.0, "evaluate": 0.0}
    # Warm-up, untimed: torch's first backward pass sets up kernels (an actor
    # pays this once per process, in round 1, as this process does here).
    warm = load_client_data(cfg, {"partition-id": 0, "num-partitions": n})
    model = build_run_model(DataSpec(shapes=warm.train.shapes(), num_classes=cfg.data.synthetic.classes), cfg)
    train_supervised(model, warm.train, cfg.train, epochs=1, lr=cfg.train.lr, seed=0)
    global_arrays = None
    for pid in range(n):
        for phase in ("train", "evaluate"):
            t = time.perf_counter()
            data = load_client_data(cfg, {"partition-id": pid, "num-partitions": n})
            parts["data"] += time.perf_counter() - t
            t = time.perf_counter()
            spec = DataSpec(shapes=data.train.shapes(), num_classes=cfg.data.synthetic.classes)
            model = build_run_model(spec, cfg)
            if global_arrays is None:
                global_arrays = shared_arrays(model, sharing)
            load_arrays(model, global_arrays, strict_keys=shared_keys(model, sharing))
            parts["model"] += time.perf_counter() - t
            t = time.perf_counter()
            if phase == "train":
                train_supervised(model, data.train, cfg.train, epochs=cfg.train.local_epochs, lr=cfg.train.lr,
                                 seed=pid)
                shared_arrays(model, sharing)
            else:
                evaluate(model, data.test, cfg.data.synthetic.classes)
            parts[phase] += time.perf_counter() - t
    parts["total"] = sum(parts.values())
    parts["clients"] = n
    return parts


def serialisation_seconds(overrides: list[str], repeats: int = 20) -> float:
    """One message's model arrays into Flower's records and through pickle
    (how Ray moves them) and back, in seconds."""
    from flwr.app import Array, ArrayRecord, RecordDict

    from fedsense.configfile import load
    from fedsense.models import DataSpec
    from fedsense.runmodel import build_run_model, sharing_of
    from fedsense.params import shared_arrays

    cfg = load(SYNTHETIC, overrides)
    spec = DataSpec(shapes={"acc": (3, 128), "gyro": (3, 128)}, num_classes=6)
    arrays = shared_arrays(build_run_model(spec, cfg), sharing_of(replace(cfg, adapt=replace(cfg.adapt, method="none"))))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        record = RecordDict({"arrays": ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})})
        back = pickle.loads(pickle.dumps(record))
        _ = {k: a.numpy() for k, a in back["arrays"].items()}
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def federated(overrides: list[str], out: Path) -> dict:
    from fedsense.rundir import read_metrics
    from fedsense_tools.experiment import run_experiment

    watch = ProcessWatch()
    watch.start()
    started = time.time()
    run_dir = run_experiment(SYNTHETIC, overrides, out=str(out))
    wall = time.time() - started
    watch.finish()
    rounds = read_metrics(run_dir)
    seconds = [r["seconds"] for r in rounds]
    return {"round_seconds": seconds, "wall_seconds": round(wall, 1),
            "outside_rounds_seconds": round(wall - sum(seconds), 1),
            "cpu_seconds_by_process_kind": watch.cpu_by_kind()}


def bare_flower(overrides: list[str], rounds: int, out: Path) -> dict:
    """The bare Flower app's rounds on the same clients (``out``: its FLWR_HOME)."""
    from fedsense.data.clients import num_clients
    from fedsense.configfile import load
    from fedsense_tools import launcher

    clients = num_clients(load(SYNTHETIC, overrides))
    out.mkdir(parents=True)
    result = out / "rounds.json"
    run_config = launcher.write_run_config(out / "run-config.toml", SYNTHETIC, overrides)  # and the app's own keys:
    run_config.write_text(run_config.read_text() + f'rounds = {rounds}\nout = "{result}"\n')
    watch = ProcessWatch()
    watch.start()
    started = time.time()
    link = launcher.SuperLink.start(out / "flower")
    try:
        launcher.submit_and_wait(home=out / "flower", config_file=None, overrides=[], run_config=run_config,
                                 app_dir=BARE_APP, finished=result.exists,
                                 federation_config=launcher.simulation_federation(clients, 1))
    finally:
        link.stop()
    wall = time.time() - started
    watch.finish()
    seconds = json.loads(result.read_text())["round_seconds"]
    return {"round_seconds": seconds, "wall_seconds": round(wall, 1),
            "outside_rounds_seconds": round(wall - sum(seconds), 1),
            "cpu_seconds_by_process_kind": watch.cpu_by_kind()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="10,100,1000")
    parser.add_argument("--rounds", default="3,3,1", help="rounds per fleet size, in --clients order")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    sizes = [int(v) for v in args.clients.split(",")]
    rounds = [int(v) for v in args.rounds.split(",")]
    if len(rounds) != len(sizes):
        parser.error("--rounds needs one value per --clients value")
    result: dict = {"benchmark": "overhead", "machine": machine(),
                    "per_client": "180 windows (acc, gyro 3x128), default model, 1 local epoch, batch 32",
                    "limit": f"single-thread pure compute / {cores} cores", "runs": []}
    result["serialisation_seconds_per_message"] = round(serialisation_seconds(BASE), 5)
    with tempfile.TemporaryDirectory(prefix="fedsense-bench-") as tmp:
        for n, r in zip(sizes, rounds):
            overrides = [*BASE, f"data.synthetic.subjects={n}", f"fed.rounds={r}"]
            pure = pure_compute(overrides)
            fed = federated(overrides, Path(tmp) / f"run-{n}")
            bare = bare_flower(overrides, r, Path(tmp) / f"bare-{n}")
            limit = pure["total"] / cores
            per_round = statistics.median(fed["round_seconds"])
            bare_round = statistics.median(bare["round_seconds"])
            entry = {
                "clients_per_round": n,
                "rounds": r,
                "pure_compute_seconds": {k: round(v, 3) for k, v in pure.items() if k != "clients"},
                "limit_seconds_per_round": round(limit, 3),
                "federated": fed,
                "federated_seconds_per_round": round(per_round, 3),
                "overhead_ratio": round(per_round / limit, 2),
                "bare_flower": bare,
                "bare_flower_seconds_per_round": round(bare_round, 3),
                "bare_flower_ratio": round(bare_round / limit, 2),
                "over_bare_flower": round(per_round / bare_round, 2),
                "overhead_seconds_per_client_message": round((per_round - limit) * cores / (2 * n), 4),
            }
            result["runs"].append(entry)
            print(f"{n:>5} clients/round: fedsense {per_round:7.2f} s/round, bare Flower {bare_round:7.2f} s, "
                  f"limit {limit:7.2f} s, ratio {entry['overhead_ratio']:.2f} (bare Flower "
                  f"{entry['bare_flower_ratio']:.2f}; fedsense/bare {entry['over_bare_flower']:.2f})", flush=True)
    write_result("overhead", result)


if __name__ == "__main__":
    main()
