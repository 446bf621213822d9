"""Real fleets: a SuperLink and SuperNode processes on 127.0.0.1 (Flower's
deployment engine), brought up and down with ``fedsense fleet`` as a user
would. Slow (minutes: every message starts a ClientApp process): ``make test-fleet``.

Every process a fleet starts is recorded in its fleet.json; each fixture
stops them by id when its tests end, failed or not, and checks that no
process with the fleet's FLWR_HOME is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedsense.data.npz import load_npz, save_npz
from fedsense.rundir import read_metrics
from fedsense_tools import fleet, fleetstate, supernodes
from fedsense_tools.experiment import convert, run_experiment
from fedsense_tools.pki import make_device_key
from fedsense_tools.processes import alive, descendants, stop_tree
from tests.conftest import SYNTHETIC, processes_with_home

pytestmark = pytest.mark.fleet

FEDSENSE = str(Path(sys.executable).parent / "fedsense")
# m3bat_bn: device-local state across rounds, statistics up and a reference down
METHOD = ["adapt.method=m3bat_bn", "data.target_domains=[6]"]


def fedsense(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([FEDSENSE, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"fedsense {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _dataset(root: Path) -> Path:
    (path,) = convert(SYNTHETIC, [f"data.cache_dir={root / 'cache'}"], str(root / "all.npz"), per_subject=False)
    return path


def _bring_up(root: Path, subjects: str) -> fleetstate.Fleet:
    fedsense("fleet", "up", "--data", str(_dataset(root)), "--subjects", subjects, "--dir", str(root / "fleet"),
             "--tls", "--auth", timeout=300)
    return fleetstate.Fleet.load(root / "fleet")


def _tear_down(root: Path) -> None:
    """Stop the fleet by its recorded ids; then nothing with its FLWR_HOME may be left."""
    directory = root / "fleet"
    if (directory / fleetstate.STATE).exists():
        fleet.down(directory)
    deadline = time.time() + 30  # children of stopped processes exit on their own
    while processes_with_home(directory, below=True) and time.time() < deadline:
        time.sleep(0.5)
    assert processes_with_home(directory, below=True) == []


@pytest.fixture(scope="module")
def secure_fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    try:
        yield _bring_up(root, "1,2,6")  # two sources and the target (domain 6)
    finally:
        _tear_down(root)


def _rounds(run_dir: Path) -> list[dict]:
    return read_metrics(run_dir)


def _without(record: dict, *keys: str) -> dict:
    return {k: v for k, v in record.items() if k not in keys}


def assert_same(a, b, where: str = "") -> None:
    """Equal nested records: same keys, same integers and strings, floats equal
    to 1e-6 relative (the same computation in other processes)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _scalar_tags(run_dir: Path) -> set[str]:
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_three_devices_with_tls_and_auth_produce_the_run_directory_of_a_simulation(secure_fleet, tmp_path):
    f = secure_fleet
    assert f.tls and f.auth and len(f.devices) == 3
    assert all(d.node_id is not None for d in f.devices)  # each key registered, one node each
    run_dir = tmp_path / "fleet-run"
    out = fedsense("fleet", "run", str(f.path), str(SYNTHETIC), "--set", "fed.rounds=2",
                   *[a for kv in METHOD for a in ("--set", kv)], "--out", str(run_dir)).stdout
    assert "round   2/2" in out and "done in" in out

    # The same experiment in Flower's simulation engine, on the union of the devices' files.
    parts = [load_npz(d.data) for d in f.devices]
    union = save_npz(_concat(parts), tmp_path / "three.npz")
    sim_dir = run_experiment(
        SYNTHETIC, ["fed.rounds=2", *METHOD, "data.kind=npz", f"data.path={union}",
                    f"data.cache_dir={tmp_path / 'cache'}"],
        out=str(tmp_path / "sim-run"),
    )

    contract = ["config.yaml", "metrics.jsonl", "summary.json", "tb", "checkpoints"]
    for d in (run_dir, sim_dir):
        assert all((d / name).exists() for name in contract), d
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == \
        sorted(p.name for p in (sim_dir / "checkpoints").iterdir())
    for name in sorted(p.name for p in (sim_dir / "checkpoints").iterdir()):
        a, b = np.load(run_dir / "checkpoints" / name), np.load(sim_dir / "checkpoints" / name)
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            if key == "state":  # the resume point's history holds node ids and seconds: compared below
                continue
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=f"{name}:{key}")

    fleet_rounds, sim_rounds = _rounds(run_dir), _rounds(sim_dir)
    assert [r["round"] for r in fleet_rounds] == [1, 2]
    for a, b in zip(fleet_rounds, sim_rounds):
        # node ids and timings differ between runtimes; everything the devices computed does not
        assert a["clients"] == b["clients"] == {"sampled": 3, "replied": 3, "failed": 0, "errors": 0, "rejected": 0}
        assert a["target"]["windows"] == b["target"]["windows"] and a["target"]["clients"] == 1
        assert_same(_without(a, "seconds", "nodes", "compute"), _without(b, "seconds", "nodes", "compute"),
                    f"round {a['round']}")
        assert sorted(a["nodes"]["replied"]) == sorted(d.node_id for d in f.devices)

    summary = json.loads((run_dir / "summary.json").read_text())
    sim_summary = json.loads((sim_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["clients"] == {"total": 3, "source": 2, "target": 1, "failed": 0}
    assert_same(_without(summary, "wall_seconds", "compute"), _without(sim_summary, "wall_seconds", "compute"),
                "summary")  # CPU seconds differ between processes
    assert _scalar_tags(run_dir) == _scalar_tags(sim_dir)
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["output"]["dir"] == str(run_dir) and resolved["adapt"]["method"] == "m3bat_bn"


def _concat(parts):
    from dataclasses import replace

    first = parts[0]
    return replace(
        first,
        x={m: np.concatenate([p.x[m] for p in parts]) for m in first.x},
        y=np.concatenate([p.y for p in parts]),
        subject=np.concatenate([p.subject for p in parts]),
        domain=np.concatenate([p.domain for p in parts]),
    )


def test_an_unregistered_key_is_refused(secure_fleet, tmp_path):
    f = secure_fleet
    stranger = make_device_key(tmp_path, "stranger")  # never registered
    device = fleetstate.Device(name="stranger", data=f.devices[0].data, subject=1, partition_id=9,
                               port=fleet.launcher.free_port())
    log_file = tmp_path / "stranger.log"
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(supernodes.supernode_command(f, device, key=str(stranger.private)),
                                env=fleet.launcher.quiet_env(tmp_path / "home"), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        proc.wait(timeout=60)  # refused: the SuperNode gives up and exits
    finally:
        stop_tree(proc.pid, grace=5)
    text = log_file.read_text(errors="replace")
    assert proc.returncode != 0
    assert supernodes.ACTIVATION_FAILED in text
    online = {int(n["node-id"]) for n in supernodes.nodes(f) if n["status"] == "online"}
    assert online == {d.node_id for d in f.devices}  # no fourth node got in


def test_a_stranger_holding_ca_crt_can_only_dial_the_fleet_api(secure_fleet, tmp_path):
    """From the devices' side of the TLS front, with only the fleet's public
    ca.crt: registering a key, listing nodes, unregistering a device and
    running an app are each refused, and no device is lost. The commands are
    the ones docs/fleet.md shows."""
    import ssl
    import urllib.error
    import urllib.request

    f = secure_fleet
    assert f.link and f.link != f.address  # the SuperLink itself listens elsewhere, on 127.0.0.1
    home = tmp_path / "stranger-home"
    fleet.launcher.write_cli_config(home, f.address, f.ca_cert)  # what a stranger could write
    key = make_device_key(tmp_path, "stranger")
    flwr = str(Path(sys.executable).parent / "flwr")
    victim = str(f.devices[0].node_id)
    attempts = {
        "register": [flwr, "supernode", "register", str(key.public), fleet.launcher.FEDERATION, "--format", "json"],
        "list": [flwr, "supernode", "ls", fleet.launcher.FEDERATION, "--format", "json"],
        "unregister": [flwr, "supernode", "unregister", victim, fleet.launcher.FEDERATION, "--format", "json"],
        "run": [flwr, "run", str(Path(__file__).resolve().parents[2]), fleet.launcher.FEDERATION, "--format", "json"],
    }
    for what, cmd in attempts.items():
        proc = subprocess.run(cmd, env=fleet.launcher.quiet_env(home), capture_output=True, text=True, timeout=120)
        answer = fleet.launcher._json_tail(proc.stdout)  # flwr exits 0 either way
        assert answer.get("success") is False and "404 Not Found" in answer.get("error-message", ""), (what, answer)
    context = ssl.create_default_context(cafile=str(f.ca_cert))
    for path, method, code in (("/health", "GET", 404), ("/docs", "GET", 404), ("/v1/runtime/get-run", "POST", 404),
                               ("/v1/fleet/../control/list-nodes", "POST", 404), ("/v1/fleet/get-run", "GET", 403)):
        request = urllib.request.Request(f"https://{f.address}{path}", data=b"" if method == "POST" else None,
                                         method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10, context=context)
        assert refused.value.code == code, path
    online = {int(n["node-id"]) for n in supernodes.nodes(f) if n["status"] == "online"}
    assert online == {d.node_id for d in f.devices}  # every device still there, no stranger node


STRANGER_SERVER = """
import json, time
from pathlib import Path
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:  # ask every device once, write down what came back
    nodes, deadline = [], time.time() + 60
    while len(nodes) < 3 and time.time() < deadline:
        nodes = list(grid.get_node_ids())
        time.sleep(0.5)
    replies = grid.send_and_receive([Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes],
                                    timeout=120)
    Path(context.run_config["out"]).write_text(json.dumps(
        [{"node": r.metadata.src_node_id, "error": r.error.code if r.has_error() else None} for r in replies]))
"""

STRANGER_CLIENT = """
from pathlib import Path
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:  # anything could run here: raw windows, keys
    Path(context.run_config["out"] + f".ran-on-{context.node_id}").write_text("the stranger's code ran")
    return Message(RecordDict(), reply_to=msg)
"""


def _stranger_app(root: Path) -> Path:
    (root / "stranger").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "stranger"\nversion = "1.0.0"\n\n[tool.flwr.app]\npublisher = "stranger"\n\n'
        '[tool.flwr.app.components]\nserverapp = "stranger.server:app"\nclientapp = "stranger.client:app"\n\n'
        '[tool.flwr.app.config]\nout = ""\n')
    (root / "stranger" / "__init__.py").write_text("")
    (root / "stranger" / "server.py").write_text(STRANGER_SERVER)
    (root / "stranger" / "client.py").write_text(STRANGER_CLIENT)
    return root


def test_devices_run_only_apps_the_operator_signed(secure_fleet, tmp_path):
    """A stranger's app sent through the operator's own Control API — unsigned,
    then with a signature file made with a key of its own — is refused by
    every device (Flower's FAB verification against the operator's key), and
    runs on none; the fleet's own run, signed by `fedsense fleet run`, still
    completes."""
    from flwr.common.constant import ErrorCode

    from fedsense_tools import fab
    from fedsense_tools.pki import make_signing_key

    f = secure_fleet
    app = _stranger_app(tmp_path / "app")
    flwr = str(Path(sys.executable).parent / "flwr")
    forged = make_signing_key(tmp_path / "forger", fab.KEY_ID)  # the operator's key id, another key
    for attempt in ("unsigned", "forged"):
        if attempt == "forged":
            fab.sign_app(app, forged.private, f.approvals)  # where the SuperLink looks: it checks nothing itself
        out = tmp_path / f"{attempt}.json"
        proc = subprocess.run([flwr, "run", str(app), fleet.launcher.FEDERATION, "--run-config", f'out="{out}"',
                               "--format", "json"], env=fleet.launcher.quiet_env(f.home), capture_output=True,
                              text=True, timeout=120)
        assert fleet.launcher._json_tail(proc.stdout).get("success") is True, proc.stdout  # the SuperLink took it
        deadline = time.time() + 240
        while not out.exists() and time.time() < deadline:
            time.sleep(1)
        replies = json.loads(out.read_text())
        assert sorted(r["node"] for r in replies) == sorted(d.node_id for d in f.devices), attempt
        assert all(r["error"] == ErrorCode.INVALID_FAB for r in replies), (attempt, replies)
        assert list(tmp_path.glob(f"{attempt}.json.ran-on-*")) == [], attempt  # its code ran on no device
    for d in f.devices:
        assert "FAB could not be verified" in supernodes.node_log(f, d.name).read_text(errors="replace")
    run_dir = tmp_path / "own-run"
    fedsense("fleet", "run", str(f.path), str(SYNTHETIC), "--set", "fed.rounds=1",
             *[a for kv in METHOD for a in ("--set", kv)], "--out", str(run_dir))
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert len(list(f.approvals.glob("*.json"))) >= 2  # the fleet's own app, signed each run, and the forgery


# --------------------------------------------------------------------------- faults


@pytest.fixture(scope="module")
def faulty_fleet(tmp_path_factory):
    """Four devices; device-3's data file is broken after the fleet is up."""
    root = tmp_path_factory.mktemp("faulty")
    try:
        f = _bring_up(root, "1,2,3,6")
        Path(f.device("device-3").data).write_bytes(b"not an npz file")
        yield f
    finally:
        _tear_down(root)


def _clientapp_pids(supernode: int) -> set[int]:
    found = set()
    for pid in descendants(supernode):
        try:
            if b"flwr-clientapp" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.add(pid)
        except OSError:
            continue
    return found


def test_a_killed_device_and_a_device_with_bad_data_do_not_fail_the_run(faulty_fleet, tmp_path):
    f = faulty_fleet
    victim = f.device("device-1")
    run_dir = tmp_path / "run"
    cmd = [FEDSENSE, "fleet", "run", str(f.path), str(SYNTHETIC), "--set", "fed.rounds=4", "--set",
           "fed.min_clients=2", "--out", str(run_dir)]
    runner = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    restarted: dict = {}
    try:
        # The first ClientApp process of device-1 answers the data query; the
        # second is its round-1 training: kill the device (SuperNode and ClientApp) then.
        seen: set[int] = set()
        deadline = time.time() + 300
        while len(seen) < 2 and time.time() < deadline and runner.poll() is None:
            seen |= _clientapp_pids(victim.process[0])
            time.sleep(0.1)
        assert len(seen) >= 2, "device-1 never started training"
        for pid in [victim.process[0], *descendants(victim.process[0])]:
            os.kill(pid, signal.SIGKILL)
        gone = time.time() + 10
        while alive(tuple(victim.process)) and time.time() < gone:
            time.sleep(0.1)
        assert not alive(tuple(victim.process))

        # The device comes back: `fleet start` retries until the SuperLink lets it in.
        def restart() -> None:
            restarted["proc"] = subprocess.run(
                [FEDSENSE, "fleet", "start", str(f.path), "device-1", "--wait", "300"],
                capture_output=True, text=True, timeout=400,
            )

        thread = threading.Thread(target=restart)
        thread.start()
        output, _ = runner.communicate(timeout=900)
        thread.join(timeout=400)
    finally:
        if runner.poll() is None:
            stop_tree(runner.pid, grace=5)
    assert runner.returncode == 0, output
    assert restarted["proc"].returncode == 0, restarted["proc"].stdout + restarted["proc"].stderr
    assert f"device-1 online as node {victim.node_id}" in restarted["proc"].stdout  # same key, same node

    rounds = _rounds(run_dir)
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    broken, killed = f.device("device-3").node_id, victim.node_id
    first = rounds[0]
    assert killed in first["nodes"]["failed"] and broken in first["nodes"]["failed"]
    assert first["clients"]["replied"] == 2  # the round completed with the two healthy devices
    assert any(e.startswith(f"node {killed}: Error: Node Unavailable") for e in first["errors"]), first["errors"]
    for r in rounds:  # the broken device is refused every round, logged and counted
        assert broken in r["nodes"]["failed"] and r["clients"]["errors"] >= 1
        assert any(e.startswith(f"node {broken}: DatasetError") for e in r["errors"]), r["errors"]
    assert killed in rounds[-1]["nodes"]["replied"], "the restarted device did not rejoin"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["clients"]["failed"] == 1  # bad data at the query
