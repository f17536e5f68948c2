"""The implicit-bias lab (issue 14): data edited by hand, the exact geometry at once, runs streaming from their
child process into the log-time views and the GL surface."""

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from models import implicit_bias as ib
from visualizer.labs.base import SettingError, check_settings
from visualizer.labs.implicit_bias import (
    NORM_COLORS,
    OPT_COLORS,
    PLANE_ALPHA,
    ImplicitBiasLab,
    ImplicitBiasState,
)


@pytest.fixture
def lab(qtbot, fresh_settings):
    w = ImplicitBiasLab(restore=False, start=False)
    w.resize(1400, 850)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.shutdown()


def wait_done(qtbot, lab, timeout=30000):
    qtbot.waitUntil(lambda: lab.finished and lab.reason == "completed", timeout=timeout)
    lab.flush()


def click(qtbot, lab, x, y, button=Qt.MouseButton.LeftButton):
    p = lab.editor.view_to_widget(x, y)
    qtbot.mouseClick(lab.editor.viewport(), button, pos=QPoint(int(round(p.x())), int(round(p.y()))))


def test_the_clean_preset_is_shown_with_its_exact_geometry(lab):
    g = lab.geo
    assert g.separable and np.allclose(g.svm.w_hat, ib.CLEAN_W_HAT, atol=1e-8)
    assert "separable through the origin" in lab.data_note.text()
    assert "SVM margin γ = 0.7071" in lab.data_note.text() and "gap to the next margin 2" in lab.data_note.text()
    assert "coincide" in lab.data_note.text()
    assert len(lab.rings.data) == 2  # the two support vectors ringed
    xs, ys = lab.svm_line.getData()
    assert abs(xs[0] + ys[0]) < 1e-9 and abs(xs[1] + ys[1]) < 1e-9  # the line x + y = 0


def test_a_left_click_adds_a_plus_point_and_the_svm_boundary_updates(qtbot, lab):
    before = lab.geo.svm.w_hat.copy()
    click(qtbot, lab, 0.6, -0.1)  # a +1 point inside the old margin: a new support vector
    s = lab.state
    assert len(s.xs) == 21 and s.labels[-1] == 1.0
    assert abs(s.xs[-1] - 0.6) < 0.05 and abs(s.ys[-1] + 0.1) < 0.05
    assert lab.geo.separable and not np.allclose(lab.geo.svm.w_hat, before)
    assert 20 in lab.geo.svm.support  # the new point is on the margin
    xs, ys = lab.svm_line.getData()
    w = lab.geo.svm.w_hat
    assert abs(w[0] * xs[0] + w[1] * ys[0]) < 1e-8  # the drawn boundary is the new SVM's
    assert lab.runner is not None  # every run started again at once
    # a right click adds a point of class -1, a middle click removes the nearest point
    click(qtbot, lab, -2.5, 1.0, Qt.MouseButton.RightButton)
    assert len(s.xs) == 22 and s.labels[-1] == -1.0
    click(qtbot, lab, -2.45, 1.05, Qt.MouseButton.MiddleButton)
    assert len(s.xs) == 21 and s.labels[-1] == 1.0
    lab.stop_run()


def test_dragging_a_point_across_the_boundary_makes_the_data_non_separable(qtbot, lab):
    lab.apply_settings({"steps": 20000, "run_ngd": False})
    wait_done(qtbot, lab)
    first = lab.runner
    # drag point 0 (class +1, at (1, 0)) onto the class -1 point at (-1, -1.5): its row is minus that one's
    path = np.linspace([1.0, 0.0], [-1.0, -1.5], 6)
    for x, y in path[:-1]:
        lab.move_point(0, x, y, final=False)
    lab.move_point(0, *path[-1], final=True)
    assert (lab.state.xs[0], lab.state.ys[0]) == (-1.0, -1.5)
    assert not lab.geo.separable and "not separable through the origin" in lab.data_note.text()
    assert lab.svm_line.getData()[0] is None or len(lab.svm_line.getData()[0]) == 0
    assert lab.runner is not first  # restarted from w = 0 on the new data
    wait_done(qtbot, lab)
    assert "not separable: the trajectories converge to a finite minimizer" in lab.info.text()
    norms = lab.trace.norms()[0]
    assert np.all(np.isfinite(norms)) and norms[-1] < 10 and abs(norms[-1] - norms[-20]) < 1e-3 * norms[-1]


