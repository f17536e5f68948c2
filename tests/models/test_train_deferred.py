"""The trainer's deferred-sync path (the one CUDA takes): the same snapshots as the per-step path, and no host
synchronization between two bulk copies, counted on the CPU with a stand-in for the device reads."""

import numpy as np
import pytest
import torch

from models import train as tr
from models.train import OptimizerConfig, run_to_end, train
from tests.models.hostreads import HostReads, count_bulk
from tests.models.test_train import problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = [("gd", 0.1, "tanh"), ("momentum", 0.05, "tanh"), ("adam", 0.05, "tanh"), ("sgd", 0.05, "tanh"),
         ("gd", 0.3, "factor"), ("gd", 0.2, "linear")]


@pytest.mark.parametrize("opt, lr, key", CASES)
@pytest.mark.parametrize("k", [7, 64])
def test_the_deferred_path_yields_the_per_step_snapshots(opt, lr, key, k):
    """Divergence ('factor' at lr 0.3 diverges one start), convergence ('linear' reaches the tolerance) and
    stochastic batches included: every snapshot equal, the same ending."""
    loss_fn, data = problem(key, xs=(1.0, 2.0), ys=(0.8, 1.2)) if key != "factor" else problem(key)
    cfg = OptimizerConfig(opt, lr, batch_size=1 if opt == "sgd" else None)
    starts = [[1.5, 1.5], [-1.0, -2.0], [4.0, 3.0]]
    steps = 1500 if key == "linear" else 300
    a, ra = run_to_end(train(loss_fn, starts, data.n, cfg, steps, seed=2))
    b, rb = run_to_end(train(loss_fn, starts, data.n, cfg, steps, seed=2, sync_every=k))
    assert len(a) == len(b) and (ra.reason, ra.steps, ra.message) == (rb.reason, rb.steps, rb.message)
    for s, t in zip(a, b):
        assert s.step == t.step
        np.testing.assert_array_equal(s.params, t.params)
        np.testing.assert_array_equal(s.loss, t.loss)
        np.testing.assert_array_equal(s.grad_norm, t.grad_norm)
        np.testing.assert_array_equal(s.active, t.active)
        np.testing.assert_array_equal(s.diverged, t.diverged)
    if key == "factor":
        assert ra.diverged.any() and not ra.diverged.all()
    if key == "linear":
        assert ra.reason == "converged"


@pytest.mark.parametrize("opt", ["gd", "adam", "sgd"])
def test_no_host_synchronization_between_bulk_copies(monkeypatch, opt):
    loss_fn, data = problem(xs=(1.0, 2.0), ys=(0.8, 1.2))
    cfg = OptimizerConfig(opt, 0.05, batch_size=1 if opt == "sgd" else None)
    mode, calls = HostReads(), []
    count_bulk(monkeypatch, tr, mode, calls)
    with mode:
        snaps, result = run_to_end(train(loss_fn, [[1.5, 1.5], [-1.0, -2.0]], data.n, cfg, 200, sync_every=50))
    assert len(snaps) == 201 and result.reason == "completed"
    # snapshots of steps 0-49, 50-99, 100-149, 150-199, 200; mini-batch indices for steps 1-50, ..., 151-200
    assert calls.count("_to_host") == 5
    assert calls.count("_to_device") == (4 if opt == "sgd" else 0)
    assert mode.other == 0, f"{mode.other} host reads outside the bulk copies"
    assert mode.bulk >= len(calls)


def test_the_stand_in_catches_a_per_step_synchronization(monkeypatch):
    """The counting mode is not blind: the per-step path (which reads the device every step) is caught."""
    loss_fn, data = problem(xs=(1.0, 2.0), ys=(0.8, 1.2))
    mode = HostReads()
    with mode:
        run_to_end(train(loss_fn, [[1.5, 1.5]], data.n, OptimizerConfig("gd", 0.05), 20, sync_every=1))
    assert mode.other >= 20


def test_cuda_defers_by_default_and_bad_values_are_refused(monkeypatch):
    seen = []
    monkeypatch.setattr(tr, "_train_deferred", lambda *a: seen.append(a[-1]) or (yield from ()))
    loss_fn, data = problem()
    run_to_end(train(loss_fn, [[1.0, 1.0]], data.n, OptimizerConfig(), 5, device=torch.device("cpu"),
                     sync_every=None))
    assert seen == []
    with pytest.raises(ValueError, match="sync_every"):
        run_to_end(train(loss_fn, [[1.0, 1.0]], data.n, OptimizerConfig(), 5, sync_every=0))
    assert tr.CUDA_SYNC_EVERY > 1
