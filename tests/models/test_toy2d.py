"""The engine against THEORY.md section 1 and 2, in float64."""

import numpy as np
import pytest
import torch

from models import toy2d
from models.train import OptimizerConfig, run_to_end, train


def descend(model, data, w0, lr=0.1, steps=20000, optimizer="gd"):
    x, y = data.tensors()
    gen = train(lambda w, idx: toy2d.loss(model, w, x, y), np.atleast_2d(w0), data.n,
                OptimizerConfig(optimizer, lr), steps)
    return run_to_end(gen)


@pytest.mark.parametrize("w0", [(2.0, -1.0), (-2.5, 2.5), (0.0, 0.0), (1.3, 2.9)])
@pytest.mark.parametrize("xy", [([1.5], [0.7]), ([-0.4], [1.2]), ([2.0], [-1.0])])
def test_linear_model_lands_on_the_orthogonal_projection(w0, xy):
    data = toy2d.Data(*xy)
    model = toy2d.make_model("linear")
    snaps, result = descend(model, data, w0, lr=0.1)
    landing = snaps[-1].params[0]
    proj = toy2d.projection_onto_linear_solutions(data, np.array(w0))
    assert result.reason == "converged"
    assert np.linalg.norm(landing - proj) < 1e-6
    # and the projection really is the nearest solution: on the line, and the offset is normal to it
    a = np.array([data.x[0], 1.0])
    assert abs(a @ proj - data.y[0]) < 1e-12
    d = proj - np.array(w0)
    assert abs(d[0] * a[1] - d[1] * a[0]) < 1e-12


def test_linear_projection_differs_from_a_non_orthogonal_guess():
    data = toy2d.Data([1.0], [1.0])
    proj = toy2d.projection_onto_linear_solutions(data, np.array([2.0, 2.0]))
    assert np.allclose(proj, [0.5, 0.5]) and not np.allclose(proj, [2.0, -1.0])


@pytest.mark.parametrize("key, expr, xy", [
    ("linear", None, ([1.5], [0.7])),
    ("tanh", None, ([1.0], [0.8])),
    ("factor", None, ([1.2], [-0.9])),
    ("custom", "w2*sin(w1*x) + 0.2*w1", ([1.0], [0.5])),
    ("custom", "w1**2 + w2**2 - x", ([2.0], [0.0])),
    ("tanh", None, ([1.0, 2.0], [0.8, 1.2])),
    ("custom", "w1*x + w2*x**2", ([1.0, -1.0], [0.5, 0.2])),
])
def test_drawn_zero_loss_set_has_loss_under_1e_10(key, expr, xy):
    model = toy2d.make_model(key, expr)
    data = toy2d.Data(*xy)
    grid = toy2d.evaluate_grid(model, data, toy2d.GridSpec(3.0, 201))
    sol = toy2d.solution_set(model, data, grid)
    pts = np.concatenate(sol.curves + [sol.points]) if sol.curves else sol.points
    assert len(pts) > 0
    x, y = data.tensors()
    loss = toy2d.loss(model, torch.as_tensor(pts), x, y).numpy()
    assert loss.max() < 1e-10
    if data.n == 1:
        assert sum(len(c) for c in sol.curves) > 50  # a curve, not a few points


def test_two_point_tanh_solutions_match_the_closed_form():
    # w2 tanh(w1) = 0.8 and w2 tanh(2 w1) = 1.2  =>  tanh(2a)/tanh(a) = 1.5 = 2 / (1 + tanh(a)^2)
    model, data = toy2d.make_model("tanh"), toy2d.Data([1.0, 2.0], [0.8, 1.2])
    sol = toy2d.solution_set(model, data, toy2d.evaluate_grid(model, data, toy2d.GridSpec(3.0, 201)))
    t = np.sqrt(2 / 1.5 - 1)
    a = np.arctanh(t)
    want = np.array([[a, 0.8 / t], [-a, -0.8 / t]])
    got = sol.points[np.argsort(-sol.points[:, 0])]
    assert got.shape == (2, 2)
    assert np.allclose(got, want, atol=1e-9)


