"""One client's view of the data: its train and held-out parts and its role.

In simulation a client is a partition of the configured dataset (one per
subject); on a real device it is the npz file its SuperNode points at. A
target client's training labels are removed here, before any training code
sees them, so no method can use them by accident (unless
``data.target_labels: visible``, the target-oracle ceiling). A simulated
client given the ``label_flip`` fault (``faults:``) gets its training labels
flipped here: everything it does with them is poisoned alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from fedsense import protocol
from fedsense.config import Config
from fedsense.data.base import Dataset, DatasetError
from fedsense.data.loaders import cached_dataset, select_modalities
from fedsense.data import partition as partitioning  # module attribute: tests replace the split
from fedsense.data.missing import apply_missing
from fedsense.data.npz import load_npz
from fedsense.data.synthetic import make_synthetic_subject
from fedsense.faults import fault_of, flip_labels


@dataclass(frozen=True)
class ClientData:
    train: Dataset  # labels are -1 throughout for a target client
    test: Dataset
    role: Literal["source", "target"]
    partition_id: int  # a real device's optional partition-id, else -1

    def domain_labels(self) -> np.ndarray:
        """``(N,)`` float32 domain label of each training window: 1 target, 0 source."""
        return np.full(len(self.train), float(self.role == "target"), dtype=np.float32)


def hide_labels(ds: Dataset) -> Dataset:
    """The same windows with every label replaced by -1 (unlabeled)."""
    return replace(ds, y=np.full_like(ds.y, -1))


_PARTITIONS: list[tuple[Dataset, tuple, list]] = []  # (dataset, split settings, splits)


def _partition(cfg: Config, ds: Dataset) -> list:
    """The client splits of ``ds`` under ``cfg``, memoised for the latest dataset.

    Keyed on the dataset object itself (held, so its identity cannot be
    reused) and on every setting the split depends on.
    """

    settings = (tuple(cfg.data.target_domains), cfg.data.test_fraction)
    if not (_PARTITIONS and _PARTITIONS[0][0] is ds and _PARTITIONS[0][1] == settings):
        _PARTITIONS[:] = [(ds, settings, partitioning.partition(ds, cfg.data.target_domains, cfg.data.test_fraction))]
    return _PARTITIONS[0][2]


def _generated_one_by_one(cfg: Config) -> bool:
    """Synthetic data without device shifts: a client's windows are generated
    from its subject id alone, so no process ever holds the whole fleet's data
    (a shift's noise is drawn over all its domains' windows at once: with
    shifts the whole dataset is built, as for files)."""
    return cfg.data.kind == "synthetic" and not cfg.data.shifts


def _check_generated_roles(cfg: Config) -> int:
    """The number of generated subjects, after the checks ``partition`` makes."""
    subjects = cfg.data.synthetic.subjects
    targets = {int(d) for d in cfg.data.target_domains}
    missing = sorted(d for d in targets if not 1 <= d <= subjects)
    if missing:
        raise DatasetError(f"target domains {missing} match no client (domains present: 1..{subjects})")
    if len(targets) >= subjects:
        raise DatasetError(f"no source client: every domain of 1..{subjects} is a target")
    return subjects


def _generated_client(cfg: Config, pid: int) -> ClientData:
    """Client ``pid`` (subject ``pid + 1``) generated on its own; the same
    windows, split and role as its partition of the whole generated dataset."""

    subjects = cfg.data.synthetic.subjects
    ds = select_modalities(make_synthetic_subject(cfg.data.synthetic, cfg.seed, pid + 1), list(cfg.data.modalities))
    train, test = partitioning.split_indices(ds.y, cfg.data.test_fraction)
    role = "target" if pid + 1 in {int(d) for d in cfg.data.target_domains} else "source"
    return _finish(cfg, ds.subset(train), ds.subset(test), role, pid, subjects)  # type: ignore[arg-type]


def num_clients(cfg: Config) -> int:
    """How many clients (subjects) the configured dataset has."""
    if _generated_one_by_one(cfg):
        return _check_generated_roles(cfg)
    return len(_partition(cfg, cached_dataset(cfg.data, cfg.seed)))


def _device_data(cfg: Config, path: str, role: str | None, pid: int) -> ClientData:

    if not Path(path).is_absolute():
        # the ClientApp runs in a process whose working directory is not the operator's
        raise DatasetError(f"node config data-path={path!r}: give an absolute path")
    # Every modality the file has; the federation's model decides which it uses
    # (the ClientApp conforms the data to it: one the device lacks is masked).
    ds = load_npz(path)
    if cfg.data.modalities:

        ds = select_modalities(ds, [m for m in cfg.data.modalities if m in ds.x] or list(cfg.data.modalities))
    if role is None:
        domains = set(int(d) for d in np.unique(ds.domain))
        role = "target" if domains & set(cfg.data.target_domains) else "source"
    if role not in ("source", "target"):
        raise DatasetError(f"node config role={role!r}: must be 'source' or 'target'")
    train, test = partitioning.split_indices(ds.y, cfg.data.test_fraction)
    return _finish(cfg, ds.subset(train), ds.subset(test), role, pid)  # type: ignore[arg-type]


def _finish(
    cfg: Config, train: Dataset, test: Dataset, role: Literal["source", "target"], pid: int,
    num_devices: int | None = None,
) -> ClientData:
    if num_devices is not None and (cfg.data.drop_modality or cfg.data.drop_window):

        drops = (cfg.data.drop_modality, cfg.data.drop_window)
        train = apply_missing(train, pid, num_devices, cfg.seed, *drops, part=0)
        test = apply_missing(test, pid, num_devices, cfg.seed, *drops, part=1)
    if num_devices is not None and fault_of(cfg.faults, pid, num_devices) == "label_flip":
        train = replace(train, y=flip_labels(train.y, max(train.num_classes, test.num_classes)))
    if role == "target" and cfg.data.target_labels == "hidden":
        train = hide_labels(train)
    return ClientData(train=train, test=test, role=role, partition_id=pid)


def load_client_data(cfg: Config, node_config: Mapping[str, object]) -> ClientData:
    """The data of the client described by a SuperNode's ``node_config``.

    ``data-path`` (a real device's npz) wins, with an optional ``role`` and
    ``partition-id`` (the device's number); otherwise ``partition-id`` and
    ``num-partitions`` select one subject of the configured dataset.
    """

    if protocol.NODE_DATA_PATH in node_config:
        role = node_config.get(protocol.NODE_ROLE)
        number = node_config.get(protocol.NODE_PARTITION_ID, -1)
        try:
            pid = int(number)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise DatasetError(f"node config partition-id={number!r}: expected an integer") from None
        return _device_data(cfg, str(node_config[protocol.NODE_DATA_PATH]), role and str(role), pid)
    if protocol.NODE_PARTITION_ID not in node_config:
        raise DatasetError(
            "this node has neither 'data-path' nor 'partition-id' in its node config; "
            "start the SuperNode with --node-config \"data-path=/path/device.npz\""
        )
    pid = int(node_config[protocol.NODE_PARTITION_ID])  # type: ignore[arg-type]
    total = node_config.get(protocol.NODE_NUM_PARTITIONS)
    generated = _generated_one_by_one(cfg)
    if generated:
        count = _check_generated_roles(cfg)
    else:
        ds = cached_dataset(cfg.data, cfg.seed)
        splits = _partition(cfg, ds)
        count = len(splits)
    if total is not None and int(total) != count:  # type: ignore[arg-type]
        raise DatasetError(
            f"the federation has {total} SuperNodes but the dataset has {count} "
            f"clients (one per subject); set num-supernodes to match (flwr run . --federation-config "
            f"'num-supernodes={count}')"
        )
    if not 0 <= pid < count:
        raise DatasetError(f"partition-id {pid} out of range: the dataset has {count} clients")
    if generated:
        return _generated_client(cfg, pid)
    split = splits[pid]
    train, test = partitioning.client_data(ds, split)
    return _finish(cfg, train, test, split.role, pid, count)
