"""The inference model of a finished run: what a device runs.

A device's model is the run's last global arrays (``checkpoints/latest.npz``)
plus, for methods that keep parameters on the device (FedBN-style BatchNorm
statistics), that device's own (``RUN_DIR/devices/<partition>/``, see
:mod:`fedsense.devicestate`). Discriminators exist only while adapting and
are left out. :class:`InferenceNet` takes one tensor per modality, named
like the dataset file's keys (``x_acc``, ``x_gyro``…), and returns logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from fedsense import protocol
from fedsense.methods import METHODS
from fedsense.config import Config, ConfigError
from fedsense.configfile import load
from fedsense.data.base import Dataset
from fedsense.data.clients import ClientData, load_client_data, num_clients
from fedsense.devicestate import load_local
from fedsense.metrics import confusion, summarize
from fedsense.models import DataSpec, MultimodalNet
from fedsense.runmodel import build_run_model, sharing_of
from fedsense.methods.base import ADAPTED, METHOD_STATE
from fedsense.params import load_arrays, shared_keys

# A predictor: modality inputs {"x_<m>": (B, C, T) float32} -> logits (B, K)
Predict = Callable[[dict[str, np.ndarray]], np.ndarray]


class InferenceNet(nn.Module):
    """``(x_<m1>, x_<m2>, …) -> logits (B, K)``: encoders, fusion and
    classifier of a :class:`MultimodalNet`, inputs in modality order."""

    def __init__(self, net: MultimodalNet) -> None:
        super().__init__()
        self.net = net
        self.modalities = list(net.modalities)

    @property
    def input_names(self) -> list[str]:
        return [input_name(m) for m in self.modalities]

    def forward(self, *xs: Tensor) -> Tensor:
        return self.net(dict(zip(self.modalities, xs))).logits


def input_name(modality: str) -> str:
    """A model input's name: the dataset file's key of that modality."""
    return f"x_{modality}"


def feeds(data: Dataset, index: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray]:
    """The windows ``index`` of ``data`` as model inputs keyed by input name."""
    return {input_name(m): np.ascontiguousarray(x[index], dtype=np.float32) for m, x in data.x.items()}


def torch_predictor(model: nn.Module) -> Predict:
    """Logits of a PyTorch :class:`MultimodalNet` (eval mode, no gradients)."""
    model.eval()

    def predict(inputs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            x = {name[2:]: torch.from_numpy(v) for name, v in inputs.items()}
            return model(x).logits.numpy()

    return predict


@dataclass(frozen=True)
class RunModels:
    """A finished run's configuration and the pieces of its devices' models."""

    path: Path
    cfg: Config
    arrays: dict[str, np.ndarray]  # global arrays of the last checkpoint
    per_device: bool  # devices keep parameters of their own (device is then required)

    @classmethod
    def open(cls, run_dir: str | Path) -> "RunModels":
        path = Path(run_dir)
        if not (path / "config.yaml").is_file():
            raise ConfigError(f"{path}: not a run directory (no config.yaml)")
        checkpoint = path / "checkpoints" / "latest.npz"
        if not checkpoint.is_file():
            raise ConfigError(f"{path}: no checkpoints/latest.npz (did the run finish a round?)")
        cfg = load(path / "config.yaml")
        if cfg.fed.mode != "federated":
            raise ConfigError(f"{path}: a {cfg.fed.mode} run; export takes a federated run's checkpoint")
        with np.load(checkpoint) as stored:
            arrays = {k: stored[k] for k in stored.files}
        per_device = METHODS[cfg.adapt.method].device_models
        return cls(path, cfg, arrays, per_device)

    def clients(self) -> int:
        return num_clients(self.cfg)

    def client_data(self, device: int) -> ClientData:
        count = self.clients()
        if not 0 <= device < count:
            raise ConfigError(f"--device {device}: the run has devices 0..{count - 1}")
        return load_client_data(self.cfg, {protocol.NODE_PARTITION_ID: device, protocol.NODE_NUM_PARTITIONS: count})

    def model(self, device: int | None, data: ClientData | None = None) -> MultimodalNet:
        """Device ``device``'s model (``None``: the global model, for runs whose
        devices keep nothing of their own)."""
        if device is None and self.per_device:
            raise ConfigError(
                f"{self.path}: adapt.method '{self.cfg.adapt.method}' keeps parameters of each device's own "
                f"(BatchNorm statistics, calibration); name the device whose model to export with --device N (0..{self.clients() - 1})")
        if data is None:
            data = self.client_data(0 if device is None else device)
        num_classes = int(self.arrays["classifier.1.bias"].shape[0])
        # float weights as trained (a train.qat run's rounding is applied by the int8 export)
        model = build_run_model(DataSpec(shapes=data.train.shapes(), num_classes=num_classes), self.cfg, qat=False)
        sharing = sharing_of(self.cfg)
        load_arrays(model, self.arrays, strict_keys=shared_keys(model, sharing))
        if self.per_device and device is not None:
            # the newest state the device kept: after the last round's evaluation
            local = load_local(self.path / "devices" / str(device), 1 << 30, "train")
            if local is None:
                raise ConfigError(f"{self.path}: no device state under devices/{device}/ to export its model with")
            # the device's kept parameters, then what it adapted for its last evaluation (m3bat_local)
            kept = {k: v for k, v in local.items() if not k.startswith((protocol.DISCRIMINATORS, METHOD_STATE))}
            adapted = {k[len(ADAPTED):]: v for k, v in local.items() if k.startswith(ADAPTED)}
            load_arrays(model, {**kept, **adapted}, strict_keys=set())
        return model.eval()

    def devices(self) -> Iterator[tuple[ClientData, MultimodalNet]]:
        """Every device's data and model, in partition order."""
        for device in range(self.clients()):
            data = self.client_data(device)
            yield data, self.model(device if self.per_device else None, data)


def role_scores(
    runs: RunModels, predictors: dict[str, Callable[[ClientData, MultimodalNet], Predict]], batch: int = 512
) -> dict[str, dict[str, dict[str, float]]]:
    """Macro-F1 and accuracy per role of each predictor, from confusion
    matrices summed over every device's held-out windows: the federation's
    own evaluation, run on the exported models."""
    num_classes = int(runs.arrays["classifier.1.bias"].shape[0])
    sums: dict[str, dict[str, np.ndarray]] = {name: {} for name in predictors}
    for data, model in runs.devices():
        labelled = np.flatnonzero(data.test.y >= 0)
        for name, make in predictors.items():
            predict = make(data, model)
            cm = np.zeros((num_classes, num_classes), np.int64)
            for start in range(0, labelled.size, batch):
                index = labelled[start : start + batch]
                cm += confusion(data.test.y[index], predict(feeds(data.test, index)).argmax(1), num_classes)
            sums[name][data.role] = sums[name].get(data.role, 0) + cm
    return {name: {role: summarize(cm) for role, cm in roles.items()} for name, roles in sums.items()}
