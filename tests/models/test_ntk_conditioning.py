"""Issue 13: conditioning, PL* and the edge of stability along the ntk lab's runs (THEORY.md sections 2 and 7)."""

import math

import numpy as np
import pytest
import torch

from models import ntk
from models import ntk_sweep as sw
from models.hessian import explicit_hessian

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CIRCLE = dict(kind="circle", target="mix", n=16, seed=0)


def run(**kw):
    gen = sw.sweep_run(**kw)
    snaps = []
    try:
        while True:
            snaps.append(next(gen))
    except StopIteration as stop:
        return snaps, stop.value


@pytest.mark.parametrize("loss_norm,output,alpha", [("sum", "plain", 1.0), ("mean", "plain", 1.0),
                                                    ("sum", "scaled", 4.0)])
def test_pl_ratio_is_the_residual_quadratic_form_and_never_below_lambda_min(loss_norm, output, alpha):
    snaps, _ = run(data=CIRCLE, widths=[64, 512], eta=0.02 if loss_norm == "sum" else 0.3, steps=60,
                   metric_every=10, loss_norm=loss_norm, output=output, alpha=alpha)
    init = snaps[0].init
    c = init.kernel_scale
    assert c == (1 / 16 if loss_norm == "mean" else 1.0)
    y = sw.make_data(**CIRCLE).y
    rows = [s for s in snaps if s.metrics is not None]
    assert [s.step for s in rows] == list(range(0, 61, 10))
    for s in rows:
        m = s.metrics
        for k in range(2):
            r = s.out[k].astype(np.float64) - y
            K = m.K[k].astype(np.float64)
            # ||grad L||^2 = c^2 r^T K r / alpha^2 (the gradient GD takes at this step, from autograd)
            assert m.grad_sq[k] == pytest.approx(c * c * r @ K @ r / alpha**2, rel=2e-4)
            assert m.loss[k] == pytest.approx(0.5 * c * (r @ r) / alpha**2, rel=1e-5)
            ratio = 0.5 * m.grad_sq[k] / m.loss[k]
            assert ratio >= c * m.lam_min[k] * (1 - 1e-4)
            assert c * m.lam_max[k] >= ratio
            np.testing.assert_allclose(np.linalg.eigvalsh(K)[[0, -1]], [m.lam_min[k], m.lam_max[k]], rtol=1e-6,
                                       atol=1e-9)


def test_the_sharpness_is_the_top_eigenvalue_of_the_explicit_hessian():
    """A small float32 network: the warm-started estimate at the last step against torch's explicit Hessian of the
    same loss at the same weights (float64), and the model Hessian's norm likewise."""
    snaps, _ = run(data=dict(kind="line", target="sin", n=10, seed=1), widths=[8], depth=2, activation="tanh",
                   parameterization="standard", eta=0.05, steps=40, metric_every=10, hessian_every=10,
                   loss_norm="mean")
    m = snaps[-1].metrics
    # rebuild the network at its last weights by running the same GD by hand in float64
    d = sw.make_data(kind="line", target="sin", n=10, seed=1)
    net = ntk.NTKNet(ntk.NTKSpec(1, 8, 2, "tanh", "standard", torch.float32), seed=0)
    x, y = torch.as_tensor(d.x, dtype=torch.float32), torch.as_tensor(d.y, dtype=torch.float32)
    params = list(net.parameters())
    for _ in range(40):
        loss = 0.5 * ((net(x) - y) ** 2).mean()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(g, alpha=0.05)
    H = explicit_hessian(lambda: 0.5 * ((net(x) - y) ** 2).mean(), params).double()
    ev = torch.linalg.eigvalsh(0.5 * (H + H.T))
    assert m.sharpness[0] == pytest.approx(float(ev[-1]), rel=2e-3)
    assert m.hess_iters[0] <= 20
    norms = []
    for i in sorted({0, 5, 9}):
        Hi = explicit_hessian(lambda i=i: net(x[i:i + 1])[0], params).double()
        norms.append(float(torch.linalg.eigvalsh(0.5 * (Hi + Hi.T)).abs().max()))
    assert m.model_hess[0] == pytest.approx(max(norms), rel=1e-2)
    # between Hessian steps the quantities are not measured
    assert all(np.isnan(s.metrics.sharpness).all() for s in snaps if s.metrics is not None and s.step % 10)


