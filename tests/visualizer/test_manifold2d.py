"""Widget tests of the manifold2d lab (run under Xvfb: the lab holds an OpenGL view)."""

import dataclasses

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from visualizer.labs.base import SettingError
from visualizer.labs.manifold2d import Manifold2DLab


@pytest.fixture
def lab(qtbot, fresh_settings):
    w = Manifold2DLab(restore=False)
    w.resize(1200, 600)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.landscape is not None, timeout=20000)
    yield w
    w.shutdown()


def wait_done(qtbot, lab, timeout=30000):
    qtbot.waitUntil(lambda: bool(lab.runs) and all(r.finished for r in lab.runs), timeout=timeout)
    qtbot.wait(50)


def test_click_starts_a_descent_that_streams_into_both_views(qtbot, lab):
    lab.widget("steps").setValue(300)
    pos = lab.plane.view_to_widget(1.5, -2.0)
    qtbot.mouseClick(lab.plane.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(int(pos.x()), int(pos.y())))
    assert len(lab.runs) == 1
    wait_done(qtbot, lab)
    # a second click starts exactly one more descent (no handler connected twice)
    pos2 = lab.plane.view_to_widget(-1.0, 2.0)
    qtbot.mouseClick(lab.plane.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(int(pos2.x()), int(pos2.y())))
    assert len(lab.runs) == 2
    wait_done(qtbot, lab)
    run = lab.runs[0]
    start = run.trajs[0].path[0]
    assert np.allclose(start, [1.5, -2.0], atol=0.05)
    line3d = run.lines3d[0].pos
    assert line3d is not None and len(line3d) > 10
    x2d, _ = run.curves2d[0].getData()
    assert len(x2d) > 10
    # the landing point is on the manifold: w2 tanh(w1) = 0.8
    w = run.trajs[0].last_params
    assert abs(w[1] * np.tanh(w[0]) - 0.8) < 1e-3
    # the 3D line follows the surface: its heights decrease as the loss falls
    assert line3d[-1, 2] < line3d[0, 2]


def test_linear_model_landing_point_coincides_with_marked_projection(qtbot, lab):
    lab.widget("model").setCurrentIndex(1)  # w1 x + w2
    qtbot.waitUntil(lambda: lab.landscape["request"].model == "linear", timeout=10000)
    run = lab.start_descent([2.0, 2.5])
    wait_done(qtbot, lab)
    proj = run.projections[0]
    mark = run.proj_marks.data["x"][0], run.proj_marks.data["y"][0]
    assert np.allclose(mark, proj)
    assert np.linalg.norm(run.trajs[0].last_params - proj) < 1e-6


def test_diverging_step_size_shows_a_message_and_the_app_stays_usable(qtbot, lab):
    messages = []
    lab.message.connect(lambda text, err: messages.append((text, err)))
    lab.widget("model").setCurrentIndex(2)  # w1 w2 x
    lab.widget("lr").setValue(5.0)
    lab.start_descent([2.5, 2.5])
    wait_done(qtbot, lab)
    assert lab.banner.isVisible() and "diverged" in lab.banner.text()
    assert any(err and "diverged" in t for t, err in messages)
    tr = lab.runs[0].trajs[0]
    assert np.all(np.isfinite(tr.path))  # the path up to the last finite point is kept and shown
    lab.widget("lr").setValue(0.05)  # re-runs the diverged descent at the new step size, after a short delay
    qtbot.waitUntil(lambda: not lab.busy() and lab.runs and lab.runs[0].params["lr"] == 0.05, timeout=30000)
    run = lab.start_descent([1.0, 0.5])
    qtbot.waitUntil(lambda: run.finished and lab.runs[0].finished, timeout=30000)
    assert run.result.reason in ("converged", "completed")
    assert lab.runs[0].result.reason in ("converged", "completed")  # the same start, a stable step: it lands


def test_unparsable_expression_is_refused_with_a_reason(qtbot, lab):
    error = lab.form.error_label("expression")
    before = lab.state.expression
    assert not lab.set_expression("w2 * tanh(w1 */ x)")
    assert not error.isHidden()
    assert "column" in error.text()
    assert lab.state.expression == before and lab.state.model == "tanh"  # a refusal changes nothing
    assert not lab.set_expression("os.system('x')")
    assert "not allowed" in error.text() or "unknown" in error.text()
    assert lab.set_expression("w2*sin(w1*x)")  # taken: the model becomes the custom one
    qtbot.waitUntil(lambda: lab.landscape["request"].expression == "w2*sin(w1*x)"
                    and lab.landscape["request"].model == "custom", timeout=10000)
    assert lab.state.model == "custom" and lab.widget("model").currentData() == "custom"
    assert error.isHidden()
    assert len(lab.landscape["solution"].curves) > 0


