"""Stopping exactly the process tree we started."""

from __future__ import annotations

import subprocess
import time

from fedsense_tools.processes import identity, alive, descendants, stop_tree


def test_stop_tree_stops_the_process_and_its_descendants():
    # a detached grandchild too, like flower-superexec (new session)
    proc = subprocess.Popen(["bash", "-c", "setsid sleep 60 & sleep 60 & wait"])
    try:
        deadline = time.time() + 5
        while len(descendants(proc.pid)) < 2 and time.time() < deadline:
            time.sleep(0.05)
        tree = [proc.pid, *descendants(proc.pid)]
        assert len(tree) >= 3
        ids = [identity(p) for p in tree]
        stopped = stop_tree(proc.pid, grace=5)
        proc.wait(timeout=5)
        assert set(tree) <= set(stopped)
        assert not any(alive(i) for i in ids if i is not None)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_reused_pid_is_not_mistaken_for_the_old_process():
    proc = subprocess.Popen(["sleep", "60"])
    ident = identity(proc.pid)
    assert ident is not None and alive(ident)
    assert not alive((proc.pid, "0"))  # same pid, other start time: another process
    proc.kill()
    proc.wait()
    assert not alive(ident)


def test_a_recorded_start_time_that_no_longer_matches_stops_nothing():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        pid, started = identity(proc.pid)
        assert stop_tree(pid, grace=1, started="0") == []  # a pid now held by another process
        assert alive((pid, started))
        assert stop_tree(pid, grace=5, started=started) == [pid]
        proc.wait(timeout=5)
        assert not alive((pid, started))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_processes_are_found_by_an_environment_marker_their_children_inherit():
    import os

    from fedsense_tools.processes import processes_with_env

    env = {**os.environ, "FEDSENSE_TEST_MARK": "run-42"}
    proc = subprocess.Popen(["bash", "-c", "sleep 60 & wait"], env=env)
    try:
        deadline = time.time() + 5
        while not descendants(proc.pid) and time.time() < deadline:
            time.sleep(0.05)
        found = processes_with_env("FEDSENSE_TEST_MARK")
        assert found.get(proc.pid) == "run-42"
        assert all(found.get(child) == "run-42" for child in descendants(proc.pid))
        assert os.getpid() not in found
    finally:
        stop_tree(proc.pid, grace=5)


def test_a_program_is_named_by_its_script_under_an_interpreter_else_by_its_executable(tmp_path):
    import sys

    from fedsense_tools.processes import program

    script = tmp_path / "flwr-serverapp"
    script.write_text("import time\ntime.sleep(60)\n")
    under_python = subprocess.Popen([sys.executable, str(script), "--flag"])
    renamed = subprocess.Popen(["bash", "-c", "exec -a flwr-simulation sleep 60"])
    plain = subprocess.Popen(["sleep", "60"])
    try:
        deadline = time.time() + 5  # until each has exec'd (bash's exec too)
        while [program(p.pid) for p in (under_python, renamed, plain)] != ["flwr-serverapp", "flwr-simulation", "sleep"] \
                and time.time() < deadline:
            time.sleep(0.05)
        assert program(under_python.pid) == "flwr-serverapp"
        assert program(renamed.pid) == "flwr-simulation"
        assert program(plain.pid) == "sleep"
    finally:
        for proc in (under_python, renamed, plain):
            proc.kill()
            proc.wait()
    assert program(plain.pid) is None


def test_kill_programs_kills_the_named_programs_at_once_and_nothing_else():
    from fedsense_tools.processes import kill_programs, program

    # SIGTERM ignored: only an immediate SIGKILL stops these
    writer = subprocess.Popen(["bash", "-c", "trap '' TERM; exec -a flwr-simulation sleep 60"])
    other = subprocess.Popen(["sleep", "60"])
    try:
        deadline = time.time() + 5
        while program(writer.pid) != "flwr-simulation" and time.time() < deadline:
            time.sleep(0.05)
        assert kill_programs([writer.pid, other.pid], ("flwr-simulation", "flwr-serverapp")) == [writer.pid]
        assert writer.wait(timeout=2) == -9
        assert other.poll() is None
        assert kill_programs([writer.pid, other.pid], ("flwr-simulation",)) == []  # gone: nothing signalled
    finally:
        for proc in (writer, other):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
