"""One client's data: simulated partitions and real devices' npz files, roles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsense import protocol
from fedsense.config import Config
from fedsense.configfile import load
from fedsense.data.base import DatasetError
from fedsense.data.clients import hide_labels, load_client_data, num_clients
from fedsense.data.npz import save_npz
from fedsense.data.synthetic import make_synthetic_subject

REPO = Path(__file__).resolve().parents[3]
SYNTHETIC = REPO / "configs" / "synthetic.yaml"


def cfg_with(tmp_path: Path, *overrides: str) -> Config:
    return load(SYNTHETIC, [f"data.cache_dir={tmp_path / 'cache'}", *overrides])


def pid(i: int, total: int | None = None) -> dict[str, object]:
    node: dict[str, object] = {protocol.NODE_PARTITION_ID: i}
    if total is not None:
        node[protocol.NODE_NUM_PARTITIONS] = total
    return node


def test_simulated_partitions_roles_and_hidden_target_labels(tmp_path: Path) -> None:
    cfg = cfg_with(tmp_path, "data.target_domains=[2, 6]")
    assert num_clients(cfg) == 6
    seen_subjects = []
    for i in range(6):
        c = load_client_data(cfg, pid(i, 6))
        subject = i + 1  # synthetic subjects are 1..6, clients in ascending order
        assert c.partition_id == i
        assert set(c.train.subject.tolist()) == set(c.test.subject.tolist()) == {subject}
        seen_subjects.append(subject)
        assert len(c.train) > 0 and len(c.test) > 0
        # Held-out labels are real for every client (targets are scored on them).
        assert c.test.y.min() >= 0
        assert set(c.test.y.tolist()) == {0, 1, 2, 3}
        if subject in (2, 6):
            assert c.role == "target"
            assert np.all(c.train.y == -1)
        else:
            assert c.role == "source"
            assert c.train.y.min() >= 0
            assert set(c.train.y.tolist()) == {0, 1, 2, 3}
    assert seen_subjects == [1, 2, 3, 4, 5, 6]


def test_target_windows_are_kept_only_labels_hidden(tmp_path: Path) -> None:
    cfg = cfg_with(tmp_path)  # target domain 6
    target = load_client_data(cfg, pid(5))
    as_source = load_client_data(cfg_with(tmp_path, "data.target_domains=[1]"), pid(5))
    assert target.role == "target" and as_source.role == "source"
    for m in target.train.x:
        np.testing.assert_array_equal(target.train.x[m], as_source.train.x[m])
    np.testing.assert_array_equal(target.test.y, as_source.test.y)


def test_hide_labels_copies() -> None:
    ds = make_synthetic_subject(load(SYNTHETIC).data.synthetic, 0, 1)
    hidden = hide_labels(ds)
    assert np.all(hidden.y == -1) and hidden.y.dtype == np.int64
    assert ds.y.min() >= 0  # the original is untouched
    assert hidden.x is ds.x


def test_num_partitions_mismatch(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="5 SuperNodes.*6 clients"):
        load_client_data(cfg_with(tmp_path), pid(0, 5))


def test_partition_id_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="partition-id 6 out of range"):
        load_client_data(cfg_with(tmp_path), pid(6))


def test_neither_partition_nor_path_mentions_data_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data-path"):
        load_client_data(cfg_with(tmp_path), {protocol.NODE_NUM_PARTITIONS: 6})


def test_roles_follow_the_config_when_it_changes(tmp_path: Path) -> None:
    """Configs with different target domains, loaded one after another in one
    process (as the tests and a long-lived simulation process do)."""
    wrong = []
    for i in range(30):
        target = 6 - i % 3
        cfg = cfg_with(tmp_path, f"data.target_domains=[{target}]")
        roles = [load_client_data(cfg, pid(p)).role for p in range(6)]
        if roles.index("target") != target - 1:
            wrong.append((i, target, roles.index("target") + 1))
    assert not wrong, f"(iteration, target domain, client that got the target role): {wrong[:3]}"


# --------------------------------------------------------------------------- #
# A real device: one npz file


@pytest.fixture
def device_file(tmp_path: Path) -> Path:
    """One device's windows (synthetic subject 3, domain 3) in the npz format."""
    ds = make_synthetic_subject(load(SYNTHETIC).data.synthetic, 0, 3)
    return save_npz(ds, tmp_path / "device.npz")


