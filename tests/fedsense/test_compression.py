"""Compressed updates: round-trip error bounds, error feedback, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedsense.compression import ENCODINGS, UpdateError, decode, encode

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


def _model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"conv.weight": rng.normal(size=(8, 3, 5)).astype(np.float32),
            "conv.bias": rng.normal(size=(8,)).astype(np.float32),
            "bn.running_var": rng.uniform(0.5, 2, size=(8,)).astype(np.float32)}


@settings(max_examples=60, deadline=None)
@given(delta=arrays(np.float32, st.integers(1, 300), elements=finite))
def test_int8_round_trip_error_is_at_most_half_a_step(delta):
    reference = {"w": np.zeros_like(delta)}
    packed, error = encode({"w": delta}, reference, "int8")
    decoded = decode(packed.values, packed.scales, reference, "int8")["w"]
    step = float(np.max(np.abs(delta))) / 127
    assert packed.values.dtype == np.int8 and packed.scales.shape == (1,)
    assert np.max(np.abs(decoded - delta)) <= step / 2 * (1 + 1e-5) + 1e-12
    np.testing.assert_allclose(error["w"], delta - decoded, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(delta=arrays(np.float32, st.integers(1, 300), elements=finite))
def test_float16_round_trip_error_is_half_precision_rounding(delta):
    reference = {"w": np.ones_like(delta)}
    packed, _ = encode({"w": 1 + delta}, reference, "float16")
    decoded = decode(packed.values, packed.scales, reference, "float16")["w"] - 1
    # half an ulp of float16 (2**-11 relative) for normal numbers, 2**-25 below them;
    # plus float32's own rounding of 1 + delta
    bound = np.abs(delta) * 2.0**-11 + 2.0**-25 + np.abs(1 + delta) * 2.0**-23
    assert np.all(np.abs(decoded - delta) <= bound)


def test_packing_keeps_the_key_order_and_shapes_of_the_reference():
    rng = np.random.default_rng(0)
    reference = _model(rng)
    trained = {k: v + rng.normal(scale=0.01, size=v.shape).astype(np.float32) for k, v in reference.items()}
    for encoding in ENCODINGS[1:]:
        packed, _ = encode(trained, reference, encoding)
        assert packed.values.shape == (sum(v.size for v in reference.values()),)
        decoded = decode(packed.values, packed.scales, reference, encoding)
        assert list(decoded) == list(reference)
        for k in reference:
            assert decoded[k].shape == reference[k].shape and decoded[k].dtype == np.float32
            np.testing.assert_allclose(decoded[k], trained[k], atol=2e-4)


def _server_total(deltas: list[np.ndarray], feedback: bool) -> np.ndarray:
    """What the server adds up over the rounds from one device's int8 updates."""
    reference = {"w": np.zeros(2, np.float32)}
    residual, total = None, np.zeros(2, np.float32)
    for d in deltas:
        packed, error = encode({"w": d}, reference, "int8", residual)
        total += decode(packed.values, packed.scales, reference, "int8")["w"]
        residual = error if feedback else None
    return total


def test_error_feedback_carries_what_rounding_lost_into_later_rounds():
    # One coordinate 500x smaller than the other: int8 rounds it to 0 every round.
    deltas = [np.array([1.0, 0.002], np.float32)] * 50
    without = _server_total(deltas, feedback=False)
    with_feedback = _server_total(deltas, feedback=True)
    truth = np.sum(deltas, axis=0)
    assert without[1] == 0.0  # lost for good without feedback
    # with it, the server is behind the device by one round's rounding at most
    assert abs(with_feedback[1] - truth[1]) <= 1.0 / 127 / 2 * 1.01
    assert abs(with_feedback[0] - truth[0]) <= 1.0 / 127 / 2 * 1.01


def test_error_feedback_bound_holds_over_random_rounds():
    rng = np.random.default_rng(1)
    reference = _model(rng)
    residual, sent = None, {k: np.zeros_like(v) for k, v in reference.items()}
    learned = {k: np.zeros_like(v) for k, v in reference.items()}
    for _ in range(30):
        delta = {k: (rng.standard_cauchy(size=v.shape) * 0.01).astype(np.float32) for k, v in reference.items()}
        trained = {k: reference[k] + delta[k] for k in reference}
        packed, residual = encode(trained, reference, "int8", residual)
        decoded = decode(packed.values, packed.scales, reference, "int8")
        for k in reference:
            sent[k] += decoded[k] - reference[k]
            learned[k] += trained[k] - reference[k]
    for k in reference:  # what is missing is exactly the residual still on the device
        np.testing.assert_allclose(learned[k] - sent[k], residual[k], atol=1e-4)


@pytest.mark.parametrize("mutate, message", [
    (lambda v, s: (v.astype(np.int16), s), "values are int16"),
    (lambda v, s: (v[:-1], s), "values of shape"),
    (lambda v, s: (v, s[:-1]), "scales, expected 3"),
    (lambda v, s: (v, np.where(np.arange(s.size) == 1, np.nan, s).astype(np.float32)), "not finite"),
    (lambda v, s: (v, -s), "negative"),
    (lambda v, s: (v.reshape(1, -1), s), "values of shape"),
])
def test_an_update_that_does_not_fit_is_refused_naming_why(mutate, message):
    rng = np.random.default_rng(2)
    reference = _model(rng)
    packed, _ = encode({k: v + 0.1 for k, v in reference.items()}, reference, "int8")
    values, scales = mutate(packed.values, packed.scales)
    with pytest.raises(UpdateError, match=message):
        decode(values, scales, reference, "int8")


def test_a_non_finite_half_precision_update_is_refused():
    reference = {"w": np.zeros(3, np.float32)}
    packed, _ = encode({"w": np.array([1.0, 1e6, 0.0], np.float32)}, reference, "float16")  # 1e6 > float16 max
    with pytest.raises(UpdateError, match="not finite"):
        decode(packed.values, packed.scales, reference, "float16")


def test_a_nan_update_gets_a_scale_the_server_refuses():
    reference = {"w": np.zeros(3, np.float32)}
    packed, _ = encode({"w": np.array([1.0, np.nan, 0.0], np.float32)}, reference, "int8")
    with pytest.raises(UpdateError, match="not finite"):
        decode(packed.values, packed.scales, reference, "int8")


def test_an_unchanged_model_is_all_zeros_with_zero_scales():
    rng = np.random.default_rng(3)
    reference = _model(rng)
    packed, error = encode(reference, reference, "int8")
    assert not packed.values.any() and not packed.scales.any()
    assert all(not e.any() for e in error.values())