def test_pl_identity_for_tanh_one_point():
    """1/2 ||grad L||^2 = K(w) L(w) for one data point (THEORY.md section 2)."""
    model, data = toy2d.make_model("tanh"), toy2d.Data([0.7], [0.9])
    x, y = data.tensors()
    w = torch.as_tensor(np.random.default_rng(0).uniform(-3, 3, (200, 2)))
    value, grad, _ = toy2d.loss_grad_hessian(model, w, x, y)
    k = toy2d.tangent_kernel(model, w, x)[:, 0, 0]
    lhs = 0.5 * (grad * grad).sum(-1)
    assert torch.allclose(lhs, k * value, rtol=1e-12, atol=1e-15)
    # and PL* with mu = lambda_min(K) holds for two points too
    data2 = toy2d.Data([0.7, -1.3], [0.9, 0.2])
    x2, y2 = data2.tensors()
    value2, grad2, _ = toy2d.loss_grad_hessian(model, w, x2, y2)
    lam = torch.linalg.eigvalsh(toy2d.tangent_kernel(model, w, x2))[:, 0]
    assert torch.all(0.5 * (grad2 * grad2).sum(-1) >= lam * value2 - 1e-12)


def test_grid_is_vectorized_and_matches_the_loop():
    model, data = toy2d.make_model("tanh"), toy2d.Data([1.0, -0.5], [0.8, 0.3])
    spec = toy2d.GridSpec(2.0, 31)
    fast = toy2d.evaluate_grid(model, data, spec).loss
    slow = toy2d.grid_by_loop(model, data, spec)
    assert np.allclose(fast, slow, rtol=0, atol=1e-13)
    # orientation: index [i, j] is (w1[i], w2[j])
    w1, w2 = spec.axes()
    i, j = 3, 20
    direct = 0.5 * sum((w2[j] * np.tanh(w1[i] * xi) - yi) ** 2 for xi, yi in zip(data.x, data.y))
    assert fast[i, j] == pytest.approx(direct, rel=1e-12)


def test_loss_is_non_convex_arbitrarily_close_to_the_curved_manifold():
    model, data = toy2d.make_model("tanh"), toy2d.Data([1.0], [0.8])
    x, y = data.tensors()
    # points on the manifold, nudged off it by 1e-6 to either side: in every such neighbourhood the Hessian
    # has a negative eigenvalue (J^T J is singular along the tangent; r * f'' is negative on one side)
    w1 = np.linspace(-2.5, -0.3, 50)
    on = np.column_stack([w1, 0.8 / np.tanh(w1)])
    neg = []
    for side in (+1e-6, -1e-6):
        near = torch.as_tensor(on + np.array([0.0, side]))
        _, _, h = toy2d.loss_grad_hessian(model, near, x, y)
        neg.append((toy2d.min_eig_2x2(h) < 0).numpy())
    assert np.all(neg[0] | neg[1])
    # the linear model's loss is convex everywhere
    lin = toy2d.make_model("linear")
    _, _, h = toy2d.loss_grad_hessian(lin, torch.as_tensor(on), x, y)
    assert (toy2d.min_eig_2x2(h) >= -1e-12).all()


def test_grid_too_large_is_refused():
    with pytest.raises(toy2d.GridTooLargeError, match="too large"):
        toy2d.GridSpec(3.0, 5000)


def test_curvature_grid_matches_pointwise_hessian():
    model, data = toy2d.make_model("factor"), toy2d.Data([1.0], [1.0])
    spec = toy2d.GridSpec(2.0, 11)
    g = toy2d.evaluate_grid(model, data, spec, curvature=True)
    w1, w2 = spec.axes()
    i, j = 2, 7
    a, b = w1[i], w2[j]
    # L = 1/2 (ab - 1)^2 : H = [[b^2, 2ab - 1], [2ab - 1, a^2]]
    h = np.array([[b * b, 2 * a * b - 1], [2 * a * b - 1, a * a]])
    assert g.min_hessian_eig[i, j] == pytest.approx(np.linalg.eigvalsh(h)[0], rel=1e-10)


def test_no_solutions_in_view_is_reported_empty():
    model, data = toy2d.make_model("custom", "w1**2 + w2**2 + 1"), toy2d.Data([1.0], [0.0])
    sol = toy2d.solution_set(model, data, toy2d.evaluate_grid(model, data, toy2d.GridSpec(3.0, 101)))
    assert sol.empty
