"""A local fleet of real Flower processes: one SuperLink and N SuperNodes on 127.0.0.1.

``fedsense fleet up`` splits a dataset by subject into one npz per device,
makes the certificates and device keys it needs, registers the keys, starts
a SuperLink and the SuperNodes (each on its own port, each with its own
``FLWR_HOME``) and records every process it started in ``DIR/fleet.json``
as it goes, so ``fedsense fleet down`` stops exactly those, even after a
half-finished ``up``. ``fedsense fleet run`` submits an experiment to the
fleet's SuperLink and waits for the real final status; the ServerApp and
ClientApp are the ones the simulation runs.

Layout of DIR::

    fleet.json          what was started: addresses, pids (with start times), node ids
    devices/device-<i>.npz   device i's windows (one subject), docs/design.md npz
    certs/              ca.crt, ca.key, server.pem, server.key          (--tls)
    keys/device-<i>[.pub]    device i's key pair, OpenSSH              (--auth)
    flower/             FLWR_HOME of the SuperLink and of the flwr CLI; superlink.log
    nodes/device-<i>/   FLWR_HOME of device i's SuperNode; supernode.log
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from fedsense import configfile as config_mod
from fedsense import protocol
from fedsense.config import ConfigError
from fedsense.data.base import DatasetError
from fedsense.data.npz import load_npz, save_npz
from fedsense.rundir import new_run_dir
from fedsense_tools import launcher
from fedsense_tools.pki import DeviceKey, ServerPki, make_device_key, make_server_pki
from fedsense_tools.processes import alive, identity, stop_tree

log = logging.getLogger("fedsense.fleet")

STATE = "fleet.json"
ACTIVATION_FAILED = "Failed to activate SuperNode"  # what a refused SuperNode logs before it exits
NODE_ID = re.compile(r"SuperNode ID: (\d+)")  # what an activated SuperNode logs


class FleetError(RuntimeError):
    """The fleet could not be brought up, reached or used."""


@dataclass
class Device:
    name: str
    data: str  # absolute path of its npz
    subject: int
    partition_id: int
    port: int  # its ClientAppIo port on 127.0.0.1
    key: str | None = None  # private key (with --auth)
    node_id: int | None = None  # from registration (with --auth)
    process: list | None = None  # [pid, start time] of its flower-supernode


@dataclass
class Fleet:
    dir: str
    address: str  # the SuperLink, host:port
    tls: bool
    auth: bool
    superlink: list | None = None  # [pid, start time]
    devices: list[Device] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def home(self) -> Path:
        """FLWR_HOME of the SuperLink and of the ``flwr`` CLI talking to it."""
        return self.path / "flower"

    @property
    def ca_cert(self) -> Path | None:
        return self.path / "certs" / "ca.crt" if self.tls else None

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise FleetError(f"no device {name!r} in {self.path}; devices: {[d.name for d in self.devices]}")

    def save(self) -> None:
        (self.path / STATE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "Fleet":
        path = Path(directory).expanduser().resolve() / STATE
        if not path.is_file():
            raise FleetError(f"{path.parent} holds no fleet ({STATE} missing); start one with `fedsense fleet up`")
        raw = json.loads(path.read_text())
        raw["devices"] = [Device(**d) for d in raw.get("devices", [])]
        return cls(**raw)

    def running(self) -> list[str]:
        """Names of this fleet's recorded processes that still run."""
        names = ["superlink"] if self.superlink and alive(tuple(self.superlink)) else []
        return names + [d.name for d in self.devices if d.process and alive(tuple(d.process))]


# --------------------------------------------------------------------------- devices' data


def split_devices(data: Path, out: Path, devices: int | None, subjects: list[int] | None) -> list[tuple[int, Path]]:
    """One npz per chosen subject: ``subjects`` as given, else the first
    ``devices`` subjects in ascending order. Returns ``(subject, path)`` pairs,
    device ``i`` being the ``i``-th pair."""

    ds = load_npz(data)
    present = [int(s) for s in ds.subjects()]
    if subjects:
        missing = sorted(set(subjects) - set(present))
        if missing:
            raise DatasetError(f"--subjects {missing} are not in {data} (subjects: {present})")
        chosen = list(subjects)
    else:
        if devices is None or devices < 1:
            raise ConfigError("--devices must be at least 1")
        if devices > len(present):
            raise DatasetError(f"--devices {devices}: {data} has only {len(present)} subjects")
        chosen = present[:devices]
    return [
        (s, save_npz(ds.subset(np.flatnonzero(ds.subject == s)), out / f"device-{i}.npz"))
        for i, s in enumerate(chosen)
    ]


