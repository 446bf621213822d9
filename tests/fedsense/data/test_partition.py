"""Clients per subject, roles, and the time-ordered per-class split."""

from __future__ import annotations

import numpy as np
import pytest

from fedsense.config import SyntheticConfig
from fedsense.data.base import Dataset, DatasetError
from fedsense.data.partition import client_data, partition, split_indices
from fedsense.data.synthetic import make_synthetic

# Labels of one client in time order: class 0 in two segments, class 1 and 2
# contiguous, class 3 too small to split, one unlabeled stretch.
Y = np.array([0, 0, 0, 1, 1, 1, 1, 1, -1, -1, 0, 0, 0, 0, 2, 2, 2, 3, 3, 0], dtype=np.int64)


def dropped(y: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    return np.setdiff1d(np.arange(y.size), np.concatenate([train, test]))


def test_split_is_disjoint_ascending_int64() -> None:
    train, test = split_indices(Y, 0.3)
    assert train.dtype == np.int64 and test.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    assert np.intersect1d(train, test).size == 0


def test_split_covers_with_one_drop_per_splittable_class() -> None:
    train, test = split_indices(Y, 0.3)
    drop = dropped(Y, train, test)
    # Classes 0, 1, 2 have >= 3 windows: one dropped each; class 3 and -1 none.
    assert sorted(Y[drop].tolist()) == [0, 1, 2]
    assert set(Y[train].tolist()) == {-1, 0, 1, 2, 3}
    assert np.all(np.isin(np.flatnonzero(Y == 3), train))  # small class: all train
    assert np.all(np.isin(np.flatnonzero(Y == -1), train))  # unlabeled: all train


def test_split_sizes_follow_test_fraction() -> None:
    train, test = split_indices(Y, 0.3)
    counts = {c: int((Y[test] == c).sum()) for c in (0, 1, 2, 3)}
    # class 0: 8 windows -> round(2.4) = 2; class 1: 5 -> round(1.5) = 2; class 2: 3 -> 1.
    assert counts == {0: 2, 1: 2, 2: 1, 3: 0}


def test_every_splittable_class_is_tested_and_train_precedes_test() -> None:
    for fraction in (0.05, 0.3, 0.5, 0.9):
        train, test = split_indices(Y, fraction)
        for c in (0, 1, 2):
            tr, te = train[Y[train] == c], test[Y[test] == c]
            assert te.size >= 1 and tr.size >= 1
            assert tr.max() < te.min()


def test_no_same_class_neighbours_across_train_and_test() -> None:
    # With 50 % overlap, windows i and i+1 share samples: for each class, no
    # train window may sit next to a test window of that class.
    for y in (Y, make_synthetic(SyntheticConfig(), 0).y[:80]):
        train, test = split_indices(y, 0.3)
        side = np.full(y.size, "", dtype=object)
        side[train], side[test] = "train", "test"
        for i in range(y.size - 1):
            if y[i] == y[i + 1] and y[i] >= 0:
                assert {side[i], side[i + 1]} != {"train", "test"}, i


def test_split_is_deterministic_and_validates() -> None:
    a, b = split_indices(Y, 0.3), split_indices(Y.copy(), 0.3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(DatasetError, match="test_fraction"):
        split_indices(Y, 1.0)


def two_domain_dataset() -> Dataset:
    """Subjects 5, 2, 9 (deliberately unsorted rows); domains 10, 20, 20."""
    subject = np.repeat(np.array([5, 2, 9], dtype=np.int64), 9)
    domain = np.repeat(np.array([10, 20, 20], dtype=np.int64), 9)
    y = np.tile(np.repeat(np.arange(3, dtype=np.int64), 3), 3)
    n = y.size
    return Dataset(
        x={"acc": np.arange(n * 3 * 4, dtype=np.float32).reshape(n, 3, 4)},
        y=y,
        subject=subject,
        domain=domain,
        classes=("a", "b", "c"),
    )


def test_partition_one_client_per_subject_ascending_with_roles() -> None:
    ds = two_domain_dataset()
    splits = partition(ds, target_domains=[20], test_fraction=0.3)
    assert [s.client for s in splits] == [0, 1, 2]
    assert [s.subject for s in splits] == [2, 5, 9]
    assert [s.domain for s in splits] == [20, 10, 20]
    assert [s.role for s in splits] == ["target", "source", "target"]
    for s in splits:
        rows = np.concatenate([s.train, s.test])
        assert np.all(ds.subject[rows] == s.subject)
        assert s.train.dtype == np.int64 and np.all(np.diff(s.train) > 0)
        local_train, local_test = split_indices(ds.y[ds.subject == s.subject], 0.3)
        np.testing.assert_array_equal(s.train, np.flatnonzero(ds.subject == s.subject)[local_train])
        np.testing.assert_array_equal(s.test, np.flatnonzero(ds.subject == s.subject)[local_test])
    no_targets = partition(ds, target_domains=[], test_fraction=0.3)
    assert {s.role for s in no_targets} == {"source"}


def test_partition_is_deterministic() -> None:
    ds = make_synthetic(SyntheticConfig(), 0)
    a, b = partition(ds, [5, 6], 0.3), partition(ds, [5, 6], 0.3)
    assert [(s.subject, s.role) for s in a] == [(s.subject, s.role) for s in b]
    for s, t in zip(a, b):
        np.testing.assert_array_equal(s.train, t.train)
        np.testing.assert_array_equal(s.test, t.test)


def test_partition_errors() -> None:
    ds = two_domain_dataset()
    with pytest.raises(DatasetError, match=r"\[30\]"):
        partition(ds, target_domains=[20, 30], test_fraction=0.3)
    with pytest.raises(DatasetError, match="no source"):
        partition(ds, target_domains=[10, 20], test_fraction=0.3)
    mixed = Dataset(
        x=ds.x, y=ds.y, subject=ds.subject, domain=np.r_[ds.domain[:-1], 99], classes=ds.classes
    )
    with pytest.raises(DatasetError, match="subject 9"):
        partition(mixed, target_domains=[], test_fraction=0.3)


def test_client_data_returns_the_split_rows() -> None:
    ds = two_domain_dataset()
    split = partition(ds, [20], 0.3)[1]
    train, test = client_data(ds, split)
    np.testing.assert_array_equal(train.x["acc"], ds.x["acc"][split.train])
    np.testing.assert_array_equal(test.y, ds.y[split.test])
    assert set(train.subject.tolist()) == {5} and len(test) == split.test.size
