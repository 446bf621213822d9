"""Stop what a ``fedsense run`` started once the command itself is gone.

A command killed outright (SIGKILL, a closed terminal, an out-of-memory
kill) runs no cleanup of its own, and Flower's SuperLink, its simulation
process and Ray's daemons would finish the remaining rounds into the run
directory. So each simulation gets a watchdog: a small process in a session
of its own (a signal to the command's process group does not reach it) that
polls the command by pid and start time and, when it has ended for any
reason, kills the run's ServerApp outright (it must record nothing the stop
causes), stops the SuperLink's process tree and every straggler carrying the
run's ``FLWR_HOME``, and removes the run's private Ray directory.

    python -m fedsense_tools.watchdog PID START SUPERLINK_PID SUPERLINK_START FLWR_HOME RAY_TMPDIR
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from fedsense_tools.launcher import halt_server_app, stop_stragglers
from fedsense_tools.processes import alive, stop_tree


def watch(command: tuple[int, str], superlink: tuple[int, str], home: Path, ray_tmp: Path,
          poll: float = 0.5) -> None:
    """Wait for ``command`` to end, then stop ``superlink``'s tree, stragglers and Ray's directory."""
    while alive(command):
        time.sleep(poll)
    halt_server_app(home)  # first: the devices dying below must not end a round it records
    stop_tree(superlink[0], grace=5.0, started=superlink[1])
    stop_stragglers(home, grace=5.0)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    pid, start, link_pid, link_start, home, ray_tmp = argv
    watch((int(pid), start), (int(link_pid), link_start), Path(home), Path(ray_tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