# --------------------------------------------------------------------------- processes


def _start(cmd: list[str], home: Path, log_file: Path) -> list:
    """Start a detached process (its own session: it outlives the command that
    started it and a Ctrl-C in that terminal); returns ``[pid, start time]``."""
    home.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            cmd, env=launcher.quiet_env(home), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    ident = identity(proc.pid)
    if ident is None:  # exited at once; the log says why
        return [proc.pid, ""]
    return list(ident)


def supernode_command(fleet: Fleet, device: Device, key: str | None = None) -> list[str]:
    """The ``flower-supernode`` command of ``device``: its data path and number
    in the node config, the fleet's CA, and its private key (``key`` overrides it)."""
    node_config = f'{protocol.NODE_DATA_PATH}="{device.data}" {protocol.NODE_PARTITION_ID}={device.partition_id}'
    cmd = [
        launcher._bin("flower-supernode"),
        "--superlink", fleet.address,
        "--isolation", "subprocess",
        "--host", "127.0.0.1",
        "--port", str(device.port),
        "--node-config", node_config,
    ]
    if fleet.tls:
        cmd += ["--root-certificates", str(fleet.ca_cert)]
    else:
        cmd.append("--insecure")
    private = key or device.key
    if fleet.auth and private:
        cmd += ["--auth-supernode-private-key", str(private)]
    return cmd


def node_log(fleet: Fleet, name: str) -> Path:
    return fleet.path / "nodes" / name / "supernode.log"


def _launch(fleet: Fleet, device: Device, key: str | None = None) -> int:
    """Start ``device``'s SuperNode and record it; the log offset where its output begins."""
    if device.process and alive(tuple(device.process)):
        raise FleetError(f"{device.name} is already running (pid {device.process[0]})")
    logfile = node_log(fleet, device.name)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    offset = logfile.stat().st_size if logfile.exists() else 0
    device.process = _start(supernode_command(fleet, device, key), logfile.parent, logfile)
    fleet.save()
    return offset


def _activation(fleet: Fleet, device: Device, offset: int, timeout: float) -> str:
    """Wait until the SuperNode logs its node id (``"online"``, the id is
    recorded), or exits: ``"refused"`` when the SuperLink would not activate
    it, else ``"exited"``; ``"silent"`` after ``timeout`` seconds of neither."""
    logfile = node_log(fleet, device.name)
    deadline = time.time() + timeout
    while True:
        with open(logfile, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        if match := NODE_ID.search(text):
            device.node_id = int(match.group(1))
            fleet.save()
            return "online"
        if not alive(tuple(device.process)):
            return "refused" if ACTIVATION_FAILED in text else "exited"
        if time.time() > deadline:
            return "silent"
        time.sleep(0.5)


def _log_tail(path: Path, lines: int = 4) -> str:
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) if path.exists() else ""


# Flower's ServerApp pulls replies every 3 s; a node must stay offline longer
# than that (and a busy machine's slack) before the same node comes back.
RELEASE_SECONDS = 10.0


def seconds_until_released(entry: dict | None, now: float) -> float | None:
    """How long a device's node (its ``flwr supernode ls`` entry) must still
    stay away before it may come back: ``None`` while the SuperLink holds it
    online, 0 when it may start now.

    A device started with a key comes back as the same node. The SuperLink
    refuses that node while it is online (until its heartbeat is missed), and
    answers a message the dead device had taken with "Node Unavailable" only
    when the ServerApp next pulls replies after the node went offline. A node
    back online before that pull leaves the message unanswered, and the round
    waits ``fed.timeout`` for it.
    """
    status = (entry or {}).get("status")
    if status == "online":
        return None
    if status != "offline":
        return 0.0  # unknown, never online or unregistered: the launch tells
    try:  # "YYYY-MM-DD HH:MM:SSZ", whole seconds (so one more)
        since = datetime.fromisoformat(str(entry.get("offline-at"))).timestamp()
    except ValueError:
        return 0.0
    return max(0.0, since + 1.0 + RELEASE_SECONDS - now)


