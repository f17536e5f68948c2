"""The PL* condition and the convergence ball (THEORY.md section 2), sum square loss, float64."""

import numpy as np
import pytest
import torch

from models import plstar, toy2d
from models.train import OptimizerConfig, train


def run(model, data, w0, eta, steps):
    x, y = data.tensors()
    gen = train(lambda w, idx: toy2d.loss(model, w, x, y), np.atleast_2d(w0), data.n, OptimizerConfig("gd", eta),
                steps, grad_tol=0.0)
    snaps = list(gen)
    return np.array([s.params[0] for s in snaps]), np.array([s.loss[0] for s in snaps])


def test_pl_inequality_holds_with_lambda_min_of_the_kernel_at_random_points():
    rng = np.random.default_rng(0)
    for key, xs, ys in [("tanh", [0.7, -1.3], [0.9, 0.2]), ("factor", [1.0], [1.0]), ("linear", [1.0, 2.0], [0.0, 1.0])]:
        model, data = toy2d.make_model(key), toy2d.Data(xs, ys)
        x, y = data.tensors()
        w = torch.as_tensor(rng.uniform(-3, 3, (300, 2)))
        value, grad, _ = toy2d.loss_grad_hessian(model, w, x, y)
        lam = plstar.kernel_min_eig(model, data, w)
        assert torch.all(0.5 * (grad * grad).sum(-1) >= lam * value - 1e-10)


def test_tanh_kernel_degenerates_only_at_the_origin():
    model, data = toy2d.make_model("tanh"), toy2d.Data([1.0], [0.8])
    spec = toy2d.GridSpec(2.0, 81)  # the origin is a grid point
    lam = plstar.kernel_min_eig_grid(model, data, spec)
    i0 = np.unravel_index(np.argmin(lam), lam.shape)
    assert i0 == (40, 40) and lam[i0] < 1e-20
    lam2 = lam.copy()
    lam2[40, 40] = np.inf
    assert lam2.min() > 1e-4


@pytest.mark.parametrize("w0", [(1.2, 1.0), (-0.8, -1.3), (2.0, 0.9), (-2.5, -0.7)])
def test_descent_stays_in_the_ball_and_under_the_bound(w0):
    model, data = toy2d.make_model("tanh"), toy2d.Data([1.0], [0.8])
    b = plstar.ball(model, data, w0)
    assert b.holds and b.radius > 0
    eta = 1.0 / b.beta
    path, loss = run(model, data, w0, eta, 400)
    dist = np.linalg.norm(path - np.array(w0), axis=1)
    assert dist.max() <= b.radius
    bound = b.bound(eta, np.arange(len(loss)))
    assert np.all(loss <= bound * (1 + 1e-9) + 1e-300)
    assert loss[-1] < 1e-6 * loss[0]


def test_ball_reports_failure_where_the_kernel_is_singular():
    model, data = toy2d.make_model("tanh"), toy2d.Data([1.0], [0.8])
    b = plstar.ball(model, data, (0.0, 0.0))  # K(0) = 0
    assert not b.holds and "fails" in b.note
    # far from the solutions the theorem's ball would contain the origin, where K = 0: no valid ball
    far = plstar.ball(model, data, (1.2, 1.6))
    assert not far.holds and far.radius > np.hypot(1.2, 1.6)


@pytest.mark.parametrize("key", ["linear", "custom"])
@pytest.mark.parametrize("xs, ys, w0", [([1.5], [0.7], (0.4, -1.1)), ([1.0, 2.0], [0.0, 1.0], (-0.6, 1.3)),
                                        ([-0.5, 1.2], [0.8, -0.3], (2.0, 0.5))])
def test_linear_model_ball_matches_the_exact_constants(key, xs, ys, w0):
    # f = w1 x + w2 (builtin, or typed in): DF = X with rows (x_i, 1) whatever w is, so K = X X^T is constant and
    # the theorem's constants are exact. Sum loss: mu = lambda_min(X X^T), beta = lambda_max(Hessian X^T X)
    # = lambda_max(X X^T), L(w0) = 1/2 ||X w0 - y||^2, R = 2 sqrt(2 beta L(w0)) / mu.
    model = toy2d.make_model(key, "w1*x + w2" if key == "custom" else None)
    data = toy2d.Data(xs, ys)
    b = plstar.ball(model, data, w0)
    a = np.column_stack([data.x, np.ones(data.n)])
    eig = np.linalg.eigvalsh(a @ a.T)
    mu, beta = eig[0], eig[-1]
    loss0 = 0.5 * np.sum((a @ np.array(w0) - data.y) ** 2)
    assert b.holds
    assert b.loss0 == pytest.approx(loss0, rel=1e-12)
    assert b.mu == pytest.approx(mu, rel=1e-9)
    assert b.beta == pytest.approx(beta, rel=1e-9)
    assert b.radius == pytest.approx(2 * np.sqrt(2 * beta * loss0) / mu, rel=1e-9)
    # gradient descent lands on the projection of w0 onto the solution line, which lies inside the ball
    w_star = toy2d.projection_onto_linear_solutions(data, np.array(w0))
    assert np.linalg.norm(w_star - np.array(w0)) < b.radius
    eta = 1.0 / b.beta
    path, loss = run(model, data, w0, eta, 2000)
    assert np.linalg.norm(path - np.array(w0), axis=1).max() <= b.radius
    # the loss bottoms out at float64 rounding (~1e-32) while the bound keeps falling: allow that floor
    assert np.all(loss <= b.bound(eta, np.arange(len(loss))) * (1 + 1e-9) + 1e-28)
    assert np.linalg.norm(path[-1] - w_star) < 1e-6
