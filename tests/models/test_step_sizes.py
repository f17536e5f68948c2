"""Every trainer in models/ refuses a step size that is not a positive finite number, before it starts."""

import numpy as np
import pytest
import torch

from models import netmanifold as nm
from models import nets, surface_job, toy2d, toy3d
from models.train import OptimizerConfig

BAD = [float("nan"), float("inf"), float("-inf"), 0.0, -0.1]
MESSAGE = "learning rate must be a positive finite number, got"


def test_check_step_size_names_the_value():
    from models.train import check_step_size

    with pytest.raises(ValueError, match=f"{MESSAGE} nan"):
        check_step_size(float("nan"))
    with pytest.raises(ValueError, match="step size must be a positive finite number, got -1"):
        check_step_size(-1.0, "step size")
    for junk in ("0.1", None, True):
        with pytest.raises(ValueError, match=MESSAGE):
            check_step_size(junk)
    assert check_step_size(np.float32(0.5)) == 0.5


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("optimizer", ["gd", "momentum", "adam"])
def test_train_run_refuses_a_bad_learning_rate_at_once(optimizer, bad):
    # raised by the call itself (the lab's child process reports it), not as 'diverged at step 1'
    with pytest.raises(ValueError, match=MESSAGE):
        nets.train_run((8,), "tanh", "standard", False, "moons", 40, 0.1, optimizer, bad, 5, 0)


@pytest.mark.parametrize("bad", BAD)
def test_train_snapshots_and_user_runs_refuse_a_bad_learning_rate(bad):
    net = torch.nn.Linear(2, 1)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=MESSAGE):
        nets.train_snapshots(net, lambda: net(x), lambda out: out.pow(2).mean(), "gd", bad, 5, 1)
    # checked before the user's factory is even loaded
    with pytest.raises(ValueError, match=MESSAGE):
        surface_job.user_train_run("no/such/model.py:build", "momentum", bad, 5)
    xs, ys = nets.make_data("moons", 40)
    with pytest.raises(ValueError, match=MESSAGE):
        surface_job.train_mlp(nets.MLPSpec(hidden=(4,)), xs, ys, steps=2, lr=bad)


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("optimizer", ["gd", "sgd", "momentum", "adam"])
def test_descent_labs_refuse_a_bad_learning_rate(optimizer, bad):
    with pytest.raises(ValueError, match=MESSAGE):
        OptimizerConfig(optimizer, bad)
    with pytest.raises(ValueError, match=MESSAGE):
        toy2d.descent("tanh", "", [1.0], [0.5], [[0.5, 0.5]], optimizer, bad, 0.9, 1, 10, "cpu", 0)
    with pytest.raises(ValueError, match=MESSAGE):
        toy3d.descent("tanh", "", [1.0], [0.5], [[0.5, 0.5, 0.5]], optimizer, bad, 0.9, 1, 10, "cpu", 0)


@pytest.mark.parametrize("bad", BAD)
def test_walk_refuses_a_bad_step_size(bad):
    net = nm.MLP1D(4)
    x, y = nm.make_data(5)
    w = np.zeros(net.n_params)
    with pytest.raises(ValueError, match="step size must be a positive finite number, got"):
        nm.walk(net, x, y, w, steps=3, step_size=bad)
    with pytest.raises(ValueError, match="step size must be a positive finite number, got"):
        nm.walk_run(4, 5, 0, 3, bad)