def _await_release(fleet: Fleet, device: Device, give_up: float) -> None:
    """With a key: wait until the SuperLink has let the device's node go (see
    :func:`seconds_until_released`), polling until ``give_up``."""
    if not (fleet.auth and device.node_id is not None):
        return  # without a key a device comes back as a new node
    told = False
    while True:
        entry = next((n for n in nodes(fleet) if str(n.get("node-id")) == str(device.node_id)), None)
        left = seconds_until_released(entry, time.time())
        if left == 0.0:
            return
        if time.time() >= give_up:
            return  # the launch is refused and says so
        if not told:
            log.info("%s: waiting until the SuperLink has let node %s go", device.name, device.node_id)
            told = True
        time.sleep(min(5.0 if left is None else left, max(0.0, give_up - time.time())))


def start_device(fleet: Fleet, name: str, wait: float = 0.0, timeout: float = 120.0) -> Device:
    """Start device ``name``'s SuperNode; return once the SuperLink activated it.

    With ``wait > 0``, a device whose node the SuperLink still holds (a killed
    device: online until its heartbeat is missed, about a minute) is started
    once the node has been offline for :data:`RELEASE_SECONDS`, so what the
    dead device left unanswered is answered "Node Unavailable" first; a
    SuperNode the SuperLink refuses anyway is started again until ``wait``
    seconds have passed.
    """
    device = fleet.device(name)
    give_up = time.time() + wait
    while True:
        if wait > 0:
            _await_release(fleet, device, give_up)
        outcome = _activation(fleet, device, _launch(fleet, device), timeout)
        if outcome == "online":
            return device
        if outcome == "refused" and time.time() < give_up:
            log.info("%s: the SuperLink refused activation (node still online?); retrying", name)
            time.sleep(5.0)
            continue
        _stop_device(device)
        raise _not_online(fleet, device, outcome)


_OUTCOMES = {
    "refused": "was refused by the SuperLink (unregistered key, or the node is still online)",
    "exited": "exited",
    "silent": "did not connect in time",
}


def _not_online(fleet: Fleet, device: Device, outcome: str) -> FleetError:
    """The error for a SuperNode that did not come online, with its log's last lines."""
    path = node_log(fleet, device.name)
    return FleetError(f"{device.name}'s SuperNode {_OUTCOMES[outcome]}; {path} ends: {_log_tail(path)}")


def _stop_device(device: Device) -> None:
    if device.process:
        stop_tree(int(device.process[0]), started=str(device.process[1]))


def nodes(fleet: Fleet) -> list[dict]:
    """The SuperLink's view of the nodes (``flwr supernode ls``): ids and status."""
    proc = launcher._flwr(["supernode", "ls", launcher.FEDERATION, "--format", "json"], fleet.home, timeout=60)
    try:
        return list(launcher._json_tail(proc.stdout).get("nodes", []))
    except ValueError:
        raise FleetError(f"flwr supernode ls: {proc.stdout[-500:]} {proc.stderr[-500:]}") from None


