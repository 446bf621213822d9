"""Edge efficiency of the default experiment: model size, CPU latency and
accuracy of fp32, int8 PTQ and int8 QAT device models, and upload bytes and
accuracy of each update encoding.

    python benchmarks/edge.py [--runs runs/edge] [--reuse] [--device 25]

Runs five real HAPT federations of configs/default.yaml (20 rounds each,
about 140 s alone on 2 cores): fp32, ``train.qat``, and float16, int8 and
int8-without-error-feedback updates (``fed.update_encoding``); ``--reuse``
keeps those already complete under ``--runs``. The fp32 and QAT runs are
exported for every device (``fedsense export --evaluate``: float and int8
ONNX, onnxruntime); target and source macro-F1 are the federation's own,
from confusion matrices summed over the devices' held-out windows. Latency:
one window (batch 1), one thread, median of 500 after 50 warm-up calls, on
``--device``'s model. Writes benchmarks/results/edge.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import REPO, machine, write_result

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fedsense.deploy import RunModels, feeds, torch_predictor  # noqa: E402
from fedsense.onnx_export import evaluate_exports, export_device, onnx_predictor  # noqa: E402

RUNS = {
    "fp32": [],
    "qat": ["train.qat=true"],
    "float16": ["fed.update_encoding=float16"],
    "int8": ["fed.update_encoding=int8"],
    "int8-no-feedback": ["fed.update_encoding=int8", "fed.error_feedback=false"],
}


def federation(out: Path, name: str, reuse: bool) -> Path:
    from fedsense_tools.experiment import run_experiment

    run_dir = out / name
    summary = run_dir / "summary.json"
    if reuse and summary.is_file() and json.loads(summary.read_text()).get("status") == "completed":
        return run_dir
    return run_experiment(REPO / "configs" / "default.yaml", RUNS[name], out=str(run_dir))


def latency_ms(predict, inputs: dict[str, np.ndarray], repeats: int = 500) -> dict[str, float]:
    for _ in range(50):
        predict(inputs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict(inputs)
        times.append(time.perf_counter() - started)
    times.sort()
    return {"median": round(1000 * statistics.median(times), 4), "p90": round(1000 * times[int(0.9 * repeats)], 4)}


def model_rows(run_dir: Path, label: str, device: int) -> list[dict]:
    runs = RunModels.open(run_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedsense-edge-") as tmp:
        for int8 in (False, True):
            path, model, data = export_device(runs, device, Path(tmp) / f"{int8}.onnx", int8)
            window = feeds(data.test, slice(0, 1))
            evaluation = evaluate_exports(runs, int8, Path(tmp) / "all")
            scores = evaluation["scores"]
            if not int8:  # the PyTorch model the files come from
                torch.set_num_threads(1)
                buffer = sum(t.numel() * t.element_size() for k, t in model.state_dict().items()
                             if not k.startswith("discriminators.") and not k.endswith("num_batches_tracked"))
                rows.append({"model": f"{label} PyTorch fp32", "bytes": buffer, "format": "state dict",
                             "latency_ms": latency_ms(torch_predictor(model), window),
                             "target_macro_f1": scores["pytorch"]["target"]["macro_f1"],
                             "source_macro_f1": scores["pytorch"]["source"]["macro_f1"]})
            rows.append({"model": f"{label} ONNX {'int8' if int8 else 'fp32'}", "bytes": path.stat().st_size,
                         "format": "onnx", "latency_ms": latency_ms(onnx_predictor(path, threads=1), window),
                         "target_macro_f1": scores["onnx"]["target"]["macro_f1"],
                         "source_macro_f1": scores["onnx"]["source"]["macro_f1"],
                         "same_class_as_pytorch": evaluation["same_class"], "windows": evaluation["windows"]})
    return rows


def update_row(run_dir: Path, name: str) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    rounds = summary["rounds"]
    return {"encoding": name, "rounds": rounds,
            "bytes_up_train_per_round": round(summary["comm"]["bytes_up_train"] / rounds),
            "bytes_up_per_round": round(summary["comm"]["bytes_up"] / rounds),
            "target_macro_f1": summary["target"]["macro_f1"], "source_macro_f1": summary["source"]["macro_f1"],
            "wall_seconds": summary["wall_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=str(REPO / "runs" / "edge"), help="where the federations go")
    parser.add_argument("--reuse", action="store_true", help="keep federations already complete under --runs")
    parser.add_argument("--device", type=int, default=25, help="the device whose model is timed (25: a target)")
    args = parser.parse_args()
    out = Path(args.runs)
    dirs = {name: federation(out, name, args.reuse) for name in RUNS}
    models = model_rows(dirs["fp32"], "fp32 training:", args.device) + \
        [r for r in model_rows(dirs["qat"], "QAT training:", args.device) if "ONNX int8" in r["model"]]
    updates = [update_row(dirs[n], label) for n, label in
               (("fp32", "float32"), ("float16", "float16 + error feedback"), ("int8", "int8 + error feedback"),
                ("int8-no-feedback", "int8, no error feedback"))]
    fp32_model = next(r for r in models if r["model"].endswith("ONNX fp32"))
    for r in models:
        r["smaller_than_onnx_fp32"] = round(fp32_model["bytes"] / r["bytes"], 2)
    for r in updates:
        r["upload_cut"] = round(updates[0]["bytes_up_train_per_round"] / r["bytes_up_train_per_round"], 2)
    write_result("edge", {"benchmark": "edge", "machine": machine(), "config": "configs/default.yaml",
                          "device": args.device, "runs": {k: str(v) for k, v in dirs.items()},
                          "models": models, "updates": updates})


if __name__ == "__main__":
    main()
