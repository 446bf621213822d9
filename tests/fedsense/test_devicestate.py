from __future__ import annotations

import numpy as np
import pytest

from fedsense.data.base import DatasetError
from fedsense.devicestate import load_local, save_local


def test_a_device_loads_the_newest_state_from_before_its_step(tmp_path):
    save_local(tmp_path, 1, "train", {"bn": np.full(2, 10.0)})
    assert load_local(tmp_path, 1, "train") is None
    assert load_local(tmp_path, 1, "evaluate")["bn"][0] == 10.0
    save_local(tmp_path, 2, "train", {"bn": np.full(2, 20.0)})
    save_local(tmp_path, 2, "evaluate", {"bn": np.full(2, 25.0)})
    save_local(tmp_path, 3, "train", {"bn": np.full(2, 30.0)})
    assert load_local(tmp_path, 3, "train")["bn"][0] == 25.0  # after round 2's evaluation
    # a resumed run redoing round 3 ignores what the interrupted round 3 left behind
    assert load_local(tmp_path, 3, "train")["bn"][0] != 30.0
    assert load_local(tmp_path, 4, "train")["bn"][0] == 30.0


def test_old_rounds_are_removed_and_damage_is_named(tmp_path):
    for r in range(1, 6):
        save_local(tmp_path, r, "train", {"bn": np.zeros(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local-0003-0.npz", "local-0004-0.npz", "local-0005-0.npz"]
    (tmp_path / "local-0005-0.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="local-0005-0.npz"):
        load_local(tmp_path, 6, "train")


def test_kinds_are_kept_apart_and_an_unknown_kind_is_named(tmp_path):
    save_local(tmp_path, 1, "train", {"bn": np.full(2, 1.0)})
    save_local(tmp_path, 1, "train", {"w": np.full(2, 0.5)}, kind="residual")
    assert set(load_local(tmp_path, 2, "train")) == {"bn"}
    assert set(load_local(tmp_path, 2, "train", kind="residual")) == {"w"}
    for r in range(2, 6):  # each kind's old rounds go, the other kind's stay
        save_local(tmp_path, r, "train", {"w": np.zeros(1)}, kind="residual")
    assert (tmp_path / "local-0001-0.npz").exists() and not (tmp_path / "residual-0001-0.npz").exists()
    with pytest.raises(ValueError, match="'weights'"):
        save_local(tmp_path, 1, "train", {}, kind="weights")


def test_a_devices_own_parameters_are_its_owners_only(tmp_path):
    import stat

    from fedsense.devicestate import save_local

    path = save_local(tmp_path / "dev", 3, "train", {"w": np.zeros(2)})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "dev").stat().st_mode) == 0o700


def test_a_one_message_resume_two_rounds_back_finds_its_state(tmp_path):
    """Messages: [train 1], [evaluate 1, train 2], [evaluate 2, train 3]: the
    third is out when the run dies, the server's point is after round 1 (its
    evaluation came back with message 2), so message 2 is sent again."""
    for r, phase, value in [(1, "train", 10.0), (1, "evaluate", 15.0), (2, "train", 20.0), (2, "evaluate", 25.0),
                            (3, "train", 30.0)]:
        save_local(tmp_path, r, phase, {"bn": np.full(2, value)})
    assert load_local(tmp_path, 1, "evaluate")["bn"][0] == 10.0
    assert load_local(tmp_path, 2, "train")["bn"][0] == 15.0
