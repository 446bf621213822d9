"""The local fleet's pieces that need no Flower process (fleet.py, fleetstate.py,
supernodes.py, and run_experiment's fleet checks): device files, commands,
recorded state, stopping by id, and refusals before anything starts.
The real SuperLink/SuperNode runs are in test_fleet_deployment.py (``make test-fleet``)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from fedsense import protocol
from fedsense.config import ConfigError
from fedsense.data.base import DatasetError
from fedsense.data.npz import load_npz, save_npz
from fedsense_tools import fab, fleet, fleetstate, supernodes
from fedsense_tools.experiment import run_experiment
from fedsense_tools.cli import main
from fedsense_tools.launcher import superlink_command
from fedsense_tools.pki import make_server_pki
from fedsense_tools.processes import alive, identity
from tests.conftest import SYNTHETIC


@pytest.fixture
def dataset(synthetic_cfg, tmp_path) -> Path:
    from fedsense.data.loaders import build_dataset

    return save_npz(build_dataset(synthetic_cfg.data, 0), tmp_path / "all.npz")


def test_one_file_per_device_holding_exactly_its_subject(dataset, tmp_path):
    full = load_npz(dataset)
    made = fleet.split_devices(dataset, tmp_path / "devices", devices=3, subjects=None)
    assert [s for s, _ in made] == [1, 2, 3]  # the first three subjects, in order
    for subject, path in made:
        part = load_npz(path)
        rows = full.subject == subject
        assert set(part.subject.tolist()) == {subject}
        for m in full.x:
            np.testing.assert_array_equal(part.x[m], full.x[m][rows])
        np.testing.assert_array_equal(part.y, full.y[rows])
    chosen = fleet.split_devices(dataset, tmp_path / "chosen", devices=None, subjects=[6, 1])
    assert [(s, p.name) for s, p in chosen] == [(6, "device-0.npz"), (1, "device-1.npz")]


def test_device_split_refusals_name_the_problem(dataset, tmp_path):
    with pytest.raises(DatasetError, match="--devices 7: .* only 6 subjects"):
        fleet.split_devices(dataset, tmp_path, devices=7, subjects=None)
    with pytest.raises(DatasetError, match=r"--subjects \[9\] are not in"):
        fleet.split_devices(dataset, tmp_path, devices=None, subjects=[1, 9])
    with pytest.raises(ConfigError, match="--devices must be at least 1"):
        fleet.split_devices(dataset, tmp_path, devices=0, subjects=None)


def test_superlink_command_security_flags(tmp_path):
    pki = make_server_pki(tmp_path)
    insecure = superlink_command(9000, tmp_path / "l", simulation=False)
    assert "--insecure" in insecure and "--simulation" not in insecure
    assert insecure[insecure.index("--host") + 1] == "127.0.0.1"
    assert "--disable-runtime-dependency-installation" in insecure
    secure = superlink_command(9000, tmp_path / "l", simulation=False, tls=pki, auth=True)
    assert "--insecure" not in secure and "--enable-supernode-auth" in secure
    assert secure[secure.index("--ssl-ca-certfile") + 1] == str(pki.ca_cert)
    with pytest.raises(ValueError, match="authentication needs TLS"):
        superlink_command(9000, tmp_path / "l", simulation=False, auth=True)
    signed = superlink_command(9000, tmp_path / "l", simulation=False, tls=pki, auth=True, approvals=tmp_path / "a")
    assert signed[1:6] == ["-m", "fedsense_tools.fab", "--approvals", str(tmp_path / "a"), "--"]
    assert signed[6:] == secure[1:]  # the same SuperLink, serving the operator's signatures


def _fleet(tmp_path: Path, tls: bool, auth: bool) -> fleetstate.Fleet:
    f = fleetstate.Fleet(dir=str(tmp_path), address="127.0.0.1:9092", tls=tls, auth=auth)
    f.devices.append(fleetstate.Device(name="device-0", data="/data/d0.npz", subject=4, partition_id=0, port=9200,
                                       key="/keys/device-0" if auth else None))
    return f


def test_supernode_command_carries_the_devices_own_facts(tmp_path):
    f = _fleet(tmp_path, tls=True, auth=True)
    cmd = supernodes.supernode_command(f, f.devices[0])
    assert cmd[cmd.index("--node-config") + 1] == (
        f'{protocol.NODE_DATA_PATH}="/data/d0.npz" {protocol.NODE_PARTITION_ID}=0')
    assert cmd[cmd.index("--superlink") + 1] == "127.0.0.1:9092"
    assert cmd[cmd.index("--port") + 1] == "9200"
    assert cmd[cmd.index("--root-certificates") + 1] == str(tmp_path / "certs" / "ca.crt")
    assert cmd[cmd.index("--trusted-entities") + 1] == str(tmp_path / "keys" / "trusted-entities.yaml")
    assert cmd[cmd.index("--auth-supernode-private-key") + 1] == "/keys/device-0"
    other = supernodes.supernode_command(f, f.devices[0], key="/keys/stranger")
    assert other[other.index("--auth-supernode-private-key") + 1] == "/keys/stranger"
    plain = supernodes.supernode_command(_fleet(tmp_path, tls=False, auth=False), f.devices[0])
    assert "--insecure" in plain and "--root-certificates" not in plain and "--trusted-entities" not in plain
    assert "--auth-supernode-private-key" not in plain


def test_state_round_trips_and_a_missing_fleet_is_named(tmp_path):
    f = _fleet(tmp_path, tls=True, auth=True)
    f.devices[0].node_id = 123
    f.save()
    again = fleetstate.Fleet.load(tmp_path)
    assert again == f
    with pytest.raises(fleetstate.FleetError, match="no fleet .*fedsense fleet up"):
        fleetstate.Fleet.load(tmp_path / "elsewhere")


def test_down_stops_exactly_the_recorded_processes(tmp_path):
    f = _fleet(tmp_path, tls=False, auth=False)
    f.superlink = supernodes.start_detached(["sleep", "60"], tmp_path / "h", tmp_path / "a.log")
    f.devices[0].process = supernodes.start_detached(["sleep", "60"], tmp_path / "h", tmp_path / "b.log")
    bystander = subprocess.Popen(["sleep", "60"])  # not recorded: must survive
    try:
        f.save()
        assert fleetstate.Fleet.load(tmp_path).running() == ["superlink", "device-0"]
        assert fleet.down(tmp_path) == ["device-0", "superlink"]
        assert not alive(tuple(f.superlink)) and not alive(tuple(f.devices[0].process))
        assert bystander.poll() is None
        assert fleet.down(tmp_path) == []  # nothing left: stops nothing
    finally:
        bystander.kill()
        bystander.wait()


def test_a_stale_record_is_never_signalled(tmp_path):
    f = _fleet(tmp_path, tls=False, auth=False)
    other = subprocess.Popen(["sleep", "60"])
    try:
        f.superlink = [other.pid, "1"]  # same pid, another start time: not our process
        f.save()
        assert fleet.down(tmp_path) == []
        assert other.poll() is None and alive(identity(other.pid))
    finally:
        other.kill()
        other.wait()


def test_run_refuses_a_config_the_fleet_cannot_serve_before_submitting(tmp_path):
    f = _fleet(tmp_path, tls=False, auth=False)
    with pytest.raises(fleetstate.FleetError, match="SuperLink .* is not running"):
        f.save()
        run_experiment(SYNTHETIC, [], fleet=tmp_path)
    f.superlink = supernodes.start_detached(["sleep", "60"], tmp_path / "h", tmp_path / "a.log")  # stands in for it
    f.save()
    try:
        with pytest.raises(ConfigError, match="fed.min_clients=2 but the fleet has 1 devices"):
            run_experiment(SYNTHETIC, [], out=str(tmp_path / "run"), fleet=tmp_path)
        with pytest.raises(ConfigError, match="a fleet runs federated experiments only"):
            run_experiment(SYNTHETIC, ["fed.mode=centralized"], out=str(tmp_path / "run"), fleet=tmp_path)
        assert not (tmp_path / "run").exists()
    finally:
        fleet.down(tmp_path)


def test_cli_refusals(dataset, tmp_path, capsys):
    assert main(["fleet", "up", "--data", str(dataset), "--dir", str(tmp_path / "f"), "--devices", "2",
                 "--auth"]) == 2
    assert "--auth needs --tls" in capsys.readouterr().err
    assert main(["fleet", "up", "--data", str(dataset), "--dir", str(tmp_path / "f"), "--devices", "2",
                 "--subjects", "1,2"]) == 2
    assert "exactly one of --devices N and --subjects" in capsys.readouterr().err
    assert main(["fleet", "down", str(tmp_path / "nothing")]) == 1
    assert "holds no fleet" in capsys.readouterr().err
    assert not (tmp_path / "f" / "fleet.json").exists()  # nothing was started


def test_cli_certs_for_a_real_superlink(tmp_path, capsys):
    from cryptography import x509

    assert main(["fleet", "certs", "--out", str(tmp_path), "--host", "fl.example.org", "--host", "10.0.0.5"]) == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # localhost too: the TLS front verifies the SuperLink behind it by that name
    assert san.get_values_for_type(x509.DNSName) == ["fl.example.org", "localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5", "127.0.0.1"]
    out = capsys.readouterr().out
    assert "--host 127.0.0.1 --port 9093" in out and "--superlink fl.example.org:9092" in out
    conf = (tmp_path / "front" / "nginx.conf").read_text()
    assert "listen 0.0.0.0:9092 ssl;" in conf and "server 127.0.0.1:9093;" in conf
    # The operator's app-signing key: private, its public half for every device's --trusted-entities.
    assert (tmp_path / "app-signing").stat().st_mode & 0o777 == 0o600
    assert f"-m fedsense_tools.fab --approvals {tmp_path / 'approvals'}" in out and "--trusted-entities" in out
    assert main(["fleet", "sign", "--key", str(tmp_path / "app-signing"), "--approvals", str(tmp_path / "approvals")]) == 0
    digest = capsys.readouterr().out.split("FAB sha256 ")[1].split(";")[0]
    assert fab.verifications(tmp_path / "approvals", digest)  # what the SuperLink will hand the devices


def test_a_killed_devices_node_comes_back_only_after_the_superlink_let_it_go():
    """The same node back before the ServerApp's next pull of replies would
    leave the dead device's message unanswered until fed.timeout."""
    offline_at = datetime(2026, 11, 22, 20, 0, 0, tzinfo=UTC)
    entry = {"node-id": "7", "status": "offline", "offline-at": "2026-11-22 20:00:00Z"}
    t0 = offline_at.timestamp()
    assert supernodes.seconds_until_released({**entry, "status": "online"}, t0) is None  # held: wait for the heartbeat
    assert supernodes.seconds_until_released(entry, t0) == pytest.approx(1.0 + supernodes.RELEASE_SECONDS)
    assert supernodes.seconds_until_released(entry, t0 + 4.0) == pytest.approx(supernodes.RELEASE_SECONDS - 3.0)
    assert supernodes.RELEASE_SECONDS > 3.0  # longer than Flower's pull interval
    assert supernodes.seconds_until_released(entry, t0 + 1.0 + supernodes.RELEASE_SECONDS) == 0.0
    assert supernodes.seconds_until_released({"node-id": "7", "status": "registered", "offline-at": "N/A"}, t0) == 0.0
    assert supernodes.seconds_until_released(None, t0) == 0.0  # unknown node: the launch itself is refused, named
