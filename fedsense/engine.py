"""Local training and evaluation: tensors in, a dict of numbers out.

No Flower here. The ClientApp and the centralized runner both call these.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsense.config import TrainConfig
from fedsense.data.base import Dataset
from fedsense.distillation import single_modality_loss
from fedsense.metrics import confusion


def as_tensors(ds: Dataset, index: np.ndarray | slice = slice(None)) -> dict[str, Tensor]:
    """Modality tensors ``(B, C, T)`` of the rows ``index`` (no copy where possible)."""
    return {m: torch.from_numpy(np.ascontiguousarray(a[index])) for m, a in ds.x.items()}


def masks(ds: Dataset, index: np.ndarray | slice = slice(None)) -> dict[str, Tensor] | None:
    """Per modality ``(B,)`` 1/0 presence of the rows ``index``; ``None`` when
    every modality of every row is there (the model then masks nothing)."""
    if not ds.mask:
        return None
    rows = {m: ds.present(m)[index] for m in ds.x}
    if all(bool(r.all()) for r in rows.values()):
        return None
    return {m: torch.from_numpy(np.ascontiguousarray(r, dtype=np.float32)) for m, r in rows.items()}


def forward(model: nn.Module, ds: Dataset, index: np.ndarray | slice = slice(None)):
    """``model`` on the rows ``index`` of ``ds``, missing modalities masked."""
    return model(as_tensors(ds, index), masks(ds, index))


def make_optimizer(model: nn.Module, cfg: TrainConfig, lr: float, kind: str | None = None) -> torch.optim.Optimizer:
    """``cfg.optimizer`` (or ``kind`` when given) over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if (kind or cfg.optimizer) == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)


def train_supervised(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    *,
    epochs: int,
    lr: float,
    seed: int,
) -> dict[str, float]:
    """Cross-entropy training on the labelled windows of ``data``.

    Unlabeled windows (``y == -1``) are skipped: a target client's labels are
    removed before its data reach this function. Shuffling follows ``seed``.

    Returns ``loss_task`` (mean over steps), ``steps`` and ``num_examples``
    (labelled windows seen per epoch, the FedAvg weight).
    """
    labelled = np.flatnonzero(data.y >= 0)
    if labelled.size == 0:
        return {"loss_task": 0.0, "steps": 0, "num_examples": 0, "task_windows": 0}
    model.train()
    optimizer = make_optimizer(model, cfg, lr)
    generator = torch.Generator().manual_seed(seed)
    y_all = torch.from_numpy(data.y)
    losses: list[float] = []
    # Dropout draws from the global RNG: seed it too, without disturbing the caller's.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _epochs(model, data, cfg, optimizer, generator, labelled, y_all, epochs, losses)
    return {
        "loss_task": float(np.mean(losses)) if losses else 0.0,
        "steps": len(losses),
        "num_examples": int(labelled.size),
        "task_windows": int(labelled.size),
    }


def _epochs(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    labelled: np.ndarray,
    y_all: Tensor,
    epochs: int,
    losses: list[float],
) -> None:
    for _ in range(epochs):
        order = labelled[torch.randperm(labelled.size, generator=generator).numpy()]
        for start in range(0, order.size, cfg.batch_size):
            batch = np.sort(order[start : start + cfg.batch_size])
            if batch.size < 2:
                continue  # BatchNorm cannot train on a single window
            x, mask = as_tensors(data, batch), masks(data, batch)
            out = model(x, mask)
            task = F.cross_entropy(out.logits, y_all[batch])
            loss = task + single_modality_term(model, x, mask, out, y_all[batch], cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(task.detach()))


def single_modality_term(model: nn.Module, x: dict[str, Tensor], mask: dict[str, Tensor] | None, out,
                         y: Tensor, cfg: TrainConfig) -> Tensor:
    """``train.single_modality_weight`` x the one-modality paths' loss
    (:mod:`fedsense.distillation`), or 0."""

    if cfg.single_modality == "none" or cfg.single_modality_weight == 0:
        return torch.zeros(())
    extra = single_modality_loss(model, x, mask, out, y, cfg.single_modality,  # type: ignore[arg-type]
                                 cfg.distill_temperature, cfg.distill_unlabeled)
    return torch.zeros(()) if extra is None else cfg.single_modality_weight * extra


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Dataset, num_classes: int, batch_size: int = 512
) -> dict[str, object]:
    """Loss and ``(K, K)`` confusion matrix on the labelled windows of ``data``."""
    model.eval()
    labelled = np.flatnonzero(data.y >= 0)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    total_loss = 0.0
    for start in range(0, labelled.size, batch_size):
        batch = labelled[start : start + batch_size]
        logits = forward(model, data, batch).logits
        y = torch.from_numpy(data.y[batch])
        total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        cm += confusion(data.y[batch], logits.argmax(dim=1).numpy(), num_classes)
    n = int(labelled.size)
    return {"loss": total_loss / n if n else 0.0, "confusion": cm, "windows": n}
