"""Snapshots packed for the pipe (issue 19, streaming at the trainer's rate): a batch of the trainer's
snapshots crosses as a few arrays, reads back as the same snapshots, and a trajectory fed whole batches keeps
exactly what it keeps fed one step at a time (measured steps, path, decimations)."""

import pickle

import numpy as np
import pytest

from models import toy2d
from models.procrun import ProcessRun, _packed
from models.train import run_to_end
from models.trajectory import Snapshot, SnapshotBatch, Trajectory

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KW = dict(model_key="tanh", expression="", xs=(1.0, 2.0), ys=(0.8, 1.2), optimizer="gd", lr=0.05, momentum=0.9,
          batch_size=1, seed=0, device="cpu")


def snaps_of(n_steps=300, starts=((1.5, 1.5), (-1.0, -2.0))):
    snaps, _ = run_to_end(toy2d.descent(starts=np.array(starts), steps=n_steps, **KW))
    return snaps


def test_a_batch_packs_and_reads_back_as_the_same_snapshots_and_pickles_small():
    snaps = snaps_of(150)
    b = _packed(snaps)
    assert isinstance(b, SnapshotBatch) and len(b) == len(snaps)
    for s, t in zip(snaps, b):
        assert s.step == t.step
        for f in ("params", "loss", "grad_norm", "active", "diverged"):
            np.testing.assert_array_equal(getattr(s, f), getattr(t, f))
    assert b[-1].step == snaps[-1].step
    assert len(pickle.dumps(b)) < len(pickle.dumps(snaps)) / 3
    # what does not pack goes as it is: other items, snapshots with metrics
    assert _packed([1, 2]) == [1, 2]
    odd = [Snapshot(0, np.zeros((1, 2)), np.zeros(1), np.zeros(1), np.ones(1, bool), np.zeros(1, bool), {"m": 1})]
    assert _packed(odd) is odd


@pytest.mark.parametrize("max_points, max_measured", [(4096, None), (16, None), (7, 10), (3, 4)])
def test_a_trajectory_fed_batches_keeps_what_it_keeps_fed_steps(max_points, max_measured):
    rng = np.random.default_rng(0)
    steps = np.arange(500)
    params = rng.standard_normal((500, 2))
    loss, gn = rng.random(500), rng.random(500)
    one, many = Trajectory(2, max_points, max_measured), Trajectory(2, max_points, max_measured)
    for k in steps:
        one.append(int(k), params[k], float(loss[k]), float(gn[k]))
    cuts = np.sort(rng.choice(np.arange(1, 500), 30, replace=False))
    for a, z in zip(np.r_[0, cuts], np.r_[cuts, 500]):
        many.extend(steps[a:z], params[a:z], loss[a:z], gn[a:z])
    for name in ("steps", "loss", "grad_norm"):
        np.testing.assert_array_equal(getattr(one, name).view(), getattr(many, name).view())
    np.testing.assert_array_equal(one.path, many.path)
    np.testing.assert_array_equal(one.path_loss, many.path_loss)
    assert (one.last_step, one.last_loss) == (many.last_step, many.last_loss)
    assert (one._stride, one._mstride) == (many._stride, many._mstride)


def test_the_child_process_sends_packed_batches_of_the_generator_s_snapshots():
    expected = snaps_of(400)
    run = ProcessRun("models.toy2d:descent", dict(KW, starts=np.array([[1.5, 1.5], [-1.0, -2.0]]), steps=400))
    got, done = [], None
    try:
        while done is None:
            assert run.poll(60), "no message from the training process"
            kind, payload = run.recv()
            if kind == "batch":
                assert isinstance(payload, SnapshotBatch)
                got.extend(payload)
            elif kind == "done":
                done = payload
            else:
                pytest.fail(f"{kind}: {payload}")
    finally:
        run.close()
    assert [s.step for s in got] == [s.step for s in expected]
    np.testing.assert_array_equal(np.stack([s.params for s in got]), np.stack([s.params for s in expected]))


def test_a_lab_run_takes_a_packed_batch_as_it_takes_the_snapshots_one_by_one():
    """visualizer.runs: the packed path keeps the trajectories the per-snapshot path keeps, a converged start
    (frozen, its snapshots no longer added) included."""
    from types import SimpleNamespace

    from visualizer.runs import DescentRun

    snaps, result = run_to_end(toy2d.descent(starts=np.array([[1.5, 1.5], [0.8, 0.6]]), steps=3000,
                                             **dict(KW, model_key="linear", xs=(1.0,), ys=(0.8,), lr=0.2)))
    assert not snaps[-1].active.all()  # a start converged and froze
    one = SimpleNamespace(trajs=[Trajectory(2) for _ in range(2)])
    many = SimpleNamespace(trajs=[Trajectory(2) for _ in range(2)])
    DescentRun._take(one, snaps)
    for a in range(0, len(snaps), 97):
        DescentRun._take_packed(many, SnapshotBatch.pack(snaps[a:a + 97]))
    for t1, t2 in zip(one.trajs, many.trajs):
        np.testing.assert_array_equal(t1.steps.view(), t2.steps.view())
        np.testing.assert_array_equal(t1.path, t2.path)
        assert t1.last_step == t2.last_step and t1.diverged == t2.diverged
    assert one.trajs[0].last_step < len(snaps) - 1 or one.trajs[1].last_step < len(snaps) - 1
