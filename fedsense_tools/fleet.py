"""A local fleet of real Flower processes: one SuperLink and N SuperNodes on 127.0.0.1.

``fedsense fleet up`` splits a dataset by subject into one npz per device,
makes the certificates and device keys it needs, registers the keys, starts
a SuperLink and the SuperNodes (each on its own port, each with its own
``FLWR_HOME``) and records every process it started in ``DIR/fleet.json``
as it goes, so ``fedsense fleet down`` stops exactly those, even after a
half-finished ``up`` (:mod:`fedsense_tools.fleetstate`; one device's
SuperNode: :mod:`fedsense_tools.supernodes`). ``fedsense fleet run`` is the
experiment API's ``run_experiment(..., fleet=DIR)``: the experiment goes
to the fleet's SuperLink, which waits for the real final status; the
ServerApp and ClientApp are the ones the simulation runs.

Layout of DIR::

    fleet.json          what was started: addresses, pids (with start times), node ids
    devices/device-<i>.npz   device i's windows (one subject), docs/design.md npz
    certs/              ca.crt, ca.key, server.pem, server.key          (--tls)
    keys/device-<i>[.pub]    device i's key pair, OpenSSH              (--auth)
    keys/app-signing, keys/trusted-entities.yaml   the operator's app-signing key
                        and its public half, each device's --trusted-entities (--tls)
    approvals/<sha256>.json  the signature of each FAB ``fleet run`` sent (--tls)
    flower/             FLWR_HOME of the SuperLink and of the flwr CLI; superlink.log
    nodes/device-<i>/   FLWR_HOME of device i's SuperNode; supernode.log
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np

from fedsense.config import ConfigError
from fedsense.data.base import DatasetError
from fedsense.data.npz import load_npz, save_npz
from fedsense_tools import launcher
from fedsense_tools.fab import KEY_ID
from fedsense_tools.fleetstate import STATE, Device, Fleet, FleetError
from fedsense_tools.front import front_command, write_front
from fedsense_tools.pki import DeviceKey, ServerPki, make_device_key, make_server_pki, make_signing_key
from fedsense_tools.processes import alive, stop_tree
from fedsense_tools.supernodes import activation, launch, not_online, register, start_detached


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
    nginx = front_command(root / "front") if tls else None  # refuses now when nginx is missing
    chosen = split_devices(data, root / "devices", devices, subjects)
    fleet = Fleet(dir=str(root), address=f"127.0.0.1:{launcher.free_port()}", tls=tls, auth=auth)
    if tls:  # the devices dial the front; the SuperLink listens on 127.0.0.1 behind it
        fleet.link = f"127.0.0.1:{launcher.free_port()}"
        make_signing_key(fleet.signing_key.parent, KEY_ID)  # devices run only apps this key signed
    server: ServerPki | None = make_server_pki(root / "certs") if tls else None
    for i, (subject, path) in enumerate(chosen):
        fleet.devices.append(Device(name=f"device-{i}", data=str(path), subject=subject, partition_id=i,
                                    port=launcher.free_port()))
    fleet.save()
    try:
        port = int(fleet.operator_address.rsplit(":", 1)[1])
        fleet.home.mkdir(parents=True, exist_ok=True)
        link_log = fleet.home / "superlink.log"
        fleet.superlink = start_detached(
            launcher.superlink_command(port, link_log, simulation=False, tls=server, auth=auth,
                                       approvals=fleet.approvals if tls else None),
            fleet.home, fleet.home / "superlink.out",
        )
        fleet.save()
        launcher.write_cli_config(fleet.home, fleet.operator_address, fleet.ca_cert)
        launcher.wait_healthy(
            fleet.operator_address, lambda: None if alive(tuple(fleet.superlink)) else -1,
            fleet.home / "superlink.out", timeout, fleet.ca_cert,
        )
        if server is not None and nginx is not None:
            write_front(root / "front", fleet.address, port, server)
            fleet.front = start_detached(nginx, root / "front", root / "front" / "nginx.out")
            fleet.save()
            wait_front(fleet, timeout)
        for device in fleet.devices:
            if auth:
                key: DeviceKey = make_device_key(root / "keys", device.name)
                device.key = str(key.private)
                device.node_id = register(fleet, device, key.public)
                fleet.save()
        offsets = [launch(fleet, device) for device in fleet.devices]  # all start at once
        for device, offset in zip(fleet.devices, offsets):
            outcome = activation(fleet, device, offset, timeout)
            if outcome != "online":
                raise not_online(fleet, device, outcome)
    except BaseException:
        down(root)
        raise
    return fleet


def wait_front(fleet: Fleet, timeout: float) -> None:
    """Wait until the TLS front answers a Fleet API call (the SuperLink's own
    refusal of an unsigned one will do); fail naming its log if it exits."""
    front = tuple(fleet.front or ())
    request = urllib.request.Request(f"https://{fleet.address}/v1/fleet/get-run", data=b"", method="POST")
    try:
        launcher.wait_answering(request, lambda: None if alive(front) else -1, fleet.path / "front" / "error.log",
                                timeout, fleet.ca_cert, what="the TLS front (nginx)", any_status=True)
    except launcher.RunFailed as err:
        raise FleetError(str(err)) from None


def down(directory: str | Path, grace: float = 15.0) -> list[str]:
    """Stop every process the fleet recorded (devices first), each by its
    pid and start time, with everything below it. Returns what was stopped."""
    fleet = Fleet.load(directory)
    stopped = []
    for name, proc in [*((d.name, d.process) for d in fleet.devices), ("front", fleet.front),
                       ("superlink", fleet.superlink)]:
        if proc and stop_tree(int(proc[0]), grace, started=str(proc[1])):
            stopped.append(name)
    return stopped
