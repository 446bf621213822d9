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
from collections.abc import Collection, Iterable
from pathlib import Path


def _stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold
    spaces): [state, ppid, ..., starttime at index 19, ...]; None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry.name)) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
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


def processes_with_env(name: str) -> dict[int, str]:
    """pid -> value of the environment variable ``name``, for every process
    (readable by us) that has it: children inherit their parent's
    environment, so a variable set on what we started finds all it started."""
    prefix = name.encode() + b"="
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for var in env:
                if var.startswith(prefix):
                    found[int(entry.name)] = var[len(prefix):].decode(errors="replace")
                    break
    return found


def program(pid: int) -> str | None:
    """The program a process runs: the file name of its script when an
    interpreter runs one (``python …/bin/flwr-simulation`` is
    ``flwr-simulation``), else of its executable; None if gone."""
    try:
        args = [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return None
    if not args:
        return None
    names = [Path(a.decode(errors="replace")).name for a in args[:2]]
    return names[1] if names[0].startswith("python") and len(names) > 1 else names[0]


def kill_programs(pids: Iterable[int], programs: Collection[str]) -> list[int]:
    """SIGKILL, at once and without a grace period, those of ``pids`` that
    run one of ``programs``; returns the pids signalled."""
    found = [i for p in pids if program(p) in programs and (i := identity(p)) is not None]
    for proc in found:
        _signal(proc, signal.SIGKILL)
    return [p for p, _ in found]


def identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time): a pid is reused, the pair is not."""
    fields = _stat(pid)
    return None if fields is None else (pid, fields[19])


def alive(process: tuple[int, str]) -> bool:
    """The very process ``process`` names still runs (a zombie counts as dead)."""
    fields = _stat(process[0])
    return fields is not None and fields[19] == process[1] and fields[0] != "Z"


def stop_tree(pid: int, grace: float = 10.0, started: str | None = None) -> list[int]:
    """SIGTERM ``pid`` and all its descendants, SIGKILL survivors after ``grace``.

    Processes are tracked by (pid, start time), so a pid freed and reused
    meanwhile by an unrelated process is never signalled; with ``started``
    (a start time recorded earlier) nothing is signalled unless ``pid`` is
    still that process, alive. Returns the pids that were signalled.
    """
    if started is not None and not alive((pid, started)):
        return []
    tree = [i for p in [pid, *descendants(pid)] if (i := identity(p)) is not None]
    for proc in tree:
        _signal(proc, signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline:
        # processes started meanwhile by a dying parent are caught too
        known = {p for p, _ in tree}
        tree += [i for d in descendants(pid) if d not in known and (i := identity(d)) is not None]
        if not any(alive(p) for p in tree):
            break
        time.sleep(0.2)
    for proc in tree:
        _signal(proc, signal.SIGKILL)
    return [p for p, _ in tree]


def _signal(process: tuple[int, str], sig: int) -> None:
    if not alive(process):
        return
    try:
        os.kill(process[0], sig)
    except (ProcessLookupError, PermissionError):
        pass
