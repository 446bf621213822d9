"""Round time of a real 3-device fleet (TLS + authentication) against Flower's
simulation engine on the same devices' data, and where a deployment round goes.

    python benchmarks/fleet_round.py [--rounds 3] [--subjects 1,2,25] [--config configs/default.yaml] \
        [--set fed.messages_per_round=2] [--out fleet_round_two_messages]

Data: HAPT converted with the config's data section (device shifts included),
one device per subject. Prints one JSON object and writes it to
benchmarks/results/fleet_round.json. Measured:

- ``deployment`` / ``simulation``: seconds per round (from metrics.jsonl);
- ``device_message``: per message, from the SuperNode pulling it to the
  SuperNode handing the reply back (its log lines, stamped as they appear);
- ``clientapp_handler``: from the ClientApp's own log lines per message
  (one per part: with one message a round, an evaluate and a train line
  from the same process), the handlers' seconds (fedsense's work) and how
  long the fresh process had been running when the first began (start-up:
  imports, app install);
- ``clientapp_process``: lifetime of the ClientApp processes the SuperNodes
  start, one per message (seen by polling /proc every 0.1 s);
- ``imports``: what a fresh ClientApp process imports before it can work
  (flwr, torch, the fedsense ClientApp), median of 3 fresh interpreters.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, machine, write_result

from fedsense.rundir import read_metrics  # noqa: E402
from fedsense_tools import fleet, supernodes  # noqa: E402
from fedsense_tools.experiment import convert, run_experiment  # noqa: E402
from fedsense_tools.processes import descendants  # noqa: E402

IMPORTS = ["flwr.clientapp", "torch", "fl_client.client_app"]
# what fl_client.client_app logs on a device for every message
HANDLED = re.compile(r"fedsense client INFO \S+ took ([\d.]+)s; process (\d+) started ([\d.]+)s before it")


def import_seconds(repeats: int = 3) -> dict[str, float]:
    """Seconds to import each module in turn in a fresh interpreter (median)."""
    code = (
        "import importlib, json, time\n"
        f"out = {{}}\nfor m in {IMPORTS!r}:\n"
        "    t = time.perf_counter(); importlib.import_module(m); out[m] = time.perf_counter() - t\n"
        "print(json.dumps(out))"
    )
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True, cwd=REPO).stdout) for _ in range(repeats)]
    return {m: round(statistics.median(r[m] for r in runs), 3) for m in IMPORTS}


class ClientAppWatch(threading.Thread):
    """Lifetimes of flwr-clientapp processes below the given SuperNodes."""

    def __init__(self, supernodes: list[int]) -> None:
        super().__init__(daemon=True)
        self.supernodes = supernodes
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            for root in self.supernodes:
                for pid in descendants(root):
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                    except OSError:
                        continue
                    if b"flwr-clientapp" in cmd and state != "Z":
                        self.first.setdefault(pid, now)
                        self.last[pid] = now
            time.sleep(0.1)

    def lifetimes(self) -> list[float]:
        return [self.last[p] - self.first[p] for p in self.first]


class LogStamps(threading.Thread):
    """Times at which SuperNode log lines appear: a message pulled from the
    SuperLink (``Receiving``) and its reply handed back (``Sending``)."""

    def __init__(self, logs: list[Path]) -> None:
        super().__init__(daemon=True)
        self.logs = logs
        self.events: list[tuple[float, int, str]] = []  # (time, device, "recv"|"send")
        # ClientApp's own lines, per process (= per message): [handler seconds of each part], process age at the first
        self.handled: dict[tuple[int, int], tuple[list[float], float]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        offsets = [p.stat().st_size if p.exists() else 0 for p in self.logs]
        while not self.stop.is_set():
            now = time.time()
            for i, path in enumerate(self.logs):
                with open(path, "rb") as f:
                    f.seek(offsets[i])
                    chunk = f.read()
                offsets[i] += len(chunk)
                for line in chunk.decode(errors="replace").splitlines():
                    if "Receiving:" in line:
                        self.events.append((now, i, "recv"))
                    elif "Sending:" in line:
                        self.events.append((now, i, "send"))
                    elif match := HANDLED.search(line):  # one line per part (evaluate, train) of the message
                        parts, age = self.handled.setdefault((i, int(match.group(2))), ([], float(match.group(3))))
                        parts.append(float(match.group(1)))
            time.sleep(0.05)

    def device_seconds(self) -> list[float]:
        """Per message: from pulled to reply handed back, on the device."""
        out, pending = [], {}
        for t, device, kind in sorted(self.events):
            if kind == "recv":
                pending[device] = t
            elif device in pending:
                out.append(t - pending.pop(device))
        return out


def round_seconds(run_dir: Path) -> list[float]:
    return [r["seconds"] for r in read_metrics(run_dir)]


def summary(values: list[float]) -> dict:
    return {"per_round": [round(v, 2) for v in values], "median": round(statistics.median(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subjects", default="1,2,25")
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for both runs, e.g. fed.messages_per_round=2")
    parser.add_argument("--out", default="fleet_round", help="result name (benchmarks/results/<out>.json)")
    args = parser.parse_args()
    subjects = [int(s) for s in args.subjects.split(",")]
    overrides = [f"fed.rounds={args.rounds}", *args.set]
    result: dict = {"benchmark": "fleet_round", "devices": len(subjects), "subjects": subjects,
                    "rounds": args.rounds, "config": Path(args.config).name, "overrides": args.set,
                    "machine": machine()}
    result["imports"] = import_seconds()
    with tempfile.TemporaryDirectory(prefix="fedsense-bench-") as tmp:
        root = Path(tmp)
        (data,) = convert(args.config, [], str(root / "all.npz"), per_subject=False)
        f = fleet.up(root / "fleet", data, subjects=subjects, tls=True, auth=True)
        try:
            watch = ClientAppWatch([d.process[0] for d in f.devices])
            watch.start()
            stamps = LogStamps([supernodes.node_log(f, d.name) for d in f.devices])
            stamps.start()
            started = time.time()
            run_dir = run_experiment(args.config, overrides, out=str(root / "fleet-run"), fleet=f.path)
            wall = time.time() - started
            watch.stop.set()
            stamps.stop.set()
            watch.join()
            stamps.join()
        finally:
            fleet.down(f.path)
        lifetimes = watch.lifetimes()
        result["deployment"] = {**summary(round_seconds(run_dir)), "wall_seconds": round(wall, 1)}
        on_device = stamps.device_seconds()
        result["device_message"] = {"count": len(on_device), "median_seconds": round(statistics.median(on_device), 2),
                                    "max_seconds": round(max(on_device), 2)}
        work = [sum(parts) for parts, _ in stamps.handled.values()]
        start_up = [age for _, age in stamps.handled.values()]
        result["clientapp_handler"] = {
            "count": len(work),
            "median_seconds": round(statistics.median(work), 2),  # fedsense's own work per message
            "median_process_age_at_start": round(statistics.median(start_up), 2),  # start-up before it
        }
        result["clientapp_process"] = {"count": len(lifetimes), "median_seconds": round(statistics.median(lifetimes), 2),
                                       "max_seconds": round(max(lifetimes), 2)}
        from fedsense.data.npz import load_npz, save_npz
        import numpy as np

        ds = load_npz(data)
        union = save_npz(ds.subset(np.flatnonzero(np.isin(ds.subject, subjects))), root / "devices.npz")
        # The devices' files already hold the shifted windows; the simulation
        # reads the same files, so no shift is applied twice, and only the
        # target domains present are targets (as each device decides for itself).
        from fedsense.configfile import load

        present = set(np.unique(ds.domain[np.isin(ds.subject, subjects)]).tolist())
        targets = [d for d in load(Path(args.config)).data.target_domains if d in present]
        started = time.time()
        sim = run_experiment(args.config, [*overrides, "data.kind=npz", f"data.path={union}", "data.shifts=[]",
                                           f"data.target_domains={targets}"], out=str(root / "sim-run"))
        result["simulation"] = {**summary(round_seconds(sim)), "wall_seconds": round(time.time() - started, 1)}
        for key in ("target", "source"):
            a = json.loads((run_dir / "summary.json").read_text())[key]["macro_f1"]
            b = json.loads((sim / "summary.json").read_text())[key]["macro_f1"]
            result[f"{key}_macro_f1"] = {"deployment": a, "simulation": b}
    result["deployment_over_simulation"] = round(result["deployment"]["median"] / result["simulation"]["median"], 1)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