def test_the_expression_field_is_for_the_custom_model_and_commits_on_enter(qtbot, lab):
    edit, error = lab.widget("expression"), lab.form.error_label("expression")
    assert not edit.isEnabled()
    lab.apply_settings({"expression": "w1*w2*x"})  # a scene's formula: kept for the custom model, unused yet
    assert lab.state.model == "tanh" and edit.text() == "w1*w2*x"
    lab.widget("model").setCurrentIndex(3)
    assert edit.isEnabled()
    qtbot.waitUntil(lambda: lab.landscape["request"].model == "custom"
                    and lab.landscape["request"].expression == "w1*w2*x", timeout=10000)
    edit.clear()
    qtbot.keyClicks(edit, "w2*tanh(w1*x")
    assert lab.state.expression == "w1*w2*x"  # nothing is taken before Enter
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert not error.isHidden() and lab.state.expression == "w1*w2*x"
    assert edit.text() == "w2*tanh(w1*x"  # the refused text stays to be corrected
    qtbot.keyClicks(edit, ")")
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert error.isHidden() and lab.state.expression == "w2*tanh(w1*x)"
    qtbot.waitUntil(lambda: lab.landscape["request"].expression == "w2*tanh(w1*x)", timeout=10000)
    with pytest.raises(SettingError, match="expression"):  # a scene's bad formula is refused, strictly
        lab.apply_settings({"expression": "w1 */ x"})
    assert lab.state.expression == "w2*tanh(w1*x)"


def test_huge_grid_request_is_refused_with_the_range(qtbot, lab):
    spin = lab.widget("resolution")
    assert spin.maximum() == 1601
    before = dataclasses.asdict(lab.state)
    with pytest.raises(SettingError, match=r"resolution.*5000.*\[21, 1601\]"):
        lab.apply_settings({"resolution": 5000})
    assert dataclasses.asdict(lab.state) == before and spin.value() == 201
    assert not lab.busy() and lab.landscape["request"].resolution == 201  # nothing was asked of the worker
    # the control cannot ask for more than its maximum; the largest grid is what the worker computes (and
    # the test ends only once it has)
    spin.setValue(5000)
    spin.editingFinished.emit()
    assert spin.value() == 1601 and lab.state.resolution == 1601
    qtbot.waitUntil(lambda: not lab.busy() and lab.landscape["request"].resolution == 1601, timeout=180000)


def test_dragging_a_data_point_moves_the_manifold(qtbot, lab):
    before = np.concatenate(lab.landscape["solution"].curves).copy()
    lab.targets[0].setPos(1.0, -1.2)  # what a mouse drag does
    qtbot.waitUntil(lambda: lab.landscape["request"].ys == (-1.2,), timeout=10000)
    after = np.concatenate(lab.landscape["solution"].curves)
    assert lab.data_panel.table.item(0, 1).text() == "-1.2" and lab.state.ys == [-1.2]
    # new curve: w2 = -1.2 / tanh(w1)
    assert np.allclose(after[:, 1] * np.tanh(after[:, 0]), -1.2, atol=1e-9)
    assert not np.allclose(before[:5], after[:5])


def test_typed_data_point_and_bad_cell(qtbot, lab):
    messages = []
    lab.message.connect(lambda text, err: messages.append((text, err)))
    lab.data_panel.table.item(0, 0).setText("abc")
    assert lab.state.xs == [1.0] and any("not a number" in t for t, _ in messages)
    lab.data_panel.table.item(0, 0).setText("2")
    qtbot.waitUntil(lambda: lab.landscape["request"].xs == (2.0,), timeout=10000)
    # the draggable point moved and its label says where it is
    assert lab.targets[0].pos().x() == 2.0
    assert lab.targets[0].label().toPlainText() == "(2.00, 0.80)"


