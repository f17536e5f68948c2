import numpy as np
import pytest

from tests.visualizer.fakes import FakeRunner
from visualizer.labs.base import SettingError
from visualizer.labs.netmanifold import NetManifoldLab, NetState


@pytest.fixture
def lab(qtbot, fresh_settings):
    w = NetManifoldLab(restore=False, start=False)
    w.resize(1200, 800)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


def test_walk_streams_samples_on_the_manifold(qtbot, lab):
    lab.widget("width").setValue(6)
    lab.widget("n_points").setValue(8)
    lab.widget("steps").setValue(40)
    assert (lab.state.width, lab.state.n_points, lab.state.steps) == (6, 8, 40)
    statuses = []
    lab.status.connect(statuses.append)
    assert not lab.has_drawn() and lab.views() == {"3d": lab.scene, "2d": lab.plane}
    lab.restart()
    qtbot.waitUntil(lambda: lab.reason == "completed", timeout=60000)
    # the walk's end: the run button goes back to "play", the last slice and cloud are drawn
    qtbot.waitUntil(lambda: lab.runners() == [], timeout=10000)  # (its thread ends its child after 'done')
    assert statuses[-1] == {"running": False}
    qtbot.waitUntil(lambda: not lab.busy(), timeout=30000)
    assert lab.has_drawn()
    assert len(lab.samples) == 41
    assert max(s.loss for s in lab.samples) < 1e-10
    assert lab.samples[-1].tangent_dim == 3 * 6 + 1 - 8
    assert "tangent dimension measured: <b>11</b>" in lab.info.text()
    seg = lab.landscape["seg"]
    assert seg[0] < 1e-20 and seg.max() > seg[0]
    assert len(lab.cloud.pos) == 41 and np.isfinite(lab.cloud.pos).all()


def test_the_settings_keep_fewer_points_than_parameters(qtbot, lab, tmp_path):
    """n < p = 3 width + 1 is the range of n: a scene asking for more is refused with the range, a smaller width
    pulls n down (and says so), and the walk then has a manifold to walk on."""
    from visualizer.labs import LABS
    from visualizer.recording.scene import SceneError, load_scene

    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    scene = tmp_path / "nine.toml"
    scene.write_text('lab = "netmanifold"\nduration = 1\n[settings]\nwidth = 2\nn_points = 9\n')
    with pytest.raises(SceneError) as err:
        load_scene(str(scene), LABS)
    assert str(scene) in str(err.value) and "n_points" in str(err.value) and "[1, 6]" in str(err.value)
    with pytest.raises(SettingError, match=r"n_points: 9 is out of range; expected an integer in \[1, 6\]"):
        lab.apply_settings({"width": 2, "n_points": 9, "seed": 3})
    assert (lab.state.width, lab.state.n_points, lab.state.seed) == (16, 10, 0)  # all or nothing
    with pytest.raises(SettingError, match=r"n_points: 49 is out of range; expected an integer in \[1, 48\]"):
        lab.set_setting("n_points", 49)
    assert msgs == []
    width, n = lab.widget("width"), lab.widget("n_points")
    assert (n.minimum(), n.maximum()) == (1, 48)
    width.setValue(2)  # p = 7: n = 10 is pulled down to 6, and the user is told why
    assert (lab.state.width, lab.state.n_points) == (2, 6) and (n.maximum(), n.value()) == (6, 6)
    assert msgs == [("data points n = 10 → 6: h = 2 hidden units fit at most 3h = 6 points on a manifold "
                     "(n < p = 7)", False)]
    n.setValue(9)  # the control stops at 6
    assert lab.state.n_points == 6 and n.value() == 6
    width.setValue(5)  # a larger width keeps n
    assert (lab.state.n_points, n.maximum()) == (6, 15) and len(msgs) == 1
    width.setValue(2)
    lab.runner_factory = FakeRunner
    lab.widget("action:walk").click()  # "New solution and walk": n = 6 < p = 7, a 1-dimensional manifold
    assert lab.runner is not None and lab.runner.target == "models.netmanifold:walk_run"
    assert (lab.runner.kwargs["width"], lab.runner.kwargs["n_points"]) == (2, 6)
    assert "M has dimension p − n = 1" in lab.caption.text() and len(msgs) == 1


def test_plane_through_three_solutions_has_three_zeros(qtbot, lab):
    lab.widget("width").setValue(6)
    lab.widget("n_points").setValue(8)
    lab.widget("steps").setValue(5)
    lab.restart()
    qtbot.waitUntil(lambda: len(lab.samples) == 6 and lab.landscape is not None, timeout=60000)
    assert lab.widget("slice_extent").isEnabled()
    lab.widget("slice_mode").setCurrentIndex(1)
    assert lab.state.slice_mode == "three" and not lab.widget("slice_extent").isEnabled()  # it frames the three
    qtbot.waitUntil(lambda: lab.landscape["mode"] == "three", timeout=60000)
    stars, t, grid = lab.landscape["stars"], lab.landscape["t"], lab.landscape["grid"]
    assert stars.shape == (3, 2)
    # each star is a solution: the loss at the grid point nearest to it is small compared with the ridge
    for a, b in stars:
        i, j = np.argmin(np.abs(t - a)), np.argmin(np.abs(t - b))
        assert grid[i, j] < 0.05 * grid.max()


