"""models.hessian against the explicit Hessian on small networks (THEORY.md section 7), and the hand-made MLP product
(mlp_hvp_fn) against double backward. No Qt, float64 unless said, seeded, one intra-op thread."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models.hessian import (
    MLPLayer,
    explicit_hessian,
    hvp_fn,
    lanczos_top,
    mlp_hvp_fn,
    mlp_hvp_for,
    mlp_layers,
    power_iteration,
    random_vector,
)
from models.ntk import NTKNet, NTKSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # every test here (tests/models/conftest.py)

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


# ------------------------------------------------------------------------------------------------
# mlp_hvp_fn: Pearlmutter's R-operator by hand, against hvp_fn's double backward

#: (loss of outputs f and targets y, its weight w in w * sum 1/2 (f - y)^2 for N outputs)
SQUARE_LOSSES = {
    "sum": (lambda f, y: ((f - y) ** 2).sum(), lambda N: 2.0),
    "mean": (lambda f, y: 0.5 * ((f - y) ** 2).mean(), lambda N: 1.0 / N),
}
#: 12 points: the plain R-passes; 40: also the first-layer shortcut (8 (d + 1) <= n)
POINT_COUNTS = (12, 40)
_ACT_MODULES = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


def _sequential(widths, activation, seed=0, bias=True, dtype=torch.float64, out_activation=False):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mods = []
        for k in range(len(widths) - 1):
            mods.append(nn.Linear(widths[k], widths[k + 1], bias=bias))
            if k < len(widths) - 2 or out_activation:
                mods.append(_ACT_MODULES[activation]())
        return nn.Sequential(*mods).to(dtype)


def _points(n, d, k=None, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.sin(2 * x[:, 0]) * torch.cos(x[:, 1 % d])
    if k is not None:
        y = torch.stack([y * (j + 1) for j in range(k)], 1)
    return x.to(dtype), y.to(dtype)


def _flat(v):
    return torch.cat([t.reshape(-1) for t in v])


def _vec_rel(a, b) -> float:
    return float((_flat(a) - _flat(b)).norm() / _flat(b).norm())


def _assert_products_match(model, x, y, loss, tol, vectors=3, params=None):
    fn, weight = SQUARE_LOSSES[loss]
    params = list(model.parameters()) if params is None else params
    ref = hvp_fn(lambda: fn(model(x), y), params)
    fast = mlp_hvp_for(model, x, y, weight(y.numel()), params=params)
    assert fast is not None
    g = torch.Generator().manual_seed(7)
    for _ in range(vectors):
        v = random_vector(params, g)
        hv = fast(v)
        assert [h.shape for h in hv] == [p.shape for p in params]
        assert all(h.dtype == p.dtype for h, p in zip(hv, params))
        err = _vec_rel(hv, ref(v))
        assert err < tol, err
    return ref, fast


@pytest.mark.parametrize("loss", ["sum", "mean"])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
def test_fast_product_matches_double_backward_sequential(activation, depth, loss):
    # uneven widths and 3 inputs: a transposed product shows as a shape error or a wrong number
    widths = [3, 5, 7, 4][:depth + 1] + [1]
    model = _sequential(widths, activation, seed=depth)
    for n in POINT_COUNTS:
        x, y = _points(n, 3, k=1)
        _assert_products_match(model, x, y, loss, 1e-10)


@pytest.mark.parametrize("loss", ["sum", "mean"])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "erf"])
def test_fast_product_matches_double_backward_ntknet(activation, parameterization, depth, loss):
    net = NTKNet(NTKSpec(in_dim=2, width=6, depth=depth, activation=activation, parameterization=parameterization,
                         dtype=torch.float64), seed=depth)
    assert [p is q for p, q in zip(net.parameters(), [*net.weights, *net.biases])]  # weights first, then biases
    for n in POINT_COUNTS:
        x, y = _points(n, 2)
        _assert_products_match(net, x, y, loss, 1e-10)


@pytest.mark.parametrize("model", ["sequential", "ntknet"])
def test_fast_product_float32(model):
    if model == "sequential":  # the benchmark's network, on fewer points
        net, (x, y) = _sequential([2, 64, 64, 1], "tanh", dtype=torch.float32), _points(300, 2, k=1, dtype=torch.float32)
    else:
        net = NTKNet(NTKSpec(in_dim=2, width=32, depth=3, activation="gelu", dtype=torch.float32), seed=1)
        x, y = _points(300, 2, dtype=torch.float32)
    for loss in SQUARE_LOSSES:
        ref, fast = _assert_products_match(net, x, y, loss, 1e-4)
    params = list(net.parameters())
    v0 = random_vector(params, torch.Generator().manual_seed(1))
    lam_ref = power_iteration(ref, v0, iters=20)[0]
    lam_fast = power_iteration(fast, v0, iters=20)[0]
    assert _rel(lam_fast, lam_ref) < 1e-4


def test_the_whole_hessian_from_fast_products():
    cases = [(_sequential([3, 5, 4, 1], "tanh", seed=3), _points(40, 3, k=1)),
             (NTKNet(NTKSpec(in_dim=2, width=5, depth=2, activation="erf", dtype=torch.float64), seed=2),
              _points(12, 2))]
    for model, (x, y) in cases:
        params = list(model.parameters())
        fast = mlp_hvp_for(model, x, y, 1.0 / y.numel())
        total = sum(p.numel() for p in params)
        cols = []
        for j in range(total):
            e = torch.zeros(total, dtype=torch.float64)
            e[j] = 1
            cols.append(_flat(fast(list(torch.split(e, [p.numel() for p in params])))))
        H = torch.stack(cols, 1)
        H_ref = explicit_hessian(lambda m=model, x=x, y=y: SQUARE_LOSSES["mean"][0](m(x), y), params)
        scale = float(H_ref.abs().max())
        assert torch.allclose(H, H_ref, rtol=0, atol=1e-12 * scale)
        assert torch.allclose(H, H.T, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("case", ["seq-tanh-2", "ntk-relu-3", "std-erf-1", "ntk-gelu-2"])
def test_power_iteration_and_lanczos_on_the_fast_product(case):
    kind, act, depth = case.split("-")
    depth = int(depth)
    if kind == "seq":
        model, (x, y) = _sequential([2, 6, 6, 1], act, seed=0), _points(40, 2, k=1)
    else:
        model = NTKNet(NTKSpec(in_dim=2, width=6, depth=depth, activation=act,
                               parameterization="ntk" if kind == "ntk" else "standard", dtype=torch.float64), seed=0)
        x, y = _points(40, 2)
    params = list(model.parameters())
    fn = SQUARE_LOSSES["mean"][0]
    ref = hvp_fn(lambda: fn(model(x), y), params)
    fast = mlp_hvp_for(model, x, y, 1.0 / y.numel())
    v0 = random_vector(params, torch.Generator().manual_seed(1))
    lam_ref, _, used_ref = power_iteration(ref, v0, iters=2000, tol=1e-13)
    lam_fast, v, used_fast = power_iteration(fast, v0, iters=2000, tol=1e-13)
    assert _rel(lam_fast, lam_ref) < 1e-10 and abs(used_fast - used_ref) <= 1
    ev = torch.linalg.eigvalsh(explicit_hessian(lambda: fn(model(x), y), params))
    assert used_fast < 2000 and _rel(lam_fast, float(ev[ev.abs().argmax()])) < 1e-6
    assert _rel(lanczos_top(fast, params), float(ev[-1])) < 1e-8


def test_mse_loss_weights_and_several_outputs():
    # nn.MSELoss: the mean of (f - y)^2 over all n k outputs is (2 / (n k)) * sum 1/2 (f - y)^2; 'sum': weight 2
    model = _sequential([2, 5, 3], "tanh", seed=1)  # two outputs
    for n in POINT_COUNTS:
        x, y = _points(n, 2, k=3)
        params = list(model.parameters())
        for reduction, weight in (("mean", 2.0 / y.numel()), ("sum", 2.0)):
            crit = nn.MSELoss(reduction=reduction)
            ref = hvp_fn(lambda c=crit, x=x, y=y: c(model(x), y), params)
            fast = mlp_hvp_for(model, x, y, weight)
            v = random_vector(params, torch.Generator().manual_seed(3))
            assert _vec_rel(fast(v), ref(v)) < 1e-10


def test_sequential_variants():
    x, y = _points(40, 2, k=1)
    variants = [
        _sequential([2, 5, 4, 1], "tanh", bias=False),  # no biases
        _sequential([2, 5, 4, 1], "gelu", out_activation=True),  # an activation after the last layer too
        nn.Sequential(nn.Linear(2, 5), nn.Identity(), nn.ReLU(), nn.Linear(5, 4), nn.Linear(4, 1)).double(),
    ]
    for model in variants:
        for n in POINT_COUNTS:
            _assert_products_match(model, x[:n], y[:n], "mean", 1e-10)


def test_parameter_subsets_and_order_give_that_block():
    model = NTKNet(NTKSpec(in_dim=2, width=5, depth=3, activation="tanh", dtype=torch.float64), seed=4)
    W, b = list(model.weights), list(model.biases)
    for n in POINT_COUNTS:
        x, y = _points(n, 2)
        for subset in ([W[2], b[0]], [b[1], W[0], W[3]], [W[1]], [b[3], b[2], b[1], b[0], W[3], W[2], W[1], W[0]]):
            _assert_products_match(model, x, y, "sum", 1e-10, vectors=2, params=subset)


def test_layers_by_hand_match_the_module():
    net = NTKNet(NTKSpec(in_dim=2, width=4, depth=2, activation="relu", dtype=torch.float64), seed=0)
    x, y = _points(40, 2)
    layers = [MLPLayer(net.weights[k], net.biases[k], net.scale(k), "relu" if k < 2 else None) for k in range(3)]
    assert [(a.weight is b.weight, a.bias is b.bias, a.scale, a.activation) for a, b in zip(layers, mlp_layers(net))] \
        == [(True, True, layer.scale, layer.activation) for layer in layers]
    own = mlp_hvp_fn(layers, x, y, 0.5)  # default order: W_1, b_1, W_2, b_2, ...
    ordered = [t for layer in layers for t in (layer.weight, layer.bias)]
    ref = hvp_fn(lambda: 0.5 * 0.5 * ((net(x) - y) ** 2).sum(), ordered)
    v = random_vector(ordered, torch.Generator().manual_seed(0))
    assert _vec_rel(own(v), ref(v)) < 1e-10


def test_unsupported_models_give_none():
    class MyLinear(nn.Linear):
        pass

    hooked = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    hooked[0].register_forward_hook(lambda *a: None)
    shared = nn.Linear(3, 3)
    for model in (
        nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1)),
        nn.Sequential(nn.Linear(2, 3), nn.GELU(approximate="tanh"), nn.Linear(3, 1)),
        nn.Sequential(nn.Tanh(), nn.Linear(2, 1)),
        nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Tanh(), nn.Linear(3, 1)),
        nn.Sequential(MyLinear(2, 3), nn.Tanh(), nn.Linear(3, 1)),
        nn.Sequential(nn.Sequential(nn.Linear(2, 3)), nn.Linear(3, 1)),
        nn.Sequential(nn.Linear(2, 3), shared, nn.Tanh(), shared, nn.Linear(3, 1)),
        nn.Sequential(),
        hooked,
        nn.Linear(2, 1),
        nn.Bilinear(2, 2, 1),
    ):
        assert mlp_layers(model) is None
        x = torch.randn(5, 2)
        assert mlp_hvp_for(model, x, torch.zeros(5, 1)) is None


def test_bad_arguments_raise():
    model = _sequential([2, 3, 1], "tanh")
    x, y = _points(10, 2, k=1)
    with pytest.raises(ValueError, match="output"):
        mlp_hvp_for(model, x, y[:, 0])  # (n,) against (n, 1) outputs: the loss would broadcast to (n, n)
    layers = mlp_layers(model)
    with pytest.raises(ValueError, match="entries"):
        mlp_hvp_fn(layers, x, y[:5])
    with pytest.raises(ValueError, match="activation"):
        mlp_hvp_fn([MLPLayer(layers[0].weight, layers[0].bias, 1.0, "sigmoid"), layers[1]], x, y)
    with pytest.raises(ValueError, match="inputs"):
        mlp_hvp_fn(layers[::-1], x, y)
    with pytest.raises(ValueError, match="none of the layers"):
        mlp_hvp_fn(layers, x, y, params=[torch.zeros(3, 2, dtype=torch.float64)])
    with pytest.raises(ValueError, match="tied"):
        A = torch.randn(3, 3, dtype=torch.float64)
        mlp_hvp_fn([MLPLayer(A, None, 1.0, "tanh"), MLPLayer(A)], torch.randn(4, 3, dtype=torch.float64),
                   torch.zeros(4, 3, dtype=torch.float64))
    fast = mlp_hvp_for(model, x, y)
    with pytest.raises(ValueError, match="parts"):
        fast([torch.zeros(3, 2, dtype=torch.float64)])


def test_a_weight_changed_in_place_is_refused():
    model = _sequential([2, 3, 1], "tanh")
    x, y = _points(10, 2, k=1)
    fast = mlp_hvp_for(model, x, y)
    v = random_vector(list(model.parameters()), torch.Generator().manual_seed(0))
    before = fast(v)
    x.mul_(2)  # the points were copied: their change is none of the product's business
    assert _vec_rel(fast(v), before) == 0
    with torch.no_grad():
        model[0].weight.add_(0.1)
    with pytest.raises(RuntimeError, match="changed in place"):
        fast(v)
