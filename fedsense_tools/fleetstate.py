"""What a local fleet is: ``DIR/fleet.json``, the record of every process
``fedsense fleet up`` started (addresses, pids with start times, node ids),
written as it goes so ``fedsense fleet down`` stops exactly those."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fedsense_tools.pki import SIGNING_KEY, TRUSTED_ENTITIES
from fedsense_tools.processes import alive

STATE = "fleet.json"


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
    address: str  # what the devices dial, host:port: the TLS front with --tls, else the SuperLink
    tls: bool
    auth: bool
    superlink: list | None = None  # [pid, start time]
    devices: list[Device] = field(default_factory=list)
    link: str | None = None  # the SuperLink's own address (127.0.0.1) behind a front; the operator's flwr uses it
    front: list | None = None  # [pid, start time] of the TLS front (fedsense_tools/front.py)

    @property
    def operator_address(self) -> str:
        """Where the operator's ``flwr`` CLI reaches the SuperLink."""
        return self.link or self.address

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

    @property
    def signing_key(self) -> Path | None:
        """The operator's app-signing key (with --tls): devices run only apps it signed (fedsense_tools/fab.py)."""
        return self.path / "keys" / SIGNING_KEY if self.tls else None

    @property
    def trusted_entities(self) -> Path | None:
        """Every device's ``--trusted-entities``: the public half of :attr:`signing_key`."""
        return self.path / "keys" / TRUSTED_ENTITIES if self.tls else None

    @property
    def approvals(self) -> Path:
        """The signatures the SuperLink hands out with the FABs they sign."""
        return self.path / "approvals"

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
        names = [name for name, proc in (("superlink", self.superlink), ("front", self.front))
                 if proc and alive(tuple(proc))]
        return names + [d.name for d in self.devices if d.process and alive(tuple(d.process))]
