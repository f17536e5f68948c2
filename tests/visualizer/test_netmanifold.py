import numpy as np
import pytest
from PySide6.QtCore import QObject, Signal

from visualizer.labs.netmanifold import NetManifoldLab


@pytest.fixture
def lab(qtbot, fresh_settings):
    w = NetManifoldLab(restore=False, start=False)
    w.resize(1200, 800)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


def test_walk_streams_samples_on_the_manifold(qtbot, lab):
    lab.width_spin.setValue(6)
    lab.n_spin.setValue(8)
    lab.steps_spin.setValue(40)
    statuses = []
    lab.status.connect(statuses.append)
    lab.restart()
    qtbot.waitUntil(lambda: lab.reason == "completed", timeout=60000)
    # the walk's end: the run button goes back to "play", the last slice and cloud are drawn
    assert statuses[-1] == {"running": False} and lab.runners() == []
    qtbot.waitUntil(lambda: not lab.busy(), timeout=30000)
    assert len(lab.samples) == 41
    assert max(s.loss for s in lab.samples) < 1e-10
    assert lab.samples[-1].tangent_dim == 3 * 6 + 1 - 8
    assert "tangent dimension measured: <b>11</b>" in lab.info.text()
    seg = lab.landscape["seg"]
    assert seg[0] < 1e-20 and seg.max() > seg[0]
    assert len(lab.cloud.pos) == 41 and np.isfinite(lab.cloud.pos).all()


