"""One federated client per subject, each split in time order, class by class.

docs/design.md "Roles and honest evaluation": within each class a client's earlier
windows train and its later ones are held out, with the one window at the
boundary dropped, so two overlapping neighbours never sit on both sides (a
random split of overlapping windows leaks; one cut in time leaves classes out
of the test part). Nothing here is random.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fedsense.data.base import Dataset, DatasetError

# A class needs a train window, a dropped boundary window and a test window.
MIN_WINDOWS_TO_SPLIT = 3


@dataclass(frozen=True, eq=False)  # eq=False: array fields make == and hash ill-defined
class ClientSplit:
    """Which windows of the dataset one client trains and tests on.

    Attributes:
        client: 0-based client index, equal to the Flower partition id.
        subject: the client's subject.
        domain: the domain shared by all of the subject's windows.
        role: ``"target"`` when ``domain`` is a target domain, else ``"source"``.
        train: int64 ``(n_train,)`` ascending indices into the dataset (read-only).
        test: int64 ``(n_test,)`` ascending indices into the dataset (read-only).
    """

    client: int
    subject: int
    domain: int
    role: Literal["source", "target"]
    train: np.ndarray
    test: np.ndarray


def _frozen(a: np.ndarray) -> np.ndarray:
    out = np.asarray(a, dtype=np.int64).copy()
    out.setflags(write=False)  # the dataclass is frozen; so are its arrays
    return out


def split_indices(y: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split one client's windows in time order, class by class.

    For each class with ``n >= 3`` windows, the last ``n_test = max(1,
    round(n * test_fraction))`` (capped at ``n - 2``) are held out, the window
    just before them is dropped and the rest train. A class with fewer than 3
    windows cannot give one to each part, so all of it trains. Unlabeled
    windows (``y == -1``) have no class to split by; they all go to train
    (adaptation may use them, they never count in a test score).

    Args:
        y: int ``(n,)`` labels of one client's windows, in time order.
        test_fraction: share of each class held out, in ``(0, 1)``.

    Returns:
        ``(train, test)``: int64 ascending local positions in ``0..n-1``;
        disjoint; the dropped positions are in neither.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise DatasetError(f"split_indices: labels must be 1-D, got shape {y.shape}")
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"split_indices: test_fraction must be in (0, 1), got {test_fraction}")
    train: list[np.ndarray] = [np.flatnonzero(y < 0)]
    test: list[np.ndarray] = []
    for label in np.unique(y[y >= 0]):
        pos = np.flatnonzero(y == label)  # ascending = time order
        n = pos.size
        if n < MIN_WINDOWS_TO_SPLIT:
            train.append(pos)
            continue
        n_test = min(max(1, round(n * test_fraction)), n - 2)
        cut = n - n_test - 1  # pos[cut] is the dropped boundary window
        train.append(pos[:cut])
        test.append(pos[cut + 1 :])
    return (
        np.sort(np.concatenate(train)).astype(np.int64),
        np.sort(np.concatenate(test)).astype(np.int64) if test else np.zeros(0, np.int64),
    )


def partition(
    ds: Dataset, target_domains: Sequence[int], test_fraction: float
) -> list[ClientSplit]:
    """One :class:`ClientSplit` per subject, in ascending subject order.

    Args:
        ds: the dataset; within each subject, dataset order is time order.
        target_domains: domains whose clients are targets (labels unused in
            training); every listed domain must belong to some client.
        test_fraction: see :func:`split_indices`.

    Returns:
        ``splits[i].client == i`` for ``i`` in ``0..len(ds.subjects()) - 1``.

    Raises:
        DatasetError: a subject spans several domains, a target domain matches
            no client, or no source client remains.
    """
    targets = {int(d) for d in target_domains}
    splits: list[ClientSplit] = []
    for client, subject in enumerate(ds.subjects()):
        rows = np.flatnonzero(ds.subject == subject)
        domains = np.unique(ds.domain[rows])
        if domains.size != 1:
            raise DatasetError(
                f"subject {subject} spans several domains {domains.tolist()}; "
                "a client must hold exactly one domain"
            )
        domain = int(domains[0])
        train, test = split_indices(ds.y[rows], test_fraction)
        splits.append(
            ClientSplit(
                client=client,
                subject=subject,
                domain=domain,
                role="target" if domain in targets else "source",
                train=_frozen(rows[train]),
                test=_frozen(rows[test]),
            )
        )
    present = {s.domain for s in splits}
    missing = sorted(targets - present)
    if missing:
        raise DatasetError(
            f"target domains {missing} match no client (domains present: {sorted(present)})"
        )
    if not any(s.role == "source" for s in splits):
        raise DatasetError(
            f"no source client: every domain of {sorted(present)} is a target "
            f"(target_domains={sorted(targets)})"
        )
    return splits


def client_data(ds: Dataset, split: ClientSplit) -> tuple[Dataset, Dataset]:
    """The ``(train part, test part)`` of one client, each a :class:`Dataset`."""
    return ds.subset(split.train), ds.subset(split.test)
