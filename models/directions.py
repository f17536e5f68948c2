"""Directions in parameter space for loss-surface plots (THEORY.md section 6, Li et al. 2018).

A direction is a list of tensors shaped like the model's parameters, in ``model.parameters()`` order.
Filter normalization: Gaussian entries, then each filter (for a linear layer, each output unit's row of weights;
for a convolution, each output channel) rescaled to the norm of the same filter of the trained weights.
Biases and other one-dimensional parameters (batch-norm) get a zero direction unless asked for; when
included, each is rescaled as a whole to its parameter's norm (never normalized twice).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

Direction = list[torch.Tensor]


def params_of(model: nn.Module) -> Direction:
    return [p.detach().clone() for p in model.parameters()]


def flatten(d: Direction) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in d])


def unflatten(v: torch.Tensor, like: Direction) -> Direction:
    out, k = [], 0
    for t in like:
        n = t.numel()
        out.append(v[k:k + n].reshape(t.shape).to(dtype=t.dtype, device=t.device))
        k += n
    return out


def random_direction(model: nn.Module, seed: int, normalize: str | None = "filter",
                     include_bias: bool = False) -> Direction:
    """A Gaussian direction, filter-normalized (``normalize='filter'``) or raw (``None``)."""
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for p in model.parameters():
        w = p.detach()
        d = torch.randn(w.shape, generator=g, dtype=torch.float64).to(dtype=w.dtype, device=w.device)
        if w.dim() <= 1:
            if not include_bias:
                d = torch.zeros_like(w)
            elif normalize == "filter":
                d = d * (w.norm() / d.norm().clamp_min(1e-30))
        elif normalize == "filter":
            rows_w = w.reshape(w.shape[0], -1).norm(dim=1)
            rows_d = d.reshape(d.shape[0], -1).norm(dim=1).clamp_min(1e-30)
            d = d * (rows_w / rows_d).reshape(-1, *([1] * (w.dim() - 1)))
        out.append(d)
    return out


def cosine(d1: Direction, d2: Direction) -> float:
    a, b = flatten(d1).double().cpu(), flatten(d2).double().cpu()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))


def orthogonalize(d1: Direction, d2: Direction) -> Direction:
    """d2 minus its component along d1 (after normalization, so the plane keeps its meaning)."""
    a, b = flatten(d1).double(), flatten(d2).double()
    return unflatten((b - (b @ a) / (a @ a).clamp_min(1e-300) * a), d2)


def pca_directions(checkpoints: np.ndarray, final: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First two principal directions of the offsets theta_i - theta_final (rows of ``checkpoints``), as unit
    vectors, and the explained variance ratio of each."""
    offsets = np.asarray(checkpoints, dtype=np.float64) - np.asarray(final, dtype=np.float64)[None, :]
    _, s, vt = np.linalg.svd(offsets, full_matrices=False)
    var = s**2 / max(float(np.sum(s**2)), 1e-300)
    d1 = vt[0]
    d2 = vt[1] if len(vt) > 1 else np.zeros_like(d1)
    return d1, d2, var[:2]


def align(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Flip ``new`` if it points against ``old``, so that a live-updated PCA plane does not mirror."""
    return -new if float(new @ old) < 0 else new


def align_pair(u: np.ndarray, v: np.ndarray, u_old: np.ndarray, v_old: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order and signs of a new PCA pair matched to the previous one, so a live plane neither swaps its axes
    nor mirrors between updates."""
    if abs(u @ v_old) > abs(u @ u_old) and abs(v @ u_old) > abs(v @ v_old):
        u, v = v, u
    return align(u, u_old), align(v, v_old)


def project(path: np.ndarray, origin: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """Plane coordinates (a, b) of each point: the least-squares solution of origin + a d1 + b d2 ≈ w."""
    basis = np.column_stack([d1, d2])
    coef, *_ = np.linalg.lstsq(basis, (np.asarray(path) - origin).T, rcond=None)
    return coef.T


def lift(coords: np.ndarray, origin: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    return origin[None, :] + coords[:, :1] * d1[None, :] + coords[:, 1:2] * d2[None, :]


def distance_to_plane(path: np.ndarray, origin: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """How far each point lies from the plane: the part of the path the picture cannot show."""
    path = np.asarray(path)
    return np.linalg.norm(path - lift(project(path, origin, d1, d2), origin, d1, d2), axis=1)


def plane_through(w0: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plane through three models: origin w0, directions w1 - w0 and w2 - w0 (so they sit at (1,0), (0,1))."""
    return np.asarray(w0), np.asarray(w1) - w0, np.asarray(w2) - w0
