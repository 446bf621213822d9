"""One device's SuperNode in a local fleet: its command, starting it
detached, waiting until the SuperLink activates it (or refuses it), letting
a killed device's node go before it comes back, stopping it; and the
SuperLink's side (``flwr supernode ls`` and ``register``)."""

from __future__ import annotations

import logging
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

from fedsense import protocol
from fedsense_tools import launcher
from fedsense_tools.fleetstate import Device, Fleet, FleetError
from fedsense_tools.processes import alive, identity, stop_tree

log = logging.getLogger("fedsense.fleet")
ACTIVATION_FAILED = "Failed to activate SuperNode"  # what a refused SuperNode logs before it exits
NODE_ID = re.compile(r"SuperNode ID: (\d+)")  # what an activated SuperNode logs


def start_detached(cmd: list[str], home: Path, log_file: Path) -> list:
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
    in the node config, the fleet's CA and the operator's app-signing key
    (it runs only apps that key signed), and its private key (``key``
    overrides it)."""
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
        cmd += ["--root-certificates", str(fleet.ca_cert), "--trusted-entities", str(fleet.trusted_entities)]
    else:
        cmd.append("--insecure")
    private = key or device.key
    if fleet.auth and private:
        cmd += ["--auth-supernode-private-key", str(private)]
    return cmd


def node_log(fleet: Fleet, name: str) -> Path:
    return fleet.path / "nodes" / name / "supernode.log"


def launch(fleet: Fleet, device: Device, key: str | None = None) -> int:
    """Start ``device``'s SuperNode and record it; the log offset where its output begins."""
    if device.process and alive(tuple(device.process)):
        raise FleetError(f"{device.name} is already running (pid {device.process[0]})")
    logfile = node_log(fleet, device.name)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    offset = logfile.stat().st_size if logfile.exists() else 0
    device.process = start_detached(supernode_command(fleet, device, key), logfile.parent, logfile)
    fleet.save()
    return offset


def activation(fleet: Fleet, device: Device, offset: int, timeout: float) -> str:
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
        outcome = activation(fleet, device, launch(fleet, device), timeout)
        if outcome == "online":
            return device
        if outcome == "refused" and time.time() < give_up:
            log.info("%s: the SuperLink refused activation (node still online?); retrying", name)
            time.sleep(5.0)
            continue
        _stop_device(device)
        raise not_online(fleet, device, outcome)


_OUTCOMES = {
    "refused": "was refused by the SuperLink (unregistered key, or the node is still online)",
    "exited": "exited",
    "silent": "did not connect in time",
}


def not_online(fleet: Fleet, device: Device, outcome: str) -> FleetError:
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
