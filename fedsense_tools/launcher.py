"""Run the fedsense Flower app on a private, simulation-mode SuperLink.

``flwr run`` alone would start a shared, detached SuperLink on fixed ports
that outlives the command, keeps the environment it was started with, tries
to ``uv sync`` the app's dependencies and reports success even for a failed
run. So fedsense starts its own SuperLink on a free 127.0.0.1 port with
``FLWR_HOME`` inside the run directory and runtime dependency installation
disabled, submits the run with ``flwr run``, polls the run's real final
status, and stops the SuperLink's whole process group (it owns the
simulation process and Ray) by its id.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fedsense_tools import fab
from fedsense_tools.processes import identity, kill_programs, processes_with_env, stop_tree

if TYPE_CHECKING:
    from fedsense_tools.pki import ServerPki

log = logging.getLogger("fedsense.launcher")

APP_DIR = Path(__file__).resolve().parent.parent  # holds pyproject.toml
FEDERATION = "fedsense"
TASK_POLL_INTERVAL = "0.1"  # seconds (flwr/supercore/superexec/run_superexec.py; Flower's default 1.0)
RAY_TMP_NOTE = "ray-tmp"  # FLWR_HOME/ray-tmp: the path of the run's Ray directory


class RunFailed(RuntimeError):
    """The Flower run ended in any state but completed."""


def quiet_env(flwr_home: Path) -> dict[str, str]:
    """Environment for every Flower process we start: nothing phones home,
    nothing is installed at run time, state stays in ``flwr_home``."""
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        # How often a SuperNode's (and the SuperLink's) executor asks for a
        # ClientApp (ServerApp) to start: Flower's default is every 1 s.
        FLWR_SUPEREXEC_TASK_POLL_INTERVAL=TASK_POLL_INTERVAL,
        RAY_USAGE_STATS_ENABLED="0",
        RAY_DISABLE_DOCKER_CPU_WARNING="1",
        # Single-machine Ray: with "cluster" support off Ray binds its
        # services to loopback instead of the machine's network address.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        # ray.init() would join a cluster an earlier `ray start` left running;
        # "local" starts a private instance. A RAY_ADDRESS the user set wins.
        RAY_ADDRESS=os.environ.get("RAY_ADDRESS") or "local",
        PYTHONUNBUFFERED="1",
        # the SuperLink starts flower-superexec and flwr-simulation from PATH
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    """A console script of this interpreter's environment (the venv's flwr)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def superlink_command(
    port: int,
    log_file: Path,
    *,
    simulation: bool,
    tls: "ServerPki | None" = None,
    auth: bool = False,
    approvals: Path | None = None,
) -> list[str]:
    """The ``flower-superlink`` command line: one port on 127.0.0.1 serves the
    Control, Fleet and ServerAppIo APIs; nothing is installed at run time.
    With ``approvals``, through :mod:`fedsense_tools.fab`: the FABs devices
    fetch carry the operator's signatures found there."""
    cmd = [
        *(fab.superlink_prefix(approvals) if approvals else [_bin("flower-superlink")]),
        "--isolation", "subprocess",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--database", ":flwr-in-memory:",
        "--disable-runtime-dependency-installation",
        "--log-file", str(log_file),
    ]
    if simulation:
        cmd.append("--simulation")
    if tls is None:
        if auth:
            raise ValueError("SuperNode authentication needs TLS (Flower refuses it on an insecure SuperLink)")
        cmd.append("--insecure")
    else:
        cmd += ["--ssl-ca-certfile", str(tls.ca_cert), "--ssl-certfile", str(tls.cert),
                "--ssl-keyfile", str(tls.key)]
        if auth:
            cmd.append("--enable-supernode-auth")
    return cmd


def write_cli_config(home: Path, address: str, ca_cert: Path | None = None) -> None:
    """``$FLWR_HOME/config.toml`` naming the SuperLink the ``flwr`` CLI talks to."""
    home.mkdir(parents=True, exist_ok=True)
    security = f'root-certificates = "{ca_cert}"' if ca_cert else "insecure = true"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\naddress = "{address}"\n{security}\n'
    )