def test_device_role_from_target_domains(tmp_path: Path, device_file: Path) -> None:
    as_target = load_client_data(
        cfg_with(tmp_path, "data.target_domains=[3]"), {protocol.NODE_DATA_PATH: str(device_file)}
    )
    assert as_target.role == "target"
    assert as_target.partition_id == -1
    assert np.all(as_target.train.y == -1)
    assert as_target.test.y.min() >= 0 and len(as_target.test) > 0
    as_source = load_client_data(cfg_with(tmp_path), {protocol.NODE_DATA_PATH: str(device_file)})
    assert as_source.role == "source"
    assert as_source.train.y.min() >= 0
    # Same windows either way; train and held-out parts are disjoint time-ordered splits.
    assert len(as_source.train) == len(as_target.train)
    # 4 classes x 20 windows; one boundary window dropped per class.
    assert len(as_source.train) + len(as_source.test) == 80 - 4


def test_device_explicit_role_wins(tmp_path: Path, device_file: Path) -> None:
    node = {protocol.NODE_DATA_PATH: str(device_file), protocol.NODE_ROLE: "target"}
    c = load_client_data(cfg_with(tmp_path), node)  # domain 3 is not a target domain
    assert c.role == "target" and np.all(c.train.y == -1)
    node = {protocol.NODE_DATA_PATH: str(device_file), protocol.NODE_ROLE: "source"}
    c = load_client_data(cfg_with(tmp_path, "data.target_domains=[3]"), node)
    assert c.role == "source" and c.train.y.min() >= 0


def test_device_path_wins_over_partition_id(tmp_path: Path, device_file: Path) -> None:
    # partition-id beside data-path is the device's number, not a subject of the config's dataset
    node = {protocol.NODE_DATA_PATH: str(device_file), protocol.NODE_PARTITION_ID: 0}
    c = load_client_data(cfg_with(tmp_path), node)
    assert c.partition_id == 0
    assert set(c.train.subject.tolist()) == {3}


def test_device_bad_partition_id(tmp_path: Path, device_file: Path) -> None:
    node = {protocol.NODE_DATA_PATH: str(device_file), protocol.NODE_PARTITION_ID: "first"}
    with pytest.raises(DatasetError, match="partition-id='first'.*integer"):
        load_client_data(cfg_with(tmp_path), node)


def test_device_relative_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data-path='device.npz'.*absolute"):
        load_client_data(cfg_with(tmp_path), {protocol.NODE_DATA_PATH: "device.npz"})


def test_device_bad_role(tmp_path: Path, device_file: Path) -> None:
    node = {protocol.NODE_DATA_PATH: str(device_file), protocol.NODE_ROLE: "teacher"}
    with pytest.raises(DatasetError, match="role='teacher'.*source.*target"):
        load_client_data(cfg_with(tmp_path), node)


def test_device_modalities_follow_config(tmp_path: Path, device_file: Path) -> None:
    c = load_client_data(
        cfg_with(tmp_path, "data.modalities=[gyro]"), {protocol.NODE_DATA_PATH: str(device_file)}
    )
    assert list(c.train.x) == ["gyro"] and list(c.test.x) == ["gyro"]


def test_device_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.npz"
    with pytest.raises(DatasetError, match="absent.npz"):
        load_client_data(cfg_with(tmp_path), {protocol.NODE_DATA_PATH: str(missing)})


def test_generated_clients_equal_their_partition_of_the_whole_dataset(tmp_path: Path) -> None:
    # Synthetic clients are generated one by one (no process holds the fleet's
    # data); they must be exactly the partitions of the whole generated dataset.
    from fedsense.data import clients as clients_mod
    from fedsense.data.loaders import cached_dataset
    from fedsense.data.partition import client_data

    cfg = cfg_with(tmp_path, "data.target_domains=[2, 6]", "data.modalities=[gyro]")
    assert clients_mod._generated_one_by_one(cfg)
    splits = clients_mod._partition(cfg, cached_dataset(cfg.data, cfg.seed))
    assert num_clients(cfg) == len(splits) == 6
    for p, split in enumerate(splits):
        one = load_client_data(cfg, pid(p, 6))
        train, test = client_data(cached_dataset(cfg.data, cfg.seed), split)
        assert one.role == split.role
        for mine, whole in ((one.train, clients_mod._finish(cfg, train, test, split.role, p).train),
                            (one.test, test)):
            assert list(mine.x) == list(whole.x) == ["gyro"]
            np.testing.assert_array_equal(mine.x["gyro"], whole.x["gyro"])
            np.testing.assert_array_equal(mine.y, whole.y)
            np.testing.assert_array_equal(mine.subject, whole.subject)


def test_generated_clients_refuse_what_partition_refuses(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"target domains \[9\] match no client"):
        num_clients(cfg_with(tmp_path, "data.target_domains=[9]"))
    with pytest.raises(DatasetError, match="no source client"):
        load_client_data(cfg_with(tmp_path, "data.target_domains=[1,2,3,4,5,6]"), pid(0))
    with pytest.raises(DatasetError, match="partition-id 6 out of range"):
        load_client_data(cfg_with(tmp_path), pid(6))