def register(fleet: Fleet, device: Device, public: Path) -> int:
    """Register a device's public key with the SuperLink; its node id."""
    proc = launcher._flwr(
        ["supernode", "register", str(public), launcher.FEDERATION, "--name", device.name, "--format", "json"],
        fleet.home, timeout=60,
    )
    try:
        payload = launcher._json_tail(proc.stdout)
    except ValueError:
        payload = {}
    if not payload.get("success") or "node-id" not in payload:  # flwr exits 0 either way
        raise FleetError(f"registering {public} failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    return int(payload["node-id"])


# --------------------------------------------------------------------------- commands


def up(
    directory: str | Path,
    data: str | Path,
    devices: int | None = None,
    subjects: list[int] | None = None,
    tls: bool = False,
    auth: bool = False,
    timeout: float = 120.0,
) -> Fleet:
    """Bring a local fleet up (see the module docstring); returns it once
    every SuperNode is online. On failure, whatever started is stopped."""
    if auth and not tls:
        raise ConfigError("--auth needs --tls: Flower enables SuperNode authentication only over TLS")
    root = Path(directory).expanduser().resolve()
    if (root / STATE).exists() and Fleet.load(root).running():
        raise FleetError(f"a fleet is already running in {root}; `fedsense fleet down {root}` first")
    data = Path(data).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    chosen = split_devices(data, root / "devices", devices, subjects)
    fleet = Fleet(dir=str(root), address=f"127.0.0.1:{launcher.free_port()}", tls=tls, auth=auth)
    server: ServerPki | None = make_server_pki(root / "certs") if tls else None
    for i, (subject, path) in enumerate(chosen):
        fleet.devices.append(Device(name=f"device-{i}", data=str(path), subject=subject, partition_id=i,
                                    port=launcher.free_port()))
    fleet.save()
    try:
        port = int(fleet.address.rsplit(":", 1)[1])
        fleet.home.mkdir(parents=True, exist_ok=True)
        link_log = fleet.home / "superlink.log"
        fleet.superlink = _start(
            launcher.superlink_command(port, link_log, simulation=False, tls=server, auth=auth),
            fleet.home, fleet.home / "superlink.out",
        )
        fleet.save()
        launcher.write_cli_config(fleet.home, fleet.address, fleet.ca_cert)
        launcher.wait_healthy(
            fleet.address, lambda: None if alive(tuple(fleet.superlink)) else -1,
            fleet.home / "superlink.out", timeout, fleet.ca_cert,
        )
        for device in fleet.devices:
            if auth:
                key: DeviceKey = make_device_key(root / "keys", device.name)
                device.key = str(key.private)
                device.node_id = register(fleet, device, key.public)
                fleet.save()
        offsets = [_launch(fleet, device) for device in fleet.devices]  # all start at once
        for device, offset in zip(fleet.devices, offsets):
            outcome = _activation(fleet, device, offset, timeout)
            if outcome != "online":
                raise _not_online(fleet, device, outcome)
    except BaseException:
        down(root)
        raise
    return fleet


def down(directory: str | Path, grace: float = 15.0) -> list[str]:
    """Stop every process the fleet recorded (devices first), each by its
    pid and start time, with everything below it. Returns what was stopped."""
    fleet = Fleet.load(directory)
    stopped = []
    for name, proc in [*((d.name, d.process) for d in fleet.devices), ("superlink", fleet.superlink)]:
        if proc and stop_tree(int(proc[0]), grace, started=str(proc[1])):
            stopped.append(name)
    return stopped


def run(
    directory: str | Path,
    config_file: str | Path,
    overrides: list[str],
    out: str | None = None,
    on_poll_factory: Callable[[Path, int], Callable[[], None]] | None = None,
    verbose: bool = False,
) -> Path:
    """Run an experiment on the fleet; returns its run directory once the run
    completed (:class:`launcher.RunFailed` otherwise). ``on_poll_factory(run_dir,
    rounds)`` makes what is called while waiting (the CLI prints progress)."""

    fleet = Fleet.load(directory)
    if "superlink" not in fleet.running():
        raise FleetError(f"the fleet's SuperLink in {fleet.path} is not running; `fedsense fleet up` it")
    config_file = Path(config_file).expanduser().resolve()
    cfg = config_mod.load(config_file, overrides)
    if cfg.fed.mode != "federated":
        raise ConfigError(f"fed.mode={cfg.fed.mode!r}: a fleet runs federated experiments only")
    if cfg.fed.min_clients > len(fleet.devices):
        raise ConfigError(
            f"fed.min_clients={cfg.fed.min_clients} but the fleet has {len(fleet.devices)} devices; "
            f"--set fed.min_clients={len(fleet.devices)} or fewer"
        )
    run_dir = new_run_dir(cfg, out)
    (run_dir / "flower").mkdir(parents=True, exist_ok=True)
    pinned = [*overrides, f"output.dir={run_dir}"]
    config_mod.load(config_file, pinned)  # bad overrides fail here, not on the SuperLink
    launcher.submit_and_wait(
        home=fleet.home,
        config_file=config_file,
        overrides=pinned,
        run_config=run_dir / "flower" / "run-config.toml",
        verbose=verbose,
        on_poll=on_poll_factory(run_dir, cfg.fed.rounds) if on_poll_factory else None,
        finished=(run_dir / "summary.json").exists,
    )
    return run_dir