def wait_answering(
    request: str | urllib.request.Request,
    exit_code: Callable[[], int | None],
    log_file: Path,
    timeout: float,
    ca_cert: Path | None = None,
    *,
    what: str = "flower-superlink",
    any_status: bool = False,
) -> None:
    """Wait until ``request`` gets HTTP 200 (HTTPS with ``ca_cert``); with
    ``any_status`` any HTTP answer will do (a refusal shows the server is
    up). Fail early, naming ``log_file``, once ``exit_code()`` says the
    process exited."""
    context = ssl.create_default_context(cafile=str(ca_cert)) if ca_cert else None
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (code := exit_code()) is not None:
            raise RunFailed(f"{what} exited with code {code}; see {log_file}")
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as r:
                if r.status == 200 or any_status:
                    return
        except urllib.error.HTTPError:
            if any_status:
                return
            time.sleep(0.2)
        except OSError:
            time.sleep(0.2)
    raise RunFailed(f"{what} did not answer within {timeout:.0f}s; see {log_file}")


def wait_healthy(
    address: str,
    exit_code: Callable[[], int | None],
    log_file: Path,
    timeout: float,
    ca_cert: Path | None = None,
) -> None:
    """Wait for the SuperLink's ``/health`` endpoint (HTTPS with ``ca_cert``)."""
    wait_answering(f"{'https' if ca_cert else 'http'}://{address}/health", exit_code, log_file, timeout, ca_cert)


@dataclass
class SuperLink:
    """A simulation-mode SuperLink process we own (and its process group),
    Ray's private directory, and the watchdog that stops both if we die."""

    process: subprocess.Popen
    port: int
    home: Path
    ray_tmp: Path | None = None
    watchdog: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, home: Path, timeout: float = 60.0) -> "SuperLink":
        home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        cmd = superlink_command(port, home / "superlink.log", simulation=True)
        # Ray's sessions in a directory of this run's (short: Ray's socket
        # paths must fit 107 bytes), removed when the run ends, not in /tmp/ray.
        ray_tmp = Path(tempfile.mkdtemp(prefix="fsray-", dir="/tmp"))
        (home / RAY_TMP_NOTE).write_text(f"{ray_tmp}\n")  # which one is this run's (for `ls`, and the tests)
        env = {**quiet_env(home), "RAY_TMPDIR": str(ray_tmp)}
        with open(home / "superlink.out", "ab") as out:
            process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        link = cls(process=process, port=port, home=home, ray_tmp=ray_tmp)
        link.watchdog = _start_watchdog(process.pid, home, ray_tmp)
        write_cli_config(home, link.address)
        try:
            wait_healthy(link.address, lambda: process.poll(), home / "superlink.out", timeout)
        except BaseException:  # incl. Ctrl-C/SIGTERM while waiting: never leak it
            link.stop()
            raise
        return link

    def halt_server_app(self) -> list[int]:
        """Stop the run's ServerApp at once (see :func:`halt_server_app`)."""
        return halt_server_app(self.home)

    def stop(self, grace: float = 10.0) -> list[int]:
        """Stop the ServerApp at once, then the SuperLink and every process
        below it (Ray), then any that left the tree but still carry this
        FLWR_HOME; remove Ray's directory and let the watchdog go."""
        stopped = self.halt_server_app()
        stopped += stop_tree(self.process.pid, grace)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was sent
            pass
        stopped += stop_stragglers(self.home, grace)
        if self.ray_tmp is not None:
            shutil.rmtree(self.ray_tmp, ignore_errors=True)
        if self.watchdog is not None:
            self.watchdog.terminate()
            self.watchdog.wait(timeout=10)
        return stopped


