"""Local adaptation steps: adversarial training, AdaBN renormalisation and
embedding statistics. Tensors in, numbers out; no Flower."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedsense.adaptation.discriminators import FUSED
from fedsense.adaptation.losses import multi_branch_adversarial_loss
from fedsense.adaptation.statistics import Stats, sample
from fedsense.config import TrainConfig
from fedsense.data.base import Dataset
from fedsense.engine import as_tensors, forward, make_optimizer, masks, single_modality_term
from fedsense.models import MultimodalNet


@dataclass(frozen=True)
class Adversarial:
    """One round's adversarial settings, all sent by the server.

    Attributes:
        coeff: gradient reversal coefficient (the schedule's value this round).
        weights: branch -> relative weight of its discriminator loss; they are
            normalised to sum to 1, so ``domain_weight`` is the whole
            adversarial budget whatever the number of branches.
        domain_weight: weight of the adversarial loss against the task loss.
        reference: statistics alignment: branch -> pooled source statistics;
            ``None`` for federated discriminators (domain labels are roles).
    """

    coeff: float
    weights: dict[str, float]
    domain_weight: float = 1.0
    reference: dict[str, Stats] | None = None


@dataclass
class _Running:
    task: list[float] = field(default_factory=list)
    domain: dict[str, list[float]] = field(default_factory=dict)
    acc: dict[str, list[float]] = field(default_factory=dict)

    def add(self, losses: dict[str, float], accs: dict[str, float]) -> None:
        for b, v in losses.items():
            self.domain.setdefault(b, []).append(v)
        for b, v in accs.items():
            self.acc.setdefault(b, []).append(v)


def train_adversarial(
    model: MultimodalNet,
    data: Dataset,
    domain: np.ndarray,
    cfg: TrainConfig,
    adv: Adversarial,
    *,
    epochs: int,
    lr: float,
    seed: int,
    disc_steps: int = 0,
) -> dict[str, object]:
    """Task loss on labelled windows plus the multi-branch adversarial loss on all.

    Args:
        domain: ``(N,)`` domain label of each window (0 source, 1 target),
            used by federated discriminators. With a statistics reference,
            target windows (labelled 1) are set against reference samples
            (labelled 0); source windows take no adversarial step.

        disc_steps: the discriminators learn in the first ``disc_steps``
            gradient steps only (0: in every step); the encoders follow the
            reversed gradient in every step (FADE's few discriminator steps).

    Returns ``loss_task``, ``steps``, ``num_examples`` (windows used),
    ``task_windows`` (labelled ones among them) and, per
    branch, ``loss_domain`` and ``disc_acc`` (0.5 = domains indistinguishable).
    """
    n = len(data)
    if n == 0:
        return {"loss_task": 0.0, "steps": 0, "num_examples": 0, "task_windows": 0, "loss_domain": {}, "disc_acc": {}}
    # The statistics reference describes source embeddings in eval mode
    # (running BatchNorm statistics, no dropout); a target is compared with it
    # in the same mode, so the discriminator sees domains, not modes.
    aligning_to_reference = adv.reference is not None and bool(np.all(np.asarray(domain) > 0.5))
    if aligning_to_reference:
        model.eval()
    else:
        model.train()
    # A device without a labelled window minimises only the reversed
    # adversarial term. Adam divides each step by the gradient's own scale, so
    # that device would take full-size steps whatever the reversal coefficient
    # (the schedule would be ignored and a small term would move the shared
    # encoders as far as a whole task loss does). It takes SGD steps instead,
    # proportional to coefficient x gradient, as in the pooled objective.
    optimizer = make_optimizer(model, cfg, lr, kind=None if bool((data.y >= 0).any()) else "sgd")
    generator = torch.Generator().manual_seed(seed)
    y_all = torch.from_numpy(data.y)
    d_all = torch.from_numpy(np.asarray(domain, dtype=np.float32))
    run = _Running()
    steps = 0
    # Branch weights are shares of one adversarial budget (``domain_weight``):
    # M3BAT's branches together weigh what DANN's single branch does.
    total_weight = sum(adv.weights.get(b, 0.0) for b in model.discriminators)
    weights = {b: adv.weights.get(b, 0.0) / total_weight for b in model.discriminators} if total_weight else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout, reference samples
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator).numpy()
            for start in range(0, n, cfg.batch_size):
                batch = np.sort(order[start : start + cfg.batch_size])
                if batch.size < 2:
                    continue  # BatchNorm cannot train on a single window
                x, present = as_tensors(data, batch), masks(data, batch)
                out = model(x, present)
                y = y_all[batch]
                labelled = y >= 0
                loss = single_modality_term(model, x, present, out, y, cfg)
                if labelled.any():
                    task = F.cross_entropy(out.logits[labelled], y[labelled])
                    loss = loss + task
                    run.task.append(float(task.detach()))
                feats, labels = _adversarial_inputs(model, out, d_all[batch], adv, generator, present)
                if feats and total_weight > 0:
                    adv_loss, losses, accs = multi_branch_adversarial_loss(
                        feats, labels, model.discriminators, weights, adv.coeff
                    )
                    loss = loss + adv.domain_weight * adv_loss
                    run.add(losses, accs)
                if not loss.requires_grad:
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if disc_steps and steps >= disc_steps:
                    for p in model.discriminators.parameters():
                        p.grad = None  # frozen from here on: the optimizer skips it
                optimizer.step()
                steps += 1
    return {
        "loss_task": float(np.mean(run.task)) if run.task else 0.0,
        "steps": steps,
        "num_examples": n,
        "task_windows": int((data.y >= 0).sum()),
        "loss_domain": {b: float(np.mean(v)) for b, v in run.domain.items()},
        "disc_acc": {b: float(np.mean(v)) for b, v in run.acc.items()},
    }


def _adversarial_inputs(
    model: MultimodalNet, out, domain: torch.Tensor, adv: Adversarial, generator: torch.Generator,
    present: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    feats = model.features(out)
    # A modality branch takes adversarial steps on the windows that have that
    # modality only; a window without it has no embedding to align.
    kept = {b: present[b] > 0 if present is not None and b in present else None for b in feats}
    if adv.reference is None:  # federated discriminators: the label is the role
        return _rows(feats, {b: domain for b in feats}, kept)
    # Statistics reference: the sources *are* the reference, so only target
    # windows are pulled toward it (pushing sources toward a Gaussian summary
    # of themselves would only blur their classes).
    rows = domain > 0.5
    if not rows.any():
        return {}, {}
    inputs, labels = {}, {}
    for b, f in feats.items():
        f = f[rows if kept[b] is None else rows & kept[b]]
        if f.shape[0] == 0:
            continue
        ref = adv.reference.get(b)
        if ref is None or ref.count == 0:
            continue  # no reference yet (first round) for this branch
        samples = sample(ref, f.shape[0], generator)
        inputs[b] = torch.cat([f, samples])
        labels[b] = torch.cat([torch.ones(f.shape[0]), torch.zeros(f.shape[0])])
    return inputs, labels


def _rows(feats: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
          kept: dict[str, torch.Tensor | None]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Each branch's rows where its modality is present (branches without any left out)."""
    out_f, out_l = {}, {}
    for b, f in feats.items():
        rows = kept[b]
        if rows is None:
            out_f[b], out_l[b] = f, labels[b]
        elif bool(rows.any()):
            out_f[b], out_l[b] = f[rows], labels[b][rows]
    return out_f, out_l


@torch.no_grad()
def renormalize(model: nn.Module, data: Dataset, batch_size: int = 256) -> int:
    """AdaBN: recompute every BatchNorm's running statistics on ``data`` with
    forward passes only (no labels, no gradient). Returns the windows used."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if len(data) < 2 or not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.train()
    for start in range(0, len(data), batch_size):
        index = np.arange(start, min(start + batch_size, len(data)))
        if index.size >= 2:
            forward(model, data, index)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return len(data)


@torch.no_grad()
def embedding_stats(model: MultimodalNet, data: Dataset, batch_size: int = 512) -> dict[str, Stats]:
    """Per-branch statistics (every modality and the fused embedding) of
    ``data`` under the model in eval mode."""
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(data), batch_size):
        index = slice(start, start + batch_size)
        out = forward(model, data, index)
        for b, z in {**out.branches, FUSED: out.fused}.items():
            rows = data.present(b)[index] > 0 if b in data.x else slice(None)  # a branch: its windows only
            chunks.setdefault(b, []).append(z.numpy()[rows])
    return {b: Stats.of(np.concatenate(parts)) for b, parts in chunks.items()}
