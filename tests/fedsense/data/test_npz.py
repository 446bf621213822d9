"""The npz dataset contract: round trip and one clear refusal per malformed case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsense.data.base import Dataset, DatasetError
from fedsense.data.npz import load_npz, save_npz, validate_arrays

N = 6


def good_arrays() -> dict[str, np.ndarray]:
    """A valid file's arrays: two modalities of different C and T."""
    rng = np.random.default_rng(0)
    return {
        "x_acc": rng.normal(size=(N, 3, 8)).astype(np.float32),
        "x_audio": rng.normal(size=(N, 1, 16)).astype(np.float32),
        "y": np.array([0, 1, 2, -1, 1, 0], dtype=np.int64),
        "subject": np.array([1, 1, 1, 2, 2, 2], dtype=np.int64),
        "domain": np.array([7, 7, 7, 8, 8, 8], dtype=np.int64),
        "classes": np.array(["a", "b", "c"]),
    }


def write(tmp_path: Path, arrays: dict[str, np.ndarray], name: str = "d.npz") -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def with_(**changes: np.ndarray | None) -> dict[str, np.ndarray]:
    """good_arrays() with keys replaced (value) or removed (None)."""
    arrays = good_arrays()
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    return arrays


def test_round_trip(tmp_path: Path) -> None:
    src = good_arrays()
    ds = load_npz(write(tmp_path, src))
    out = save_npz(ds, tmp_path / "sub" / "dir" / "copy.npz")
    assert out == tmp_path / "sub" / "dir" / "copy.npz" and out.is_file()
    back = load_npz(out)
    assert back.modalities == ("acc", "audio")
    for m in ("acc", "audio"):
        assert back.x[m].dtype == np.float32
        np.testing.assert_array_equal(back.x[m], src[f"x_{m}"])
    for key in ("y", "subject", "domain"):
        np.testing.assert_array_equal(getattr(back, key), src[key])
        assert getattr(back, key).dtype == np.int64
    assert back.classes == ("a", "b", "c")
    # Only the final file remains: the temp file was moved into place.
    assert [p.name for p in out.parent.iterdir()] == ["copy.npz"]
    # The classes key is stored as a unicode array, loadable without pickle.
    with np.load(out, allow_pickle=False) as npz:
        assert npz["classes"].dtype.kind == "U"


def test_save_overwrites_atomically_and_refuses_invalid(tmp_path: Path) -> None:
    ds = load_npz(write(tmp_path, good_arrays()))
    target = tmp_path / "out.npz"
    save_npz(ds, target)
    bad = Dataset(x={"acc": ds.x["acc"].astype(np.float64)}, y=ds.y, subject=ds.subject,
                  domain=ds.domain, classes=ds.classes)
    with pytest.raises(DatasetError, match="'x_acc'.*float64.*float32"):
        save_npz(bad, target)
    # The refused write left the earlier file intact and no temp file behind.
    assert load_npz(target).x["acc"].dtype == np.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "out.npz"]


def test_domain_defaults_to_subject_and_classes_optional(tmp_path: Path) -> None:
    ds = load_npz(write(tmp_path, with_(domain=None, classes=None)))
    np.testing.assert_array_equal(ds.domain, ds.subject)
    assert ds.domain is not ds.subject
    assert ds.classes == ()
    # Saving without classes writes no classes key and still round-trips.
    back = load_npz(save_npz(ds, tmp_path / "c.npz"))
    assert back.classes == ()


def test_select_modalities_in_requested_order(tmp_path: Path) -> None:
    ds = load_npz(write(tmp_path, good_arrays()), modalities=["audio", "acc"])
    assert ds.modalities == ("audio", "acc")
    assert load_npz(write(tmp_path, good_arrays()), modalities=["acc"]).modalities == ("acc",)


def test_requested_modality_missing_lists_present(tmp_path: Path) -> None:
    path = write(tmp_path, good_arrays())
    with pytest.raises(DatasetError, match=r"'gyro'.*present: acc, audio"):
        load_npz(path, modalities=["acc", "gyro"])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope\.npz.*not found"):
        load_npz(tmp_path / "nope.npz")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "rand.npz"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(DatasetError, match=r"rand\.npz: not a readable \.npz"):
        load_npz(path)


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.6, 0.9, 0.99])
def test_truncated_file(tmp_path: Path, keep: float) -> None:
    full = write(tmp_path, good_arrays()).read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(full[: int(len(full) * keep)])
    with pytest.raises(DatasetError, match=r"cut\.npz: not a readable \.npz archive.*truncated"):
        load_npz(path)