def _start_watchdog(superlink_pid: int, home: Path, ray_tmp: Path) -> subprocess.Popen | None:
    """``fedsense_tools.watchdog`` for this command and its SuperLink, in a session
    of its own; without FLWR_HOME, so it never counts as one of the run's
    processes."""
    me, link = identity(os.getpid()), identity(superlink_pid)
    if me is None or link is None:  # not Linux /proc: nothing to watch with
        return None
    env = {k: v for k, v in os.environ.items() if k != "FLWR_HOME"}
    return subprocess.Popen(
        [sys.executable, "-m", "fedsense_tools.watchdog", str(me[0]), me[1], str(link[0]), link[1], str(home),
         str(ray_tmp)],
        env=env, cwd=str(APP_DIR), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def run_processes(home: Path) -> list[int]:
    """The pids of every process a run under ``home`` started, detached ones
    too: they all inherited ``home`` as FLWR_HOME."""
    return sorted(p for p, v in processes_with_env("FLWR_HOME").items() if v == str(home))


# The programs that run a ServerApp: in a simulation it also runs the devices'
# engine and is the only writer of the run directory.
SERVER_APPS = ("flwr-simulation", "flwr-serverapp")


def halt_server_app(home: Path) -> list[int]:
    """SIGKILL the ServerApp of the run under ``home`` (its process carries
    that FLWR_HOME) before anything else of the run is stopped. A gentler
    stop lets it go on while the devices' processes die around it: a device
    killed mid-round would end that round as a failed reply, and the round
    would be recorded short of it and become the resume point. Killed first,
    the ServerApp records nothing the stop caused; its files are written
    atomically or line by line, which a resume reads as a power cut."""
    return kill_programs(run_processes(home), SERVER_APPS)


def stop_stragglers(home: Path, grace: float = 10.0) -> list[int]:
    """Processes started under ``home`` (they inherited FLWR_HOME) that are
    still alive once their parents are gone: Ray daemons detach from the
    process tree and usually exit by themselves within seconds; those that do
    not by ``grace`` are stopped, by pid and start time."""
    deadline = time.time() + grace
    while left := run_processes(home):
        if time.time() > deadline:
            return [pid for p in left for pid in stop_tree(p, grace=5.0)]
        time.sleep(0.2)
    return []


def _flwr(args: list[str], home: Path, timeout: float = 120.0) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [_bin("flwr"), *args], env=quiet_env(home), capture_output=True, text=True,
            timeout=timeout, cwd=str(APP_DIR),
        )
    except subprocess.TimeoutExpired:
        raise RunFailed(f"`flwr {args[0]}` did not answer within {timeout:.0f}s") from None


