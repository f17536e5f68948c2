"""The ntk lab's width sweep (models/ntk_sweep.py) against THEORY.md sections 2 and 3: lazy-training width
scalings, the linearized model, the standard parameterization's step-size limit, lazy versus rich, the limits."""

import math

import numpy as np
import pytest
import torch

from models import ntk
from models import ntk_sweep as sw
from models.limits import LimitError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CIRCLE16 = dict(kind="circle", target="mix", n=16, seed=0)
#: the lazy-training protocol: one hidden layer, NTK parameterization, four octaves of width, five seeds
LAZY_WIDTHS = [128, 256, 512, 1024, 2048]
LAZY_SEEDS = range(5)
LAZY_STEPS = 100
LAZY_ETA = 0.03  # below 2 / lambda_max(K0) (about 0.06 at n = 16) at every width


def _run(**kw) -> list:
    return list(sw.sweep_run(**kw))


def _init(**kw) -> sw.SweepInit:
    gen = sw.sweep_run(**kw)
    snap = next(gen)
    gen.close()
    return snap.init


@pytest.fixture(scope="module")
def lazy_runs():
    """Per seed the whole sweep's snapshots (metrics at steps 0, 50, 100)."""
    return [_run(data=CIRCLE16, widths=LAZY_WIDTHS, depth=1, eta=LAZY_ETA, steps=LAZY_STEPS, metric_every=50,
                 seed=s) for s in LAZY_SEEDS]


def _final(runs, field):
    return np.mean([getattr(r[-1].metrics, field) for r in runs], axis=0)


def test_relative_weight_and_kernel_changes_fall_with_width(lazy_runs):
    """THEORY 3: ||w_t - w_0|| / ||w_0|| ~ m^-1/2 for one hidden layer; the kernel moves at least as fast."""
    for r in lazy_runs:
        last = r[-1]
        assert last.step == LAZY_STEPS and not last.diverged.any()
        assert np.all(last.loss < r[0].loss)  # every width trained
    wc, kc = _final(lazy_runs, "wchange"), _final(lazy_runs, "kchange")
    wslope, kslope = sw.loglog_slope(LAZY_WIDTHS, wc), sw.loglog_slope(LAZY_WIDTHS, kc)
    assert -0.6 <= wslope <= -0.4, (wslope, wc)
    assert kslope <= wslope + 0.1, (kslope, wslope, kc)
    # ... because ||w_t - w_0|| stays O(1) while ||w_0|| grows like sqrt(p)
    def w0_norm(m, seed):
        return math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in ntk.NTKNet(ntk.NTKSpec(2, m, 1), seed).parameters()))

    dist = np.mean([r[-1].metrics.wchange * [w0_norm(m, s) for m in LAZY_WIDTHS]
                    for r, s in zip(lazy_runs, LAZY_SEEDS)], axis=0)
    assert abs(sw.loglog_slope(LAZY_WIDTHS, dist)) < 0.15, dist
    # at step 0 nothing has moved
    for r in lazy_runs:
        m0 = r[0].metrics
        assert np.all(m0.wchange == 0) and np.all(m0.kchange < 1e-6) and np.all(m0.gap < 1e-6)


def test_gap_to_the_linearization_shrinks_with_width(lazy_runs):
    """The network follows f_lin(w) = F(w0) + DF(w0)(w - w0) ever more closely as it widens."""
    gap = _final(lazy_runs, "gap")
    assert sw.loglog_slope(LAZY_WIDTHS, gap) < -0.3, gap
    assert gap[-1] < 0.5 * gap[0], gap
    assert np.all(np.diff(gap) < 0.2 * gap[:-1]), gap  # no width much worse than the one before it


