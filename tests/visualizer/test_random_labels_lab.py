"""The random-labels lab (issue 16): corrupted-label runs stream from their child process; the 2D toy refits."""

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt

from models import random_labels as rl
from tests.visualizer.fakes import FakeRunner
from visualizer.labs.base import SettingError
from visualizer.labs.random_labels import RandomLabelsLab, fraction_color
from visualizer.views.form import SLIDER_TICKS

SMALL = {"n": 120, "widths": [64, 64], "steps": 150, "eval_every": 10, "fraction": 1.0, "companions": [0.0]}


@pytest.fixture
def lab(qtbot, fresh_settings):
    w = RandomLabelsLab(restore=False, start=False)
    w.resize(1400, 850)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


def _snap(step: int, k: int) -> rl.RLStep:
    init = rl.RLInit([0.0] * k, 10, 10, 2, 0.5, [0] * k, "fake", np.zeros((k, 10), np.int64)) if step == 0 else None
    z = np.full(k, 0.5)
    return rl.RLStep(step, z, z, z, z, np.full(k, -1), init)


def click_view(qtbot, plot, x: float, y: float) -> None:
    vb = plot.getPlotItem().vb
    pos = plot.mapFromScene(vb.mapViewToScene(QPointF(x, y)))
    qtbot.mouseClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(pos.x(), pos.y()))


def test_the_fraction_slider_restarts_the_runs_and_stale_signals_are_dropped(qtbot, lab):
    lab.runner_factory = FakeRunner
    assert lab.restart()
    first = lab.runner
    assert first.target == "models.random_labels:fit_run"
    assert first.kwargs["fractions"] == [0.0, 0.5, 1.0] and first.kwargs["widths"] == [512, 512]
    slider = lab.widget("fraction")
    slider.setValue(int(0.3 * SLIDER_TICKS))  # the user drags the slider
    assert lab.state.fraction == pytest.approx(0.3)
    second = lab.runner
    assert second is not first and first.aborted and not second.aborted
    assert second.kwargs["fractions"] == [0.0, 0.3, 0.5]
    assert [label.text for _, label in lab.train_legend.items] == ["f = 0", "f = 0.3", "f = 0.5"]
    first.batch.emit([_snap(0, 3), _snap(1, 3)])  # the replaced run's late items: dropped
    qtbot.wait(20)
    assert lab.hist.steps == [] and lab.hist.init is None
    second.batch.emit([_snap(0, 3), _snap(1, 3)])
    qtbot.waitUntil(lambda: lab.hist.steps == [0, 1], timeout=3000)
    lab.flush()
    assert len(lab.train_curves[1].getData()[0]) == 2
    # a fraction equal to a companion runs once
    lab.set_setting("fraction", 0.5)
    assert lab.runner.kwargs["fractions"] == [0.0, 0.5]


def test_runs_stream_into_every_curve(qtbot, lab):
    statuses = []
    lab.status.connect(statuses.append)
    assert not lab.has_drawn()
    lab.request_toy()
    lab.apply_settings(SMALL)  # one update: one run starts
    qtbot.waitUntil(lambda: lab.finished and lab.reason == "completed", timeout=30000)
    qtbot.waitUntil(lambda: lab.toy is not None, timeout=10000)
    qtbot.waitUntil(lambda: lab.runners() == [], timeout=10000)  # (its thread ends its child after 'done')
    lab.flush()
    h = lab.hist
    assert lab.has_drawn() and lab.run_fractions == [0.0, 1.0]
    assert h.steps == list(range(151)) and h.init.n_test == rl.N_TEST_GAUSS
    assert np.all(h.train[-1] == 1.0) and np.all(h.fit_step > 0)
    assert h.fit_step[0] < h.fit_step[1]  # clean labels fit first
    assert h.test[-1][0] > 0.8 and abs(h.test[-1][1] - 0.5) < 0.08  # noise: chance on clean test labels
    for curves, n in ((lab.train_curves, 151), (lab.norm_curves, 151), (lab.test_curves, len(h.test_steps))):
        assert all(len(c.getData()[0]) == n for c in curves)
    assert {0, 10, 150} <= set(h.test_steps)
    xs, ys = lab.fit_line.getData()
    assert list(xs) == [0.0, 1.0] and list(ys) == [float(t) for t in h.fit_step]
    assert lab.train_curves[1].opts["pen"].color().name() == fraction_color(1.0)
    assert "f = 0: fit at step" in lab.caption.text() and "test" in lab.caption.text()
    assert {"running": False} in statuses and statuses[-1]["step"] == 150


