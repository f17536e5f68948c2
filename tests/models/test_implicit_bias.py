"""The implicit-bias lab's engine (models/implicit_bias.py) against THEORY.md section 5 and issue 14's section 5:
the exact geometry through the origin (LP, QP, max-margin LPs against brute force), gradient descent's slow
convergence to the SVM and its asymptotic form, the optimizers' own geometries, non-separable data, float32
falling behind, the JIT loop against the numpy reference, streaming, divergence and bad arguments. No Qt; no
timing thresholds."""

import math

import numpy as np
import pytest

from models import implicit_bias as ib
from models.limits import LimitError

DECADES = (10**2, 10**3, 10**4, 10**5, 10**6)


def _idx(trace, ts):
    return [int(np.flatnonzero(trace.steps == t)[0]) for t in ts]


@pytest.fixture(scope="module")
def clean():
    """The clean set, eta half the logistic stability limit, a million GD steps in float64 and in float32."""
    z = ib.make_preset("clean").z
    eta = 0.5 * ib.stability_limit(z, "logistic")
    spec = ib.RunSpec("logistic", "gd", eta)
    return dict(z=z, eta=eta, svm=ib.hard_margin_svm(z), t64=ib.run_all(z, spec, 10**6),
                t32=ib.run_all(z, spec, 10**6, dtype=np.float32))


@pytest.fixture(scope="module")
def tilted():
    """The 3D set whose three max-margin directions differ; coordinate and sign descent at half their own
    stability limits for a million steps, and their normalized variants for 10^4."""
    z = ib.make_preset("tilted").z
    fixed = [ib.RunSpec("logistic", o, 0.5 * ib.stability_limit(z, "logistic", o)) for o in ("coordinate", "sign")]
    normed = [ib.RunSpec("logistic", "n" + s.optimizer, s.eta) for s in fixed]
    return dict(z=z, geo=ib.geometry(z), fixed=fixed, t_fixed=ib.run_all(z, fixed, 10**6),
                t_normed=ib.run_all(z, normed, 10**4))


# ------------------------------------------------------------------------------------------------ data, geometry


def test_presets_are_float64_labelled_and_the_bias_feature_is_a_constant_coordinate():
    for name in ib.PRESETS:
        d = ib.make_preset(name)
        assert d.x.dtype == np.float64 and d.y.dtype == np.float64 and d.z.dtype == np.float64
        assert set(np.unique(d.y)) == {-1.0, 1.0}
        assert d.x.shape[1] == (3 if name in ib.PRESETS_3D else 2)
        np.testing.assert_array_equal(d.z, d.y[:, None] * d.x)
        b = ib.make_preset(name, bias=1.0)
        assert b.features.shape == (d.n, d.x.shape[1] + 1)
        np.testing.assert_array_equal(b.features[:, -1], 1.0)
        np.testing.assert_array_equal(b.z[:, -1], d.y)
    assert ib.make_preset("clean").n == 20
    np.testing.assert_array_equal(ib.make_preset("cube", n=30, seed=4).x, ib.make_preset("cube", n=30, seed=4).x)
    with pytest.raises(ValueError, match="unknown preset 'moon'"):
        ib.make_preset("moon")


def test_separability_lp_through_the_origin_with_and_without_the_bias_feature():
    for name in ("clean", "far", "nearly", "single", "cube", "tilted"):
        assert ib.separability(ib.make_preset(name).z).separable, name
    assert not ib.separability(ib.make_preset("nonsep").z).separable
    thin, wide = (ib.separability(ib.make_preset(n).z).margin for n in ("nearly", "clean"))
    assert 0 < thin < wide / 5  # nearly non-separable: a much thinner margin, still positive
    # not separable through the origin, separable with an intercept (the bias feature)
    x = np.array([[2.0, 1.0], [2.0, -1.0], [1.0, 1.0], [1.0, -1.0]])
    y = np.array([1.0, 1.0, -1.0, -1.0])
    assert not ib.separability(ib.signed_rows(x, y)).separable
    zb = ib.signed_rows(ib.with_bias(x), y)
    assert ib.separability(zb).separable
    svm = ib.hard_margin_svm(zb)  # the SVM in the augmented space: w = (2, 0, -3), the boundary x1 = 1.5
    np.testing.assert_allclose(svm.w_hat, [2.0, 0.0, -3.0], atol=1e-10)


