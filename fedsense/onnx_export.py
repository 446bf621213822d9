"""ONNX export of a device model, float or int8, and running it in onnxruntime.

The float model is traced with PyTorch's TorchScript-based exporter
(``dynamo=False``: 2 s for this model against 26 s for the dynamo exporter,
and it needs no onnxscript); in eval mode it folds each BatchNorm into the
convolution before it. Inputs are named like the dataset file's keys
(``x_acc``…), the batch dimension is dynamic.

The int8 model is onnxruntime's static quantization of the float one in QDQ
form: int8 weights with one symmetric scale per output channel, uint8
activations with one scale and zero point per tensor, calibrated on windows
the model will see, at the inputs of convolutions and linear layers; biases
stay float (int32 biases need a float scale per channel beside them: 2 KB
more on the default model). Measured on the default HAPT model, two choices
matter: the raw sensor input stays float (quantized per tensor it cost 2.5
points of target macro-F1; the first convolution's weights are int8 still),
and activations are asymmetric uint8 (symmetric int8 activations met an
onnxruntime graph optimisation that changed one device's predictions on 5 %
of its windows). Both
files are compacted: tensors get short names, node names and the shape
annotations onnxruntime re-derives at load are dropped, and symmetric
weights lose their all-zero zero points (the default); on this model the
names alone were a quarter of the int8 file.

``onnx`` and ``onnxruntime`` are the optional ``edge`` extra
(``pip install -e '.[edge]'``); only this module needs them.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsense.config import ConfigError
from fedsense.data.clients import ClientData
from fedsense.deploy import InferenceNet, Predict, RunModels, feeds, input_name, role_scores, torch_predictor
from fedsense.models import MultimodalNet

OPSET = 17
CALIBRATION_BATCH = 64  # windows per calibration batch (the percentile/entropy calibrators need equal batches)
CALIBRATION_WINDOWS = 512


class MissingExtra(RuntimeError):
    """onnx/onnxruntime are not installed."""


def _require() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise MissingExtra(
            f"ONNX export needs the 'edge' extra ({err.name} is missing): pip install -e '.[edge]'") from None
    return onnx, onnxruntime


def export_float(model: MultimodalNet, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s inference graph (no discriminators) as a float ONNX file."""
    onnx, _ = _require()
    net = InferenceNet(model).eval()
    example = tuple(torch.zeros(1, c, t) for c, t in model.spec.shapes.values())
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            net, example, buffer, input_names=net.input_names, output_names=["logits"],
            dynamic_axes={name: {0: "batch"} for name in [*net.input_names, "logits"]},
            opset_version=OPSET, dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    return _save(proto, path, metadata)