def test_a_run_streams_and_the_angle_to_w_hat_falls_like_the_prediction(qtbot, lab):
    seen = []
    lab.apply_settings({"steps": 2 * 10**6, "run_ngd": False, "per_decade": 20})
    lab.runner.batch.connect(lambda items: seen.extend(tr.t for tr in items))
    wait_done(qtbot, lab)
    assert len(set(seen)) >= 2 and lab.has_drawn()  # it streamed
    tr = lab.trace
    ang = lab.angles()[0]
    at = {t: ang[np.flatnonzero(tr.steps == t)[0]] for t in (100, 10**4, 10**6)}
    assert at[100] > at[10**4] > at[10**6] > 0
    # the measured angle approaches the w_hat log t + w_tilde prediction drawn beside it
    tp, pa = lab.pred_angle.getData()
    assert len(tp) > 10 and np.all(np.asarray(pa) > 0)
    svm = lab.geo.svm
    predicted = float(ib.predicted_angle_deg(svm, ib.w_tilde(svm, lab.z, lab.run_specs[0][2]), 10**6))
    assert abs(at[10**6] - predicted) < 0.1 * at[10**6]
    for key in ("angle", "norm", "margin", "losst"):
        assert len(lab.curves[key][0].getData()[0]) > 50, key
    assert "angle to ŵ now" in lab.info.text() and "step 2,000,000 of 2,000,000 (done)" in lab.info.text()
    run_x, run_y = lab.run_lines[0].getData()
    w = tr.w_now[0]
    assert abs(w[0] * run_x[0] + w[1] * run_y[0]) < 1e-6 * np.linalg.norm(w) * 30  # the run's boundary


def test_the_gl_view_draws_the_surface_the_path_and_the_max_margin_ray(qtbot, lab):
    lab.apply_settings({"steps": 10**5, "run_ngd": False})
    wait_done(qtbot, lab)
    img = lab.scene.render_offscreen(480, 360)  # BGRA
    rgb = img[..., 2::-1].astype(int)

    def count(color: str, tol: int = 40) -> int:
        c = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(rgb - c).max(axis=2) < tol).sum())

    background = count("#0d0f14", 12)
    assert rgb.shape[0] * rgb.shape[1] - background > 40000  # the surface fills much of the view
    assert count(NORM_COLORS["l2"], 30) > 40  # the SVM ray
    assert count(OPT_COLORS["gd"], 40) > 15  # GD's path
    assert len(lab.rays["l2"].pos) > 10 and len(lab.paths[0].pos) > 10


def test_presets_the_other_geometries_and_the_bias_feature(qtbot, lab):
    lab.apply_settings({"preset": "single", "run_coordinate": True, "run_sign": True, "steps": 10**5})
    assert len(lab.state.xs) == 11 and "the directions differ" in lab.data_note.text()
    wait_done(qtbot, lab)
    assert [o for _, o, _ in lab.run_specs] == ["gd", "ngd", "coordinate", "sign"]
    for n in ("l1", "linf"):  # the l1 and l-infinity boundaries are drawn (they differ from the SVM's here)
        assert len(lab.mm_lines[n].getData()[0]) == 2
        assert len(lab.margin_refs[n].getData()[0]) == 2 and len(lab.rays[n].pos) > 10
    ang = lab.angles()
    assert np.all(ang[:, -1] <= ang[:, 10]) and np.all(ang[:, -1] < 4)  # each turns towards its own direction
    lab.set_setting("bias", 1.0)
    assert lab.z.shape[1] == 3 and "in (x, y, b = 1)" in lab.data_note.text()
    wait_done(qtbot, lab)
    assert lab.trace.w_now.shape == (4, 3) and len(lab.paths[0].pos) > 10
    assert "b = 1" in lab.caption.text()


def test_the_lab_keeps_the_lab_contract():
    from tests.visualizer.test_lab_contract import (
        test_every_setting_is_declared_once_with_what_the_form_needs as rules,
    )

    rules("implicit-bias")