def _json_tail(text: str) -> dict:
    """The JSON object in a flwr ``--format json`` output (banners may precede it)."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON in output")
    return json.loads(text[start:])


def run_status(home: Path, run_id: int) -> str:
    """The run's status string, e.g. ``running`` or ``finished:completed``."""
    proc = _flwr(["ls", FEDERATION, "--run-id", str(run_id), "--format", "json"], home)
    try:
        data = _json_tail(proc.stdout)
    except ValueError:
        raise RunFailed(f"flwr ls gave no status: {proc.stdout[-500:]} {proc.stderr[-500:]}") from None
    runs = data.get("runs") or []
    if not runs:
        raise RunFailed(f"flwr ls knows no run {run_id}: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    return str(runs[0].get("status", ""))


def simulation_federation(num_supernodes: int, cpus_per_client: int, ray_cpus: int = 0) -> list[str]:
    """``--federation-config`` entries of a simulation: virtual SuperNodes and Ray's resources.

    With ``RAY_ADDRESS`` set, Ray connects to that existing cluster and uses
    its resources (its nodes must have this environment at the same paths);
    otherwise a private Ray instance with ``ray_cpus`` CPUs (0: this
    machine's cores) is started, never a cluster some earlier ``ray start``
    left running.
    """
    entries = [
        f"num-supernodes={num_supernodes}",
        f"client-resources-num-cpus={cpus_per_client}",
        "client-resources-num-gpus=0.0",
        'init-args-logging-level="ERROR"',
        "init-args-log-to-driver=true",
    ]
    if not os.environ.get("RAY_ADDRESS"):
        entries.append(f"init-args-num-cpus={ray_cpus or os.cpu_count() or 1}")
    return entries


def write_run_config(path: Path, config_file: Path, overrides: list[str], resume: bool = False) -> Path:
    """The Flower run config (TOML) of an experiment: its YAML and overrides,
    newline-separated in one string (a file, so no shell quoting is involved);
    ``resume`` continues the run directory's last complete round."""
    body = "\n".join(overrides).replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(f'config-file = "{config_file}"\noverrides = "{body.replace(chr(10), chr(92) + "n")}"\n'
                    f'resume = "{"1" if resume else ""}"\n')
    return path


def submit_and_wait(
    *,
    home: Path,
    config_file: Path | None,
    overrides: list[str],
    federation_config: list[str] | None = None,
    verbose: bool = False,
    poll: float = 2.0,
    on_poll: Callable[[], None] | None = None,
    deadline: float = 24 * 3600.0,
    run_config: Path | None = None,
    finished: Callable[[], bool] | None = None,
    status_every: float = 30.0,
    resume: bool = False,
    app_dir: Path = APP_DIR,
    on_stop: Callable[[], None] | None = None,
    sign: Callable[[Path], object] | None = None,
) -> int:
    """``flwr run`` the app on the SuperLink configured in ``home``; wait for the
    final status; raise :class:`RunFailed` unless it completed. Returns the run id.

    ``config_file`` None: ``run_config`` is another app's run config file,
    used as it is, and ``app_dir`` that app (a benchmark's bare Flower app).

    ``federation_config`` is given for a simulation (see
    :func:`simulation_federation`); a deployment's SuperNodes are real.
    Each ``flwr ls`` is a new Python process importing Flower's CLI (about
    1.5 s of CPU, taken from the clients on a small machine), so the status is
    asked every ``status_every`` seconds, and at once when the cheap
    ``finished()`` check (e.g. the run's summary.json exists) says so.
    ``on_stop`` is called first when the wait is given up (Ctrl-C, SIGTERM,
    the deadline), before the run is stopped on the SuperLink. The app goes
    out staged (:func:`fedsense_tools.fab.staged`), and ``sign`` signs that
    staged directory first (a locked fleet).
    """
    if config_file is not None:
        run_config = write_run_config(run_config or home / "run-config.toml", config_file, overrides, resume)
    elif run_config is None:
        raise ValueError("submit_and_wait: give config_file, or the run config file of the app in app_dir")
    extra = ["--federation-config", " ".join(federation_config)] if federation_config else []
    with fab.staged(app_dir, home) as bundle:
        if sign is not None:
            sign(bundle)
        proc = _flwr(
            ["run", str(bundle), FEDERATION, "--run-config", str(run_config), *extra, "--format", "json"],
            home,
        )
    try:
        payload = _json_tail(proc.stdout)
    except ValueError:
        raise RunFailed(f"flwr run failed: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}") from None
    if not payload.get("success") or payload.get("run-id") is None:
        raise RunFailed(f"flwr run did not start the run: {payload}")
    run_id = int(payload["run-id"])
    log.info("submitted run %s", run_id)
    follower = None
    if verbose:
        follower = subprocess.Popen(
            [_bin("flwr"), "log", str(run_id), FEDERATION, "--stream"],
            env=quiet_env(home), cwd=str(APP_DIR),
        )
    give_up = time.time() + deadline
    asked = 0.0
    try:
        while True:
            if on_poll is not None:
                on_poll()
            if finished is None or finished() or time.time() - asked >= status_every:
                status, asked = run_status(home, run_id), time.time()
                if status.startswith("finished"):
                    break
            if time.time() > give_up:
                raise RunFailed(f"Flower run {run_id} still '{status}' after {deadline:.0f}s")
            time.sleep(poll)
    except (KeyboardInterrupt, SystemExit, RunFailed):
        # Ctrl-C, SIGTERM or giving up: the run must not go on without us
        # (on a fleet's SuperLink, which outlives this command, it would).
        if on_stop is not None:
            on_stop()
        try:
            _flwr(["stop", str(run_id), FEDERATION], home, timeout=30)
        except RunFailed:  # the SuperLink is gone or mute: nothing left to stop there
            pass
        raise
    finally:
        if follower is not None:
            follower.terminate()
            try:
                follower.wait(timeout=10)
            except subprocess.TimeoutExpired:
                follower.kill()
    if status != "finished:completed":
        raise RunFailed(f"Flower run {run_id} ended as '{status}'; see {home / 'superlink.log'}")
    return run_id