def quantize_int8(
    float_path: str | Path,
    path: str | Path,
    calibration: Iterable[Mapping[str, np.ndarray]],
    method: str = "minmax",
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Static int8 quantization of a float export, activations calibrated on
    ``calibration`` (batches of model inputs keyed by input name)."""
    onnx, _ = _require()
    from onnxruntime.quantization import (
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static,
    )

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f"calibration method '{method}' (valid: {', '.join(methods)})")
    batches = [dict(b) for b in calibration]
    if not batches:
        raise ValueError("int8 quantization needs calibration windows; none were given")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    path = Path(path)
    raw = path.with_name(path.name + ".raw")
    try:
        quantize_static(
            str(float_path), str(raw), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, calibrate_method=methods[method],
            op_types_to_quantize=["Conv", "Gemm"], extra_options={"QuantizeBias": False},
        )
        proto = onnx.load(str(raw))
        _inputs_stay_float(proto)
    finally:
        raw.unlink(missing_ok=True)
    return _save(proto, path, metadata)


def calibration_batches(inputs: Mapping[str, np.ndarray], windows: int = CALIBRATION_WINDOWS) -> list[dict[str, np.ndarray]]:
    """Up to ``windows`` windows of ``inputs`` in equal batches (at least one)."""
    total = len(next(iter(inputs.values())))
    size = min(CALIBRATION_BATCH, total)
    count = max(1, min(windows, total) // size)
    return [{k: v[i * size : (i + 1) * size] for k, v in inputs.items()} for i in range(count)]


def _save(proto: Any, path: str | Path, metadata: Mapping[str, Any] | None) -> Path:
    _compact(proto)
    del proto.metadata_props[:]
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return path


def _inputs_stay_float(proto: Any) -> None:
    """Drop the QuantizeLinear/DequantizeLinear pair on each graph input: the
    raw sensor channels of a window (acceleration in g beside its spikes) do
    not share one int8 scale well; the first convolution takes them in float
    (its weights stay int8)."""
    graph = proto.graph
    inputs = {v.name for v in graph.input}
    producers = {out: node for node in graph.node for out in node.output}
    dropped, rename = set(), {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in producers:
            quant = producers[node.input[0]]
            if quant.op_type == "QuantizeLinear" and quant.input[0] in inputs:
                rename[node.output[0]] = quant.input[0]
                dropped.update({id(node), id(quant)})
    kept = [n for n in graph.node if id(n) not in dropped]
    for node in kept:
        node.input[:] = [rename.get(name, name) for name in node.input]
    del graph.node[:]
    graph.node.extend(kept)


def _compact(proto: Any) -> None:
    """Short tensor names, no node names or shape annotations, no all-zero
    zero points of symmetric weights; inputs and outputs keep their names."""
    from onnx import numpy_helper

    graph = proto.graph
    initial = {t.name: t for t in graph.initializer}
    for node in graph.node:  # DequantizeLinear(w_int, scale, zero_point = 0): the default
        if node.op_type == "DequantizeLinear" and len(node.input) == 3 and node.input[2] in initial:
            zero = numpy_helper.to_array(initial[node.input[2]])
            if node.input[0] in initial and not zero.any():
                del node.input[2]
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)

    fixed = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in fixed:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
        tensor.doc_string = ""
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    del graph.value_info[:]
    proto.doc_string = ""
    graph.doc_string = ""


def onnx_predictor(path: str | Path, threads: int = 1) -> Predict:
    """Logits of an ONNX file in onnxruntime (CPU, ``threads`` threads)."""
    _, ort = _require()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def predict(inputs: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(["logits"], inputs)[0]

    return predict


def calibration_inputs(runs: RunModels, device: int | None, data: ClientData) -> dict[str, np.ndarray]:
    """Windows to calibrate activation ranges on: those the model will see.
    A device's own model: that device's training windows (labels unused);
    the global model: the source devices' training windows, a share of each."""
    if device is not None:
        return feeds(data.train)
    sources = [d for d in (runs.client_data(i) for i in range(runs.clients())) if d.role == "source"]
    if not sources:
        raise ConfigError(f"{runs.path}: no source device to calibrate the int8 model on")
    share = max(1, CALIBRATION_WINDOWS // len(sources))
    parts = [feeds(d.train, slice(0, share)) for d in sources]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def export_device(runs: RunModels, device: int | None, path: str | Path, int8: bool,
                  data: ClientData | None = None) -> tuple[Path, MultimodalNet, ClientData]:
    """Write device ``device``'s model (``None``: the global one) to ``path``;
    return the file, the PyTorch model it came from and the device's data."""
    if data is None:
        data = runs.client_data(0 if device is None else device)
    model = runs.model(device, data)
    metadata = {
        "fedsense.run": str(runs.path.resolve()), "fedsense.device": "global" if device is None else str(device),
        "fedsense.format": "int8" if int8 else "float32", "fedsense.method": runs.cfg.adapt.method,
        "fedsense.inputs": {input_name(m): [c, t] for m, (c, t) in model.spec.shapes.items()},
        "fedsense.classes": list(data.train.classes) or list(range(model.spec.num_classes)),
    }
    path = Path(path)
    if not int8:
        return export_float(model, path, metadata), model, data
    float_path = path.with_name(path.name + ".float")
    try:
        export_float(model, float_path)
        calibration = calibration_batches(calibration_inputs(runs, device, data))
        quantize_int8(float_path, path, calibration, metadata=metadata)
    finally:
        float_path.unlink(missing_ok=True)
    return path, model, data


def parity(model: MultimodalNet, path: str | Path, data: ClientData) -> dict[str, float]:
    """The exported file against its PyTorch model on the device's held-out
    windows: largest logit difference and share of windows with the same class."""
    inputs = feeds(data.test)
    reference = torch_predictor(model)(inputs)
    exported = onnx_predictor(path)(inputs)
    return {"windows": int(len(reference)),
            "max_abs_logit_diff": float(np.max(np.abs(reference - exported))) if len(reference) else 0.0,
            "same_class": float(np.mean(reference.argmax(1) == exported.argmax(1))) if len(reference) else 1.0}


def evaluate_exports(runs: RunModels, int8: bool, workdir: str | Path) -> dict[str, Any]:
    """Every device's model exported as :func:`export_device` writes it and
    run in onnxruntime on its held-out windows, beside the PyTorch model:
    target and source macro-F1 from confusion matrices summed over devices,
    and the parity of the files (worst device, and over all windows)."""
    workdir = Path(workdir)
    exported: dict[int, Path] = {}
    worst_diff, same, windows = 0.0, 0.0, 0

    def onnx_model(data: ClientData, model: MultimodalNet) -> Predict:
        nonlocal worst_diff, same, windows
        device = data.partition_id if runs.per_device else None
        key = -1 if device is None else device
        if key not in exported:
            exported[key] = export_device(runs, device, workdir / f"device-{key}.onnx", int8, data)[0]
        check = parity(model, exported[key], data)
        worst_diff = max(worst_diff, check["max_abs_logit_diff"])
        same += check["same_class"] * check["windows"]
        windows += check["windows"]
        return onnx_predictor(exported[key])

    scores = role_scores(runs, {"pytorch": lambda data, model: torch_predictor(model), "onnx": onnx_model})
    return {"scores": scores, "max_abs_logit_diff": worst_diff, "same_class": same / max(windows, 1),
            "windows": windows}