def test_sharpness_preset_rides_the_edge_of_stability():
    """The lab's preset (one tanh network, two step sizes, the mean loss): the sharpness starts well below 2/eta,
    rises, and over the last fifth of the run its median is within 15% of 2/eta for both step sizes."""
    from visualizer.labs.ntk import EOS_PRESET  # (building the lab module imports no Qt widget here)

    p = EOS_PRESET
    snaps, result = run(data=dict(kind=p["data"], target=p["line_target"], n=p["n_points"], seed=p["seed"]),
                        widths=[p["one_width"]] * 2, run_etas=p["etas"], depth=p["depth"], activation=p["activation"],
                        parameterization=p["parameterization"], loss_norm=p["loss_norm"], steps=p["steps"],
                        metric_every=40, hessian_every=40)
    assert result["diverged"] == []
    rows = [(s.step, s.metrics.sharpness, s.loss) for s in snaps if s.metrics is not None]
    sharp = np.array([r[1] for r in rows])
    assert np.isfinite(sharp).all()
    for k, eta in enumerate(p["etas"]):
        last = sharp[int(0.8 * len(sharp)):, k]
        assert abs(np.median(last) / (2 / eta) - 1) < 0.15, (eta, np.median(last))
        assert sharp[0, k] < 0.7 * 2 / eta
        assert sharp[:, k].max() > 1.5 * sharp[0, k]  # progressive sharpening
    # the loss keeps falling over the run, but not monotonically
    loss = np.array([r[2] for r in rows])
    assert np.all(loss[-1] < 0.1 * loss[0])
    assert np.any(np.diff(loss[:, 1]) > 0)


def test_a_wide_network_stays_in_the_ball_and_under_the_bound():
    """One hidden layer, NTK parameterization, width 4096, a step below 1/beta: L(w_t) <= (1 - eta mu)^t L(w0) with
    mu the smallest lambda_min(K) seen, and ||w_t - w0|| <= R = 2 sqrt(2 beta L(w0)) / mu, beta the largest
    sharpness seen; R is far larger than the distance travelled."""
    snaps, _ = run(data=dict(kind="circle", target="sin2", n=12, seed=0), widths=[4096], eta=0.02, steps=300,
                   metric_every=10, hessian_every=10)
    rows = [s.metrics for s in snaps if s.metrics is not None]
    mu = min(m.lam_min[0] for m in rows)
    beta = max(m.sharpness[0] for m in rows if np.isfinite(m.sharpness[0]))
    assert mu > 0 and 1 / beta >= 0.02
    L0 = snaps[0].loss[0]
    for s in snaps:
        assert s.loss[0] <= L0 * (1 - 0.02 * mu) ** s.step * (1 + 1e-5)
    R = 2 * math.sqrt(2 * beta * L0) / mu
    dist = max(m.wdist[0] for m in rows)
    assert dist <= R and 10 * dist < R


def test_the_network_hessian_shrinks_with_width():
    snaps, _ = run(data=CIRCLE, widths=[64, 256, 1024, 4096], eta=0.02, steps=20, metric_every=10, hessian_every=10)
    mh = np.mean([s.metrics.model_hess for s in snaps if s.metrics is not None], axis=0)
    slope = sw.loglog_slope([64, 256, 1024, 4096], mh)
    assert -0.7 < slope < -0.3  # about m^-1/2 (Liu, Zhu, Belkin 2020)


def test_one_width_at_several_step_sizes():
    snaps, _ = run(data=CIRCLE, widths=[128, 128, 128], run_etas=[0.01, 0.02, 0.01], steps=20, metric_every=10)
    init = snaps[0].init
    assert init.etas == [0.01, 0.02, 0.01] and init.widths == [128, 128, 128]
    # the same network: identical runs at the same step, different ones at another
    assert np.array_equal(snaps[-1].out[0], snaps[-1].out[2]) and not np.array_equal(snaps[-1].out[0],
                                                                                      snaps[-1].out[1])
    with pytest.raises(ValueError, match="one step size per run"):
        run(data=CIRCLE, widths=[128, 128], run_etas=[0.01], steps=2)
    with pytest.raises(ValueError, match="distinct widths"):
        run(data=CIRCLE, widths=[128, 128], steps=2)
    with pytest.raises(ValueError, match="positive"):
        run(data=CIRCLE, widths=[128], run_etas=[-0.1], steps=2)
    with pytest.raises(ValueError, match="loss_norm"):
        run(data=CIRCLE, widths=[128], steps=2, loss_norm="median")
