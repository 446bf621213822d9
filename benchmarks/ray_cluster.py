"""A federation on an existing Ray cluster: two Ray nodes on 127.0.0.1, one CPU each.

    python benchmarks/ray_cluster.py [--rounds 2]

Starts a head (`ray start --head`) and a second node (`ray start --address`),
each with a marker in its environment that every process it starts inherits,
runs the synthetic federation with ``RAY_ADDRESS`` pointing at the head (the
simulation's Ray backend connects there instead of starting a private Ray),
checks from /proc that ClientApp actors ran and used CPU on both nodes, then
stops every process of the cluster by its pid and start time.
Writes benchmarks/results/ray_cluster.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from common import REPO, TICK, machine, write_result

from fedsense_tools import launcher  # noqa: E402
from fedsense_tools.processes import alive, identity, processes_with_env, stop_tree  # noqa: E402

MARKER = "FEDSENSE_RAY_NODE"
SYNTHETIC = REPO / "configs" / "synthetic.yaml"


def marked() -> dict[int, str]:
    """pid -> node marker of every process carrying ``MARKER`` in its environment."""
    return processes_with_env(MARKER)


class ActorWatch(threading.Thread):
    """CPU seconds of the ClientApp actors of each Ray node, sampled from /proc."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.cpu: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid, node in marked().items():
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if b"ClientAppActor" in cmd:
                    self.cpu[pid] = (node, (int(fields[11]) + int(fields[12])) / TICK)
            self.stop.wait(0.3)

    def by_node(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for node, seconds in self.cpu.values():
            entry = out.setdefault(node, {"actors": 0, "cpu_seconds": 0.0})
            entry["actors"] += 1
            entry["cpu_seconds"] = round(entry["cpu_seconds"] + seconds, 2)
        return out


def ray_start(args: list[str], node: str, run_id: str, home: Path) -> None:
    env = launcher.quiet_env(home)
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # quiet_env's single-machine switch forbids a second node
    env[MARKER] = f"{run_id}-{node}"
    proc = subprocess.run([launcher._bin("ray"), "start", *args], env=env, capture_output=True, text=True,
                          timeout=180)
    if proc.returncode != 0:
        raise RuntimeError(f"ray start ({node}) failed: {proc.stdout[-1500:]} {proc.stderr[-1500:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from fedsense_tools.experiment import run_experiment

    run_id = uuid.uuid4().hex[:8]
    result: dict = {"benchmark": "ray_cluster", "machine": machine(), "rounds": args.rounds}
    cluster: list[tuple[int, str]] = []
    with tempfile.TemporaryDirectory(prefix="fedsense-ray-") as tmp:
        root = Path(tmp)
        port = launcher.free_port()
        try:
            ray_start(["--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "1",
                       "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(root / "ray")],
                      "head", run_id, root / "home")
            ray_start(["--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                       "--disable-usage-stats"], "second", run_id, root / "home")
            cluster = [i for p, node in marked().items() if node.startswith(run_id) and (i := identity(p))]
            result["cluster_processes_started"] = len(cluster)
            watch = ActorWatch()
            watch.start()
            os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
            started = time.time()
            try:
                run_dir = run_experiment(SYNTHETIC, [f"fed.rounds={args.rounds}"], out=str(root / "run"))
            finally:
                del os.environ["RAY_ADDRESS"]
                watch.stop.set()
                watch.join()
            result["wall_seconds"] = round(time.time() - started, 1)
            summary = json.loads((run_dir / "summary.json").read_text())
            result["status"] = summary["status"]
            result["source_macro_f1"] = summary["source"]["macro_f1"]
            nodes = watch.by_node()
            result["actors_by_node"] = {k.removeprefix(f"{run_id}-"): v for k, v in nodes.items()}
            result["work_on_both_nodes"] = len(nodes) == 2 and all(v["cpu_seconds"] > 0.5 for v in nodes.values())
        finally:
            # every process of this cluster, found by the marker, stopped by pid and start time
            cluster += [i for p, node in marked().items() if node.startswith(run_id) and (i := identity(p))]
            for pid, started_at in set(cluster):
                stop_tree(pid, grace=10, started=started_at)
            time.sleep(1)
            left = [p for p, node in marked().items() if node.startswith(run_id) and alive(identity(p) or (p, ""))]
            result["cluster_processes_left"] = len(left)
    write_result("ray_cluster", result)
    if not result.get("work_on_both_nodes"):
        sys.exit("client work did not run on both Ray nodes")


if __name__ == "__main__":
    main()
