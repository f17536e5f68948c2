"""The ntk lab's engine against THEORY.md sections 2 and 3: kernels, infinite-width limit, linearized dynamics."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from models.ntk import (
    ACTIVATIONS,
    NTKNet,
    NTKSpec,
    analytic_relu_ntk,
    empirical_ntk,
    jacobian,
    kernel_prediction,
    lambda_max,
    loglog_slope,
    mc_ntk,
    ntk_torchfunc,
    relative_change,
)


def _points(n_circle: int = 12, n_extra: int = 6, seed: int = 0) -> torch.Tensor:
    """Points on the unit circle (the trap of THEORY.md section 3) plus a few inside it."""
    g = torch.Generator().manual_seed(seed)
    ang = torch.linspace(0, 2 * math.pi, n_circle + 1, dtype=torch.float64)[:-1]
    x = torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    return torch.cat([x, 0.5 * torch.randn(n_extra, 2, generator=g, dtype=torch.float64)])


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_empirical_ntk_is_jacobian_gram(depth, activation, parameterization):
    spec = NTKSpec(in_dim=3, width=13, depth=depth, activation=activation, parameterization=parameterization,
                   dtype=torch.float64)
    net = NTKNet(spec, seed=depth)
    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    J = jacobian(net, x)
    assert J.shape == (9, spec.param_count)
    K = empirical_ntk(net, x)
    assert relative_change(K, J @ J.T) < 1e-10
    assert torch.equal(K, K.T) or float((K - K.T).abs().max()) < 1e-12 * float(K.abs().max())
    eig = torch.linalg.eigvalsh(K)
    assert float(eig[0]) >= -1e-10 * float(eig[-1])


@pytest.mark.parametrize("activation,parameterization", [("relu", "ntk"), ("tanh", "standard"), ("gelu", "ntk"),
                                                         ("erf", "standard")])
def test_torchfunc_recipe_matches_float32(activation, parameterization):
    net = NTKNet(NTKSpec(2, 64, 2, activation, parameterization, torch.float32), seed=3)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(2))
    ours, ref = empirical_ntk(net, x), ntk_torchfunc(net, x)
    assert ours.dtype == ref.dtype == torch.float32
    assert relative_change(ours, ref) < 1e-5


def test_same_weights_in_both_dtypes():
    a = NTKNet(NTKSpec(2, 8, 2, dtype=torch.float32), seed=5)
    b = NTKNet(NTKSpec(2, 8, 2, dtype=torch.float64), seed=5)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q.float())


def test_analytic_relu_depth1_closed_form():
    # THEORY.md: Theta = kappa_1 + kappa_0 Sigma_1 (+ 1 for the output bias); at x = x' kappa_1 = Sigma/2, kappa_0 = 1/2
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    sigma, theta = analytic_relu_ntk(x, 1)
    s11 = 1 / 2 + 1  # x.x/d + 1
    assert float(theta[0, 0]) == pytest.approx(s11 / 2 + 1 + 0.5 * s11, rel=1e-14)
    s12 = 1.0  # orthogonal inputs: x.x'/d + 1 = 1, cos = 1/1.5
    c = s12 / s11
    th = math.acos(c)
    k1 = s11 * (math.sin(th) + (math.pi - th) * c) / (2 * math.pi)
    k0 = (math.pi - th) / (2 * math.pi)
    assert float(sigma[0, 1]) == pytest.approx(k1 + 1, rel=1e-14)
    assert float(theta[0, 1]) == pytest.approx(k1 + 1 + k0 * s12, rel=1e-14)
    s_blk, t_blk = analytic_relu_ntk(x[:1], 1, x2=x[1:])
    assert float(t_blk[0, 0]) == pytest.approx(float(theta[0, 1]), rel=1e-14)


@pytest.mark.parametrize("depth", [1, 2])
def test_analytic_relu_matches_monte_carlo(depth):
    x = _points()
    _, theta = analytic_relu_ntk(x, depth)
    mean, se = mc_ntk(NTKSpec(2, 2048, depth, "relu", "ntk", torch.float64), x, seeds=16)
    iu = torch.triu_indices(len(x), len(x))
    z = ((mean - theta) / se)[iu[0], iu[1]]
    assert float(z.abs().max()) < 4.5, float(z.abs().max())
    # the test has power: a kernel off by 5% (a dropped constant) is many standard errors away
    z_wrong = ((mean - 1.05 * theta) / se)[iu[0], iu[1]]
    assert float(z_wrong.abs().max()) > 10


@pytest.mark.parametrize("depth,widths,seeds", [(1, [64, 128, 256, 512, 1024, 2048, 4096], 32),
                                                (2, [64, 128, 256, 512, 1024, 2048], 24)])
def test_kernel_distance_to_limit_falls_like_inverse_sqrt_width(depth, widths, seeds):
    x = _points()
    _, theta = analytic_relu_ntk(x, depth)
    rms = []
    for m in widths:
        spec = NTKSpec(2, m, depth, "relu", "ntk", torch.float32)
        errs = [relative_change(empirical_ntk(NTKNet(spec, seed=s), x), theta) for s in range(seeds)]
        rms.append(math.sqrt(np.mean(np.square(errs))))
    slope = loglog_slope(widths, rms)
    assert -0.65 <= slope <= -0.35, (slope, rms)


def _random_features(x: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    # THEORY.md section 4: phi(x) = relu(V x / sqrt(d)) / sqrt(p)
    return torch.relu(x @ V.T / math.sqrt(x.shape[1])) / math.sqrt(V.shape[0])


def test_gd_on_linear_model_follows_kernel_prediction():
    g = torch.Generator().manual_seed(7)
    n, n_test, d, p = 20, 15, 3, 200
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    xt = torch.randn(n_test, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    V = torch.randn(p, d, generator=g, dtype=torch.float64)
    a = torch.randn(p, generator=g, dtype=torch.float64).requires_grad_(True)
    phi, phit = _random_features(x, V), _random_features(xt, V)
    K, Kx = phi @ phi.T, phit @ phi.T  # the model's tangent kernel: f = phi . a is linear in a
    f0, f0t = (phi @ a).detach(), (phit @ a).detach()
    eta = 0.9 / lambda_max(K)
    times = [0, 1, 10, 100, 400]
    got_r, got_t = [], []
    for step in range(times[-1] + 1):
        if step in times:
            with torch.no_grad():
                got_r.append(phi @ a - y)
                got_t.append(phit @ a)
        loss = 0.5 * ((phi @ a - y) ** 2).sum()  # sum loss
        (grad,) = torch.autograd.grad(loss, a)
        with torch.no_grad():
            a -= eta * grad
    resid, test = kernel_prediction(K, Kx, f0, f0t, y, eta, np.array(times))
    assert resid.shape == (len(times), n) and test.shape == (len(times), n_test)
    for k in range(len(times)):
        assert relative_change(resid[k], got_r[k]) < 1e-10
        assert float((test[k] - got_t[k]).abs().max()) < 1e-10 * float(got_t[k].abs().max() + 1)
    # scalar t, and the kernel-regression form with K^-1 (K is invertible here: p > n)
    r, ft = kernel_prediction(K, Kx, f0, f0t, y, eta, 100)
    assert relative_change(r, got_r[3]) < 1e-10
    M = torch.eye(n, dtype=torch.float64) - eta * K
    form = f0t + Kx @ torch.linalg.solve(K, (torch.eye(n, dtype=torch.float64) - torch.linalg.matrix_power(M, 100))
                                         @ (y - f0))
    assert relative_change(ft, form) < 1e-8
    assert relative_change(ft, got_t[3]) < 1e-10


def test_kernel_prediction_with_a_singular_kernel():
    # a zero eigenvalue (features phi(x1) = (sqrt 2, 0), phi(x2) = 0, phi(x_test) = (1/sqrt 2, 0)): that direction
    # of the residual never moves, and the test output (1 - 0.8^t) / 2 stays finite
    K = torch.diag(torch.tensor([2.0, 0.0], dtype=torch.float64))
    r, ft = kernel_prediction(K, torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.zeros(2),
                              torch.zeros(1), torch.tensor([1.0, 1.0]), 0.1, 10)
    assert r.tolist() == pytest.approx([-(0.8**10), -1.0], rel=1e-14)
    assert float(ft[0]) == pytest.approx((1 - 0.8**10) / 2, rel=1e-13)


def _lambda_max_by_width(parameterization, depth, widths, seeds=3):
    x = _points()
    out = []
    for m in widths:
        spec = NTKSpec(2, m, depth, "relu", parameterization, torch.float32)
        out.append(np.mean([lambda_max(empirical_ntk(NTKNet(spec, seed=s), x)) for s in range(seeds)]))
    return out


@pytest.mark.parametrize("depth", [1, 2])
def test_lambda_max_grows_linearly_in_standard_bounded_in_ntk(depth):
    widths = [128, 256, 512, 1024, 2048]
    std = _lambda_max_by_width("standard", depth, widths)
    assert 0.8 <= loglog_slope(widths, std) <= 1.2, std
    ntk = _lambda_max_by_width("ntk", depth, widths)
    assert abs(loglog_slope(widths, ntk)) < 0.1, ntk
    assert max(ntk) / min(ntk) < 1.5, ntk


def test_spec_validation_and_mc_shapes():
    with pytest.raises(ValueError):
        NTKSpec(activation="sigmoid")
    with pytest.raises(ValueError):
        NTKSpec(depth=5)
    with pytest.raises(ValueError):
        NTKSpec(parameterization="mup")
    with pytest.raises(ValueError):
        empirical_ntk(NTKNet(NTKSpec(3, 4, 1)), torch.zeros(5, 2))
    mean, se = mc_ntk(NTKSpec(2, 16, 1, "tanh"), torch.zeros(4, 2), seeds=[1, 2, 3])
    assert mean.shape == se.shape == (4, 4) and bool((se >= 0).all())


def test_module_never_imports_qt():
    code = ("import sys, models.ntk\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'OpenGL', 'visualizer')]\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
