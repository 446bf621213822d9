"""Bad input everywhere, generated: whatever a config or a dataset file holds,
loading it gives a result or one clear error of our own type, never a
traceback from deep inside yaml, numpy or zipfile."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsense.config import ConfigError, to_dict
from fedsense.configfile import from_dict
from fedsense.data.base import DatasetError
from fedsense.data.npz import load_npz

KEYS = sorted(
    f"{section}.{key}" for section, values in to_dict(from_dict({})).items() if isinstance(values, dict)
    for key in values
) + ["seed", "fed", "nosuch.key", "fed.nosuch", "data.synthetic.subjects", "data.shifts"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4))
def test_any_override_gives_a_config_or_a_config_error(overrides):
    try:
        from_dict({}, [f"{k}={_yaml(v)}" for k, v in overrides.items()])
    except ConfigError as err:
        assert str(err)  # names what is wrong


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_yaml_text_gives_a_config_or_a_config_error(text):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text)
        try:
            from fedsense.configfile import load

            load(path)
        except ConfigError as err:
            assert str(err)


def _yaml(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


ARRAYS = st.fixed_dictionaries({}, optional={
    "x_acc": st.sampled_from([np.zeros((4, 3, 16), np.float32), np.zeros((4, 3), np.float32),
                              np.full((4, 3, 16), np.nan, np.float32), np.zeros((5, 3, 16), np.float32),
                              np.zeros((4, 3, 16), np.int64), np.array(["a", "b"])]),
    "x_gyro": st.sampled_from([np.zeros((4, 3, 16), np.float32), np.zeros((0, 3, 16), np.float32)]),
    "y": st.sampled_from([np.array([0, 1, 0, 1]), np.array([0, 1, 0]), np.array([0.5, 1, 0, 1]),
                          np.array([[0, 1, 0, 1]]), np.array([-1, -1, 0, 9])]),
    "subject": st.sampled_from([np.array([1, 1, 2, 2]), np.array([1, 1]), np.array([1.5, 1, 2, 2])]),
    "domain": st.sampled_from([np.array([1, 1, 2, 2]), np.array([1])]),
    "classes": st.sampled_from([np.array(["a", "b"]), np.array([1, 2])]),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=ARRAYS)
def test_any_npz_content_loads_or_is_refused_with_a_dataset_error(tmp_path, arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    try:
        ds = load_npz(path)
    except DatasetError as err:
        assert str(path) in str(err)
    else:
        assert len(ds) == len(ds.y) > 0 and all(np.isfinite(a).all() for a in ds.x.values())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.0, 0.999), flip=st.integers(0, 10_000))
def test_truncated_or_corrupted_files_are_refused_clearly(tmp_path, cut, flip):
    good = io.BytesIO()
    np.savez(good, x_acc=np.ones((4, 3, 16), np.float32), y=np.array([0, 1, 0, 1]), subject=np.array([1, 1, 2, 2]))
    data = bytearray(good.getvalue())
    data = data[: int(cut * len(data))]
    if data:
        data[flip % len(data)] ^= 0xFF
    path = tmp_path / "bad.npz"
    path.write_bytes(bytes(data))
    try:
        load_npz(path)
    except DatasetError as err:
        assert str(path) in str(err)
