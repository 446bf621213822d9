"""Memory and round time as the simulated fleet grows, 50 devices sampled per round.

    python benchmarks/fleet_size.py [--devices 100,1000,10000] [--sampled 50] [--rounds 3]

Each virtual device's synthetic windows are generated from its id when it is
sampled (``data.kind: synthetic`` without shifts), so no process holds the
fleet's data. Measured: peak resident memory of the whole process tree (this
process, the SuperLink, the simulation process, Ray's daemons and actors;
sampled every 0.2 s from /proc), the peak of each kind of process, and
seconds per round. Writes benchmarks/results/fleet_size.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import REPO, ProcessWatch, machine, write_result

from fedsense.rundir import read_metrics  # noqa: E402

SYNTHETIC = REPO / "configs" / "synthetic.yaml"
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="100,1000,10000")
    parser.add_argument("--sampled", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from fedsense_tools.experiment import run_experiment

    result: dict = {"benchmark": "fleet_size", "machine": machine(), "sampled_per_round": args.sampled,
                    "rounds": args.rounds, "runs": []}
    with tempfile.TemporaryDirectory(prefix="fedsense-bench-") as tmp:
        for n in [int(v) for v in args.devices.split(",")]:
            share = min(1.0, args.sampled / n)
            overrides = [f"data.synthetic.subjects={n}", "data.target_domains=[]", f"fed.rounds={args.rounds}",
                         f"fed.query_nodes={args.sampled}",
                         f"fed.fraction_train={share}", f"fed.fraction_evaluate={share}", "adapt.method=none"]
            watch = ProcessWatch()
            watch.start()
            started = time.time()
            run_dir = run_experiment(SYNTHETIC, overrides, out=str(Path(tmp) / f"run-{n}"))
            wall = time.time() - started
            watch.finish()
            rounds = read_metrics(run_dir)
            entry = {
                "devices": n,
                "sampled_per_round": [r["clients"]["sampled"] for r in rounds],
                "seconds_per_round": [r["seconds"] for r in rounds],
                "median_seconds_per_round": statistics.median(r["seconds"] for r in rounds),
                "wall_seconds": round(wall, 1),
                "peak_rss_gib": round(watch.peak / 2**30, 3),
                "peak_rss_mib_of_one_process_by_kind": {k: round(v / 2**20) for k, v in sorted(watch.peak_by_kind.items())},
                "cpu_seconds_by_process_kind": watch.cpu_by_kind(),
            }
            result["runs"].append(entry)
            print(f"{n:>6} devices: peak {entry['peak_rss_gib']:.2f} GiB, "
                  f"{entry['median_seconds_per_round']:.1f} s/round, wall {wall:.0f} s", flush=True)
    first, last = result["runs"][0], result["runs"][-1]
    result["memory_growth"] = round(last["peak_rss_gib"] / first["peak_rss_gib"] - 1, 3)
    write_result("fleet_size", result)


if __name__ == "__main__":
    main()
