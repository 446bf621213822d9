"""``make bench``: every benchmark in turn, its JSON under benchmarks/results/,
then one short table of the headline figures.

    python benchmarks/run.py [NAME ...]   # default: BENCHMARKS below; fleet_round on its own (make bench-fleet)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from common import REPO, RESULTS, machine

# name -> arguments; sized so that all of them take under 20 minutes on 2 cores
BENCHMARKS = {
    "device_cost": [],
    "app_bundle": [],
    "overhead": ["--clients", "10,100,1000", "--rounds", "3,3,1"],
    "fleet_size": ["--devices", "100,1000,10000", "--sampled", "50", "--rounds", "3"],
    "ray_cluster": ["--rounds", "2"],
}
# run on their own: `make bench-fleet` (real SuperLink/SuperNode processes, ~4 minutes) and
# `make bench-edge` (five 20-round HAPT federations and their exports, ~20 minutes; reused when complete)
EXTRA = {"fleet_round": ["--rounds", "3"], "edge": ["--reuse"]}


def headline(name: str, r: dict) -> list[str]:
    if name == "device_cost":
        traffic = r.get("traffic", {})
        return [f"{r['parameters']:,} parameters, {r['fp32_bytes'] / 1024:.0f} KiB fp32",
                f"latency {r['latency_batch1_1thread_ms']['median']:.2f} ms (batch 1, 1 thread)",
                f"up {traffic.get('bytes_up_per_client', 0) / 1024:.0f} KiB, "
                f"down {traffic.get('bytes_down_per_client', 0) / 1024:.0f} KiB per client and round"]
    if name == "app_bundle":
        return [f"bundle of {r['files_in_bundle']} files: {r['seconds_staged']:.2f} s staged vs "
                f"{r['seconds_from_repository']:.2f} s walking {r['files_under_repository']:,} files "
                f"(same bytes: {r['same_bundle']})"]
    if name == "overhead":
        return [f"{e['clients_per_round']} clients/round: ratio {e['overhead_ratio']:.2f} "
                f"({e['federated_seconds_per_round']:.1f} s vs limit {e['limit_seconds_per_round']:.1f} s); "
                f"bare Flower {e['bare_flower_seconds_per_round']:.1f} s (ratio {e['bare_flower_ratio']:.2f}), "
                f"fedsense/bare {e['over_bare_flower']:.2f}"
                for e in r["runs"]]
    if name == "fleet_size":
        return [f"{e['devices']} devices: peak {e['peak_rss_gib']:.2f} GiB, {e['median_seconds_per_round']:.1f} s/round"
                for e in r["runs"]] + [f"memory growth {100 * r['memory_growth']:.1f} %"]
    if name == "ray_cluster":
        return [f"work on both nodes: {r['work_on_both_nodes']}, {r['actors_by_node']}",
                f"cluster processes left: {r['cluster_processes_left']}"]
    if name == "edge":
        return [f"{m['model']}: {m['bytes']:,} B ({m['smaller_than_onnx_fp32']}x), {m['latency_ms']['median']:.3f} ms, "
                f"target {m['target_macro_f1']:.4f}" for m in r["models"]] + \
               [f"updates {u['encoding']}: {u['bytes_up_train_per_round']:,} B up/round ({u['upload_cut']}x), "
                f"target {u['target_macro_f1']:.4f}" for u in r["updates"]]
    if name == "fleet_round":
        return [f"fleet {r['deployment']['median']:.1f} s/round vs simulation {r['simulation']['median']:.1f} s/round "
                f"(deployment_over_simulation {r['deployment_over_simulation']})"]
    return []


def main() -> int:
    known = {**BENCHMARKS, **EXTRA}
    names = sys.argv[1:] or list(BENCHMARKS)
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"unknown benchmark(s) {unknown}; valid: {list(known)}")
    failed, times = [], {}
    for name in names:
        print(f"== {name}", flush=True)
        started = time.time()
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *known[name]],
                              cwd=REPO)
        times[name] = time.time() - started
        if proc.returncode != 0:
            failed.append(name)
    print(f"\nmachine: {machine()}")
    for name in names:
        path = RESULTS / f"{name}.json"
        status = "FAILED" if name in failed else f"{times[name]:.0f} s"
        print(f"{name:12s} {status:>7s}  {path.relative_to(REPO)}")
        if name not in failed and path.exists():
            for line in headline(name, json.loads(path.read_text())):
                print(f"{'':21s}{line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