def test_random_3d_subspace_shows_a_closed_loss_shell(qtbot, lab):
    lab.widget("width").setValue(6)
    lab.widget("n_points").setValue(8)
    lab.widget("steps").setValue(3)
    lab.restart()
    qtbot.waitUntil(lambda: len(lab.samples) == 4 and lab.landscape is not None, timeout=60000)
    lab.widget("slice_mode").setCurrentIndex(2)
    assert lab.state.slice_mode == "cube"
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
    lab.widget("slice_mode").setCurrentIndex(2)  # another slice: at once
    assert len(sent) == 2 and sent[-1][-1] == "cube"
    qtbot.waitUntil(lambda: not lab.busy() and lab.landscape["mode"] == "cube", timeout=60000)
    lab._on_batch(walk[30:40])
    lab._on_done("completed")  # the walk's end: its last sample at once
    assert len(sent) == 3 and np.array_equal(sent[-1][-3], walk[39].w)
    qtbot.waitUntil(lambda: not lab.busy(), timeout=60000)


def test_the_extent_redraws_the_slice_and_network_settings_wait_for_the_next_walk(qtbot, lab, monkeypatch):
    walk = _fake_walk(12)
    lab._on_batch(walk)
    lab.flush()
    qtbot.waitUntil(lambda: not lab.busy() and lab.landscape is not None, timeout=30000)
    assert lab.landscape["t"][0] == pytest.approx(-1.5) and lab.landscape["t"][-1] == pytest.approx(1.5)
    sent = []
    real = lab.worker.submit
    monkeypatch.setattr(lab.worker, "submit", lambda req: (sent.append(req), real(req)))
    # the network, its data and the walk are used by the next walk: nothing is recomputed for the one shown
    for name, value in (("width", 20), ("n_points", 12), ("seed", 4), ("steps", 50), ("step_size", 0.05)):
        lab.widget(name).setValue(value)
        assert getattr(lab.state, name) == pytest.approx(value)
    lab.flush()
    assert sent == [] and lab._run_net == (16, 10, 0) and lab.runner is None
    lab.widget("slice_extent").setValue(0.75)  # the plane of the walk shown, at once
    assert lab.state.slice_extent == 0.75 and len(sent) == 1 and sent[-1][-2] == 0.75
    assert sent[-1][1:4] == (16, 10, 0)  # still the walk's network and data
    qtbot.waitUntil(lambda: not lab.busy() and lab.landscape["t"][-1] == pytest.approx(0.75), timeout=30000)
    assert lab.landscape["t"][0] == pytest.approx(-0.75)


def test_typing_a_width_commits_it_when_done(qtbot, lab):
    """Typing 20 passes through 2, which would pull n down to 6: the width is taken on Return (or focus loss),
    arrows take it at once."""
    from PySide6.QtCore import Qt

    spin = lab.widget("width")
    assert not spin.keyboardTracking()
    spin.selectAll()
    qtbot.keyClicks(spin, "20")
    assert spin.text() == "20" and (lab.state.width, lab.state.n_points) == (16, 10)
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    assert (lab.state.width, lab.state.n_points) == (20, 10) and lab.widget("n_points").maximum() == 60
    spin.stepDown()
    assert lab.state.width == 19 and lab.widget("n_points").maximum() == 57
    extent = lab.widget("slice_extent")
    extent.selectAll()
    qtbot.keyClicks(extent, "0.5")
    assert lab.state.slice_extent == 1.5
    qtbot.keyClick(extent, Qt.Key.Key_Return)
    assert lab.state.slice_extent == 0.5


@pytest.mark.parametrize("action", ["restart", "single_step", "toggle_run"])
def test_step_and_run_without_a_manifold_only_say_so(qtbot, lab, action):
    """The settings keep n < p (above); a state written around them (n = 9 points for width 2, which no control,
    scene or stored file can set) starts no walk: the walk button, S and Space only say so."""
    lab.runner_factory = FakeRunner  # a walk started by mistake would be seen here, in this process
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    lab.state.width, lab.state.n_points = 2, 9
    paused = lab.paused
    started = getattr(lab, action)()
    assert lab.runner is None and lab.paused == paused and started is (False if action == "restart" else None)
    assert [e for t, e in msgs if "no manifold" in t] == [True]
    assert msgs[-1][0].startswith("n = 9 ≥ p = 7: no manifold to walk on")


