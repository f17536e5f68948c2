import numpy as np
import pytest
import torch

from models import toy2d
from models.train import OptimizerConfig, run_to_end, train
from models.trajectory import Trajectory


def problem(key="tanh", xs=(1.0,), ys=(0.8,)):
    model, data = toy2d.make_model(key), toy2d.Data(list(xs), list(ys))
    x, y = data.tensors()

    def loss_fn(w, idx):
        return toy2d.loss(model, w, x, y) if idx is None else toy2d.loss(model, w, x[idx], y[idx])

    return loss_fn, data


@pytest.mark.parametrize("opt, lr", [("gd", 0.1), ("momentum", 0.05), ("adam", 0.05), ("sgd", 0.05)])
def test_every_optimizer_reduces_the_loss(opt, lr):
    loss_fn, data = problem(xs=(1.0, 2.0), ys=(0.8, 1.2))
    cfg = OptimizerConfig(opt, lr, batch_size=1 if opt == "sgd" else None)
    snaps, result = run_to_end(train(loss_fn, [[1.5, 1.5], [-1.0, -2.0]], data.n, cfg, 3000))
    assert np.all(snaps[-1].loss < 1e-3 * snaps[0].loss)
    assert snaps[0].params.dtype == np.float64


def test_runs_are_seeded_and_deterministic():
    loss_fn, data = problem(xs=(1.0, 2.0), ys=(0.8, 1.2))
    cfg = OptimizerConfig("sgd", 0.05, batch_size=1)
    a, _ = run_to_end(train(loss_fn, [[1.5, 1.5]], data.n, cfg, 200, seed=3))
    b, _ = run_to_end(train(loss_fn, [[1.5, 1.5]], data.n, cfg, 200, seed=3))
    c, _ = run_to_end(train(loss_fn, [[1.5, 1.5]], data.n, cfg, 200, seed=4))
    assert np.array_equal(a[-1].params, b[-1].params)
    assert not np.array_equal(a[-1].params, c[-1].params)


def test_divergence_stops_with_a_message_and_keeps_the_finite_path():
    loss_fn, data = problem("factor", xs=(1.0,), ys=(1.0,))
    snaps, result = run_to_end(train(loss_fn, [[2.0, 2.5], [0.9, 1.1]], data.n, OptimizerConfig("gd", 1.5), 500))
    assert result.diverged[0]
    assert "diverged" in result.message and "step size" in result.message
    assert all(np.all(np.isfinite(s.params)) for s in snaps)
    # the diverging row is frozen at its last finite point; the stable one converges
    assert snaps[-1].diverged[0] and not snaps[-1].active[0]
    assert np.isfinite(snaps[-1].loss[0])


def test_all_diverged_ends_the_run():
    loss_fn, data = problem("factor", xs=(1.0,), ys=(1.0,))
    snaps, result = run_to_end(train(loss_fn, [[3.0, 3.0]], data.n, OptimizerConfig("gd", 5.0), 10_000))
    assert result.reason == "diverged"
    assert len(snaps) < 100


def test_bad_optimizer_settings_are_refused():
    with pytest.raises(ValueError, match="learning rate"):
        OptimizerConfig("gd", float("nan"))
    with pytest.raises(ValueError, match="unknown optimizer"):
        OptimizerConfig("lbfgs", 0.1)


def test_trajectory_memory_is_bounded_and_measurements_kept():
    tr = Trajectory(2, max_points=1000)
    n = 200_000
    for k in range(n):
        tr.append(k, np.array([k, -k], dtype=float), 1.0 / (k + 1), 0.0)
    assert len(tr.loss.view()) == n  # every measurement kept
    path = tr.path
    assert len(path) <= 1001
    assert np.array_equal(path[-1], [n - 1, -(n - 1)])  # ends at the latest point
    assert np.all(np.diff(path[:, 0]) > 0)
    assert len(tr.path_loss) == len(path)


def test_many_trajectory_runs_cap_their_measurements():
    tr = Trajectory(2, max_points=500, max_measured=1000)
    for k in range(100_000):
        tr.append(k, np.array([k, 0.0]), float(k), 0.0)
    assert len(tr.loss.view()) <= 1000 and len(tr.path) <= 501
    steps = tr.steps.view()
    assert steps[0] == 0 and np.all(np.diff(steps) == steps[1] - steps[0])  # evenly spaced samples
    assert np.array_equal(tr.loss.view(), steps.astype(float))  # each kept value belongs to its step
    assert tr.last_step == 99_999


def test_float32_and_device_argument():
    loss_fn, data = problem()
    snaps, _ = run_to_end(train(loss_fn, [[1.0, 1.0]], data.n, OptimizerConfig("gd", 0.1), 10,
                                dtype=torch.float32, device="cpu"))
    assert len(snaps) == 11