def test_bad_input_is_refused_in_words(lab):
    with pytest.raises(SettingError, match=r"settings\.steps: .*out of range"):
        lab.apply_settings({"steps": 10**9})
    with pytest.raises(SettingError, match="every label is \\+1 or -1"):
        lab.apply_settings({"labels": [0.5] * 20})
    with pytest.raises(SettingError, match="one value per point"):
        lab.apply_settings({"xs": [1.0, 2.0]})
    with pytest.raises(SettingError, match="at least one optimizer runs"):
        lab.apply_settings({"run_gd": False, "run_ngd": False})
    with pytest.raises(SettingError, match=r"scene\.eta_fraction"):
        check_settings(ImplicitBiasState, {"eta_fraction": 50.0}, "scene")
    assert lab.state.steps == 10**6 and len(lab.state.xs) == 20 and lab.runner is None  # nothing taken
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    lab.apply_settings({"xs": [1.0], "ys": [0.0], "labels": [1.0]})
    lab.stop_run()
    lab.editor.remove_point(0)
    assert len(lab.state.xs) == 1 and msgs[-1] == ("the last point stays (the data need at least one)", True)


def _mouse(widget, kind, pos, button=Qt.MouseButton.NoButton, buttons=Qt.MouseButton.NoButton):
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    p = QPointF(pos)
    ev = QMouseEvent(kind, p, widget.mapToGlobal(p), button, buttons, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, ev)


def test_a_mouse_drag_moves_the_point_and_delete_removes_the_nearest(qtbot, lab):
    from PySide6.QtCore import QEvent

    vp = lab.editor.viewport()
    left = Qt.MouseButton.LeftButton
    a, b = lab.editor.view_to_widget(3.0, 1.5), lab.editor.view_to_widget(3.0, 3.5)  # point 2: (3, 1.5), +1
    _mouse(vp, QEvent.Type.MouseButtonPress, a, left, left)
    for f in np.linspace(0, 1, 8)[1:]:
        _mouse(vp, QEvent.Type.MouseMove, a + (b - a) * f, buttons=left)
    _mouse(vp, QEvent.Type.MouseButtonRelease, b, left)
    s = lab.state
    assert abs(s.xs[2] - 3.0) < 0.05 and abs(s.ys[2] - 3.5) < 0.05 and len(s.xs) == 20
    qtbot.waitUntil(lambda: lab.runner is not None, timeout=5000)
    # Delete removes the point nearest the pointer
    _mouse(vp, QEvent.Type.MouseMove, lab.editor.view_to_widget(-3.0, 0.1))
    lab.editor.setFocus()
    qtbot.keyClick(lab.editor, Qt.Key.Key_Delete)
    assert len(s.xs) == 19 and (-3.0, 0.0) not in list(zip(s.xs, s.ys))
    lab.stop_run()


def test_the_square_loss_stops_at_a_finite_point_off_the_svm_direction(qtbot, lab):
    lab.apply_settings({"loss": "square", "run_ngd": False, "steps": 10**5})
    wait_done(qtbot, lab)
    ang = lab.angles()[0]
    assert ang[-1] > 5 and abs(ang[-1] - ang[-10]) < 1e-6  # settled, ~9.9 degrees off the SVM (the engine's set)
    assert "square loss: every run converges to a finite point" in lab.info.text()


def _angles_in(text: str) -> list[float]:
    import re

    m = re.search(r"the directions differ: l2–l1 ([\d.e+-]+)°[^,]*, l2–l∞ ([\d.e+-]+)°[^,]*, l1–l∞ ([\d.e+-]+)°", text)
    assert m, text
    return [float(v) for v in m.groups()]


