"""What the default model costs a device: size, CPU latency and throughput,
and bytes up and down per client per round.

    python benchmarks/device_cost.py [--config configs/default.yaml] [--no-run]

Size and speed are measured on the inference model (no discriminators) with
the default config's HAPT input shapes. Bytes per client per round come from
a real 2-round simulation of the config (round 2, when the statistics
reference travels), as the strategy counts them (``comm`` in metrics.jsonl).
Writes benchmarks/results/device_cost.json.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import REPO, machine, write_result

import torch  # noqa: E402

from fedsense.configfile import load  # noqa: E402
from fedsense.data.loaders import cached_dataset  # noqa: E402
from fedsense.models import DataSpec, build_model, count_parameters  # noqa: E402


def _timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


@torch.no_grad()
def speed(model: torch.nn.Module, spec: DataSpec, threads: int, batch: int, repeats: int) -> list[float]:
    torch.set_num_threads(threads)
    model.eval()
    x = {m: torch.randn(batch, c, t) for m, (c, t) in spec.shapes.items()}
    _timed(lambda: model(x), 10)  # warm-up: allocator, kernels
    return _timed(lambda: model(x), repeats)


def bytes_per_client(config: Path) -> dict:
    from fedsense.rundir import read_metrics
    from fedsense_tools.experiment import run_experiment

    with tempfile.TemporaryDirectory(prefix="fedsense-bench-") as tmp:
        run_dir = run_experiment(config, ["fed.rounds=2"], out=str(Path(tmp) / "run"))
        rounds = read_metrics(run_dir)
    last = rounds[-1]
    clients = last["clients"]["sampled"]
    return {
        "clients_per_round": clients,
        "bytes_up_per_client": round(last["comm"]["bytes_up"] / clients),
        "bytes_down_per_client": round(last["comm"]["bytes_down"] / clients),
        "round": last["round"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--no-run", action="store_true", help="skip the simulation (no bytes per round)")
    args = parser.parse_args()
    cfg = load(Path(args.config))
    ds = cached_dataset(cfg.data, cfg.seed)
    spec = DataSpec(shapes=ds.shapes(), num_classes=ds.num_classes)
    model = build_model(spec, cfg.model, cfg.seed)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    latency = speed(model, spec, threads=1, batch=1, repeats=300)
    result = {
        "benchmark": "device_cost",
        "machine": machine(),
        "config": Path(args.config).name,
        "input": {m: list(s) for m, s in spec.shapes.items()},
        "classes": spec.num_classes,
        "parameters": count_parameters(model),
        "fp32_bytes": sum(t.numel() * t.element_size() for t in model.state_dict().values()),
        "state_dict_file_bytes": buffer.getbuffer().nbytes,
        "latency_batch1_1thread_ms": {
            "median": round(1000 * statistics.median(latency), 3),
            "p90": round(1000 * sorted(latency)[int(0.9 * len(latency))], 3),
        },
    }
    for threads in sorted({1, os.cpu_count() or 1}):
        runs = speed(model, spec, threads=threads, batch=256, repeats=20)
        result[f"throughput_batch256_{threads}thread_windows_per_s"] = round(256 / statistics.median(runs))
    if not args.no_run:
        result["traffic"] = bytes_per_client(Path(args.config))
    write_result("device_cost", result)


if __name__ == "__main__":
    main()
