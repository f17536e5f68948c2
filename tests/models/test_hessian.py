"""models.hessian against the explicit Hessian on small networks (THEORY.md section 7). No Qt, float64, seeded."""

from __future__ import annotations

import math

import pytest
import torch

from models.hessian import explicit_hessian, hvp_fn, lanczos_top, power_iteration, random_vector
from models.ntk import NTKNet, NTKSpec

LOSSES = {
    "sum": lambda f, y: ((f - y) ** 2).sum(),
    "mean": lambda f, y: 0.5 * ((f - y) ** 2).mean(),
}


def _data(n: int = 10):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x, torch.sin(2 * x[:, 0]) * torch.cos(x[:, 1])


def _problem(activation: str, loss: str, seed: int = 0):
    net = NTKNet(NTKSpec(in_dim=2, width=6, depth=2, activation=activation, dtype=torch.float64), seed=seed)
    x, y = _data()
    params = list(net.parameters())
    return net, params, (lambda: LOSSES[loss](net(x), y)), x, y


def _flat_loss(net, params, x, y, loss):
    """The same loss as a function of one flat parameter vector, for torch.autograd.functional.hessian."""
    names = [n for n, _ in net.named_parameters()]

    def f(flat):
        parts, i = {}, 0
        for name, p in zip(names, params):
            parts[name] = flat[i:i + p.numel()].reshape(p.shape)
            i += p.numel()
        return LOSSES[loss](torch.func.functional_call(net, parts, (x,)), y)

    return f


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_power_iteration_and_lanczos_match_the_explicit_hessian(activation, loss):
    net, params, scalar, x, y = _problem(activation, loss)
    H = explicit_hessian(scalar, params)
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    H_ref = torch.autograd.functional.hessian(_flat_loss(net, params, x, y, loss), flat)
    assert H.shape == H_ref.shape == (67, 67)
    assert torch.allclose(H, H_ref, rtol=0, atol=1e-10 * float(H_ref.abs().max()))
    assert torch.allclose(H, H.T, rtol=0, atol=1e-12 * float(H.abs().max()))

    ev = torch.linalg.eigvalsh(H_ref)
    top_mag = float(ev[ev.abs().argmax()])
    hvp = hvp_fn(scalar, params)
    lam, v, used = power_iteration(hvp, random_vector(params, torch.Generator().manual_seed(1)), iters=500,
                                   tol=1e-13)
    assert used < 500 and _rel(lam, top_mag) < 1e-6
    assert math.isclose(sum(float((a * a).sum()) for a in v), 1.0, rel_tol=1e-12)  # a unit vector
    hv = torch.cat([h.reshape(-1) for h in hvp(v)])
    vf = torch.cat([a.reshape(-1) for a in v])
    assert float((hv - lam * vf).norm()) < 1e-5 * abs(lam)  # and an eigenvector
    assert _rel(lanczos_top(hvp, params), float(ev[-1])) < 1e-8  # the largest algebraic eigenvalue


def test_warm_start_after_a_small_step_needs_fewer_products():
    net, params, scalar, _, _ = _problem("tanh", "mean")
    _, v_prev, _ = power_iteration(hvp_fn(scalar, params), random_vector(params, torch.Generator().manual_seed(1)),
                                   iters=500, tol=1e-12)
    grads = torch.autograd.grad(scalar(), params)
    with torch.no_grad():  # one small GD step: the weights move a little, the top eigenvector barely turns
        for p, g in zip(params, grads):
            p.sub_(0.05 * g)
    hvp = hvp_fn(scalar, params)  # a fresh graph at the new weights
    top = float(torch.linalg.eigvalsh(explicit_hessian(scalar, params))[-1])
    warm_lam, _, warm = power_iteration(hvp, v_prev, iters=500, tol=1e-6)
    colds = []
    for seed in (2, 3, 4):
        cold_lam, _, cold = power_iteration(hvp, random_vector(params, torch.Generator().manual_seed(seed)),
                                            iters=500, tol=1e-6)
        assert _rel(cold_lam, top) < 1e-4
        colds.append(cold)
    assert _rel(warm_lam, top) < 1e-4
    assert warm < min(colds), (warm, colds)


def test_start_vector_checks_and_exact_iteration_count():
    _, params, scalar, _, _ = _problem("tanh", "sum")
    calls = []
    inner = hvp_fn(scalar, params)

    def hvp(v):
        calls.append(1)
        return inner(v)

    zeros = [torch.zeros_like(p) for p in params]
    for bad in (zeros, [z + (math.nan if i == 2 else 0) for i, z in enumerate(zeros)],
                [z + (math.inf if i == 0 else 0) for i, z in enumerate(zeros)]):
        with pytest.raises(ValueError):
            power_iteration(hvp, bad, iters=5)
    assert calls == []  # refused before any product
    v0 = random_vector(params, torch.Generator().manual_seed(1))
    for iters in (1, 7, 40):  # 40: far past convergence (about 10 products), still no early stop
        calls.clear()
        _, _, used = power_iteration(hvp, v0, iters=iters, tol=None)
        assert used == iters == len(calls)
    lam, _, _ = power_iteration(hvp, v0, iters=40)
    # a finite start whose sum of squares underflows or overflows in float64 is still a valid direction
    for scale in (1e-200, 1e200):
        lam_s, v_s, _ = power_iteration(hvp, [scale * a for a in v0], iters=40)
        assert math.isclose(lam_s, lam, rel_tol=1e-12) and all(torch.isfinite(a).all() for a in v_s)


def test_unused_and_linear_parameters_have_zero_hessian_rows():
    a = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.0, 3.0], dtype=torch.float64, requires_grad=True)  # enters linearly: constant gradient
    c = torch.tensor([4.0, 5.0], dtype=torch.float64, requires_grad=True)  # not used at all
    k = torch.tensor([2.0, -1.0], dtype=torch.float64)

    def scalar():
        return (a**3).sum() + (b * k).sum()

    H = explicit_hessian(scalar, [a, b, c])
    expected = torch.zeros(7, 7, dtype=torch.float64)
    expected[:3, :3] = torch.diag(6 * a.detach())
    assert torch.allclose(H, expected, rtol=0, atol=1e-12)
    only_linear = hvp_fn(lambda: (b * k).sum(), [b, c])  # no gradient has a graph: H = 0
    assert all(float(h.abs().max()) == 0 for h in only_linear([torch.ones(2, dtype=torch.float64)] * 2))