def test_qp_returns_the_closed_form_svm_to_1e8():
    z = ib.make_preset("clean").z
    svm = ib.hard_margin_svm(z)
    np.testing.assert_allclose(svm.w_hat, ib.CLEAN_W_HAT, rtol=0, atol=1e-8)
    np.testing.assert_allclose(svm.alpha[:2], ib.CLEAN_ALPHA_SUPPORT, rtol=0, atol=1e-8)
    np.testing.assert_array_equal(svm.alpha[2:], 0.0)
    np.testing.assert_array_equal(svm.support, [0, 1])
    assert svm.margin == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    assert svm.alpha_sum == pytest.approx(2.0, abs=1e-10)  # = ||w_hat||^2
    assert svm.gap >= 2.0 - 1e-12  # every non-support margin at least twice the support margin
    assert svm.kkt_residual < 1e-12 and svm.spans and svm.settle_exponent == pytest.approx(1.0)


def test_qp_satisfies_the_kkt_conditions_on_random_3d_data():
    """KKT is sufficient for this convex QP: an independent certificate of optimality, support size aside."""
    for seed in range(3):
        for bias in (0.0, 1.0):
            z = ib.make_preset("cube", n=60, seed=seed, bias=bias).z
            svm = ib.hard_margin_svm(z)
            m = z @ svm.w_hat
            assert m.min() >= 1 - 1e-10
            assert svm.alpha.min() >= 0
            np.testing.assert_allclose(svm.alpha @ z, svm.w_hat, atol=1e-10)
            assert np.abs(svm.alpha * (m - 1)).max() < 1e-10
            assert np.abs(m[svm.support] - 1).max() < 1e-10


def test_three_directions_coincide_when_two_points_are_tight_and_differ_when_one_is():
    clean = ib.geometry(ib.make_preset("clean").z)
    assert clean.coincide
    single = ib.geometry(ib.make_preset("single").z)
    assert not single.coincide and len(single.svm.support) == 1
    for norm, deg in ib.SINGLE_DIRECTIONS_DEG.items():
        u = single.max_margin[norm].direction
        assert math.degrees(math.atan2(u[1], u[0])) == pytest.approx(deg, abs=1e-6), norm


def _brute_2d(z, norm):
    """argmax over a grid of angles (0.01 degree), refined by a 1e-5 degree grid around the best."""
    th = np.radians(np.arange(0, 360, 0.01))
    for _ in range(2):
        u = np.stack([np.cos(th), np.sin(th)], 1)
        vals = (u @ z.T).min(1) / ib.norm_of(u, norm)
        best = th[np.argmax(vals)]
        th = best + np.radians(np.arange(-0.02, 0.02, 1e-5))
    return u[np.argmax(vals)], vals.max()