def test_more_points_than_parameters_is_refused(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    lab.width_spin.setValue(2)
    lab.n_spin.setValue(9)
    lab.restart()
    assert lab.runner is None and any("no manifold" in t for t, e in msgs)


def test_plane_through_three_solutions_has_three_zeros(qtbot, lab):
    lab.width_spin.setValue(6)
    lab.n_spin.setValue(8)
    lab.steps_spin.setValue(5)
    lab.restart()
    qtbot.waitUntil(lambda: len(lab.samples) == 6 and lab.landscape is not None, timeout=60000)
    lab.slice_combo.setCurrentIndex(1)
    qtbot.waitUntil(lambda: lab.landscape["mode"] == "three", timeout=60000)
    stars, t, grid = lab.landscape["stars"], lab.landscape["t"], lab.landscape["grid"]
    assert stars.shape == (3, 2)
    # each star is a solution: the loss at the grid point nearest to it is small compared with the ridge
    for a, b in stars:
        i, j = np.argmin(np.abs(t - a)), np.argmin(np.abs(t - b))
        assert grid[i, j] < 0.05 * grid.max()


def test_random_3d_subspace_shows_a_closed_loss_shell(qtbot, lab):
    lab.width_spin.setValue(6)
    lab.n_spin.setValue(8)
    lab.steps_spin.setValue(3)
    lab.restart()
    qtbot.waitUntil(lambda: len(lab.samples) == 4 and lab.landscape is not None, timeout=60000)
    lab.slice_combo.setCurrentIndex(2)
    qtbot.waitUntil(lambda: lab.landscape["mode"] == "cube", timeout=60000)
    shell = lab.landscape["shell"]
    assert not shell.empty and lab.shell_item is not None and not lab.cloud.visible()
    # n = 8 > 3: the shell closes around w* (the origin of the subspace)
    assert np.linalg.norm(shell.vertices.mean(0)) < 0.5 * np.abs(shell.vertices).max()


# ----------------------------------------------------------------------------- issue 9


def _fake_walk(n: int, width: int = 16, seed: int = 0) -> list:
    """n walk samples of an MLP 1-width-1 (a random walk in parameter space; only the drawing is tested)."""
    from models.netmanifold import WalkStep

    p = 3 * width + 1
    w = np.cumsum(np.random.default_rng(seed).normal(scale=0.01, size=(n, p)), axis=0)
    return [WalkStep(k, w[k], 1e-15, p - 10) for k in range(n)]


def test_the_cloud_is_computed_off_the_gui_thread(qtbot, lab, monkeypatch):
    import threading

    from models import netmanifold as nm
    from tests.threads import record_threads

    threads = record_threads(monkeypatch, nm, "pca3")
    walk = _fake_walk(20000)
    lab._on_batch(walk[:12000])
    lab._on_batch(walk[12000:])
    lab.flush()  # what a recorder does before a frame: still no PCA here
    assert threading.main_thread() not in threads
    assert lab.busy(), "the cloud asked for is pending: a recorder must wait for it"
    qtbot.waitUntil(lambda: not lab.busy(), timeout=30000)
    assert threads and threading.main_thread() not in threads
    pos = lab.cloud.pos
    assert pos is not None and len(pos) == 20000 and np.isfinite(pos).all()
    assert len(lab.path.pos) == 20000
    # the axes are oriented along the walk's progress (the picture does not flip as samples arrive)
    order = np.arange(len(pos)) - 0.5 * (len(pos) - 1)
    assert (order @ pos >= 0).all()
    assert "PCA variance of the first three components" in lab.info.text()
    # the fits of the latest samples are drawn too
    xs, ys = lab.fit_curves[-1].getData()
    assert xs is not None and len(xs) == 200 and np.isfinite(ys).all()


def test_the_slice_is_resubmitted_only_when_its_inputs_change(qtbot, lab, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(lab, "_clock", lambda: now[0], raising=False)
    walk = _fake_walk(50)
    lab._on_batch(walk[:10])
    lab.flush()
    qtbot.waitUntil(lambda: not lab.busy() and lab.landscape is not None, timeout=30000)
    sent = []
    real = lab.worker.submit
    monkeypatch.setattr(lab.worker, "submit", lambda req: (sent.append(req), real(req)))
    for _ in range(5):  # redraws with nothing new: nothing to recompute
        lab._draw_samples()
    assert sent == []
    lab._on_batch(walk[10:20])  # new samples within the pacing interval: not yet
    lab.flush()
    assert sent == []
    now[0] += 0.6  # half a second of samples later: the segment to the latest sample is recomputed
    lab._on_batch(walk[20:30])
    lab.flush()
    assert len(sent) == 1 and np.array_equal(sent[-1][-3], walk[29].w)
    qtbot.waitUntil(lambda: not lab.busy(), timeout=30000)
    lab.slice_combo.setCurrentIndex(2)  # another slice: at once
    assert len(sent) == 2 and sent[-1][-1] == "cube"
    qtbot.waitUntil(lambda: not lab.busy() and lab.landscape["mode"] == "cube", timeout=60000)
    lab._on_batch(walk[30:40])
    lab._on_done("completed")  # the walk's end: its last sample at once
    assert len(sent) == 3 and np.array_equal(sent[-1][-3], walk[39].w)
    qtbot.waitUntil(lambda: not lab.busy(), timeout=60000)


@pytest.mark.parametrize("action", ["single_step", "toggle_run"])
def test_step_and_run_without_a_manifold_only_say_so(qtbot, lab, action):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    lab.width_spin.setValue(2)
    lab.n_spin.setValue(9)
    paused = lab.paused
    getattr(lab, action)()
    assert lab.runner is None and lab.paused == paused
    assert [e for t, e in msgs if "no manifold" in t] == [True]


HOSTILE = [
    ({"steps": 3000000000}, {"steps": 100000}),
    ({"steps": 10**40, "seed": -5, "width": 10**12, "n_points": -3, "step_size": -1.0},
     {"steps": 100000, "seed": 0, "width": 256, "n_points": 1, "step_size": 1e-4}),
    ({"steps": -7, "seed": 10**9, "width": 1, "n_points": 500, "step_size": 1e300, "slice_extent": 1e300},
     {"steps": 1, "seed": 10**6, "width": 2, "n_points": 6, "step_size": 10.0}),
    ({"width": 256, "n_points": 10**6}, {"width": 256, "n_points": 200}),
    ({"steps": "300000000000", "seed": [1, 2], "width": None, "n_points": {"a": 1}, "step_size": "x",
      "slice_extent": "big", "slice_mode": "sideways"}, {}),
    ({"steps": True, "seed": 2.5, "width": 3.0, "slice_mode": ["cube"], "slice_extent": -2.0},
     {"width": 3, "n_points": 9}),
    ({"slice_mode": "cube", "steps": 1234.0}, {"slice_mode": "cube", "steps": 1234}),
]


@pytest.mark.parametrize("stored, expected", HOSTILE)
def test_hostile_stored_settings_are_clamped(qtbot, fresh_settings, stored, expected):
    from visualizer import settings as store
    from visualizer.labs.netmanifold import NetState

    assert store.save_json("labs/netmanifold", stored)
    _check_stored_settings(qtbot, expected)
    s = NetState.from_dict(stored)
    assert 0 < s.slice_extent < 1e6 and np.isfinite(s.slice_extent)


def test_non_finite_stored_settings_are_refused(qtbot, fresh_settings):
    import json
    import os

    from visualizer import settings as store

    os.makedirs(fresh_settings, exist_ok=True)
    bad = {"steps": float("inf"), "seed": float("nan"), "width": float("-inf"), "n_points": float("nan"),
           "step_size": float("inf"), "slice_extent": float("nan")}
    with open(store.settings_path(), "w", encoding="utf-8") as f:
        json.dump({"labs/netmanifold": bad}, f)  # NaN / Infinity: accepted by Python's JSON reader
    _check_stored_settings(qtbot, {})


def _check_stored_settings(qtbot, expected: dict) -> None:
    from visualizer.labs.netmanifold import NetState

    want = {**vars(NetState()), **expected}
    lab = NetManifoldLab(restore=True, start=False)
    qtbot.addWidget(lab)
    try:
        s = lab.state
        assert (s.width, s.n_points, s.seed, s.steps, s.slice_mode) == (
            want["width"], want["n_points"], want["seed"], want["steps"], want["slice_mode"])
        assert s.step_size == pytest.approx(want["step_size"])
        assert 0 < s.slice_extent < 1e6 and np.isfinite(s.slice_extent)
        assert (lab.width_spin.value(), lab.n_spin.value(), lab.seed_spin.value(), lab.steps_spin.value()) == (
            want["width"], want["n_points"], want["seed"], want["steps"])
        assert lab.step_spin.value() == pytest.approx(want["step_size"])
        assert lab.slice_combo.currentData() == want["slice_mode"]
    finally:
        lab.shutdown()


def test_a_failed_walk_ends_the_run(qtbot, lab, monkeypatch):
    from visualizer import errorlog

    # a walk that fails in the child process: steps=None
    make = lab.make_runner
    monkeypatch.setattr(lab, "make_runner", lambda target, kwargs, **o: make(target, {**kwargs, "steps": None}, **o))
    msgs, statuses = [], []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    lab.status.connect(statuses.append)
    lab.width_spin.setValue(4)
    lab.n_spin.setValue(5)
    lab.restart()
    first = lab.runner
    qtbot.waitUntil(lambda: any(d.get("running") is False for d in statuses), timeout=60000)
    errors = [t for t, e in msgs if e]
    # one line naming the error and the log; the log holds all of it (the engine refuses steps=None, or
    # fails on it)
    assert len(errors) == 1 and errors[0].startswith("Walk failed: ") and "None" in errors[0]
    assert f"(details in {errorlog.log_path()})" in errors[0]
    with open(errorlog.log_path(), encoding="utf-8") as f:
        assert "None" in f.read().split("Walk failed", 1)[1]
    assert lab.runners() == [] and lab.reason == "failed"
    # Space after a failed walk starts a new one (it does not "pause" the dead one)
    lab.toggle_run()
    assert lab.runner is not first and not lab.paused
    qtbot.waitUntil(lambda: len([t for t, e in msgs if e]) == 2, timeout=60000)


def test_a_walk_that_stops_early_says_why_and_ends_the_run(qtbot, lab):
    msgs, statuses = [], []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    lab.status.connect(statuses.append)
    lab._run_steps = 40
    lab._on_batch(_fake_walk(6))
    lab._on_done("stopped at step 6: completed 5 steps, then DF(w) lost rank")
    assert statuses[-1].get("running") is False and lab.runners() == []
    errors = [t for t, e in msgs if e]
    assert len(errors) == 1 and "stopped at step 6" in errors[0] and "details in" in errors[0]
    qtbot.waitUntil(lambda: not lab.busy(), timeout=30000)


class _FakeRunner(QObject):
    """The runner interface, driven by the test."""

    batch = Signal(object)
    done = Signal(object)
    failed = Signal(str)

    def __init__(self, target, kwargs, **options) -> None:
        super().__init__()
        self.aborted = False

    def start(self) -> None:
        pass

    def abort(self, *_) -> None:
        self.aborted = True

    def isRunning(self) -> bool:
        return not self.aborted

    def is_paused(self) -> bool:
        return False


def test_signals_of_a_replaced_walk_are_ignored(qtbot, lab):
    import threading

    lab.runner_factory = _FakeRunner
    lab.restart()
    old = lab.runner
    old_walk, new_walk = _fake_walk(30, seed=1), _fake_walk(20, seed=2)

    def emit_from_a_thread(*calls):
        t = threading.Thread(target=lambda: [sig.emit(arg) for sig, arg in calls])
        t.start()
        t.join()

    # queued for the GUI thread before the walk is replaced, delivered after
    emit_from_a_thread((old.batch, old_walk), (old.done, None), (old.failed, "RuntimeError: old walk"))
    lab.restart()
    new = lab.runner
    assert new is not old and old.aborted
    old.batch.emit(old_walk)  # and after (disconnected)
    emit_from_a_thread((new.batch, new_walk[:10]))
    qtbot.waitUntil(lambda: len(lab.samples) >= 10, timeout=10000)
    new.batch.emit(new_walk[10:])
    assert [k.step for k in lab.samples] == list(range(20)) and all(a is b for a, b in zip(lab.samples, new_walk))
    assert lab.reason == "" and lab.runners() == [new]
    qtbot.waitUntil(lambda: not lab.busy(), timeout=30000)
    assert len(lab.cloud.pos) == 20


def test_a_walk_failing_half_way_ends_the_run_and_keeps_its_samples(qtbot, lab, monkeypatch):
    from models import netmanifold as nm
    from visualizer.recording.driver import SyncRunner

    def walk_run(**kwargs):
        yield from _fake_walk(3)
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(nm, "walk_run", walk_run)
    lab.runner_factory = SyncRunner  # in this process, as the recorder runs walks
    msgs, statuses = [], []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    lab.status.connect(statuses.append)
    lab.restart()
    assert lab.runners() == [lab.runner] and statuses[-1] == {"running": True}
    lab.runner.advance(10)
    assert statuses[-1] == {"running": False} and lab.runners() == [] and lab.reason == "failed"
    assert [t for t, e in msgs if e] == [msgs[-1][0]] and msgs[-1][0].startswith(
        "Walk failed: LinAlgError: SVD did not converge (details in ")
    assert len(lab.samples) == 3
    qtbot.waitUntil(lambda: not lab.busy(), timeout=30000)
    assert len(lab.cloud.pos) == 3 and np.array_equal(lab.landscape["seg"].shape, (101,))


def test_a_failing_slice_or_cloud_is_reported_and_the_lab_stays_idle(qtbot, lab, monkeypatch):
    from models import netmanifold as nm
    from visualizer import errorlog

    def boom(*a, **k):
        raise ValueError("boom")

    monkeypatch.setattr(nm, "segment_loss", boom)
    monkeypatch.setattr(nm, "pca3", boom)
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    lab._on_batch(_fake_walk(5))
    qtbot.waitUntil(lambda: len(msgs) == 2 and not lab.busy(), timeout=30000)
    assert sorted(t for t, e in msgs if e) == [
        f"Drawing the walk failed: ValueError: boom (details in {errorlog.log_path()})",
        f"Slice failed: ValueError: boom (details in {errorlog.log_path()})"]