def test_corrupt_member_data_names_key(tmp_path: Path) -> None:
    # Zip directory intact, bytes inside the 'x_acc' member damaged: CRC fails.
    full = bytearray(write(tmp_path, good_arrays()).read_bytes())
    start = full.index(b"x_acc.npy") + 200  # inside x_acc's data, past its header
    full[start : start + 50] = bytes(50)
    path = tmp_path / "crc.npz"
    path.write_bytes(bytes(full))
    with pytest.raises(DatasetError, match=r"crc\.npz: key 'x_acc' cannot be read.*corrupt"):
        load_npz(path)


def test_corrupt_member_names_key(tmp_path: Path) -> None:
    # A zip whose directory is intact but whose 'y' member is garbage.
    import zipfile

    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for key, arr in good_arrays().items():
            with zf.open(f"{key}.npy", "w") as fh:
                if key == "y":
                    fh.write(b"garbage, not an npy header")
                else:
                    np.lib.format.write_array(fh, arr)
    with pytest.raises(DatasetError, match=r"bad\.npz: key 'y' cannot be read"):
        load_npz(path)


def test_single_npy_is_not_npz(tmp_path: Path) -> None:
    path = tmp_path / "one.npy"
    np.save(path, np.zeros(3, dtype=np.float32))
    with pytest.raises(DatasetError, match=r"one\.npy.*not an \.npz"):
        load_npz(path)


def test_object_array_refused(tmp_path: Path) -> None:
    path = write(tmp_path, with_(classes=np.array(["a", "b", "c"], dtype=object)))
    with pytest.raises(DatasetError, match=r"d\.npz: key 'classes' is an object"):
        load_npz(path)


def test_no_modality(tmp_path: Path) -> None:
    path = write(tmp_path, with_(x_acc=None, x_audio=None))
    with pytest.raises(DatasetError, match=r"d\.npz: no modality.*'x_<modality>'"):
        load_npz(path)


@pytest.mark.parametrize("key", ["y", "subject"])
def test_missing_required(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, with_(**{key: None}))
    with pytest.raises(DatasetError, match=rf"d\.npz: missing required key '{key}'"):
        load_npz(path)


@pytest.mark.parametrize(
    ("key", "value", "found", "expected"),
    [
        ("x_acc", np.zeros((N, 3, 8), dtype=np.float64), "float64", "float32"),
        ("x_audio", np.zeros((N, 1, 16), dtype=np.float16), "float16", "float32"),
        ("y", np.zeros(N, dtype=np.int32), "int32", "int64"),
        ("subject", np.zeros(N, dtype=np.float32), "float32", "int64"),
        ("domain", np.zeros(N, dtype=np.uint64), "uint64", "int64"),
        ("classes", np.array([b"a", b"b", b"c"]), r"\|S1", "unicode"),
    ],
)
def test_wrong_dtype(
    tmp_path: Path, key: str, value: np.ndarray, found: str, expected: str
) -> None:
    path = write(tmp_path, with_(**{key: value}))
    pattern = rf"d\.npz: key '{key}' has dtype {found}, expected.*{expected}"
    with pytest.raises(DatasetError, match=pattern):
        load_npz(path)


@pytest.mark.parametrize(
    ("key", "value", "rank"),
    [
        ("x_acc", np.zeros((N, 24), dtype=np.float32), 2),
        ("x_acc", np.zeros((N, 3, 8, 1), dtype=np.float32), 4),
        ("y", np.zeros((N, 1), dtype=np.int64), 2),
        ("subject", np.zeros((N, 2), dtype=np.int64), 2),
        ("domain", np.array(3, dtype=np.int64), 0),
        ("classes", np.array([["a", "b"]]), 2),
    ],
)
def test_wrong_rank(tmp_path: Path, key: str, value: np.ndarray, rank: int) -> None:
    path = write(tmp_path, with_(**{key: value}))
    with pytest.raises(DatasetError, match=rf"d\.npz: key '{key}' has rank {rank}"):
        load_npz(path)