def _brute_3d(z, norm):
    """argmax over a Fibonacci sphere of 4e5 directions (0.3 degrees apart), refined twice on tangent-plane
    grids around the best (0.6 and then 0.012 degrees across)."""
    n = 400_000
    i = np.arange(n) + 0.5
    phi, th = np.arccos(1 - 2 * i / n), math.pi * (1 + math.sqrt(5)) * i
    u = np.stack([np.cos(th) * np.sin(phi), np.sin(th) * np.sin(phi), np.cos(phi)], 1)
    vals = (u @ z.T).min(1) / ib.norm_of(u, norm)
    best = u[np.argmax(vals)]
    for half_width in (0.01, 2e-4):
        e1 = np.cross(best, [1.0, 0, 0] if abs(best[0]) < 0.9 else [0, 1.0, 0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(best, e1)
        a, b = (g.reshape(-1, 1) for g in np.meshgrid(*[np.linspace(-half_width, half_width, 201)] * 2))
        u = best + a * e1 + b * e2
        vals = (u @ z.T).min(1) / ib.norm_of(u, norm)
        best = u[np.argmax(vals)]
    return best, vals.max()


def _random_2d(seed=5, n=30):
    """Seeded 2D points labelled by a line through the origin at an odd angle, a band around it left empty."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, (n, 2))
    m = x @ np.array([math.cos(0.3), math.sin(0.3)])
    keep = np.abs(m) > 0.3
    return ib.signed_rows(x[keep], np.sign(m[keep]))


@pytest.mark.parametrize("name", ["single", "clean", "random2d", "tilted", "cube"])
def test_l1_and_linf_lps_agree_with_brute_force(name):
    z = _random_2d() if name == "random2d" else ib.make_preset(name).z
    brute = _brute_3d if z.shape[1] == 3 else _brute_2d
    for norm in ("l1", "linf"):
        mm = ib.max_margin(z, norm)
        assert mm.unique
        assert ib.norm_of(mm.w, norm) == pytest.approx(1.0, abs=1e-12)
        u, val = brute(z, norm)
        assert val <= mm.margin * (1 + 1e-9) + 1e-12, (norm, val, mm.margin)  # the LP is the maximum
        assert val >= mm.margin * (1 - 1e-4), (norm, val, mm.margin)
        assert float(ib.angle_deg(u, mm.w)) < (0.01 if z.shape[1] == 3 else 1e-3), norm


# ------------------------------------------------------------------------------------------------ long runs


def test_gd_angle_approaches_the_w_hat_log_t_plus_w_tilde_prediction(clean):
    svm, tr = clean["svm"], clean["t64"]
    wt = ib.w_tilde(svm, clean["z"], clean["eta"])
    np.testing.assert_allclose(np.exp(-clean["z"][svm.support] @ wt) * clean["eta"], svm.alpha[svm.support])
    w = tr.w[0, _idx(tr, DECADES)]
    measured = ib.angle_deg(w, svm.w_hat)
    predicted = ib.predicted_angle_deg(svm, wt, np.array(DECADES))
    rel = np.abs(measured - predicted) / predicted
    assert np.all(np.diff(rel) < 0), rel  # the relative error shrinks with t ...
    assert rel[-1] < 0.10, rel  # ... and is under 10% at t = 1e6
    assert np.all(np.diff(measured[1:]) < 0) and measured[-1] < 2.0  # the direction turns into the SVM's, slowly
    margins = ib.min_normalized_margin(clean["z"], w)
    assert np.all(np.diff(margins) > 0) and margins[-1] < svm.margin


def test_gd_norm_gains_w_hat_ln10_per_decade_and_loss_times_t_tends_to_sum_alpha_over_eta(clean):
    svm, tr, eta = clean["svm"], clean["t64"], clean["eta"]
    k5, k6 = _idx(tr, (10**5, 10**6))
    norms = tr.norms()[0]
    gain = (norms[k6] - norms[k5]) / (np.linalg.norm(svm.w_hat) * math.log(10))
    assert gain == pytest.approx(1.0, abs=0.03), gain
    assert tr.loss[0, k6] * 10**6 == pytest.approx(svm.alpha_sum / eta, rel=0.02)
    assert tr.log_loss[0, k6] == pytest.approx(math.log(tr.loss[0, k6]), abs=1e-12)
    assert not tr.diverged.any()


@pytest.mark.parametrize("rows, exponent, tol", [
    # two support vectors 53 degrees apart: A = sum alpha z z^T has lambda_min 1/4, the gap (3) does not bind
    ([[1.0, 0.0], [0.6, 0.8], [3.0, 3.0], [2.5, 1.0]], 0.25, 0.01),
    # the clean support vectors (lambda_min 1) with a point at margin 1.3: the gap binds, 0.3
    ([[1.0, 0.0], [-1.0, 2.0], [1.3, 0.0], [0.2, 1.1]], 0.3, 0.03),
])
def test_offset_from_the_prediction_dies_out_at_the_settle_exponent(rows, exponent, tol):
    """The module's linearization (SVM.settle_exponent): ||w(t) - w_hat log t - w_tilde|| ~ t^-min(lambda_min(A),
    gap - 1, 1). Slow settling of hand-drawn data comes from a gap near 1 or from nearly parallel support vectors."""
    z = np.array(rows)
    svm = ib.hard_margin_svm(z)
    assert svm.settle_exponent == pytest.approx(exponent, abs=1e-9)
    eta = 0.5 * ib.stability_limit(z, "logistic")
    ts = np.array([10**5, 10**6])
    tr = ib.run_all(z, ib.RunSpec("logistic", "gd", eta), 10**6)
    off = np.linalg.norm(tr.w[0, _idx(tr, ts)] - ib.predicted_w(svm, ib.w_tilde(svm, z, eta), ts), axis=1)
    assert -np.log10(off[1] / off[0]) == pytest.approx(exponent, abs=tol)


def test_float32_falls_behind_float64_in_norm_by_1e6_steps(clean):
    t64, t32 = clean["t64"], clean["t32"]
    assert t32.dtype == "float32" and t32.w.dtype == np.float32
    n64, n32 = t64.norms()[0], t32.norms()[0].astype(np.float64)
    k3, k6 = _idx(t64, (10**3, 10**6))
    assert abs(n32[k3] - n64[k3]) / n64[k3] < 1e-5  # they agree early
    assert (n64[k6] - n32[k6]) / n64[k6] > 1e-3  # float32's late updates (w_hat / t) round away: behind


def test_coordinate_and_sign_descent_go_to_their_own_max_margin_directions(tilted):
    geo, tr = tilted["geo"], tilted["t_fixed"]
    assert min(geo.angles_deg.values()) > 5 and not geo.coincide
    ks = _idx(tr, (10**3, 10**4, 10**5, 10**6))
    for r, spec in enumerate(tilted["fixed"]):
        own = ib.angle_deg(tr.w[r, ks], geo.direction(spec.optimizer))
        svm = ib.angle_deg(tr.w[r, ks], geo.direction("gd"))
        assert np.all(np.diff(own) < 0), (spec.optimizer, own)  # the angle to its own keeps falling
        assert own[-1] < svm[-1] / 2, (spec.optimizer, own, svm)  # and ends nearer its own than the SVM's
        norm = spec.norm
        own_margin = ib.min_normalized_margin(tilted["z"], tr.w[r, ks], norm)
        assert np.all(np.diff(own_margin) > 0) and own_margin[-1] < geo.max_margin[norm].margin * (1 + 1e-12)
    # the normalized steps get there far faster: 10^4 of them beat 10^6 fixed steps
    tn = tilted["t_normed"]
    for r, spec in enumerate(tilted["fixed"]):
        fixed_end = ib.angle_deg(tr.w[r, -1], geo.direction(spec.optimizer))
        assert ib.angle_deg(tn.w[r, -1], geo.direction(spec.optimizer)) < fixed_end / 10


def test_nonseparable_data_give_a_bounded_trajectory_and_no_svm():
    z = ib.make_preset("nonsep").z
    geo = ib.geometry(z)
    assert not geo.separable and geo.svm is None and not geo.coincide and geo.max_margin == {}
    with pytest.raises(ValueError, match="not linearly separable"):
        ib.hard_margin_svm(z)
    with pytest.raises(ValueError, match="not linearly separable"):
        ib.max_margin(z, "l1")
    specs = [ib.RunSpec("logistic", "gd", 0.5 * ib.stability_limit(z, "logistic")),
             ib.RunSpec("exponential", "gd", 0.25 * ib.stability_limit(z, "exponential"))]
    tr = ib.run_all(z, specs, 10**5)
    norms = tr.norms()
    k4, k5 = _idx(tr, (10**4, 10**5))
    assert not tr.diverged.any()
    assert np.all(norms[:, -1] < 10)
    np.testing.assert_allclose(norms[:, k5], norms[:, k4], rtol=1e-9)  # converged to a finite minimizer
    for r, spec in enumerate(specs):
        h = ib.loss_hessian(z, tr.w_now[r], spec.loss)
        assert np.linalg.eigvalsh(h).min() > 0  # a strict minimum ...
        lo = ib.loss_value(z, tr.w_now[r], spec.loss)[0]
        for dw in np.eye(2) * 1e-3:  # ... that nearby points do not beat
            assert ib.loss_value(z, tr.w_now[r] + dw, spec.loss)[0] > lo
            assert ib.loss_value(z, tr.w_now[r] - dw, spec.loss)[0] > lo


def test_square_loss_converges_to_a_finite_point_off_the_max_margin_direction():
    z = ib.make_preset("clean").z
    tr = ib.run_all(z, ib.RunSpec("square", "gd", 0.5 * ib.stability_limit(z, "square")), 10**5)
    ls = np.linalg.lstsq(z, np.ones(len(z)), rcond=None)[0]  # regression onto the labels
    np.testing.assert_allclose(tr.w_now[0], ls, atol=1e-10)
    assert float(ib.angle_deg(ls, ib.CLEAN_W_HAT)) > 5  # 9.9 degrees: no implicit bias toward the SVM


# ------------------------------------------------------------------------------------------------ the loop itself


def _all_specs(z, factor=0.5):
    plain = {"ngd": "gd", "ncoordinate": "coordinate", "nsign": "sign"}
    return [ib.RunSpec(loss, opt, factor * ib.stability_limit(z, loss, plain.get(opt, opt)))
            for loss in ib.LOSSES for opt in ib.OPTIMIZERS]


def _assert_same(a, b, tol=1e-12):
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.stopped_at, b.stopped_at)
    scale = np.maximum(1.0, np.abs(b.w))
    assert np.nanmax(np.abs(a.w - b.w) / scale) < tol
    np.testing.assert_array_equal(np.isnan(a.w), np.isnan(b.w))
    ll = np.nan_to_num(b.log_loss)
    assert np.max(np.abs(np.nan_to_num(a.log_loss) - ll) / np.maximum(1.0, np.abs(ll))) < tol
    np.testing.assert_allclose(a.loss, b.loss, rtol=tol, atol=0)


def test_jit_loop_equals_the_numpy_reference_for_every_loss_and_optimizer():
    rng = np.random.default_rng(7)
    z = rng.normal(size=(15, 3))  # generic: not separable, no ties in argmax or sign
    specs = _all_specs(z)
    assert len(specs) == ib.MAX_RUNS == 18
    _assert_same(ib.run_all(z, specs, 1000, chunk_steps=137), ib.reference_run(z, specs, 1000))
    # large margins: the normalized runs drive L(w) past exp underflow (log L ~ -1000): the shifted evaluation
    zc = ib.make_preset("clean").z
    normed = [ib.RunSpec(loss, opt, 1.0) for loss in ("logistic", "exponential") for opt in ("ngd", "ncoordinate",
                                                                                            "nsign")]
    a, b = ib.run_all(zc, normed, 1000), ib.reference_run(zc, normed, 1000)
    _assert_same(a, b)
    assert a.log_loss[:, -1].max() < -380 and np.all(np.isfinite(a.log_loss))
    assert np.any(a.loss[:, -1] == 0)  # L underflowed (log L ~ -1000); its log is kept


def test_checkpoints_are_log_spaced_from_one():
    c = ib.checkpoint_steps(10**6)
    assert c[0] == 0 and c[1] == 1 and c[-1] == 10**6 and np.all(np.diff(c) > 0)
    per_decade = [np.sum((c >= 10**k) & (c < 10 ** (k + 1))) for k in range(1, 6)]
    assert per_decade == [ib.CHECKPOINTS_PER_DECADE] * 5
    assert list(ib.checkpoint_steps(0)) == [0] and list(ib.checkpoint_steps(3)) == [0, 1, 2, 3]
    assert list(ib.checkpoint_steps(1000, per_decade=1)) == [0, 1, 10, 100, 1000]


def test_run_streams_in_chunks_and_stops_when_closed():
    z = ib.make_preset("clean").z
    specs = [ib.RunSpec("logistic", "gd", 0.02), ib.RunSpec("exponential", "ngd", 0.05)]
    traces = list(ib.run(z, specs, 5000, chunk_steps=1000))
    assert [t.t for t in traces] == [1000, 2000, 3000, 4000, 5000]
    assert [t.done for t in traces] == [False] * 4 + [True]
    final = traces[-1]
    np.testing.assert_array_equal(final.steps, ib.checkpoint_steps(5000))
    for t in traces[:-1]:
        assert t.steps[-1] < t.t and len(t.steps) < len(final.steps)
        np.testing.assert_array_equal(t.w, final.w[:, : len(t.steps)])  # earlier snapshots are prefixes
    np.testing.assert_array_equal(final.w[:, -1], final.w_now)
    _assert_same(final, ib.run_all(z, specs, 5000))  # chunking does not change the numbers
    gen = ib.run(z, specs, 10**7, chunk_steps=2000)
    first = next(gen)
    gen.close()  # cancel between chunks
    with pytest.raises(StopIteration):
        next(gen)
    assert first.t == 2000 and not first.done


def test_a_diverging_step_stops_that_run_and_reports_its_step():
    z = ib.make_preset("clean").z
    healthy = ib.RunSpec("logistic", "gd", 0.02)
    bad = ib.RunSpec("square", "gd", 1.2 * ib.stability_limit(z, "square"))  # |1 - eta lambda| > 1: blows up
    tr = ib.run_all(z, [bad, healthy], 10**4, chunk_steps=500)
    ref = ib.reference_run(z, [bad], 10**4)
    assert 100 < tr.stopped_at[0] == ref.stopped_at[0] < 10**4 and tr.stopped_at[1] == -1
    assert tr.diverged.tolist() == [True, False]
    assert np.all(np.isfinite(tr.w_now))  # the last finite w is kept
    after = tr.steps >= tr.stopped_at[0]
    assert np.all(np.isnan(tr.w[0, after])) and np.all(np.isfinite(tr.w[0, ~after]))
    np.testing.assert_array_equal(tr.w[1], ib.run_all(z, healthy, 10**4).w[0])  # the other run went on
    # the exponential loss overflows within a few steps of a large one on non-separable data
    zn = ib.make_preset("nonsep").z
    ex = ib.run_all(zn, ib.RunSpec("exponential", "gd", 20 * ib.stability_limit(zn, "exponential")), 1000)
    assert 1 <= ex.stopped_at[0] < 20 and ex.done


def test_stability_limits():
    z = ib.make_preset("tilted").z
    s2 = np.linalg.norm(z, 2) ** 2
    assert ib.stability_limit(z, "logistic") == pytest.approx(8 / s2)
    assert ib.stability_limit(z, "square") == pytest.approx(2 / s2)
    assert ib.stability_limit(z, "exponential") == pytest.approx(2 / s2)  # local, at w = 0: H = Z^T Z
    w = ib.hard_margin_svm(z).w_hat
    h = (z * np.exp(-(z @ w))[:, None]).T @ z
    assert ib.stability_limit(z, "exponential", w=w) == pytest.approx(2 / np.linalg.eigvalsh(h).max())
    assert ib.stability_limit(z, "logistic", "coordinate") == pytest.approx(8 / (z**2).sum(0).max())
    # the descent lemma: below each limit every step lowers the loss (sampled at every step for 300 steps)
    for opt in ("gd", "coordinate", "sign"):
        spec = ib.RunSpec("logistic", opt, 0.99 * ib.stability_limit(z, "logistic", opt))
        tr = ib.run_all(z, spec, 300, per_decade=1000)
        assert np.all(np.diff(tr.loss[0]) < 0), opt


def test_bad_arguments_raise_clear_value_errors():
    z = ib.make_preset("clean").z
    ok = ib.RunSpec("logistic", "gd", 0.01)
    cases = [
        (lambda: ib.run(z, ib.RunSpec("hinge", "gd", 0.1), 10), "unknown loss 'hinge'"),
        (lambda: ib.run(z, ib.RunSpec("logistic", "adam", 0.1), 10), "unknown optimizer 'adam'"),
        (lambda: ib.run(z, ib.RunSpec("logistic", "gd", 0.0), 10), "step size must be positive"),
        (lambda: ib.run(z, ib.RunSpec("logistic", "gd", -1.0), 10), "step size must be positive"),
        (lambda: ib.run(z, ib.RunSpec("logistic", "gd", float("nan")), 10), "step size must be positive"),
        (lambda: ib.run(z, ok, 10**8 + 1), "at most"),
        (lambda: ib.run(z, ok, -1), "cannot be negative"),
        (lambda: ib.run(z, ok, 2.5), "whole number"),
        (lambda: ib.run(np.ones((2001, 2)), ok, 10), "at most 2000"),
        (lambda: ib.run(np.ones((5, 9)), ok, 10), "at most 8"),
        (lambda: ib.run(np.ones(5), ok, 10), r"\(n, d\) array"),
        (lambda: ib.run(np.array([[1.0, np.nan]]), ok, 10), "non-finite"),
        (lambda: ib.run(z, ok, 10, w0=np.zeros(3)), "w0 is"),
        (lambda: ib.run(z, ok, 10, w0=[np.inf, 0]), "non-finite"),
        (lambda: ib.run(z, ok, 10, dtype=np.float16), "float64"),
        (lambda: ib.run(z, [], 10), "at least one run"),
        (lambda: ib.run(z, [ok] * 19, 10), "at most 18"),
        (lambda: ib.run(z, ["gd"], 10), "RunSpec"),
        (lambda: ib.run(z, ok, 10, chunk_steps=0), "at least one step"),
        (lambda: ib.signed_rows([[1.0, 2.0]], [0.5]), "-1 or \\+1"),
        (lambda: ib.signed_rows([[1.0, 2.0]], [1.0, -1.0]), "labels"),
        (lambda: ib.stability_limit(z, "logistic", "lbfgs"), "unknown optimizer"),
        (lambda: ib.max_margin(z, "l3"), "unknown norm"),
        (lambda: ib.w_tilde(ib.hard_margin_svm(z), z, 0), "step size"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
    with pytest.raises(LimitError):
        ib.run(np.ones((2001, 2)), ok, 10)
    with pytest.raises(ValueError, match="not a checkpoint"):
        ib.run_all(z, ok, 10).at(11)


def test_bench_figures_and_numba_cache_location(monkeypatch):
    figs = ib.bench_figures(repeats=1)
    assert set(figs) == {"implicit_bias_1e6_steps_ms", "implicit_bias_1e6_steps_numpy_ms"}
    assert all(v > 0 for v in figs.values())
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/tmp/elsewhere")
    assert not ib._numba_cache_in_tree()  # a cache outside the package: none


def test_lab_run_takes_plain_data_streams_on_log_time_and_matches_run():
    d = ib.make_preset("clean")
    eta = 0.5 * ib.stability_limit(d.z, "logistic")
    traces = list(ib.lab_run(d.x.tolist(), d.y.tolist(), 0.0, [["logistic", "gd", eta]], 10**4, per_decade=5))
    ts = [tr.t for tr in traces]
    # chunks end at 1, 10^(1/5), ... (merged when equal), so the stream advances evenly in log t
    assert ts[:4] == [1, 2, 3, 4] and ts[-1] == 10**4 and traces[-1].done
    assert all(b > a for a, b in zip(ts, ts[1:])) and 18 <= len(ts) <= 22
    ref = ib.run_all(d.z, ib.RunSpec("logistic", "gd", eta), 10**4)
    np.testing.assert_allclose(traces[-1].w_now, ref.w_now, rtol=1e-12)
    np.testing.assert_allclose(traces[-1].at(1000), ref.at(1000), rtol=1e-12)
    # the bias feature is a third coordinate; bad input is refused in words before any work
    tb = list(ib.lab_run(d.x.tolist(), d.y.tolist(), 1.0, [["logistic", "gd", 0.01]], 10))[-1]
    assert tb.w_now.shape == (1, 3)
    with pytest.raises(ValueError, match="labels are -1 or \\+1"):
        ib.lab_run([[1.0, 0.0]], [2.0], 0.0, [["logistic", "gd", 0.1]], 10)
    with pytest.raises(ValueError, match="unknown optimizer"):
        ib.lab_run([[1.0, 0.0]], [1.0], 0.0, [["logistic", "adam", 0.1]], 10)
