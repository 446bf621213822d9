"""ONNX export on real HAPT windows: parity with PyTorch, int8 size and agreement.

A small model is trained for a few seconds on real HAPT users (the default
experiment's data and model) and written as a run directory the way a
federation leaves one; the exported files run in onnxruntime.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedsense.config import ConfigError
from fedsense.onnx_export import export_device, onnx_predictor, parity
from fedsense.deploy import feeds, torch_predictor
from tests.conftest import write_hapt_run

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def global_run(tmp_path_factory, hapt_model):
    return write_hapt_run(tmp_path_factory.mktemp("export") / "run", hapt_model, "none")


@pytest.fixture(scope="module")
def fedbn_run(tmp_path_factory, hapt_model):
    return write_hapt_run(tmp_path_factory.mktemp("export") / "run", hapt_model, "fedbn_stats")


def test_float_export_matches_pytorch_on_real_windows(global_run, tmp_path):
    path, model, data = export_device(global_run, None, tmp_path / "m.onnx", int8=False)
    worst = 0.0
    for pid in (0, 7, 24, 29):  # sources and shifted targets
        check = parity(model, path, global_run.client_data(pid))
        assert check["windows"] > 50
        worst = max(worst, check["max_abs_logit_diff"])
    assert worst < 1e-4


def test_the_file_has_named_modality_inputs_and_a_dynamic_batch(global_run, tmp_path):
    import onnx

    path, model, data = export_device(global_run, None, tmp_path / "m.onnx", int8=False)
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["x_acc", "x_gyro"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 128]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["fedsense.inputs"]) == {"x_acc": [3, 128], "x_gyro": [3, 128]}
    assert meta["fedsense.format"] == "float32"
    predict = onnx_predictor(path)
    for batch in (1, 7, 300):
        assert predict(feeds(data.test, slice(0, batch))).shape == (min(batch, len(data.test)), 6)
    assert not any("discriminator" in t.name for t in proto.graph.initializer)


def test_int8_export_is_under_a_third_and_a_half_of_the_float_size(global_run, tmp_path):
    float_path, _, _ = export_device(global_run, None, tmp_path / "f.onnx", int8=False)
    int8_path, _, _ = export_device(global_run, None, tmp_path / "q.onnx", int8=True)
    assert float_path.stat().st_size / int8_path.stat().st_size >= 3.5


def test_int8_device_models_predict_the_pytorch_class_on_99_percent_of_real_windows(fedbn_run, tmp_path):
    """Each device's model, calibrated on its own training windows (as the
    default experiment's devices, which keep their own BatchNorm statistics)."""
    same, windows = 0.0, 0
    for pid in (0, 5, 10, 15, 20, 25, 26, 27, 28, 29):
        path, model, data = export_device(fedbn_run, pid, tmp_path / f"{pid}.onnx", int8=True)
        check = parity(model, path, data)
        same += check["same_class"] * check["windows"]
        windows += check["windows"]
    assert windows > 900 and same / windows >= 0.99


def test_int8_weights_are_stored_as_int8(global_run, tmp_path):
    import onnx
    from onnx import numpy_helper

    path, _, _ = export_device(global_run, None, tmp_path / "q.onnx", int8=True)
    proto = onnx.load(str(path))
    sizes: dict[str, int] = {}
    for t in proto.graph.initializer:
        a = numpy_helper.to_array(t)
        sizes[str(a.dtype)] = sizes.get(str(a.dtype), 0) + a.size
    assert sizes["int8"] > 50_000 and sizes.get("float32", 0) < 2_000


def test_a_device_model_carries_that_devices_own_statistics(fedbn_run, tmp_path):
    with pytest.raises(ConfigError, match="--device N"):
        fedbn_run.model(None)
    with pytest.raises(ConfigError, match="devices 0..29"):
        fedbn_run.client_data(30)
    a = fedbn_run.model(25)
    b = fedbn_run.model(3)
    assert not np.allclose(a.encoders["acc"].features[1].running_mean.numpy(),
                           b.encoders["acc"].features[1].running_mean.numpy())
    path, model, data = export_device(fedbn_run, 25, tmp_path / "d.onnx", int8=False)
    inputs = feeds(data.test)
    np.testing.assert_allclose(onnx_predictor(path)(inputs), torch_predictor(a)(inputs), atol=1e-4)
