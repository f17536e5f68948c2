"""The PL* condition and uniform conditioning made concrete for the two-parameter models (THEORY.md section 2).

Sum square loss L(w) = 1/2 ||F(w) - y||^2, tangent kernel K(w) = DF DF^T. If lambda_min(K) >= mu on a ball
B(w0, R) then L is mu-PL* there (1/2 ||grad L||^2 >= mu L). If moreover L is beta-smooth on the ball and
R = 2 sqrt(2 beta L(w0)) / mu, gradient descent with step eta <= 1/beta stays in the ball and
L(w_t) <= (1 - eta mu)^t L(w0).

mu and beta are estimated by dense sampling of the ball (polar grid, vectorized): mu as the smallest
lambda_min(K), beta as the largest eigenvalue of the Hessian of L. Since R depends on mu and beta, the ball
is found by a fixed-point iteration starting from the values at w0. For a model linear in w (f = w1 x + w2) DF is
the constant X (rows (x_i, 1)), so the constants are exact: mu = lambda_min(X X^T), beta = lambda_max(X^T X)
= lambda_max(X X^T) (the sum loss's Hessian is X^T X), and the ball closes at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import toy2d


@dataclass
class PLBall:
    w0: np.ndarray
    loss0: float
    mu: float
    beta: float
    radius: float
    holds: bool
    note: str

    def bound(self, eta: float, steps: np.ndarray) -> np.ndarray:
        """(1 - eta mu)^t L(w0): the guaranteed loss after t steps (valid when eta <= 1/beta)."""
        return self.loss0 * np.power(max(0.0, 1.0 - eta * self.mu), np.asarray(steps, dtype=float))


def kernel_min_eig(model: toy2d.ToyModel, data: toy2d.Data, w: torch.Tensor) -> torch.Tensor:
    """lambda_min(K(w)) for a batch of points (..., 2)."""
    x, _ = data.tensors(w.device, w.dtype)
    k = toy2d.tangent_kernel(model, w, x)
    return torch.linalg.eigvalsh(k)[..., 0]


def kernel_min_eig_grid(model: toy2d.ToyModel, data: toy2d.Data, spec: toy2d.GridSpec) -> np.ndarray:
    """lambda_min(K) over the whole grid, indexed [i over w1, j over w2]."""
    return kernel_min_eig(model, data, toy2d.grid_points(spec)).numpy()


def _disc(w0: np.ndarray, radius: float, n_r: int = 48, n_t: int = 96) -> torch.Tensor:
    r = np.sqrt(np.linspace(0, 1, n_r))[:, None] * radius
    t = np.linspace(0, 2 * np.pi, n_t, endpoint=False)[None, :]
    pts = np.stack([w0[0] + r * np.cos(t), w0[1] + r * np.sin(t)], axis=-1).reshape(-1, 2)
    return torch.as_tensor(pts)


def _min_kernel_in_ball(model, data, pts: torch.Tensor, w0: np.ndarray, radius: float, steps: int = 60) -> float:
    """Smallest lambda_min(K) in the ball: the sampled minimum, then refined from the five lowest samples by
    projected gradient descent on lambda_min (sampling alone misses isolated zeros such as tanh's origin)."""
    lam = kernel_min_eig(model, data, pts)
    best = float(lam.min())
    x, _ = data.tensors()
    c = torch.as_tensor(w0)
    w = pts[torch.argsort(lam)[:5]].clone()
    lr = 0.05 * radius
    for _ in range(steps):
        w.requires_grad_(True)
        with torch.enable_grad():
            f = model.forward(w, x)
            rows = []
            for i in range(x.shape[0]):
                (row,) = torch.autograd.grad(f[:, i].sum(), w, create_graph=True, allow_unused=True)
                rows.append(torch.zeros_like(w) if row is None else row)
            j = torch.stack(rows, dim=-2)
            val = torch.linalg.eigvalsh(j @ j.transpose(-1, -2))[:, 0]
            if not val.requires_grad:
                # DF does not depend on w (a model linear in w, such as w1*x + w2): K is the same matrix
                # everywhere, so the sampled minimum is already exact and there is nothing to descend
                return min(best, float(val.detach().min()))
            (g,) = torch.autograd.grad(val.sum(), w)
        with torch.no_grad():
            best = min(best, float(val.min()))
            step = g / (g.norm(dim=-1, keepdim=True) + 1e-300) * lr
            w = w - step
            d = w - c
            n = d.norm(dim=-1, keepdim=True)
            w = torch.where(n > radius, c + d * (radius / n), w)
        lr *= 0.93
    return min(best, float(kernel_min_eig(model, data, w.detach()).min()))


def ball(model: toy2d.ToyModel, data: toy2d.Data, w0, iters: int = 12) -> PLBall:
    """The ball B(w0, R) of the PL* convergence theorem with sampled mu and beta (see the module doc)."""
    w0 = np.asarray(w0, dtype=np.float64)
    x, y = data.tensors()
    wt = torch.as_tensor(w0[None, :])
    l0, _, h0 = toy2d.loss_grad_hessian(model, wt, x, y)
    loss0 = float(l0[0])
    mu = float(kernel_min_eig(model, data, wt)[0])
    beta = float(torch.linalg.eigvalsh(h0)[0, -1])
    if loss0 == 0.0:
        return PLBall(w0, 0.0, mu, beta, 0.0, True, "the start is already a solution")
    radius = 0.0
    converged = False
    mu_floor = 1e-6 * mu  # a ball whose kernel gets a million times worse than at its centre has no use
    for _ in range(iters):
        if mu <= mu_floor or beta <= 0:
            break
        radius = 2.0 * np.sqrt(2.0 * beta * loss0) / mu
        pts = _disc(w0, radius)
        _, _, h = toy2d.loss_grad_hessian(model, pts, x, y)
        mu_b = _min_kernel_in_ball(model, data, pts, w0, radius)
        beta_b = float(torch.linalg.eigvalsh(h)[:, -1].max())
        if mu_b >= mu * (1 - 1e-9) and beta_b <= beta * (1 + 1e-9):
            converged = True  # the constants hold on the whole ball they define
            break
        # a small margin lets the fixed point close instead of creeping towards it
        mu, beta = 0.95 * min(mu, mu_b), 1.05 * max(beta, beta_b)
    if mu <= max(mu_floor, 1e-300):
        return PLBall(w0, loss0, max(mu, 0.0), beta, radius, False,
                      "PL* fails here: the tangent kernel is (nearly) singular inside the ball (μ ≈ 0)")
    holds = converged
    note = (f"μ = {mu:.3g}, β = {beta:.3g}, R = 2√(2βL(w₀))/μ = {radius:.3g}" if holds else
            f"no ball closes here: as it grows, μ keeps falling (now {mu:.3g}) and R keeps growing "
            f"(R = {radius:.3g}); start closer to the solutions")
    return PLBall(w0, loss0, mu, beta, radius, holds, note)