def test_clicking_a_toy_point_flips_it_and_the_refit_boundary_follows(qtbot, lab):
    lab.request_toy()
    qtbot.waitUntil(lambda: lab.toy is not None and not lab.busy(), timeout=10000)
    pts, labels = lab.toy["points"], lab.toy["labels"]
    assert np.array_equal(lab.toy["fit"].pred, labels)
    # the point deepest inside class 1 (blobs: towards (0.8, 0.6))
    i = int(np.argmax(np.where(labels == 1, pts @ np.array([0.8, 0.6]), -np.inf)))
    click_view(qtbot, lab.toy_plot, float(pts[i, 0]), float(pts[i, 1]))
    assert lab.state.toy_flips == [i]
    qtbot.waitUntil(lambda: lab.toy["labels"][i] == 0 and not lab.busy(), timeout=10000)
    fit = lab.toy["fit"]
    assert fit.fitted and fit.pred[i] == 0  # the boundary contorted to take the flipped point in
    gi, gj = np.abs(fit.xs - pts[i, 1]).argmin(), np.abs(fit.xs - pts[i, 0]).argmin()
    assert fit.values[gi, gj] < 0 and lab.toy_image.image[gi, gj] < 0
    assert "1 flipped" in lab.toy_note.text()
    # a click far from every point flips nothing; the button unflips
    click_view(qtbot, lab.toy_plot, -1.9, 1.9)
    assert lab.state.toy_flips == [i]
    lab.widget("action:clear_flips").click()
    qtbot.waitUntil(lambda: lab.toy["labels"][i] == 1 and not lab.busy(), timeout=10000)
    assert lab.toy["fit"].pred[i] == 1


def test_bad_settings_are_refused_in_words(qtbot, lab):
    lab.runner_factory = FakeRunner
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    with pytest.raises(SettingError, match=r"companions: an item is out of range; expected a list of 0 to 6 numbers in \[0, 1\]"):
        lab.set_setting("companions", [0.2, 1.5])
    with pytest.raises(SettingError, match="hidden widths are whole numbers from 1 to 2048"):
        lab.set_setting("widths", [64, 2.5])
    with pytest.raises(SettingError, match="widths: an item is out of range"):
        lab.set_setting("widths", [64, 0])
    with pytest.raises(SettingError, match="flipped points are numbers from 0 to 29"):
        lab.set_setting("toy_flips", [40])
    assert not lab.form.enter_text("widths", "64, lots")
    assert lab.form.error_label("widths").text() and lab.state.widths == [512, 512]
    with pytest.raises(SettingError):
        lab.apply_settings({"lr": -1.0})
    assert lab.runner is None  # nothing refused started a run
    lab.apply_settings({"data": "digits", "n": 1500})
    assert lab.runner.kwargs["data"]["kind"] == "digits"


def test_fewer_toy_points_or_another_preset_drop_the_flips_that_no_longer_apply(qtbot, lab):
    lab.set_setting("toy_flips", [20, 3])
    lab.set_setting("toy_points", 10)
    assert lab.state.toy_flips == [3]
    lab.set_setting("toy_preset", "moons")
    assert lab.state.toy_flips == []
    qtbot.waitUntil(lambda: lab.toy is not None and len(lab.toy["labels"]) == 10 and not lab.busy(), timeout=10000)
    assert lab.toy["fit"].fitted


def test_a_diverging_learning_rate_is_named(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    lab.apply_settings({"optimizer": "gd", "lr": 10.0, "widths": [64], "steps": 30})
    qtbot.waitUntil(lambda: lab.finished, timeout=60000)
    errors = [t for t, e in msgs if e and "diverged" in t]
    assert errors and "the learning rate 10 is too large (about 0.5 suits gradient descent)" in errors[0]
    assert len(errors) == len(set(errors))  # each run said once


def test_clicking_a_fit_point_picks_out_its_run_in_every_plot(qtbot, lab):
    lab.runner_factory = FakeRunner
    assert lab.restart()
    lab.runner.batch.emit([_snap(0, 3), _snap(1, 3)])
    qtbot.waitUntil(lambda: lab.hist.steps == [0, 1], timeout=3000)
    lab.flush()
    points = list(lab.fit_pts.points())
    assert len(points) == 3
    lab.fit_pts.sigClicked.emit(lab.fit_pts, [points[1]], None)  # the point of f = 0.5
    assert lab.highlighted == 1
    for curves in (lab.train_curves, lab.test_curves, lab.norm_curves):
        assert curves[1].opts["pen"].widthF() > curves[0].opts["pen"].widthF()
        assert curves[0].opts["pen"].color().alpha() < 100 and curves[1].opts["pen"].color().alpha() == 255
    lab.fit_pts.sigClicked.emit(lab.fit_pts, [points[1]], None)  # again: all of them
    assert lab.highlighted is None
    assert all(c.opts["pen"].color().alpha() == 255 for c in lab.train_curves)
    lab.fit_pts.sigClicked.emit(lab.fit_pts, [points[2]], None)
    assert lab.highlighted == 2
    lab.set_setting("fraction", 0.3)  # new runs: nothing picked out
    assert lab.highlighted is None