@pytest.mark.parametrize("key", ["x_acc", "x_audio", "subject", "domain"])
def test_n_mismatch_names_both_keys(tmp_path: Path, key: str) -> None:
    arrays = good_arrays()
    arrays[key] = arrays[key][:-1]
    with pytest.raises(DatasetError, match=rf"key '{key}' has N={N - 1} but key 'y' has N={N}"):
        load_npz(write(tmp_path, arrays))


def test_n_mismatch_when_y_is_the_odd_one(tmp_path: Path) -> None:
    arrays = good_arrays()
    arrays["y"] = arrays["y"][:4]
    with pytest.raises(DatasetError, match=rf"key 'x_acc' has N={N} but key 'y' has N=4"):
        load_npz(write(tmp_path, arrays))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_counted(tmp_path: Path, bad: float) -> None:
    arrays = good_arrays()
    arrays["x_audio"][2, 0, 3] = bad
    arrays["x_audio"][4, 0, 0] = bad
    with pytest.raises(DatasetError, match=r"d\.npz: key 'x_audio' holds 2 NaN/Inf"):
        load_npz(write(tmp_path, arrays))


def test_empty(tmp_path: Path) -> None:
    arrays = {
        "x_acc": np.zeros((0, 3, 8), dtype=np.float32),
        "y": np.zeros(0, dtype=np.int64),
        "subject": np.zeros(0, dtype=np.int64),
    }
    with pytest.raises(DatasetError, match=r"d\.npz: empty: key 'y' has N=0"):
        load_npz(write(tmp_path, arrays))


def test_label_below_minus_one(tmp_path: Path) -> None:
    path = write(tmp_path, with_(y=np.array([0, -2, 1, -1, -5, 0], dtype=np.int64)))
    with pytest.raises(DatasetError, match=r"key 'y' holds 2 label\(s\) below -1 \(min -5\)"):
        load_npz(path)


def test_label_beyond_classes(tmp_path: Path) -> None:
    path = write(tmp_path, with_(y=np.array([0, 1, 3, -1, 1, 0], dtype=np.int64)))
    with pytest.raises(DatasetError, match=r"key 'y' has label 3 but key 'classes' names only 3"):
        load_npz(path)


def test_labels_without_classes_are_unbounded(tmp_path: Path) -> None:
    ds = load_npz(write(tmp_path, with_(classes=None, y=np.full(N, 9, dtype=np.int64))))
    assert ds.num_classes == 10


@pytest.mark.parametrize("extra", [["labels"], ["x_"], ["meta", "z"]])
def test_unknown_keys_refused(tmp_path: Path, extra: list[str]) -> None:
    arrays = good_arrays()
    for key in extra:
        arrays[key] = np.zeros(N, dtype=np.int64)
    names = r".*".join(f"'{k}'" for k in extra)
    with pytest.raises(DatasetError, match=rf"d\.npz: unknown key\(s\) {names}"):
        load_npz(write(tmp_path, arrays))


def test_validate_arrays_in_memory() -> None:
    validate_arrays(good_arrays(), "mem")  # valid: no exception
    with pytest.raises(DatasetError, match=r"^mem: key 'y' has dtype int32"):
        validate_arrays(with_(y=np.zeros(N, dtype=np.int32)), "mem")


def test_a_per_window_mask_round_trips_and_bad_masks_are_named(tmp_path: Path) -> None:
    arrays = good_arrays()
    n = arrays["y"].shape[0]
    gyro = np.arange(n) % 2
    arrays["mask_" + next(k[2:] for k in arrays if k.startswith("x_"))] = gyro.astype(np.uint8)
    ds = load_npz(write(tmp_path, arrays))
    m = next(iter(ds.mask))
    np.testing.assert_array_equal(ds.present(m), gyro.astype(np.float32))
    back = load_npz(save_npz(ds, tmp_path / "back.npz"))
    np.testing.assert_array_equal(back.present(m), ds.present(m))
    for bad, named in [({"mask_gyro": np.ones(n)}, "no 'x_gyro' key"),
                       ({f"mask_{m}": np.full(n, 2)}, "other than 0 and 1"),
                       ({f"mask_{m}": np.ones(n + 1)}, "N mismatch"),
                       ({f"mask_{m}": np.ones((n, 1))}, "1-D")]:
        with pytest.raises(DatasetError, match=named):
            validate_arrays({**good_arrays(), **bad}, "f.npz")