HOSTILE = [
    # (stored, the values restored, {each setting named in restore_problems: what its line says}): a stored
    # value the setting does not take falls back to its default
    ({"steps": 3000000000}, {}, {"steps": "3e+09 is out of range; expected an integer in [1, 100000]"}),
    ({"steps": 10**40, "seed": -5, "width": 10**12, "n_points": -3, "step_size": -1.0}, {},
     {"steps": "[1, 100000]", "seed": "-5 is out of range", "width": "[2, 256]", "n_points": "[1, 48]",
      "step_size": "[0.0001, 10]"}),
    ({"steps": -7, "seed": 10**9, "width": 1, "n_points": 500, "step_size": 1e300, "slice_extent": 1e300}, {},
     {"steps": "-7", "seed": "[0, 1e+06]", "width": "1 is out of range", "n_points": "500 is out of range",
      "step_size": "1e+300", "slice_extent": "[0.001, 1000]"}),
    # n is judged against the stored width (n <= 3 width): a stored n that does not fit goes back to its default
    # (10), the width it was judged by stays
    ({"width": 256, "n_points": 10**6}, {"width": 256, "n_points": 10},
     {"n_points": "1e+06 is out of range; expected an integer in [1, 768]"}),
    ({"width": 4, "n_points": 13}, {"width": 4, "n_points": 10},
     {"n_points": "13 is out of range; expected an integer in [1, 12]"}),
    ({"width": 5, "n_points": 15}, {"width": 5, "n_points": 15}, {}),
    ({"steps": "300000000000", "seed": [1, 2], "width": None, "n_points": {"a": 1}, "step_size": "x",
      "slice_extent": "big", "slice_mode": "sideways"}, {},
     {"steps": "got '300000000000'", "seed": "got [1, 2]", "width": "got None", "n_points": "got {'a': 1}",
      "step_size": "got 'x'", "slice_extent": "got 'big'", "slice_mode": "one of: random, three, cube"}),
    # width 3 is taken; the default n = 10 does not fit it (p = 10) and is brought into its range, n = 9
    ({"steps": True, "seed": 2.5, "width": 3.0, "slice_mode": ["cube"], "slice_extent": -2.0},
     {"width": 3, "n_points": 9},
     {"steps": "got True", "seed": "got 2.5", "slice_mode": "got ['cube']", "slice_extent": "-2 is out of range"}),
    # a stored n that does not fit a stored width: n back to its default, clamped into the width's range
    ({"width": 2, "n_points": 9}, {"width": 2, "n_points": 6},
     {"n_points": "9 is out of range; expected an integer in [1, 6]"}),
    ({"slice_mode": "cube", "steps": 1234.0, "slice_extent": 0.25}, {"slice_mode": "cube", "steps": 1234,
                                                                      "slice_extent": 0.25}, {}),
]


@pytest.mark.parametrize("stored, expected, named", HOSTILE)
def test_hostile_stored_settings_fall_back_to_their_defaults(qtbot, fresh_settings, stored, expected, named):
    from visualizer import settings as store

    assert store.save_json("labs/netmanifold", stored)
    _check_stored_settings(qtbot, expected, named)


def test_non_finite_stored_settings_are_refused(qtbot, fresh_settings):
    import json
    import os

    from visualizer import settings as store

    os.makedirs(fresh_settings, exist_ok=True)
    bad = {"steps": float("inf"), "seed": float("nan"), "width": float("-inf"), "n_points": float("nan"),
           "step_size": float("inf"), "slice_extent": float("nan")}
    with open(store.settings_path(), "w", encoding="utf-8") as f:
        json.dump({"labs/netmanifold": bad}, f)  # NaN / Infinity: accepted by Python's JSON reader
    _check_stored_settings(qtbot, {}, {"steps": "got inf", "seed": "got nan", "width": "got -inf",
                                       "n_points": "got nan", "step_size": "got inf", "slice_extent": "got nan"})


def _check_stored_settings(qtbot, expected: dict, named: dict) -> None:
    want = {**vars(NetState()), **expected}
    lab = NetManifoldLab(restore=True, start=False)
    qtbot.addWidget(lab)
    try:
        s = lab.state
        assert (s.width, s.n_points, s.seed, s.steps, s.slice_mode) == (
            want["width"], want["n_points"], want["seed"], want["steps"], want["slice_mode"])
        assert s.step_size == pytest.approx(want["step_size"])
        assert s.slice_extent == pytest.approx(want["slice_extent"])
        assert 0 < s.slice_extent < 1e6 and np.isfinite(s.slice_extent)
        assert s.n_points < 3 * s.width + 1  # a manifold to walk on
        assert tuple(lab.widget(k).value() for k in ("width", "n_points", "seed", "steps")) == (
            want["width"], want["n_points"], want["seed"], want["steps"])
        assert lab.widget("n_points").maximum() == 3 * want["width"]
        assert lab.widget("step_size").value() == pytest.approx(want["step_size"])
        assert lab.widget("slice_extent").value() == pytest.approx(want["slice_extent"])
        assert lab.widget("slice_mode").currentData() == want["slice_mode"]
        problems = {text.split(":", 1)[0]: text for text in lab.restore_problems}
        assert len(problems) == len(lab.restore_problems) and sorted(problems) == sorted(named), lab.restore_problems
        for name, words in named.items():
            assert words in problems[name], problems[name]
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
    lab.widget("width").setValue(4)
    lab.widget("n_points").setValue(5)
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
    qtbot.waitUntil(lambda: lab.runners() == [], timeout=10000)
    assert lab.reason == "failed"
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



def test_signals_of_a_replaced_walk_are_ignored(qtbot, lab):
    import threading

    lab.runner_factory = FakeRunner
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