def test_the_tilted_3d_preset_runs_and_says_its_directions_differ(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    lab.apply_settings({"mode": "tilted", "run_ngd": False, "run_coordinate": True, "run_sign": True,
                        "steps": 10**4})
    s, d = lab.state, ib.make_preset("tilted")
    assert lab.is3d and len(s.xs) == len(s.zs) == 9 and np.allclose(s.zs, d.x[:, 2])
    assert lab.z.shape == (9, 3) and "(3D data: tilted)" in lab.data_note.text()
    assert lab.settings_dict()["zs"] == s.zs  # saved settings and scenes hold the third coordinates
    wait_done(qtbot, lab)
    assert [o for _, o, _ in lab.run_specs] == ["gd", "coordinate", "sign"] and lab.trace.w_now.shape == (3, 3)
    assert "3D data (tilted): the directions differ" in lab.info.text()
    assert min(_angles_in(lab.info.text())) > 5  # the l2, l1 and l-infinity directions pairwise apart
    ang = lab.angles()
    assert np.all(np.isfinite(ang[:, -1])) and np.all(ang[:, -1] < ang[:, 5])  # each turns towards its own
    for key in ("angle", "norm", "margin", "losst"):  # the log-time plots work unchanged
        assert all(len(c.getData()[0]) > 20 for c in lab.curves[key]), key
    for n in ("l2", "l1", "linf"):  # the three planes and rays in the GL view, no 2D boundary lines
        assert lab.planes[n].visible() and len(lab.rays[n].pos) == 2
    assert len(lab.paths[0].pos) > 20 and not lab.scene.surface.visible()
    assert len(lab.svm_line.getData()[0] or []) == 0 and len(lab.run_lines[0].getData()[0] or []) == 0
    assert len(lab.rings.data) == len(lab.geo.svm.support) == 2
    assert "projection" in lab.editor.plotItem.titleLabel.text
    # editing by hand is 2D only: a click is refused in words, nothing changes
    click(qtbot, lab, 0.2, 0.2)
    lab.move_point(0, 0.5, 0.5)
    assert len(s.xs) == 9 and s.xs[0] == d.x[0, 0] and msgs[-1][1] and "2D only" in msgs[-1][0]
    # a scene's zs must match the points
    with pytest.raises(SettingError, match="zs is empty"):
        check_settings(ImplicitBiasState, {"mode": "tilted", "zs": [0.1, 0.2]}, "scene")
    # the cube preset, and back to 2D: the clean points, editable, the loss surface again
    lab.apply_settings({"mode": "cube"})
    assert len(lab.state.zs) == 40 and lab.z.shape == (40, 3) and "3D data: cube" in lab.data_note.text()
    lab.apply_settings({"mode": "2d"})
    assert lab.state.zs == [] and len(lab.state.xs) == 20 and lab.z.shape == (20, 2)
    assert lab.scene.surface.visible() and not lab.planes["l2"].visible()
    click(qtbot, lab, 0.6, -0.1)
    assert len(lab.state.xs) == 21
    lab.stop_run()


def test_the_gl_view_draws_the_3d_points_and_the_separating_planes(qtbot, lab):
    from visualizer.views.points import NEG_COLOR, POS_COLOR

    lab.apply_settings({"mode": "tilted", "run_ngd": False, "run_coordinate": True, "run_sign": True,
                        "steps": 10**4})
    wait_done(qtbot, lab)
    img = lab.scene.render_offscreen(480, 360)  # BGRA
    rgb = img[..., 2::-1].astype(int)

    def count(color, tol: int = 40) -> int:
        c = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)]) if isinstance(color, str) else np.array(color)
        return int((np.abs(rgb - c).max(axis=2) < tol).sum())

    assert count(POS_COLOR, 40) > 150 and count(NEG_COLOR, 40) > 80  # the points, both classes
    # the planes: translucent tints of the dark background (white SVM, green l1, violet l-infinity)
    def tint(col: str, a: float = PLANE_ALPHA) -> tuple:
        c = np.array([int(col[i:i + 2], 16) for i in (1, 3, 5)])
        return tuple((a * c + (1 - a) * np.array([13, 15, 20])).astype(int))  # over the background #0d0f14

    for n in ("l2", "l1", "linf"):
        assert count(tint(NORM_COLORS[n]), 10) > 1000, n  # (about 2000-5600 here)
    assert count(NORM_COLORS["l2"], 30) > 200  # the SVM ray and plane's edge
    assert count(OPT_COLORS["gd"], 40) > 100  # GD's path
