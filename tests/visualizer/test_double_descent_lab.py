"""The double-descent lab (issue 15): live sweeps in a worker thread, the ridge slider, clicks, the GL surface."""

import math

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt

from models import double_descent as dd
from visualizer.labs.base import SettingError
from visualizer.labs.double_descent import SURFACE_RIDGES, DoubleDescentLab


@pytest.fixture
def lab(qtbot, fresh_settings):
    w = DoubleDescentLab(restore=False, start=False)
    w.resize(1400, 850)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


def settle(qtbot, lab, timeout=30000):
    qtbot.waitUntil(lambda: lab.has_drawn() and not lab.busy() and lab.model is not None
                    and lab.model.p == lab.shown_p(), timeout=timeout)


def _click(qtbot, plot, x: float, y: float) -> None:
    vb = plot.getPlotItem().vb
    pos = plot.mapFromScene(vb.mapViewToScene(QPointF(x, y)))
    qtbot.mouseClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(pos.x(), pos.y()))


def _nearest(ps, p):
    return int(np.argmin(np.abs(np.log(ps) - math.log(p))))


def test_the_sweep_streams_seeds_and_draws_the_peak(qtbot, lab):
    seen = []
    lab.sweep_worker.result.connect(lambda req, out: seen.append(len(out.seeds)))
    assert not lab.has_drawn() and set(lab.views()) == {"3d", "2d"}
    lab.start()
    settle(qtbot, lab)
    assert seen[0] == 2 and seen[-1] == 10  # two seeds first, then all of them
    r = lab.sweep_result
    assert r.complete and r.test.shape == (10, len(lab.ps()))
    med = r.median("test")
    assert 80 <= r.ps[int(np.argmax(med))] <= 125
    x, y = lab.test_curve.getData()  # (log axes: the data items hold log10 values)
    assert len(x) == len(r.ps) and np.allclose(10**y, med)
    assert np.allclose(10 ** lab.kernel_line.getData()[1], r.kernel_test)
    assert r.kernel_test == pytest.approx(dd.kernel_test_error(dd.make_data(100, 10, 0.5)))
    assert "at p = n: test error <b>" in lab.caption.text() and "κ₁ arc-cosine kernel limit" in lab.caption.text()
    i = list(r.ps).index(100)
    assert 10 ** lab.norm_curve.getData()[1][i] == pytest.approx(r.median("norm")[i])
    assert lab.model.p == 100 and "p = 100" in lab.model_plot.getPlotItem().titleLabel.text


def test_moving_the_ridge_slider_recomputes_and_flattens_the_peak(qtbot, lab):
    lab.start()
    settle(qtbot, lab)
    ps = np.array(lab.ps())
    n_i = list(ps).index(100)
    peak = lab.sweep_result.median("test")[n_i]
    lab.set_setting("solution", "ridge")
    slider = lab.widget("ridge")
    slider.setValue(lab.form._to_slider("ridge", 1e-5))
    settle(qtbot, lab)
    assert lab.state.ridge == pytest.approx(1e-5, rel=0.05) and lab.sweep_result.ridge == lab.state.ridge
    weak = lab.sweep_result.median("test")[n_i]
    slider.setValue(lab.form._to_slider("ridge", 0.1))  # a drag: the newest value is computed
    settle(qtbot, lab)
    r = lab.sweep_result
    assert r.ridge == pytest.approx(0.1, rel=0.05) and r.complete
    med = r.median("test")
    assert med[n_i] < 0.1 * peak and med[n_i] < weak
    assert med[n_i] <= 1.5 * med[_nearest(ps, 50)] and med[n_i] <= 1.5 * med[_nearest(ps, 200)]
    assert "ridge λ = 0.1" in lab.caption.text()


def test_clicking_the_curve_shows_that_model(qtbot, lab):
    lab.apply_settings({"data": "function", "n": 30, "seeds": 4})
    lab.start()
    settle(qtbot, lab)
    r = lab.sweep_result
    for ratio in (4.0, 1.0):
        p = int(r.ps[_nearest(r.ps, ratio * 30)])
        _click(qtbot, lab.err_plot, math.log10(p / 30), math.log10(float(np.median(r.test))))
        assert lab.state.shown_p == p
        settle(qtbot, lab)
        ref = dd.fit_model(dd.make_data(30, kind="function", noise=0.5), p, 0)
        x, y = lab.model_curve.getData()
        assert len(x) == 400 and np.allclose(y, ref.pred) and np.allclose(x, ref.x_eval)
        assert len(lab.model_points.data) == 30
        assert 10 ** lab.pick_marker.getData()[0][0] == pytest.approx(p / 30)
    # d > 1: predictions against targets
    lab.apply_settings({"data": "teacher", "n": 40, "d": 5})
    lab.show_threshold()  # (the button: the p shown otherwise stays the one clicked)
    settle(qtbot, lab)
    x, y = lab.model_curve.getData()
    assert len(x) == 500 and lab.model.p == 40 and lab.model_curve.opts["symbol"] == "o"
    lab.show_widest()
    settle(qtbot, lab)
    assert lab.model.p == lab.ps()[-1] == 160


def test_the_ridge_surface_is_drawn_in_gl(qtbot, lab):
    lab.start()
    settle(qtbot, lab)
    qtbot.waitUntil(lambda: lab.surface_result is not None, timeout=30000)
    v = lab.surface_result["values"]
    assert v.shape == (len(SURFACE_RIDGES), len(lab.surface_result["ps"]))
    n_i = list(lab.surface_result["ps"]).index(100)
    assert v[0, n_i] > 10 * v[-8, n_i]  # the min-norm edge peaks at p = n, a ridge near 0.1 does not
    img = lab.scene.render_offscreen(480, 360)
    rgb = img[..., 2::-1].astype(int)
    bg = np.array([0x0d, 0x0f, 0x14])
    surface = (np.abs(rgb - bg).max(axis=2) > 40).sum()
    assert surface > 0.15 * 480 * 360  # the surface fills a good part of the view
    yellow = ((rgb[..., 0] > 180) & (rgb[..., 1] > 180) & (rgb[..., 2] < 120)).sum()  # viridis top: the peak
    assert yellow > 50
    white = (rgb.min(axis=2) > 220).sum()  # the ridge line of the curve
    assert white > 20
    # switched off: no surface computed or shown
    lab.set_setting("surface", False)
    assert lab.scene.container.isHidden()


def test_bad_settings_are_refused_in_words(qtbot, lab):
    with pytest.raises(SettingError, match=r"n: 5 is out of range; expected an integer in \[10, 400\]"):
        lab.apply_settings({"n": 5})
    with pytest.raises(SettingError, match="feature: 'tanh' is not a choice"):
        lab.apply_settings({"feature": "tanh"})
    with pytest.raises(SettingError, match=r"ridge: 0 is out of range; expected a number in \[1e-06, 100\]"):
        lab.apply_settings({"ridge": 0.0})
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    slider = lab.widget("seeds")
    slider.setValue(0)  # the slider's lowest position is a valid value (one seed), never a refusal
    assert lab.state.seeds == 1
    # the drawn curve: the panel shows for drawn data, and its points are the training set
    lab.apply_settings({"data": "drawn"})
    assert not lab.draw_panel.isHidden()
    lab.draw_panel.paint((-1.0, 1.2), (1.0, 1.2))
    lab.draw_panel.commit()
    settle(qtbot, lab)
    assert np.allclose(lab.model.target, 1.2) and lab.sweep_result.n == 40
    assert not [t for t, e in msgs if e]