def test_metrics_are_consistent_with_the_init_and_the_kernel_model(lazy_runs):
    """SweepInit's kernel, eigenpairs and limits agree; lin_train is y + (I - eta K0)^t (F0 - y); coef is the
    residual along K0's eigenvectors; K is the empirical kernel now."""
    r = lazy_runs[0]
    init = r[0].init
    assert init is not None and all(s.init is None for s in r[1:])
    assert [s.step for s in r if s.metrics is not None] == [0, 50, 100]
    d = sw.make_data(**CIRCLE16)
    K0 = init.K0.astype(np.float64)
    for k in range(len(LAZY_WIDTHS)):
        assert np.all(np.diff(init.eig[k]) <= 0)  # descending
        rebuilt = init.vec[k] @ np.diag(init.eig[k]) @ init.vec[k].T
        np.testing.assert_allclose(rebuilt, K0[k], rtol=1e-5, atol=1e-4 * init.eig[k][0])
        assert init.limits[k] == pytest.approx(2 / init.eig[k][0])
        assert init.params[k] == ntk.NTKSpec(2, LAZY_WIDTHS[k], 1).param_count
    np.testing.assert_allclose(r[0].out, init.f0, rtol=0, atol=1e-6)
    assert init.K_inf is not None and init.dist_inf.shape == (len(LAZY_WIDTHS),)
    for snap in (r[50], r[-1]):
        m, t = snap.metrics, snap.step
        for k in range(len(LAZY_WIDTHS)):
            A = np.eye(d.n) - LAZY_ETA * K0[k]
            expect = d.y + np.linalg.matrix_power(A, t) @ (init.f0[k] - d.y)
            np.testing.assert_allclose(m.lin_train[k], expect, rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(m.coef[k], init.vec[k].T @ (snap.out[k] - d.y), rtol=1e-4, atol=1e-5)
        # the infinite-width kernel model, from F = 0
        A = np.eye(d.n) - LAZY_ETA * init.K_inf
        np.testing.assert_allclose(m.inf_train, d.y + np.linalg.matrix_power(A, t) @ (-d.y), rtol=1e-9, atol=1e-9)
    # the kernel now: recompute at the last step by GD by hand (below) for the widest width
    net = ntk.NTKNet(ntk.NTKSpec(2, LAZY_WIDTHS[-1], 1), seed=0)
    x, y = torch.as_tensor(d.x, dtype=torch.float32), torch.as_tensor(d.y, dtype=torch.float32)
    params = list(net.parameters())
    for _ in range(LAZY_STEPS):
        g = torch.autograd.grad(0.5 * ((net(x) - y) ** 2).sum(), params)
        with torch.no_grad():
            for p, gp in zip(params, g):
                p.sub_(gp, alpha=LAZY_ETA)
    np.testing.assert_allclose(r[-1].metrics.K[-1], ntk.empirical_ntk(net, x).numpy(), rtol=1e-5, atol=1e-5)


def test_sweep_is_plain_full_batch_gd_on_the_sum_loss():
    """Each width's losses and weight change are those of GD by hand on L = 1/2 ||F - y||^2."""
    d = sw.make_data("line", "sin", 12)
    x, y = torch.as_tensor(d.x, dtype=torch.float32), torch.as_tensor(d.y, dtype=torch.float32)
    eta, steps = 0.02, 30
    snaps = _run(data=dict(kind="line", target="sin", n=12), widths=[32, 256], depth=2, activation="tanh",
                 eta=eta, steps=steps, metric_every=steps, seed=3)
    for k, m in enumerate([32, 256]):
        net = ntk.NTKNet(ntk.NTKSpec(1, m, 2, "tanh"), seed=3)
        params = list(net.parameters())
        w0 = [p.detach().clone() for p in params]
        losses = []
        for t in range(steps + 1):
            lk = 0.5 * ((net(x) - y) ** 2).sum()
            losses.append(float(lk.detach()))
            if t < steps:
                g = torch.autograd.grad(lk, params)
                with torch.no_grad():
                    for p, gp in zip(params, g):
                        p.sub_(gp, alpha=eta)
        np.testing.assert_allclose([s.loss[k] for s in snaps], losses, rtol=1e-5)
        dw = math.sqrt(sum(float(((p.detach() - q).double() ** 2).sum()) for p, q in zip(params, w0)))
        nw = math.sqrt(sum(float((q.double() ** 2).sum()) for q in w0))
        assert snaps[-1].metrics.wchange[k] == pytest.approx(dw / nw, rel=1e-5)
        with torch.no_grad():
            f_test = net(torch.as_tensor(d.x_test, dtype=torch.float32)).numpy()
        np.testing.assert_allclose(snaps[-1].metrics.f_test[k], f_test, rtol=1e-5, atol=1e-6)
        tl = 0.5 * np.sum((f_test.astype(np.float64) - d.y_test) ** 2) * d.n / len(d.y_test)
        assert snaps[-1].metrics.test_loss[k] == pytest.approx(tl, rel=1e-4)


def test_standard_parameterization_lambda_max_grows_linearly_ntk_stays_bounded():
    widths = [64, 128, 256, 512, 1024, 2048, 4096]
    lam = {}
    for par in ("standard", "ntk"):
        per_seed = []
        for s in range(3):
            init = _init(data=CIRCLE16, widths=widths, parameterization=par, eta=1e-4, steps=1, seed=s,
                         metrics=False)
            np.testing.assert_allclose(2 / np.asarray(init.limits), init.eig[:, 0], rtol=1e-9)
            per_seed.append(init.eig[:, 0])
        lam[par] = np.mean(per_seed, axis=0)
    slope = sw.loglog_slope(widths, lam["standard"])
    assert 0.8 <= slope <= 1.2, (slope, lam["standard"])
    assert abs(sw.loglog_slope(widths, lam["ntk"])) < 0.1, lam["ntk"]


def test_fixed_step_too_large_diverges_the_wide_widths_only():
    """Standard parameterization, one eta for all: the wide widths blow up (eta > 2 / lambda_max), the narrow
    ones keep training, the generator carries on; scaling eta like 1/width trains them all."""
    widths, eta, steps = [16, 32, 1024, 2048], 0.03, 100  # eta lambda_max: about 0.5, 0.8, 55, 100
    gen = sw.sweep_run(data=CIRCLE16, widths=widths, parameterization="standard", eta=eta, steps=steps,
                       metric_every=25, seed=0)
    snaps = []
    while True:
        try:
            snaps.append(next(gen))
        except StopIteration as stop:
            summary = stop.value
            break
    init, last = snaps[0].init, snaps[-1]
    assert last.step == steps and len(snaps) == steps + 1
    named = {}
    for s in snaps:
        for k, t in s.diverged_at.items():
            assert k not in named  # named once, at the step it diverged
            named[k] = t
            assert s.step == t and s.diverged[k] and not snaps[t - 1].diverged[k]
    assert sorted(named) == [2, 3] and all(0 < t < steps for t in named.values())
    assert last.diverged.tolist() == [False, False, True, True]
    assert summary["diverged"] == [1024, 2048]
    for k in (2, 3):
        assert eta > init.limits[k]
        assert np.all(np.isnan(last.metrics.wchange[k]))  # no metrics for a diverged width
    for k in (0, 1):
        assert eta < init.limits[k]
        assert np.isfinite(last.loss[k]) and last.loss[k] < 0.5 * snaps[0].loss[k]
        assert np.isfinite(last.metrics.test_loss[k]) and np.isfinite(last.metrics.wchange[k])
    # eta * m_min / m: the standard parameterization's remedy
    rescued = _run(data=CIRCLE16, widths=widths, parameterization="standard", eta=eta, step_scaling="width",
                   steps=steps, metric_every=steps, seed=0)
    assert rescued[0].init.etas == pytest.approx([eta * 16 / m for m in widths])
    assert not rescued[-1].diverged.any() and np.all(rescued[-1].loss < rescued[0].loss)
    assert all(e < lim for e, lim in zip(rescued[0].init.etas, rescued[0].init.limits))


def test_bare_mode_has_no_metrics_but_the_same_training():
    kw = dict(data=CIRCLE16, widths=[64, 512], eta=0.03, steps=40, metric_every=10, seed=1)
    full, bare = _run(**kw), _run(**kw, metrics=False)
    assert len(full) == len(bare) == 41
    assert sum(s.metrics is not None for s in full) == 5 and all(s.metrics is None for s in bare)
    assert bare[0].init is not None
    for a, b in zip(full, bare):
        assert a.step == b.step
        np.testing.assert_array_equal(a.loss, b.loss)
        np.testing.assert_array_equal(a.out, b.out)


@pytest.mark.parametrize("kw, words", [
    (dict(kind="circle", target="mix", n=9), "10 to 64 points, not 9"),
    (dict(kind="circle", target="mix", n=65), "10 to 64 points, not 65"),
    (dict(kind="square", target="mix", n=16), "unknown data 'square'"),
    (dict(kind="circle", target="sin", n=16), "unknown circle target 'sin'"),
    (dict(kind="line", target="mix", n=16), "unknown 1D target 'mix'"),
    (dict(kind="drawn", target="", n=16, drawn=[0.0] * 10), "64 finite heights"),
    (dict(kind="drawn", target="", n=16, drawn=[0.0] * 63 + [float("nan")]), "64 finite heights"),
    (dict(kind="drawn", target="", n=16, drawn=[[0.0] * 64]), "64 finite heights"),
])
def test_make_data_refuses_bad_requests(kw, words):
    with pytest.raises(ValueError, match=words):
        sw.make_data(**kw)


def test_make_data_sets():
    c = sw.make_data("circle", "sin2", 16, seed=2)
    assert c.x.shape == (16, 2) and c.x_test.shape == (sw.N_TEST, 2) and c.in_dim == 2 and c.n == 16
    np.testing.assert_allclose(np.linalg.norm(c.x, axis=1), 1.0)
    np.testing.assert_allclose(c.y, np.sin(2 * c.axis))
    again = sw.make_data("circle", "sin2", 16, seed=2)
    np.testing.assert_array_equal(c.x, again.x)
    drawn = sw.make_data("drawn", "", 12, drawn=sw.default_drawn())
    assert drawn.x.shape == (12, 1) and np.all(np.abs(drawn.x) <= 2.0)
    np.testing.assert_allclose(drawn.y_test[[0, -1]], np.asarray(sw.default_drawn())[[0, -1]])
    noisy = sw.make_data("line", "cubic", 12, noise=0.1)
    assert not np.allclose(noisy.y, sw.make_data("line", "cubic", 12).y)


def test_a_sweep_too_large_is_refused_before_anything_is_allocated(monkeypatch):
    with pytest.raises(LimitError, match=r"width 8192 at depth 4.*drop the widest widths or lower the depth"):
        sw.check_sweep([8192], 4, 2, 24)
    sw.check_sweep(list(sw.WIDTH_CHOICES), 1, 2, sw.MAX_POINTS)  # the lab's widest one-layer sweep fits

    def no_network(*a, **k):
        raise AssertionError("a network was built before the memory check")

    monkeypatch.setattr(ntk, "NTKNet", no_network)
    with pytest.raises(LimitError):
        next(sw.sweep_run(data=dict(kind="circle", target="mix", n=24), widths=[8192], depth=4))


@pytest.mark.parametrize("kw, words", [
    (dict(widths=[]), "distinct widths"),
    (dict(widths=[64, 64]), "distinct widths"),
    (dict(widths=[64], eta=0.0), "step size"),
    (dict(widths=[64], eta=float("inf")), "step size"),
    (dict(widths=[64], steps=0), "at least 1"),
    (dict(widths=[64], output="lazy"), "'plain' or 'scaled'"),
    (dict(widths=[64], output="scaled", alpha=-1.0), "alpha"),
])
def test_sweep_run_refuses_bad_arguments(kw, words):
    with pytest.raises(ValueError, match=words):
        next(sw.sweep_run(data=CIRCLE16, **kw))


def test_scaled_output_starts_at_zero_and_moves_like_one_over_alpha():
    """f = alpha (g(w) - g(w0)), loss / alpha^2: F0 = 0 and the distance travelled shrinks like 1/alpha."""
    widths = [128, 512]
    wc, gap = {}, {}
    for alpha in (1.0, 10.0):
        per_seed, gaps = [], []
        for s in range(3):
            snaps = _run(data=CIRCLE16, widths=widths, eta=LAZY_ETA, output="scaled", alpha=alpha, steps=100,
                         metric_every=100, seed=s)
            init = snaps[0].init
            assert np.all(snaps[0].out == 0) and np.all(init.f0 == 0) and np.all(init.f0_test == 0)
            assert np.all(snaps[0].metrics.f_test == 0)
            assert not snaps[-1].diverged.any()
            per_seed.append(snaps[-1].metrics.wchange)
            gaps.append(snaps[-1].metrics.gap)
        wc[alpha], gap[alpha] = np.mean(per_seed, axis=0), np.mean(gaps, axis=0)
    ratio = wc[1.0] / wc[10.0]
    assert np.all((ratio >= 5) & (ratio <= 20)), ratio
    assert np.all(gap[10.0] < gap[1.0]), gap  # lazier: closer to the linearization


def _features(n, p, seed):
    g = np.random.default_rng(seed)
    return g.standard_normal((n, p)) / math.sqrt(p)


@pytest.mark.parametrize("n, p, edge", [(12, 40, 1.0), (12, 40, 1.9), (12, 7, 1.0), (12, 40, 2.3)])
def test_linear_model_is_exact_for_a_model_linear_in_its_parameters(n, p, edge):
    """F(w) = Phi w, K = Phi Phi^T: GD by hand gives y + (I - eta K)^t (f0 - y) and Phi_test w_t, exactly
    (p < n: a singular kernel; eta lambda_max = 1.9: oscillating modes; 2.3: a diverging one)."""
    Phi, Phi_t = _features(n, p, 0), _features(30, p, 1)
    g = np.random.default_rng(2)
    w = g.standard_normal(p)
    y = g.standard_normal(n)
    K = Phi @ Phi.T
    eta = edge / np.linalg.eigvalsh(K)[-1]
    lin = sw.LinearModel(K, Phi_t @ Phi.T, Phi @ w, Phi_t @ w, y, eta)
    f0 = Phi @ w
    T = 25 if edge > 2 else 200
    for t in range(T + 1):
        if t in (0, 1, 2, 7, T // 2, T):
            tr, te = lin.at(t)
            scale = max(1.0, float(np.max(np.abs(Phi @ w))))
            exact = y + np.linalg.matrix_power(np.eye(n) - eta * K, t) @ (f0 - y)
            np.testing.assert_allclose(tr, Phi @ w, rtol=0, atol=1e-10 * scale)
            np.testing.assert_allclose(tr, exact, rtol=0, atol=1e-10 * scale)
            np.testing.assert_allclose(te, Phi_t @ w, rtol=0, atol=1e-10 * scale)
        w = w - eta * Phi.T @ (Phi @ w - y)
    # several models at once: the same numbers as one by one
    other = sw.LinearModel(2 * K, 2 * Phi_t @ Phi.T, f0, Phi_t @ w, y, eta / 3)
    both = sw.linear_models_at([lin, other], 9)
    for got, single in zip(both, (lin.at(9), other.at(9))):
        np.testing.assert_allclose(got[0], single[0], rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(got[1], single[1], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("parameterization", ntk.PARAMETERIZATIONS)
@pytest.mark.parametrize("activation", ntk.ACTIVATIONS)
@pytest.mark.parametrize("depth", [1, 3])
def test_test_grid_forward_is_the_network_bit_for_bit(depth, activation, parameterization):
    net = ntk.NTKNet(ntk.NTKSpec(2, 96, depth, activation, parameterization), seed=1)
    x = torch.as_tensor(sw.make_data("circle", "mix", 16).x_test, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(sw._forward_nograd(net, x), net(x))


def test_step_sizes():
    assert sw.step_sizes([64, 256], 0.1, "fixed") == [0.1, 0.1]
    assert sw.step_sizes([256, 64], 0.1, "width") == pytest.approx([0.025, 0.1])


def test_loglog_slope_skips_what_it_cannot_fit():
    assert sw.loglog_slope([1, 2, 4], [1, 0.5, 0.25]) == pytest.approx(-1.0)
    assert sw.loglog_slope([1, 2, 4], [1, np.nan, 0.25]) == pytest.approx(-1.0)
    assert sw.loglog_slope([1, 2], [1, 0.0]) is None and sw.loglog_slope([2, 2], [1, 3]) is None
