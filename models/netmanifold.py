"""The solution manifold of a real (small) network, too big to draw: slices of it and walks on it.

An MLP 1-h-1 (tanh hidden layer, biases) has p = 3h + 1 parameters; fitting n < p points exactly leaves a
(p - n)-dimensional solution set M = {w : F(w) = y} (THEORY.md section 1). We find a point of M with
Levenberg-Marquardt (damped least squares, with restarts), then *walk* on M: a random step in the tangent
space (the null space of DF) followed by Gauss-Newton projection back onto F(w) = y. Everything here is float64
and works on flat parameter vectors, batched over any leading dimensions.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch

from .toy2d import GridTooLargeError
from .train import check_step_size

MAX_SLICE_RES = 1024  # points a side of a 2D slice: 1024^2 float64 losses are 8 MB
SLICE_BLOCK_BYTES = 64e6  # working memory of one block of slice rows


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


def outputs(net: MLP1D, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """F(w) = (f(x_i; w))_i in numpy, the same formula as ``MLP1D.forward``, batched over w's leading dimensions:
    shape (..., n). Numpy rather than torch because the solvers call it hundreds of times on small arrays in
    between numpy linear algebra, where alternating the two libraries' thread pools costs far more than the work."""
    h = net.width
    w = np.asarray(w, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    a, b, v, c = w[..., :h], w[..., h:2 * h], w[..., 2 * h:3 * h], w[..., 3 * h:]
    z = np.tanh(a[..., None, :] * x[:, None] + b[..., None, :])  # (..., n, h)
    return (z * v[..., None, :]).sum(-1) + c


def residual(net: MLP1D, w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """F(w) - y, shape (..., n)."""
    return outputs(net, w, x) - np.asarray(y, dtype=np.float64)


def jacobian(net: MLP1D, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """DF(w), shape (n, p), in closed form: with z = tanh(a x + b) per hidden unit,
    df/da_k = v_k (1 - z_k^2) x, df/db_k = v_k (1 - z_k^2), df/dv_k = z_k, df/dc = 1 (checked against autograd in
    the tests; much cheaper than it, which matters for the hundreds of damped steps of ``find_solution``)."""
    h = net.width
    w = np.asarray(w, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    a, b, v = w[:h], w[h:2 * h], w[2 * h:3 * h]
    z = np.tanh(x[:, None] * a + b)  # (n, h)
    s = v * (1.0 - z * z)
    return np.concatenate([s * x[:, None], s, z, np.ones((x.size, 1))], axis=1)


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


class NoSolutionFound(RuntimeError):
    """No point of M = {w : F(w) = y} was found from any of the initializations tried; the message says how
    close the best attempt came."""


def levenberg_marquardt(net: MLP1D, w: np.ndarray, x: np.ndarray, y: np.ndarray, tol: float = 1e-13,
                        iters: int = 3000, deadline: float | None = None) -> tuple[np.ndarray, float]:
    """Damped least squares on F(w) = y from ``w``; returns the last point and its ||F(w) - y||.

    Each step is w <- w - J^T (J J^T + lam I)^-1 r, which equals (J^T J + lam I)^-1 J^T r but solves an n x n
    system. The damping lam follows the gain ratio (Nielsen's rule): near a solution it falls towards 0 and the
    step becomes the minimum-norm Gauss-Newton step (quadratic convergence); where the linear model is poor, or
    DF(w) loses rank on the way, it grows and the step turns into a short gradient step. So, unlike ``project``,
    it never needs DF to keep full rank. It stops at ||r|| < tol, after ``iters`` steps, at a stationary point
    with a non-zero residual (J^T r = 0: a local minimum of the loss that is not a solution), when no damping
    gives a decrease, or at ``deadline`` (a time.monotonic() value).
    """
    w = np.array(w, dtype=np.float64)
    r = residual(net, w, x, y)
    cost = 0.5 * float(r @ r)
    lam, nu = None, 2.0
    eye = np.eye(len(r))
    for _ in range(iters):
        if not np.isfinite(cost) or np.sqrt(2 * cost) < tol:
            break
        if deadline is not None and time.monotonic() > deadline:
            break
        j = jacobian(net, w, x)
        k = j @ j.T
        g = j.T @ r
        scale = float(np.max(np.diag(k)))
        if not np.isfinite(scale) or np.linalg.norm(g) <= 1e-15 * max(scale, 1e-300) ** 0.5 * np.sqrt(2 * cost):
            break  # stationary with a residual left: a local minimum of the loss, not a solution
        if lam is None:
            lam = 1e-3 * scale
        while True:
            if lam > 1e16 * scale:
                return w, float(np.sqrt(2 * cost))  # no damping gives a decrease any more
            try:
                step = j.T @ np.linalg.solve(k + lam * eye, r)
            except np.linalg.LinAlgError:
                lam, nu = lam * nu, nu * 2
                continue
            w_new = w - step
            r_new = residual(net, w_new, x, y)
            cost_new = 0.5 * float(r_new @ r_new)
            predicted = 0.5 * float(step @ (lam * step + g))  # decrease the damped linear model promises
            rho = (cost - cost_new) / predicted if predicted > 0 else -1.0
            if np.isfinite(cost_new) and rho > 0:
                w, r, cost = w_new, r_new, cost_new
                lam *= max(1 / 3, 1 - (2 * rho - 1) ** 3)
                nu = 2.0
                break
            lam, nu = lam * nu, nu * 2
    return w, float(np.sqrt(2 * cost))


def find_solution(net: MLP1D, x: np.ndarray, y: np.ndarray, seed: int = 0, restarts: int = 10,
                  tol: float = 1e-10, iters: int = 3000, cond_max: float = 1e12,
                  max_seconds: float | None = None) -> np.ndarray:
    """A point of M = {w : F(w) = y}, by Levenberg-Marquardt from the initializations net.init(seed + 97 k),
    k = 0, 1, ..., restarts - 1, in turn, each for at most ``iters`` damped steps (and all of them together for at
    most ``max_seconds``, if given: the search then gives up with NoSolutionFound saying so).

    A start counts only if its end point is verified: ||F(w) - y|| < ``tol`` from a fresh forward pass. The first
    verified solution where DF(w) has full rank n (condition number of J J^T under ``cond_max``, so M's tangent
    space, which ``walk`` needs, is defined there) is returned; a verified but rank-deficient one only when no
    start gives a full-rank one. Raises NoSolutionFound, with the smallest residual reached, when no start
    converges (for instance contradictory data, two equal x with different y, or n too close to p = 3h + 1).
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape or x.size == 0:
        raise ValueError("the data need the same, non-zero number of x and y values")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("the data must be finite numbers")
    if isinstance(restarts, bool) or not isinstance(restarts, (int, np.integer)) or restarts < 1:
        raise ValueError(f"restarts must be a whole number >= 1, got {restarts!r}")
    deadline = None if max_seconds is None else time.monotonic() + float(max_seconds)
    best_res, fallback, tried = np.inf, None, 0
    for k in range(restarts):
        if deadline is not None and time.monotonic() > deadline:
            break
        tried += 1
        w, _ = levenberg_marquardt(net, net.init(seed + 97 * k), x, y, iters=iters, deadline=deadline)
        if not np.all(np.isfinite(w)):
            continue
        res = float(np.linalg.norm(residual(net, w, x, y)))
        best_res = min(best_res, res)
        if res < tol:
            s = np.linalg.svd(jacobian(net, w, x), compute_uv=False)
            if s[-1] ** 2 > s[0] ** 2 / cond_max:
                return w
            fallback = w if fallback is None else fallback
    if fallback is not None:
        return fallback
    n, p = x.size, net.n_params
    hint = (f"n = {n} >= p = {p}: more equations than parameters" if n >= p else
            "the data may have no exact fit (e.g. equal x with different y), or n is too close to p "
            f"= {p} for this width")
    timed_out = deadline is not None and time.monotonic() > deadline
    starts = (f"{tried} of {restarts} initializations (gave up after {max_seconds:g} s)" if timed_out else
              f"{restarts} initializations")
    raise NoSolutionFound(f"no solution of F(w) = y found for MLP 1-{net.width}-1 on {n} points from {starts} "
                          f"(Levenberg-Marquardt): the smallest ||F(w) - y|| reached was {best_res:.4g}; {hint}")


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
    A step size that is not a positive finite number, or a negative step count, is refused by the call itself
    (ValueError), before the first sample.
    """
    step_size = check_step_size(step_size, "step size")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"the number of walk steps must be a whole number >= 0, got {steps!r}")
    return _walk(net, x, y, w_start, int(steps), step_size, seed)


def _walk(net: MLP1D, x: np.ndarray, y: np.ndarray, w_start: np.ndarray, steps: int, step_size: float,
          seed: int) -> Generator[WalkStep, None, str]:
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
    """L(center + a d1 + b d2) on a res x res grid of (a, b) in [-extent, extent]^2, vectorized.

    ``res`` is checked before anything is allocated: at most MAX_SLICE_RES points a side (GridTooLargeError).
    The grid is evaluated in blocks of rows of at most SLICE_BLOCK_BYTES of working memory each (parameter
    vectors and the network's (n, h) activations), so even the largest slice of a wide net stays small.
    """
    if isinstance(res, bool) or not isinstance(res, (int, np.integer)) or res < 2:
        raise ValueError(f"the slice resolution must be a whole number of at least 2 points a side, got {res!r}")
    if res > MAX_SLICE_RES:
        raise GridTooLargeError(f"a {res} x {res} slice is too fine: at most {MAX_SLICE_RES} x {MAX_SLICE_RES} "
                                "points here")
    if not (np.isfinite(extent) and extent > 0):
        raise ValueError(f"the slice extent must be a positive finite number, got {extent}")
    res = int(res)
    n = int(np.size(x))
    per_point = 8 * (net.n_params + 4 * n * net.width + 2 * n + 4)  # bytes of working memory per grid point
    if res * per_point > SLICE_BLOCK_BYTES * 16:
        raise GridTooLargeError(f"one row of a {res}-point slice of MLP 1-{net.width}-1 on {n} points needs "
                                f"{res * per_point / 1e9:.1f} GB: use a coarser slice or a smaller problem")
    rows = max(1, int(SLICE_BLOCK_BYTES // (res * per_point)))
    t = np.linspace(-extent, extent, res)
    out = np.empty((res, res))
    for i0 in range(0, res, rows):
        a = t[i0:i0 + rows]
        w = center + a[:, None, None] * d1 + t[None, :, None] * d2
        out[i0:i0 + rows] = loss(net, w, x, y)
    return t, out


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


def walk_run(width: int, n_points: int, seed: int, steps: int, step_size: float, device: str = "cpu",
             search_seconds: float = 60.0):
    """The generator a lab streams: a solution for MLP 1-width-1 on n_points, then a walk from it.
    The step size is checked first, before the (costlier) search for a solution, which gives up after
    ``search_seconds`` (NoSolutionFound)."""
    check_step_size(step_size, "step size")
    net = MLP1D(width)
    x, y = make_data(n_points, seed)
    w = find_solution(net, x, y, seed, max_seconds=search_seconds)
    return walk(net, x, y, w, steps, step_size, seed)
