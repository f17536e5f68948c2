"""The solution manifold of a real (small) network, too big to draw: slices of it and walks on it.

An MLP 1-h-1 (tanh hidden layer, biases) has p = 3h + 1 parameters; fitting n < p points exactly leaves a
(p - n)-dimensional solution set M = {w : F(w) = y} (THEORY.md section 1). We find a point of M with
Gauss-Newton, then *walk* on M: a random step in the tangent space (the null space of DF) followed by
Gauss-Newton projection back onto F(w) = y. Everything here is float64 and works on flat parameter vectors,
batched over any leading dimensions.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MLP1D:
    """f(x; w) = sum_k v_k tanh(a_k x + b_k) + c, with w = (a (h), b (h), v (h), c)."""

    width: int

    @property
    def n_params(self) -> int:
        return 3 * self.width + 1

    def forward(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self.width
        a, b, v, c = w[..., :h], w[..., h:2 * h], w[..., 2 * h:3 * h], w[..., 3 * h:]
        z = torch.tanh(a.unsqueeze(-2) * x.unsqueeze(-1) + b.unsqueeze(-2))  # (..., n, h)
        return (z * v.unsqueeze(-2)).sum(-1) + c

    def init(self, seed: int = 0) -> np.ndarray:
        g = np.random.default_rng(seed)
        h = self.width
        return np.concatenate([g.normal(0, 1.5, h), g.normal(0, 1.0, h), g.normal(0, 1 / np.sqrt(h), h), [0.0]])


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n points of a smooth target with a little deterministic noise, x in [-2, 2]."""
    g = np.random.default_rng(seed + 1)
    x = np.linspace(-2, 2, n)
    return x, 0.8 * np.sin(1.7 * x) + 0.1 * g.normal(size=n)


class SingularJacobian(RuntimeError):
    """DF(w) lost rank: the tangent space and the projection are no longer defined."""


