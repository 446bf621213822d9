"""What every benchmark shares: the machine it ran on and where its JSON goes.

Benchmarks measure and print; they are not tests (``make bench`` runs them all).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def machine() -> dict:
    """Cores, memory, CPU model and Python of this machine."""
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "cpu": cpu or platform.processor(),
        "python": platform.python_version(),
    }


def write_result(name: str, result: dict) -> Path:
    """``benchmarks/results/<name>.json``, and the same JSON on stdout."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path


# --------------------------------------------------------------------------- process tree accounting

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
KINDS = (("ClientAppActor", "ray actor"), ("flower-superlink", "superlink"), ("fedsense_tools.fab", "superlink"),
         ("flwr-simulation", "simulation"), ("flower-superexec", "superexec"), ("raylet", "ray raylet"),
         ("gcs_server", "ray gcs"), ("ray::", "ray worker"), ("ray/", "ray other"), ("bin/flwr ", "flwr cli"))


def process_kind(pid: int) -> str:
    """What a process of a run is, from its command line."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    return next((name for key, name in KINDS if key in cmd), "other")


class ProcessWatch(threading.Thread):
    """Samples this process and all its descendants every ``interval`` seconds:
    peak summed resident memory, peak per kind of process, CPU seconds per kind."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = 0
        self.peak_by_kind: dict[str, int] = {}
        self.cpu: dict[int, tuple[str, float]] = {}  # pid -> (kind, CPU seconds while watched)
        self.base: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        from fedsense_tools.processes import descendants

        me = os.getpid()
        while not self.stop.is_set():
            total = 0
            for pid in [me, *descendants(me)]:
                try:
                    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError, ValueError):
                    continue
                # the latest command line names it (a forked worker shows its parent's at first)
                kind = "benchmark" if pid == me else process_kind(pid)
                if kind == "other" and pid in self.cpu:  # e.g. Ray retitles the simulation process
                    kind = self.cpu[pid][0]
                seconds = (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
                self.base.setdefault(pid, seconds if pid == me else 0.0)  # only this process ran before
                self.cpu[pid] = (kind, seconds - self.base[pid])
                self.peak_by_kind[kind] = max(self.peak_by_kind.get(kind, 0), rss)
                total += rss
            self.peak = max(self.peak, total)
            self.stop.wait(self.interval)

    def cpu_by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, seconds in self.cpu.values():
            out[kind] = round(out.get(kind, 0.0) + seconds, 2)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def finish(self) -> "ProcessWatch":
        self.stop.set()
        self.join()
        return self
