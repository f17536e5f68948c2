"""The width sweep's deferred-sync path (the one CUDA takes): the per-step path's snapshots exactly, and no host
synchronization between two bulk copies or metric steps (counted on the CPU with tests/models/hostreads.py)."""

import numpy as np
import pytest

from models import ntk_sweep as sw
from tests.models.hostreads import HostReads, count_bulk

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = dict(kind="circle", target="mix", n=12, seed=0)


def same(a: sw.SweepStep, b: sw.SweepStep) -> None:
    assert a.step == b.step and a.diverged_at == b.diverged_at
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.out, b.out)
    np.testing.assert_array_equal(a.diverged, b.diverged)
    assert (a.init is None) == (b.init is None) and (a.metrics is None) == (b.metrics is None)
    if a.metrics is not None:
        for name in ("test_loss", "wchange", "kchange", "gap", "f_test", "K", "grad_sq", "wdist"):
            np.testing.assert_array_equal(getattr(a.metrics, name), getattr(b.metrics, name))


def run(**kw):
    gen = sw.sweep_run(**kw)
    snaps = []
    while True:
        try:
            snaps.append(next(gen))
        except StopIteration as stop:
            return snaps, stop.value


@pytest.mark.parametrize("metrics", [False, True])
@pytest.mark.parametrize("k", [5, 64])
def test_the_deferred_sweep_yields_the_per_step_snapshots(metrics, k):
    """Standard parameterization at a step too large for the wide widths: they diverge mid-run (and mid-chunk),
    the narrow ones train on; every snapshot and the summary equal the per-step path's."""
    kw = dict(data=DATA, widths=[16, 32, 1024], parameterization="standard", eta=0.03, steps=60, metric_every=25,
              seed=0, metrics=metrics)
    a, ra = run(**kw)
    b, rb = run(**kw, sync_every=k)
    assert len(a) == len(b) == 61 and ra == rb
    assert ra["diverged"] == [1024], ra  # the case is the one it means to be
    for s, t in zip(a, b):
        same(s, t)


def test_no_host_synchronization_between_bulk_copies(monkeypatch):
    mode, calls = HostReads(), []
    count_bulk(monkeypatch, sw, mode, calls)
    gen = sw.sweep_run(data=DATA, widths=[16, 64], eta=0.01, steps=100, metrics=False, sync_every=25, seed=0)
    first = next(gen)  # the set-up (kernels at w0, their eigenpairs) reads the host as it likes
    assert first.init is not None
    with mode:
        rest = list(gen)
    assert len(rest) == 100
    # steps 0-24 (copied before step 0 was yielded), 25-49, 50-74, 75-99, 100
    assert calls.count("_to_host") == 5
    assert mode.other == 0, f"{mode.other} host reads outside the bulk copies"


def test_metric_steps_are_measured_on_the_host_and_nothing_between(monkeypatch):
    mode, calls = HostReads(), []
    count_bulk(monkeypatch, sw, mode, calls)
    gen = sw.sweep_run(data=DATA, widths=[16], eta=0.01, steps=40, metric_every=20, sync_every=64, seed=0)
    next(gen)  # step 0: a metric step, set-up and measurement on the host
    reads = []
    with mode:
        for snap in gen:
            reads.append((snap.step, mode.other))
            mode.other = 0
    # reads only happen for the metric steps (20, 40), counted when their snapshot is yielded; the steps between
    # come from one bulk copy each side
    quiet = [s for s, r in reads if r == 0]
    assert [s for s, r in reads if r > 0] == [20, 40] and len(quiet) == 38, reads
    assert calls.count("_to_host") == 2


def test_bad_sync_every_is_refused():
    with pytest.raises(ValueError, match="sync_every"):
        next(sw.sweep_run(data=DATA, widths=[16], sync_every=0))
