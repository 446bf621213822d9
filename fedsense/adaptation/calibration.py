"""Device-local sensor calibration: a linear map of each 3-axis modality.

Phones and watches are worn turned, upside down, on the other wrist or
side. A device that is not worn like the sources sees its accelerometer and
gyroscope in another frame; no renormalisation of the network's features
undoes that. Each unlabeled device therefore keeps, per 3-axis modality, a
matrix ``A`` (3x3, reflections allowed) and an offset ``b``: the model sees
``A x + b``. They start as the identity, live on the device like its
BatchNorm statistics, and are never averaged.

Fitting needs no label. The sources report, per class, aggregate statistics
of their raw windows' means (for an accelerometer, the gravity direction of
each posture: count, mean and covariance over many windows, never one); the
server pools them into a class-conditional Gaussian mixture. A target fits
``A = s Q`` (``Q`` orthogonal, either determinant) and ``b`` by maximum
likelihood of its own window means under that mixture, from the 48 signed
axis permutations as starting points, and keeps the best few distinct fits
as candidates (:func:`fit_candidates`). Which candidate, and which map for a
modality whose window means say little (a gyroscope averages to zero), is
chosen by the network's own information-maximisation objective
(:mod:`fedsense.adaptation.selftraining`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

AXES = 3  # a modality is calibrated when it has three channels (x, y, z)


def calibrated_modalities(shapes: dict[str, tuple[int, int]]) -> list[str]:
    """The modalities a calibration maps: those with three channels."""
    return [m for m, (c, _t) in shapes.items() if c == AXES]


class Calibration(nn.Module):
    """``{m: (B, 3, T)} -> {m: A_m x + b_m}`` for the calibrated modalities;
    the others pass through. Identity at start, and frozen: only an unlabeled
    device's adaptation moves it (``selftraining.self_train``), never the
    task loss of a labelled device."""

    def __init__(self, modalities: list[str]) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.matrix = nn.ParameterDict({m: nn.Parameter(torch.eye(AXES), requires_grad=False)
                                        for m in self.modalities})
        self.offset = nn.ParameterDict({m: nn.Parameter(torch.zeros(AXES), requires_grad=False)
                                        for m in self.modalities})

    def forward(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        out = dict(x)
        for m in self.modalities:
            if m in out:
                out[m] = torch.einsum("ij,bjt->bit", self.matrix[m], out[m]) + self.offset[m][None, :, None]
        return out

    def maps(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per modality ``(A, b)`` as float64 numpy copies."""
        return {m: (self.matrix[m].detach().double().numpy().copy(), self.offset[m].detach().double().numpy().copy())
                for m in self.modalities}

    @torch.no_grad()
    def set_maps(self, maps: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        for m, (a, b) in maps.items():
            self.matrix[m].copy_(torch.as_tensor(a, dtype=torch.float32))
            self.offset[m].copy_(torch.as_tensor(b, dtype=torch.float32))

    def is_identity(self) -> bool:
        return all(bool(torch.equal(self.matrix[m], torch.eye(AXES))) and not bool(self.offset[m].any())
                   for m in self.modalities)


# --------------------------------------------------------------------------- #
# What sources report: per class, statistics of their raw windows' means.


@dataclass(frozen=True)
class RawStats:
    """Per class ``k``: windows ``count[k]``, mean ``(K, 3)`` and covariance
    ``(K, 3, 3)`` of the window means, and ``energy[k]``, the mean squared
    sample value (per window, summed over axes) — one modality."""

    count: np.ndarray  # (K,) int64
    mean: np.ndarray  # (K, 3)
    cov: np.ndarray  # (K, 3, 3)
    energy: np.ndarray  # (K,)

    @property
    def classes(self) -> int:
        return int(self.count.shape[0])


def window_means(x: np.ndarray) -> np.ndarray:
    """``(N, 3, T)`` windows -> ``(N, 3)`` float64 means over time."""
    return np.asarray(x, dtype=np.float64).mean(axis=2)


def window_energy(x: np.ndarray) -> np.ndarray:
    """``(N, C, T)`` -> ``(N,)`` mean over time of the squared norm of a sample."""
    x = np.asarray(x, dtype=np.float64)
    return (x ** 2).sum(axis=1).mean(axis=1)


def raw_stats(x: np.ndarray, y: np.ndarray, num_classes: int, min_count: int) -> RawStats:
    """Statistics of the labelled windows ``x`` ``(N, 3, T)``; a class with
    fewer than ``min_count`` windows is reported as empty (count 0, zeros)."""
    g, e = window_means(x), window_energy(x)
    count = np.zeros(num_classes, np.int64)
    mean = np.zeros((num_classes, AXES))
    cov = np.zeros((num_classes, AXES, AXES))
    energy = np.zeros(num_classes)
    for k in range(num_classes):
        rows = y == k
        n = int(rows.sum())
        if n < max(min_count, 2):
            continue
        count[k] = n
        mean[k] = g[rows].mean(axis=0)
        centred = g[rows] - mean[k]
        cov[k] = centred.T @ centred / n
        energy[k] = e[rows].mean()
    return RawStats(count, mean, cov, energy)


def pool_raw(parts: list[RawStats]) -> RawStats | None:
    """Statistics of the union of the windows behind ``parts``, class by class."""
    parts = [p for p in parts if int(p.count.sum()) > 0]
    if not parts:
        return None
    k = parts[0].classes
    count = sum(p.count for p in parts).astype(np.int64)
    safe = np.maximum(count, 1)[:, None]
    mean = sum(p.count[:, None] * p.mean for p in parts) / safe
    second = sum(p.count[:, None, None] * (p.cov + np.einsum("ki,kj->kij", p.mean, p.mean)) for p in parts)
    cov = second / safe[:, :, None] - np.einsum("ki,kj->kij", mean, mean)
    energy = sum(p.count * p.energy for p in parts) / safe[:, 0]
    empty = count == 0
    mean[empty], cov[empty], energy[empty] = 0.0, 0.0, 0.0
    return RawStats(count, mean, cov.reshape(k, AXES, AXES), energy)


# --------------------------------------------------------------------------- #
# Fitting a similarity map by maximum likelihood under the sources' mixture.


def signed_permutations() -> list[np.ndarray]:
    """The 48 signed permutation matrices: the cube's rotations and reflections."""
    mats = []
    for perm in itertools.permutations(range(AXES)):
        for signs in itertools.product((1.0, -1.0), repeat=AXES):
            p = np.zeros((AXES, AXES))
            for i, j in enumerate(perm):
                p[i, j] = signs[i]
            mats.append(p)
    return mats


def _skew(w: Tensor) -> Tensor:
    """``(B, 3)`` -> ``(B, 3, 3)`` skew-symmetric matrices (the Lie algebra of rotations)."""
    z = torch.zeros_like(w[:, 0])
    return torch.stack([
        torch.stack([z, -w[:, 2], w[:, 1]], -1),
        torch.stack([w[:, 2], z, -w[:, 0]], -1),
        torch.stack([-w[:, 1], w[:, 0], z], -1),
    ], -2)


def polar(a: np.ndarray) -> np.ndarray:
    """The orthogonal factor of ``a`` (nearest orthogonal matrix, either determinant)."""
    u, _s, vt = np.linalg.svd(a)
    return u @ vt


@dataclass(frozen=True)
class Fit:
    matrix: np.ndarray  # (3, 3)
    offset: np.ndarray  # (3,)
    nll: float  # negative log-likelihood per window (lower is better)


def informative(reference: RawStats, ratio: float = 0.1) -> bool:
    """Whether the reference's class means pin a frame down: they must span a
    plane, the second singular value of the class-weighted means reaching
    ``ratio`` of the signal's root mean square. An accelerometer's postures
    do (gravity upright, sitting, lying: 0.39 on HAPT); a gyroscope's means
    are about zero or along one turning axis (0.02 on HAPT), and a rotation
    about that axis would be a guess."""
    present = reference.count > 0
    if int(present.sum()) < 2:
        return False
    weights = reference.count[present] / reference.count[present].sum()
    rms = float(np.sqrt(np.average(reference.energy[present], weights=weights)))
    spread = np.linalg.svd(np.sqrt(weights)[:, None] * reference.mean[present], compute_uv=False)
    return bool(rms > 0 and spread[1] >= ratio * rms)


def fit_candidates(
    x: np.ndarray,
    reference: RawStats,
    *,
    keep: int = 4,
    steps: int = 150,
    prune_at: int = 30,
    survivors: int = 12,
    lr: float = 0.05,
    ridge: float = 1e-3,
    offset_prior: float = 0.1,
    distinct: float = 0.3,
) -> list[Fit]:
    """The best ``keep`` distinct similarity maps ``A = s Q``, ``b`` of the
    windows ``x`` ``(N, 3, T)`` onto the reference mixture, best first.

    Maximises the mean log-likelihood of ``A g_i + b`` (``g_i`` the window
    means) under the class mixture (class weights fitted too), plus
    ``log |det A|`` (the change of variables: without it shrinking every
    window onto one class mean would win), with a Gaussian prior of std
    ``offset_prior`` on ``b`` (sensor offsets are small). Started from each
    of the 48 signed permutations with ``s`` matching the mean norm, all
    optimised together with Adam; after ``prune_at`` steps only the
    ``survivors`` best go on. Fits closer than ``distinct`` (largest absolute
    entry difference) to a better one are dropped. No fit when the
    reference's window means carry no direction (:func:`informative`).
    """
    present = reference.count > 0
    g = window_means(x)
    if not informative(reference) or g.shape[0] < 2:
        return []
    mu = torch.as_tensor(reference.mean[present])
    cov = reference.cov[present] + ridge * np.eye(AXES)
    prec = torch.as_tensor(np.linalg.inv(cov))
    logdet = torch.as_tensor(np.linalg.slogdet(cov)[1])
    counts = reference.count[present].astype(np.float64)
    starts = torch.as_tensor(np.stack(signed_permutations()))
    n_starts = starts.shape[0]
    ref_norm = float((counts * np.linalg.norm(reference.mean[present], axis=1)).sum() / counts.sum())
    scale = ref_norm / max(float(np.linalg.norm(g, axis=1).mean()), 1e-9)
    points = torch.as_tensor(g)
    w = torch.zeros(n_starts, AXES, dtype=torch.float64, requires_grad=True)
    log_s = torch.full((n_starts,), float(np.log(scale)), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_starts, AXES, dtype=torch.float64, requires_grad=True)
    logits = torch.as_tensor(np.log(counts / counts.sum())).repeat(n_starts, 1).requires_grad_(True)

    alive = torch.arange(n_starts)

    def objective() -> tuple[Tensor, Tensor]:
        a = torch.exp(log_s[alive])[:, None, None] * (starts[alive] @ torch.linalg.matrix_exp(_skew(w[alive])))
        y = torch.einsum("bij,nj->bni", a, points) + b[alive][:, None, :]
        d = y[:, :, None, :] - mu[None, None]
        maha = torch.einsum("bnki,kij,bnkj->bnk", d, prec, d)
        log_pi = torch.log_softmax(logits[alive], dim=-1)
        ll = torch.logsumexp(log_pi[:, None, :] - 0.5 * (maha + logdet[None, None]), dim=-1).mean(dim=1)
        prior = 0.5 * (b[alive] ** 2).sum(dim=1) / offset_prior ** 2 / points.shape[0]
        return -(ll + AXES * log_s[alive]) + prior, a

    optimizer = torch.optim.Adam([w, log_s, b, logits], lr=lr)
    for step in range(steps):
        if step == prune_at:
            with torch.no_grad():
                loss, _ = objective()
            alive = alive[torch.argsort(loss)[:survivors]]
        optimizer.zero_grad()
        loss, _ = objective()
        loss.sum().backward()
        optimizer.step()
    with torch.no_grad():
        loss, a = objective()
    fits: list[Fit] = []
    for i in np.argsort(loss.numpy()):
        if not np.isfinite(float(loss[i])):
            continue
        matrix = a[i].numpy().copy()
        if all(np.abs(matrix - f.matrix).max() > distinct for f in fits):
            fits.append(Fit(matrix, b[alive[i]].detach().numpy().copy(), float(loss[i])))
        if len(fits) == keep:
            break
    return fits


def energy_scale(x: np.ndarray, reference: RawStats, weights: np.ndarray | None = None) -> float:
    """The gain that makes the windows' mean squared sample match the
    reference's (class mixture ``weights``, default the reference's own)."""
    present = reference.count > 0
    if not present.any():
        return 1.0
    w = reference.count.astype(np.float64) if weights is None else np.asarray(weights, np.float64)
    w = np.where(present, w, 0.0)
    target = float(window_energy(x).mean())
    ref = float((w * reference.energy).sum() / max(w.sum(), 1e-12))
    return float(np.sqrt(ref / target)) if target > 0 and ref > 0 else 1.0
