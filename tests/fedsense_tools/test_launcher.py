"""Stopping a run: its ServerApp goes first, and only its own."""

from __future__ import annotations

import os
import subprocess
import time

from fedsense_tools.launcher import halt_server_app
from fedsense_tools.processes import program


def test_halt_server_app_kills_the_runs_server_app_at_once_and_nothing_else(tmp_path):
    mine, other = tmp_path / "mine", tmp_path / "other"
    # SIGTERM ignored: only an immediate SIGKILL stops the ServerApp stand-in
    server_app = "trap '' TERM; exec -a flwr-simulation sleep 60"
    procs = {
        "server app": subprocess.Popen(["bash", "-c", server_app], env={**os.environ, "FLWR_HOME": str(mine)}),
        "a Ray daemon of the run": subprocess.Popen(["sleep", "60"], env={**os.environ, "FLWR_HOME": str(mine)}),
        "another run's server app": subprocess.Popen(["bash", "-c", server_app],
                                                     env={**os.environ, "FLWR_HOME": str(other)}),
    }
    try:
        deadline = time.time() + 5
        while [program(p.pid) for p in procs.values()] != ["flwr-simulation", "sleep", "flwr-simulation"] \
                and time.time() < deadline:
            time.sleep(0.05)
        assert halt_server_app(mine) == [procs["server app"].pid]
        assert procs["server app"].wait(timeout=2) == -9
        assert procs["a Ray daemon of the run"].poll() is None
        assert procs["another run's server app"].poll() is None
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
