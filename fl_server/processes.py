"""Stop exactly the processes we started, with everything they started.

Flower's SuperLink starts its helpers detached (new sessions) and Ray starts
its own daemons, so a process group does not reach them. We walk the
process tree from the pid we started (Linux ``/proc``), then signal every
pid found, children first collected so none is orphaned before it is seen.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may contain spaces: ppid follows the last ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (not ``pid`` itself)."""
    children = _children_map()
    found: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        p = stack.pop()
        found.append(p)
        stack.extend(children.get(p, []))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, not ours
        return True
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_tree(pid: int, grace: float = 10.0) -> list[int]:
    """SIGTERM ``pid`` and all its descendants, SIGKILL survivors after ``grace``.

    Returns the pids that were signalled.
    """
    tree = [pid, *descendants(pid)]
    for p in tree:
        _signal(p, signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline:
        # processes started meanwhile by a dying parent are caught too
        tree += [d for d in descendants(pid) if d not in tree]
        if not any(alive(p) for p in tree):
            break
        time.sleep(0.2)
    for p in tree:
        if alive(p):
            _signal(p, signal.SIGKILL)
    return tree


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