def residual(net: MLP1D, w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return (net.forward(torch.as_tensor(w), torch.as_tensor(x)) - torch.as_tensor(y)).numpy()


def jacobian(net: MLP1D, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """DF(w), shape (n, p)."""
    xt = torch.as_tensor(x)
    return torch.func.jacrev(lambda p: net.forward(p, xt))(torch.as_tensor(w)).numpy()


def loss(net: MLP1D, w, x, y) -> np.ndarray:
    """Sum square loss 1/2 ||F(w) - y||^2 for one or many parameter vectors."""
    r = residual(net, np.asarray(w), x, y)
    return 0.5 * (r * r).sum(-1)


def project(net: MLP1D, w: np.ndarray, x: np.ndarray, y: np.ndarray, tol: float = 1e-13, iters: int = 50,
            cond_max: float = 1e12) -> np.ndarray:
    """Gauss-Newton with minimum-norm steps w <- w - J^T (J J^T)^-1 r until ||r|| < tol."""
    w = np.array(w, dtype=np.float64)
    for _ in range(iters):
        r = residual(net, w, x, y)
        if np.linalg.norm(r) < tol:
            return w
        j = jacobian(net, w, x)
        k = j @ j.T
        s = np.linalg.svd(k, compute_uv=False)
        if s[-1] <= s[0] / cond_max:
            raise SingularJacobian(f"DF(w) lost rank (condition number of J J^T {s[0] / max(s[-1], 1e-300):.1e})")
        w = w - j.T @ np.linalg.solve(k, r)
    if np.linalg.norm(residual(net, w, x, y)) >= 1e3 * tol:
        raise RuntimeError("Gauss-Newton did not converge onto F(w) = y")
    return w


def find_solution(net: MLP1D, x: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """A point of M from a random initialization (Gauss-Newton, restarting from another seed if needed)."""
    last = None
    for k in range(10):
        try:
            return project(net, net.init(seed + 97 * k), x, y)
        except (SingularJacobian, RuntimeError) as exc:
            last = exc
    raise RuntimeError(f"no solution found from 10 initializations: {last}")


def tangent_dimension(j: np.ndarray, rtol: float = 1e-9) -> int:
    """p minus the numerical rank of DF: the dimension of the solution manifold at this point."""
    s = np.linalg.svd(j, compute_uv=False)
    return int(j.shape[1] - np.sum(s > rtol * s[0]))


@dataclass
class WalkStep:
    step: int
    w: np.ndarray
    loss: float
    tangent_dim: int


def walk(net: MLP1D, x: np.ndarray, y: np.ndarray, w_start: np.ndarray, steps: int, step_size: float = 0.05,
         seed: int = 0) -> Generator[WalkStep, None, str]:
    """Random walk on M: tangent move (the null-space component of a Gaussian step), then projection.

    Yields every accepted sample; returns why it stopped ('completed' or the reason, e.g. a singular Jacobian).
    """
    g = np.random.default_rng(seed)
    w = np.array(w_start, dtype=np.float64)
    j = jacobian(net, w, x)
    yield WalkStep(0, w.copy(), float(loss(net, w, x, y)), tangent_dimension(j))
    for k in range(1, steps + 1):
        v = g.normal(size=w.shape)
        try:
            k_mat = j @ j.T
            v = v - j.T @ np.linalg.solve(k_mat, j @ v)  # tangent component
            v *= step_size / np.linalg.norm(v)
            w = project(net, w + v, x, y)
        except (SingularJacobian, np.linalg.LinAlgError) as exc:
            return f"stopped at step {k}: {exc}"
        except RuntimeError as exc:
            return f"stopped at step {k}: {exc}"
        j = jacobian(net, w, x)
        yield WalkStep(k, w.copy(), float(loss(net, w, x, y)), tangent_dimension(j))
    return "completed"


def pca3(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of the samples on their first three principal components, and the variance ratios."""
    c = samples - samples.mean(0)
    u, s, vt = np.linalg.svd(c, full_matrices=False)
    k = min(3, len(s))
    coords = np.zeros((len(samples), 3))
    coords[:, :k] = c @ vt[:k].T
    var = s**2 / max(np.sum(s**2), 1e-300)
    return coords, var[:3]


def random_plane(p: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two orthonormal random directions in parameter space."""
    g = np.random.default_rng(seed)
    q, _ = np.linalg.qr(g.normal(size=(p, 2)))
    return q[:, 0], q[:, 1]


def slice_loss(net: MLP1D, x, y, center: np.ndarray, d1: np.ndarray, d2: np.ndarray, extent: float,
               res: int) -> tuple[np.ndarray, np.ndarray]:
    """L(center + a d1 + b d2) on a res x res grid of (a, b) in [-extent, extent]^2, vectorized."""
    t = np.linspace(-extent, extent, res)
    a, b = np.meshgrid(t, t, indexing="ij")
    w = center + a[..., None] * d1 + b[..., None] * d2
    return t, loss(net, w, x, y)


def plane_through(w_a: np.ndarray, w_b: np.ndarray, w_c: np.ndarray):
    """Orthonormal directions (d1, d2) of the plane through three points, and their (a, b) coordinates
    relative to w_a."""
    d1 = w_b - w_a
    d1 = d1 / np.linalg.norm(d1)
    v = w_c - w_a
    d2 = v - (v @ d1) * d1
    d2 = d2 / np.linalg.norm(d2)
    coords = np.array([[0.0, 0.0], [(w_b - w_a) @ d1, 0.0], [v @ d1, v @ d2]])
    return d1, d2, coords


def segment_loss(net: MLP1D, x, y, wa: np.ndarray, wb: np.ndarray, n: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """The loss along the straight segment (1 - t) wa + t wb: it rises between two solutions."""
    t = np.linspace(0, 1, n)
    return t, loss(net, wa[None, :] * (1 - t[:, None]) + wb[None, :] * t[:, None], x, y)


def walk_run(width: int, n_points: int, seed: int, steps: int, step_size: float, device: str = "cpu"):
    """The generator a lab streams: a solution for MLP 1-width-1 on n_points, then a walk from it."""
    net = MLP1D(width)
    x, y = make_data(n_points, seed)
    w = find_solution(net, x, y, seed)
    return walk(net, x, y, w, steps, step_size, seed)