def test_two_points_give_isolated_solutions(qtbot, lab):
    assert lab.widget("batch_size").maximum() == 1
    lab.data_panel.n_points.setValue(2)
    assert lab.widget("batch_size").maximum() == 2  # the batch size's range follows the number of points
    lab.set_data_point(1, 2.0, 1.2)
    qtbot.waitUntil(lambda: lab.landscape["request"].xs == (1.0, 2.0)
                    and lab.landscape["request"].ys == (0.8, 1.2), timeout=10000)
    sol = lab.landscape["solution"]
    assert len(sol.points) == 2 and not sol.curves
    assert len(lab.plane.residual_curves) == 2


def test_pause_single_step_resume_and_reset(qtbot, lab):
    # a descent that cannot end during the test
    lab.widget("steps").setValue(lab.widget("steps").maximum())
    lab.widget("lr").setValue(lab.widget("lr").minimum())
    run = lab.start_descent([2.0, -2.0])
    qtbot.waitUntil(lambda: run.trajs[0].last_step > 5, timeout=20000)
    lab.set_paused(True)
    qtbot.waitUntil(lab.pause_settled, timeout=20000)  # the child confirmed: every step before it is here
    s0 = run.trajs[0].last_step
    qtbot.wait(200)
    assert run.trajs[0].last_step == s0  # paused means paused
    lab.single_step()
    qtbot.waitUntil(lambda: run.trajs[0].last_step >= s0 + 1, timeout=20000)
    qtbot.wait(150)
    assert run.trajs[0].last_step == s0 + 1
    lab.set_paused(False)
    qtbot.waitUntil(lambda: run.trajs[0].last_step > s0 + 20, timeout=20000)
    lab.reset()
    assert lab.runs == []


def test_random_starts_run_several_trajectories_at_once(qtbot, lab):
    lab.widget("n_random").setValue(6)
    lab.widget("steps").setValue(400)
    run = lab.random_starts()
    assert len(run.trajs) == 6
    wait_done(qtbot, lab)
    assert all(len(tr.path) > 5 for tr in run.trajs)
    ends = np.array([tr.last_params for tr in run.trajs])
    assert len(np.unique(np.round(ends, 3), axis=0)) > 1


def test_changing_the_model_mid_run_restarts_cleanly(qtbot, lab):
    lab.widget("steps").setValue(lab.widget("steps").maximum())
    lab.widget("lr").setValue(lab.widget("lr").minimum())  # still running when the model changes
    first = lab.start_descent([2.0, -2.0])
    qtbot.waitUntil(lambda: first.trajs[0].last_step > 5, timeout=20000)
    assert not first.finished
    lab.widget("model").setCurrentIndex(2)
    qtbot.waitUntil(lambda: bool(lab.runs) and lab.runs[0].params["model_key"] == "factor", timeout=20000)
    assert len(lab.runs) == 1 and np.allclose(lab.runs[0].starts, [[2.0, -2.0]])
    new = lab.runs[0]
    qtbot.waitUntil(lambda: new.trajs[0].last_step > 5, timeout=20000)  # the new run streams from its start
    assert np.allclose(new.trajs[0].path[0], [2.0, -2.0]) and first.removed
    qtbot.waitUntil(lambda: not first.runner.isRunning(), timeout=20000)  # the old child ended
    lab.reset()


def test_curvature_toggle_shades_a_region_touching_the_manifold(qtbot, lab):
    lab.widget("curvature").setChecked(True)
    qtbot.waitUntil(lambda: lab.landscape["neg_mask"] is not None, timeout=10000)
    mask = lab.landscape["neg_mask"]
    assert mask.any() and not mask.all()
    # the shaded region reaches the solution curve: some curve point has a shaded grid cell next to it
    w1, w2 = lab.landscape["w1"], lab.landscape["w2"]
    curve = np.concatenate(lab.landscape["solution"].curves)
    i = np.clip(np.searchsorted(w1, curve[:, 0]), 1, len(w1) - 1)
    j = np.clip(np.searchsorted(w2, curve[:, 1]), 1, len(w2) - 1)
    touching = mask[i, j] | mask[i - 1, j] | mask[i, j - 1] | mask[i - 1, j - 1]
    assert touching.any()


