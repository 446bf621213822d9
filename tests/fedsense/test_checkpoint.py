from __future__ import annotations

import numpy as np
import pytest

from fedsense.checkpoint import load_resume, resume_path, save_resume
from fedsense.config import ConfigError


def test_resume_point_round_trips(tmp_path):
    arrays = {"enc.w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(4, np.int64)}
    extra = {"reference/acc/cov": np.eye(3)}
    state = {"strategy": {"history": [{"round": 1}], "totals": {"bytes_up": 3}}, "random": [3, [1, 2], None]}
    save_resume(tmp_path, 1, arrays, state, extra)
    save_resume(tmp_path, 2, {k: v + 1 for k, v in arrays.items()}, state, extra)  # replaces round 1
    point = load_resume(tmp_path)
    assert point.server_round == 2
    assert point.state == state
    assert np.array_equal(point.arrays["enc.w"], arrays["enc.w"] + 1) and point.arrays["n"].dtype == np.int64
    assert point.extra["reference/acc/cov"].dtype == np.float64
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["resume.npz"]  # no temp file left


def test_a_missing_or_damaged_resume_point_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no resume point"):
        load_resume(tmp_path)
    save_resume(tmp_path, 3, {"w": np.ones(2)}, {})
    path = resume_path(tmp_path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ConfigError, match="unreadable resume point"):
        load_resume(tmp_path)
