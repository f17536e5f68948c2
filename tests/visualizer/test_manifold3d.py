"""Widget and pixel tests of the manifold3d lab (Xvfb + Mesa)."""

import numpy as np
import pytest

from visualizer.labs.manifold3d import Manifold3DLab


@pytest.fixture
def lab(qtbot, fresh_settings):
    w = Manifold3DLab(restore=False)
    w.resize(1200, 650)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.landscape is not None, timeout=30000)
    yield w
    w.shutdown()


def mesh_vertices(lab):
    return np.concatenate([m.opts["meshdata"].vertexes() for m in lab._mesh_items])


def test_dragging_a_data_point_re_extracts_the_mesh(qtbot, lab):
    before = mesh_vertices(lab).copy()
    lab.data_panel.targets[0].setPos(1.0, -0.7)  # what a drag does
    qtbot.waitUntil(lambda: lab.landscape["request"].ys == (-0.7,), timeout=20000)
    after = mesh_vertices(lab)
    assert after.shape != before.shape or not np.allclose(after, before)
    # the new surface solves w3 tanh(w1 + w2) = -0.7
    assert np.allclose(after[:, 2] * np.tanh(after[:, 0] + after[:, 1]), -0.7, atol=1e-8)


def _distance_at(qtbot, lab, slider):
    """Set the α slider, wait for the re-run with that α to finish, and return its distance travelled."""
    lab.alpha_slider.setValue(slider)
    want = 10 ** (slider / 100)
    qtbot.waitUntil(lambda: not lab.busy() and bool(lab.runs) and abs(lab.runs[0].params["alpha"] - want) < 1e-9,
                    timeout=20000)
    qtbot.waitUntil(lambda: lab.runs[0].finished, timeout=60000)
    return lab.last_distance


def test_lazy_training_is_one_formula_for_every_alpha(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append(t))
    lab.steps_spin.setValue(20000)
    assert lab.state.scaling == "plain" and not lab.alpha_slider.isEnabled()
    run = lab.start_descent([0.7, -0.4, 1.2])
    qtbot.waitUntil(lambda: run.finished, timeout=60000)
    plain = lab.last_distance
    assert run.params["alpha"] == 1.0 and run.params["scaling"] == "plain"
    lab.scaling_combo.setCurrentIndex(1)  # lazy
    assert lab.alpha_slider.isEnabled() and lab.state.scaling == "lazy"
    d_1 = _distance_at(qtbot, lab, 0)  # alpha = 1
    d_near = _distance_at(qtbot, lab, 1)  # alpha = 10^0.01: no jump at alpha = 1 (there was one, 0.006 -> 0.42)
    assert abs(d_near - d_1) < 0.05 * d_1
    d_big = _distance_at(qtbot, lab, 150)  # alpha = 10^1.5
    assert d_big < 0.2 * d_1
    assert 0.3 < d_big * 10**1.5 / d_1 < 3  # shrinks about like 1/alpha
    assert any("lazy, α = 31.6" in t and "distance travelled" in t for t in msgs)
    assert "lazy training, α = 31.6" in lab.caption.text()
    assert plain > 0


def test_two_and_three_points(qtbot, lab):
    lab.data_panel.n_points.setValue(2)
    qtbot.waitUntil(lambda: len(lab.landscape["request"].xs) == 2, timeout=30000)
    assert lab.landscape["solution"].curves
    assert len(lab.curve_item.pos) > 20
    lab.model_combo.setCurrentIndex(1)  # linear in w
    lab.data_panel.n_points.setValue(3)
    qtbot.waitUntil(lambda: len(lab.landscape["request"].xs) == 3 and lab.landscape["request"].model == "quadratic",
                    timeout=30000)
    assert len(lab.landscape["solution"].points) == 1


def test_typed_start_bad_input_and_linear_projection(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    lab.start_edit.setText("1, two, 3")
    lab._start_typed()
    assert lab.runs == [] and any("three numbers" in t for t, e in msgs)
    lab.model_combo.setCurrentIndex(1)
    qtbot.waitUntil(lambda: lab.landscape["request"].model == "quadratic", timeout=20000)
    lab.start_edit.setText("1.5, -1.0, 0.8")
    lab._start_typed()
    run = lab.runs[0]
    qtbot.waitUntil(lambda: run.finished, timeout=60000)
    assert np.linalg.norm(run.trajs[0].last_params - run.projections[0]) < 1e-6


def test_bad_expression_and_huge_grid(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    lab.expr_edit.setText("w3 * (")
    lab.model_combo.setCurrentIndex(3)
    assert not lab.expr_error.isHidden() and lab.state.model != "custom"
    lab.res_spin.setValue(1000)
    lab.res_spin.editingFinished.emit()
    assert lab.state.resolution == 160 and any("clamped" in t for t, _ in msgs)
    qtbot.waitUntil(lambda: not lab.busy() and lab.landscape["request"].resolution == 160, timeout=180000)


def test_manifold_mesh_is_drawn(qtbot, lab):
    from tests.gl.test_render import qimage_to_array

    qtbot.wait(300)
    shot = qimage_to_array(lab.scene.grabFramebuffer())
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    # the translucent light-blue solution surface over the dark background
    bluish = (b > 60) & (b > r + 15) & (g > r)
    assert bluish.sum() > 2000


def test_slice_coloured_by_the_tangent_kernel(qtbot, lab):
    lab.slice_combo.setCurrentIndex(1)
    qtbot.waitUntil(lambda: lab.landscape["request"].slice_color == "kernel", timeout=20000)
    lam = lab.landscape["kernel"]
    assert lam.shape == (161, 161) and (lam >= -1e-12).all()
    # one data point: K = |grad f|^2, which matches the formula for w3 tanh(w1 x + w2) at x = 1
    w1, w2, c = lab.landscape["w1"], lab.landscape["w2"], lab.state.slice_w3
    i, j = 30, 100
    t = np.tanh(w1[i] + w2[j])
    want = (c * (1 - t * t)) ** 2 * 2 + t * t
    assert lam[i, j] == pytest.approx(want, rel=1e-10)
    assert "λ_min" in lab.landscape["label"]


def test_no_solutions_in_view_is_said_not_drawn(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append(t))
    lab.expr_edit.setText("w1**2 + w2**2 + w3**2 + 1")
    lab.model_combo.setCurrentIndex(3)
    qtbot.waitUntil(lambda: lab.landscape["request"].model == "custom", timeout=20000)
    assert lab._mesh_items == []
    assert any("no solutions in view" in t for t in msgs)


def test_lazy_descent_of_the_linear_model_lands_on_its_projection(qtbot, lab):
    lab.model_combo.setCurrentIndex(1)  # w1 x + w2 x^2 + w3, linear in w
    qtbot.waitUntil(lambda: lab.landscape["request"].model == "quadratic", timeout=20000)
    lab.scaling_combo.setCurrentIndex(1)
    lab.alpha_slider.setValue(100)  # alpha = 10
    lab.steps_spin.setValue(200000)
    w0 = np.array([1.5, -1.0, 0.8])
    run = lab.start_descent(w0)
    qtbot.waitUntil(lambda: run.finished, timeout=60000)
    # alpha X (w - w0) = y: the nearest such w is w0 + X^+ y / alpha, a tenth of the plain move away
    x, y = np.array(lab.state.xs), np.array(lab.state.ys)
    X = np.column_stack([x, x**2, np.ones_like(x)])
    expected = w0 + np.linalg.pinv(X) @ y / 10.0
    assert np.allclose(run.projections[0], expected)
    assert np.linalg.norm(run.trajs[0].last_params - expected) < 1e-6