def test_changing_the_step_size_reruns_the_descents_from_their_starts(qtbot, lab):
    lab.widget("steps").setValue(500)
    lab.start_descent([2.0, -2.0])
    wait_done(qtbot, lab)
    slow = lab.runs[0].trajs[0].last_step
    lab.widget("lr").setValue(0.4)
    qtbot.waitUntil(lambda: bool(lab.runs) and lab.runs[0].params["lr"] == 0.4, timeout=10000)
    assert np.allclose(lab.runs[0].starts, [[2.0, -2.0]])
    wait_done(qtbot, lab)
    assert lab.runs[0].trajs[0].last_step < slow  # a larger stable step converges in fewer steps


def test_kernel_colouring_outlines_where_pl_star_fails(qtbot, lab):
    lab.widget("mu").setValue(0.05)
    lab.widget("color_by").setCurrentIndex(1)
    qtbot.waitUntil(lambda: lab.landscape["request"].color_by == "kernel", timeout=10000)
    lam = lab.landscape["kernel"]
    assert lab.landscape["plane_label"].startswith("log₁₀ λ_min")
    # for w2 tanh(w1 x) the kernel vanishes only at the origin: the outline is a small closed curve around it
    outline = np.concatenate(lab.landscape["mu_outline"])
    assert len(outline) > 10 and np.abs(outline).max() < 1.0
    i = np.argmin(lam)
    w1, w2 = lab.landscape["w1"], lab.landscape["w2"]
    assert abs(w1[i // lam.shape[1]]) < 0.05 and abs(w2[i % lam.shape[1]]) < 0.05


def test_pl_ball_contains_the_descent_and_bound_is_drawn(qtbot, lab):
    lab.widget("pl_ball").setChecked(True)
    lab.widget("lr").setValue(0.05)
    lab.widget("steps").setValue(3000)
    run = lab.start_descent([1.2, 1.0])
    qtbot.waitUntil(lambda: getattr(lab, "last_ball", None) is not None, timeout=20000)
    wait_done(qtbot, lab)
    b = lab.last_ball
    assert b.holds and lab.state.lr <= 1 / b.beta
    path = run.trajs[0].path
    assert np.linalg.norm(path - np.array([1.2, 1.0]), axis=1).max() <= b.radius
    assert lab.ball_items and lab.bound_curve is not None
    assert "μ =" in lab.ball_label.text()


def test_stored_settings_out_of_range_fall_back_to_their_defaults_and_are_named(qtbot, fresh_settings):
    from visualizer import settings as store

    store.save_json("labs/manifold2d", {"resolution": 5000, "lr": 1e9, "model": "linear", "xs": [1.0, 2.0],
                                        "ys": [0.5], "batch_size": 2, "expression": "w1 */ x", "steps": 700})
    lab = Manifold2DLab(start=False)
    qtbot.addWidget(lab)
    s = lab.state
    assert (s.resolution, s.lr, s.xs, s.ys, s.batch_size) == (201, 0.1, [1.0], [0.8], 1)
    assert s.expression == "w2*sin(w1*x) + 0.2*w1"
    assert (s.model, s.steps) == ("linear", 700)  # what is valid is kept
    text = " · ".join(lab.restore_problems)
    for words in ("resolution", "[21, 1601]", "lr", "[1e-05, 100]", "xs", "ys", "batch_size", "expression"):
        assert words in text, text
    assert lab.widget("resolution").value() == 201 and lab.widget("steps").value() == 700
    assert lab.widget("model").currentData() == "linear"
    lab.shutdown()


def test_wireframe_redraws_and_a_new_box_resets_the_view(qtbot, lab):
    lab.widget("wireframe").setChecked(True)
    assert lab.scene.surface.wireframe and not lab.busy()  # drawn again, the grid not computed again
    vb = lab.plane.plot.getViewBox()
    vb.setRange(xRange=(10, 11), yRange=(10, 11), padding=0)  # the user panned away
    lab.widget("extent").setValue(2.0)
    lab.widget("extent").editingFinished.emit()
    qtbot.waitUntil(lambda: lab.landscape["request"].extent == 2.0, timeout=10000)
    (x0, x1), (y0, y1) = vb.viewRange()
    box = 2.0 * 201 / 200  # the grid's cells are centred on the box's edges
    assert x0 <= -box + 1e-6 and x1 >= box - 1e-6 and y0 <= -box + 1e-6 and y1 >= box - 1e-6
    assert min(x1 - x0, y1 - y0) < 2.2 * box  # the view went to the new box (the aspect ratio is locked)
