"""The double-descent engine (issue 15 section 3, THEORY.md section 4): no Qt, deterministic."""

import math

import numpy as np
import pytest

from models import double_descent as dd
from models.limits import LimitError

N = 100


@pytest.fixture(scope="module")
def data():
    return dd.make_data(N, 10, 0.5)


@pytest.fixture(scope="module")
def ps():
    return sorted(set(dd.p_values(N, 4 * N)) | {N // 2, 2 * N})


@pytest.fixture(scope="module")
def min_norm(data, ps):
    return dd.sweep(data, ps, 10)


@pytest.fixture(scope="module")
def ridged(data, ps):
    return dd.sweep(data, ps, 10, ridge=0.1)


def test_the_peak_sits_at_the_interpolation_threshold(min_norm, ps):
    med = min_norm.median("test")
    pa = np.array(ps)
    peak = ps[int(np.argmax(med))]
    assert 0.8 * N <= peak <= 1.25 * N
    best_under = med[pa < N].min()
    assert med.max() >= 10 * best_under


def test_ridge_removes_the_peak(min_norm, ridged, ps):
    i = ps.index
    m0, m1 = min_norm.median("test"), ridged.median("test")
    assert m1[i(N)] < 0.1 * m0[i(N)]
    assert m1[i(N)] <= 1.5 * m1[i(N // 2)]
    assert m1[i(N)] <= 1.5 * m1[i(2 * N)]


def test_interpolation_past_the_threshold(min_norm, ps):
    over = np.array(ps) >= 1.1 * N
    assert min_norm.train[:, over].max() < 1e-10
    # below it the fit is a least-squares fit: training error positive
    assert min_norm.train[:, np.array(ps) <= 0.9 * N].min() > 1e-4


def test_norm_and_sigma_min_explain_the_peak(min_norm, ps):
    i = ps.index(N)
    norm, smin = min_norm.median("norm"), min_norm.median("sigma_min")
    assert norm[i] == norm.max()
    assert smin[i] == smin.min()
    assert smin[i] < 0.05 * smin[ps.index(N // 2)]


@pytest.mark.parametrize("feature", ["relu", "fourier"])
def test_the_solver_matches_lstsq_at_every_p(data, feature):
    ps = list(range(10, 401, 5)) + [99, 101]
    ps = sorted(set(ps))
    assert N in ps
    sols = dd.nested_solutions(data, ps, seed=3, feature=feature)
    for p, a in zip(ps, sols):
        phi = dd.features(data.x, p, 3, feature)
        ref = np.linalg.lstsq(phi, data.y, rcond=dd.RCOND)[0]
        assert np.linalg.norm(a - ref) <= 1e-8 * np.linalg.norm(ref), p
    # the single-problem entry point too, and ridge against the SVD formula
    phi = dd.features(data.x, N, 1)
    ref = np.linalg.lstsq(phi, data.y, rcond=dd.RCOND)[0]
    assert np.linalg.norm(dd.solve(phi, data.y) - ref) <= 1e-8 * np.linalg.norm(ref)
    for p in (40, N, 250):
        phi = dd.features(data.x, p, 2)
        r = dd.ridge_solve(phi, data.y, 0.1)
        got = dd.nested_solutions(data, [p], seed=2, ridge=0.1)[0]
        assert np.linalg.norm(got - r) <= 1e-8 * np.linalg.norm(r)


def test_the_sweep_errors_equal_the_naive_loop(data):
    ps = sorted(set(range(10, 401, 30)) | {N})
    fast = dd.sweep(data, ps, 3, kernel=False)
    naive = dd.naive_sweep(data, ps, 3)
    assert np.allclose(fast.test, naive, rtol=1e-8)


@pytest.mark.parametrize("feature", ["relu", "fourier"])
def test_the_random_features_kernel_converges_like_p_to_the_minus_half(data, feature):
    ps = [2**k for k in range(6, 15)]
    errs = np.mean([dd.kernel_error_vs_p(data.x, ps, seed, feature) for seed in range(4)], axis=0)
    slope = np.polyfit(np.log(ps), np.log(errs), 1)[0]
    assert -0.65 <= slope <= -0.35
    assert errs[-1] < 0.05


def test_the_kernel_constants_by_monte_carlo():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3))
    p = 400_000
    phi = dd.features(x, p, 7)
    emp = phi @ phi.T
    assert np.allclose(emp, dd.limit_kernel(x, x), rtol=0.02, atol=0.01)
    phi = dd.features(x, p, 7, "fourier", 0.7)
    assert np.allclose(phi @ phi.T, dd.limit_kernel(x, x, "fourier", 0.7), atol=0.01)


def test_large_p_approaches_the_kernel(data):
    kt = dd.kernel_test_error(data)
    errs = [float(dd.sweep(data, [p], 3, kernel=False).median()[0]) for p in (400, 4000)]
    assert abs(errs[1] - kt) < abs(errs[0] - kt)
    assert abs(errs[1] - kt) < 0.05 * kt
    # with ridge the random-features ridge tends to kernel ridge with the same lambda (sum objective)
    kr = dd.kernel_test_error(data, 0.1)
    er = float(dd.sweep(data, [4000], 3, ridge=0.1, kernel=False).median()[0])
    assert abs(er - kr) < 0.05 * kr


def test_progressive_sweep_streams_seeds(data):
    parts = list(dd.iter_sweep(data, [20, N, 300], 10, first=2))
    assert [len(s.seeds) for s in parts] == [2, 4, 8, 10]
    assert [s.complete for s in parts] == [False, False, False, True]
    full = dd.sweep(data, [20, N, 300], 10)
    assert np.array_equal(parts[-1].test, full.test)
    assert np.array_equal(parts[0].test, full.test[:2])


def test_one_model_matches_the_sweep(data):
    s = dd.sweep(data, [50, N, 200], [4], kernel=False)
    for j, p in enumerate((50, N, 200)):
        m = dd.fit_model(data, p, 4)
        assert math.isclose(m.test_error, s.test[0, j], rel_tol=1e-8)
        assert math.isclose(m.norm, s.norm[0, j], rel_tol=1e-8)
        assert len(m.pred) == len(m.target) == 500


def test_one_dimensional_data_oscillates_at_the_threshold():
    data = dd.make_data(30, kind="function", noise=0.2, function="sin")
    assert data.d == 1
    ps = dd.p_values(30, 3000)
    s = dd.sweep(data, ps, [0])
    peak = ps[int(np.argmax(s.test[0]))]
    assert 20 <= peak <= 150  # (in 1D the ReLU features' effective rank is lower: the peak comes late)
    wild, calm = dd.fit_model(data, peak, 0), dd.fit_model(data, 3000, 0)
    assert len(wild.x_eval) == 400
    assert np.ptp(wild.pred) > 4 * np.ptp(calm.pred)
    assert calm.train_error < 1e-10
    assert abs(calm.test_error - dd.kernel_test_error(data)) < 0.1 * dd.kernel_test_error(data)
    drawn = dd.make_data(kind="drawn", xs=[-0.8, -0.2, 0.3, 0.9], ys=[0.1, 0.5, -0.4, 0.2])
    assert drawn.n == 4 and drawn.noise == 0
    m = dd.fit_model(drawn, 50, 1)
    assert np.allclose(m.train_pred, drawn.y, atol=1e-8)
    assert dd.sweep(drawn, [2, 4, 8, 16], 2).test.shape == (2, 4)


def test_the_ridge_surface(data):
    ps, ridges = [20, 60, N, 200], [0.0, 1e-3, 0.1, 10.0]
    surf = dd.ridge_surface(data, ps, ridges, [0, 1, 2], max_test=2000)
    assert surf.shape == (4, 4)
    ref = dd.sweep(data, ps, [0, 1, 2], kernel=False).median()
    assert np.allclose(surf[0], ref, rtol=1e-6)
    assert surf[2, 2] < 0.1 * surf[0, 2]  # ridge 0.1 at p = n flattens the peak
    r = dd.sweep(data, ps, [0, 1, 2], ridge=0.1, kernel=False).median()
    assert np.allclose(surf[2], r, rtol=1e-6)


@pytest.mark.parametrize("call, words", [
    (lambda: dd.make_data(n=1), "n must be in"),
    (lambda: dd.make_data(n=2.5), "n must be an integer"),
    (lambda: dd.make_data(d=0), "d must be in"),
    (lambda: dd.make_data(noise=-1), "noise must be in"),
    (lambda: dd.make_data(noise=float("nan")), "noise must be a finite number"),
    (lambda: dd.make_data(kind="moon"), "kind must be one of"),
    (lambda: dd.make_data(kind="function", function="zig"), "function must be one of"),
    (lambda: dd.make_data(kind="drawn", xs=[0.1], ys=[0.2]), "drawn data needs 2 to"),
    (lambda: dd.make_data(kind="drawn", xs=[0.1, 0.1], ys=[0.2, 0.3]), "distinct x"),
    (lambda: dd.make_data(kind="drawn", xs=[0.1, 3.0], ys=[0.2, 0.3]), "drawn x must lie in"),
    (lambda: dd.sweep(dd.make_data(20, 3), [], 2), "at least one"),
    (lambda: dd.sweep(dd.make_data(20, 3), [5, 3], 2), "increasing"),
    (lambda: dd.sweep(dd.make_data(20, 3), [0, 3], 2), "every p must be in"),
    (lambda: dd.sweep(dd.make_data(20, 3), [3], 0), "seeds must be in"),
    (lambda: dd.sweep(dd.make_data(20, 3), [3], 2, ridge=-1), "ridge must be in"),
    (lambda: dd.sweep(dd.make_data(20, 3), [3], 2, feature="tanh"), "feature must be one of"),
    (lambda: dd.ridge_surface(dd.make_data(20, 3), [3], [], 2), "between 1 and 200"),
])
def test_bad_arguments_are_refused_in_words(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_memory_is_checked_before_allocating():
    big = dd.make_data(10, kind="function", n_test=100_000)
    with pytest.raises(LimitError, match="at most p ="):
        dd.sweep(big, [20000], 1)


def test_bench_figures_shape():
    figs = dd.bench_figures(repeats=1)
    assert set(figs) == {"double_descent_sweep_ms", "double_descent_sweep_naive_ms"}
    assert all(v > 0 for v in figs.values())
