"""Compressed client updates: the change against the global model, packed
into one flat array of a small dtype, with error feedback.

A device sends ``update = trained - global`` for every shared array, in the
order of the global record it received, as one flat array (one array, not
one per tensor: each array on the wire carries a header of its own):

- ``float16``: the update rounded to half precision (2 bytes a value);
- ``int8``: per tensor, ``scale = max|x| / 127`` and ``q = round(x / scale)``
  (1 byte a value plus one float32 scale per tensor).

With error feedback the part lost to rounding is kept on the device and
added to the next round's update (Seide et al. 2014; Karimireddy et al. 2019,
EF-SGD), so the sum of what the server received over the rounds differs from
the sum of what the device learned by one round's rounding error at most,
instead of accumulating.

``float32`` is the uncompressed wire format (the trained arrays themselves);
it has no codec here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedsense.registry import Registry

UNCOMPRESSED = "float32"


class UpdateError(ValueError):
    """A compressed update that cannot be decoded; the message names why."""


@dataclass(frozen=True)
class Codec:
    """How one tensor's update is rounded for the wire.

    ``quantize(x) -> (values, scale)``; ``dequantize(values, scale) -> x``
    (float32). ``scaled`` codecs send one float32 scale per tensor.
    """

    dtype: np.dtype
    scaled: bool

    def quantize(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        if not self.scaled:
            with np.errstate(over="ignore"):  # beyond the dtype's range is inf: the server refuses it
                return x.astype(self.dtype), 1.0
        top = float(np.max(np.abs(x))) if x.size else 0.0
        if not np.isfinite(top):
            return np.zeros(x.shape, self.dtype), float("nan")  # the server refuses a non-finite scale
        limit = np.iinfo(self.dtype).max
        scale = float(np.float32(top / limit))  # as it travels (float32)
        if scale == 0.0:  # nothing, or below float32's range: all of it stays in the residual
            return np.zeros(x.shape, self.dtype), 0.0
        q = np.rint(np.asarray(x, np.float64) / scale)
        return np.clip(q, -limit, limit).astype(self.dtype), scale

    def dequantize(self, values: np.ndarray, scale: float) -> np.ndarray:
        out = values.astype(np.float32)
        return out * np.float32(scale) if self.scaled else out


CODECS: Registry[Codec] = Registry("update encoding")
CODECS.register("float16")(Codec(np.dtype(np.float16), scaled=False))
CODECS.register("int8")(Codec(np.dtype(np.int8), scaled=True))

ENCODINGS = (UNCOMPRESSED, *CODECS)


@dataclass(frozen=True)
class Packed:
    """One device's compressed update.

    Attributes:
        values: ``(total size,)`` the codec's dtype, tensors one after another
            in the order of the global record.
        scales: ``(tensors,)`` float32 for a scaled codec, else ``(0,)``.
    """

    values: np.ndarray
    scales: np.ndarray


def encode(
    trained: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    encoding: str,
    residual: Mapping[str, np.ndarray] | None = None,
) -> tuple[Packed, dict[str, np.ndarray]]:
    """Pack ``trained - reference`` (plus ``residual``, the error feedback of
    earlier rounds) in ``reference``'s key order; also return this round's
    rounding error per key, the next round's residual."""
    codec = CODECS[encoding]
    parts, scales, error = [], [], {}
    for key, ref in reference.items():
        x = np.asarray(trained[key], np.float32) - np.asarray(ref, np.float32)
        if residual is not None and key in residual:
            x = x + residual[key]
        q, scale = codec.quantize(x.ravel())
        parts.append(q)
        scales.append(scale)
        error[key] = (x.ravel() - codec.dequantize(q, scale)).reshape(x.shape)
    values = np.concatenate(parts) if parts else np.zeros(0, codec.dtype)
    packed = Packed(values, np.asarray(scales if codec.scaled else [], np.float32))
    return packed, error


def decode(
    values: np.ndarray, scales: np.ndarray, reference: Mapping[str, np.ndarray], encoding: str
) -> dict[str, np.ndarray]:
    """``reference + update`` per key (float32), or :class:`UpdateError`
    naming what does not fit: dtype, length, number of scales, a non-finite
    value or scale."""
    codec = CODECS[encoding]
    if values.dtype != codec.dtype:
        raise UpdateError(f"{encoding} update: values are {values.dtype}, expected {codec.dtype}")
    sizes = [int(np.asarray(r).size) for r in reference.values()]
    if values.ndim != 1 or values.size != sum(sizes):
        raise UpdateError(f"{encoding} update: {values.size} values of shape {values.shape}, "
                          f"the model has {sum(sizes)} in {len(sizes)} tensors")
    expected_scales = len(sizes) if codec.scaled else 0
    if scales.ndim != 1 or scales.size != expected_scales:
        raise UpdateError(f"{encoding} update: {scales.size} scales, expected {expected_scales}")
    if codec.scaled and not (np.all(np.isfinite(scales)) and np.all(scales >= 0)):
        raise UpdateError(f"{encoding} update: a scale is negative or not finite")
    if not codec.scaled and not np.all(np.isfinite(values)):
        raise UpdateError(f"{encoding} update: a value is not finite")
    out, start = {}, 0
    for i, (key, ref) in enumerate(reference.items()):
        ref = np.asarray(ref, np.float32)
        chunk = values[start : start + ref.size]
        start += ref.size
        scale = float(scales[i]) if codec.scaled else 1.0
        out[key] = ref + codec.dequantize(chunk, scale).reshape(ref.shape)
    return out

