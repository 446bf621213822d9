"""Confusion-matrix metrics against scikit-learn, and summing over clients."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from fedsense.metrics import accuracy, confusion, macro_f1, per_class_f1, summarize

K = 5


def random_labels(seed: int, n: int = 200, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, k, n), rng.integers(0, k, n)


@pytest.mark.parametrize("seed", range(4))
def test_confusion_matches_sklearn(seed: int) -> None:
    y_true, y_pred = random_labels(seed)
    cm = confusion(y_true, y_pred, K)
    assert cm.shape == (K, K)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, confusion_matrix(y_true, y_pred, labels=range(K)))


def test_confusion_rows_are_true_columns_predicted() -> None:
    cm = confusion(np.array([0, 0, 2]), np.array([1, 1, 0]), 3)
    assert cm[0, 1] == 2 and cm[2, 0] == 1 and cm.sum() == 3


def test_confusion_of_nothing_is_zero() -> None:
    cm = confusion(np.zeros(0, np.int64), np.zeros(0, np.int64), 3)
    np.testing.assert_array_equal(cm, np.zeros((3, 3)))
    assert accuracy(cm) == 0.0 and macro_f1(cm) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_macro_f1_and_accuracy_match_sklearn(seed: int) -> None:
    y_true, y_pred = random_labels(seed)
    cm = confusion(y_true, y_pred, K)
    assert macro_f1(cm) == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert accuracy(cm) == pytest.approx(accuracy_score(y_true, y_pred))


def test_macro_f1_ignores_a_class_never_present_nor_predicted() -> None:
    rng = np.random.default_rng(7)
    # Classes 0, 1, 3, 4 only: class 2 is neither a label nor a prediction.
    choices = np.array([0, 1, 3, 4])
    y_true, y_pred = rng.choice(choices, 150), rng.choice(choices, 150)
    cm = confusion(y_true, y_pred, K)
    assert np.isnan(per_class_f1(cm)[2])
    expected = f1_score(y_true, y_pred, average="macro")  # sklearn: union of seen labels
    assert macro_f1(cm) == pytest.approx(expected)
    # Counting the unseen class as F1 = 0 would give a different (lower) number.
    assert macro_f1(cm) != pytest.approx(expected * 4 / 5)


def test_macro_f1_counts_predicted_but_absent_class_as_zero() -> None:
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 2, 1, 1])  # class 2 is predicted but never true
    cm = confusion(y_true, y_pred, 3)
    assert per_class_f1(cm)[2] == 0.0
    assert macro_f1(cm) == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_perfect_and_hand_computed() -> None:
    y = np.array([0, 1, 2, 2])
    assert macro_f1(confusion(y, y, 3)) == 1.0
    assert accuracy(confusion(y, y, 3)) == 1.0
    cm = np.array([[2, 0], [2, 0]])  # everything predicted as class 0
    assert accuracy(cm) == 0.5
    assert macro_f1(cm) == pytest.approx((2 * 2 / (2 + 4) + 0.0) / 2)


def test_summed_client_confusions_equal_pooled_confusion() -> None:
    a_true, a_pred = random_labels(1, n=90)
    b_true, b_pred = random_labels(2, n=40)
    b_true[b_true == 3] = 0  # the clients see different label sets
    summed = confusion(a_true, a_pred, K) + confusion(b_true, b_pred, K)
    pooled = confusion(np.r_[a_true, b_true], np.r_[a_pred, b_pred], K)
    np.testing.assert_array_equal(summed, pooled)
    assert macro_f1(summed) == pytest.approx(
        f1_score(np.r_[a_true, b_true], np.r_[a_pred, b_pred], average="macro")
    )


def test_summarize() -> None:
    y_true, y_pred = random_labels(3, n=50)
    cm = confusion(y_true, y_pred, K)
    out = summarize(cm)
    assert out == {"macro_f1": macro_f1(cm), "accuracy": accuracy(cm), "windows": 50}
    assert isinstance(out["windows"], int)
