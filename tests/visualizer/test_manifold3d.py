"""Widget and pixel tests of the manifold3d lab (Xvfb + Mesa)."""

import numpy as np
import pytest
from PySide6.QtCore import Qt

from visualizer.labs.base import SettingError
from visualizer.labs.manifold3d import Manifold3DLab
from visualizer.views.form import SLIDER_TICKS


@pytest.fixture
def lab(qtbot, fresh_settings):
    w = Manifold3DLab(restore=False)
    w.resize(1200, 650)
    qtbot.addWidget(w)
    qtbot.addWidget(w.controls())
    w.show()
    qtbot.waitUntil(lambda: w.landscape is not None, timeout=30000)
    yield w
    w.shutdown()


def mesh_vertices(lab):
    return np.concatenate([m.opts["meshdata"].vertexes() for m in lab._mesh_items])


def alpha_at(tick):
    """The α the log slider's ``tick`` stands for: 10^-1 .. 10^2 over the ticks."""
    return 10 ** (-1 + 3 * tick / SLIDER_TICKS)


def type_enter(qtbot, edit, text):
    edit.setText(text)
    qtbot.keyClick(edit, Qt.Key.Key_Return)


def test_dragging_a_data_point_re_extracts_the_mesh(qtbot, lab):
    before = mesh_vertices(lab).copy()
    lab.data_panel.targets[0].setPos(1.0, -0.7)  # what a drag does
    assert lab.state.ys == [-0.7]
    qtbot.waitUntil(lambda: lab.landscape["request"].ys == (-0.7,), timeout=20000)
    after = mesh_vertices(lab)
    assert after.shape != before.shape or not np.allclose(after, before)
    # the new surface solves w3 tanh(w1 + w2) = -0.7
    assert np.allclose(after[:, 2] * np.tanh(after[:, 0] + after[:, 1]), -0.7, atol=1e-8)


def _distance_at(qtbot, lab, alpha=None, tick=None):
    """Set α (exactly, or by the slider's tick), wait for the re-run with that α to finish, and return its
    distance travelled."""
    if tick is not None:
        lab.widget("alpha").setValue(tick)
        alpha = alpha_at(tick)
    else:
        lab.set_setting("alpha", alpha)
    assert lab.state.alpha == pytest.approx(alpha, rel=1e-12)
    qtbot.waitUntil(lambda: not lab.busy() and bool(lab.runs) and abs(lab.runs[0].params["alpha"] - alpha) < 1e-9
                    and lab.runs[0].params["scaling"] == "lazy", timeout=20000)
    qtbot.waitUntil(lambda: lab.runs[0].finished, timeout=60000)
    return lab.last_distance


def test_lazy_training_is_one_formula_for_every_alpha(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append(t))
    lab.widget("steps").setValue(20000)
    assert lab.state.steps == 20000
    assert lab.state.scaling == "plain" and not lab.widget("alpha").isEnabled()
    run = lab.start_descent([0.7, -0.4, 1.2])
    qtbot.waitUntil(lambda: run.finished, timeout=60000)
    plain = lab.last_distance
    assert run.params["alpha"] == 1.0 and run.params["scaling"] == "plain"
    lab.widget("scaling").setCurrentIndex(1)  # lazy
    assert lab.widget("alpha").isEnabled() and lab.state.scaling == "lazy"
    d_1 = _distance_at(qtbot, lab, alpha=1.0)
    # the slider's ticks nearest 1, on either side: no jump at alpha = 1 (there was one, 0.006 -> 0.42)
    below, above = SLIDER_TICKS // 3, SLIDER_TICKS // 3 + 1
    assert alpha_at(below) < 1 < alpha_at(above) < 1.01
    d_near = _distance_at(qtbot, lab, tick=above)  # (the slider shows alpha = 1 at the tick below)
    d_below = _distance_at(qtbot, lab, tick=below)
    assert abs(d_near - d_1) < 0.05 * d_1 and abs(d_below - d_1) < 0.05 * d_1
    big = round(SLIDER_TICKS * 2.5 / 3)  # alpha about 10^1.5
    d_big = _distance_at(qtbot, lab, tick=big)
    want = alpha_at(big)
    assert abs(np.log10(want) - 1.5) < 0.002
    assert d_big < 0.2 * d_1
    assert 0.3 < d_big * want / d_1 < 3  # shrinks about like 1/alpha
    assert any(f"lazy, α = {want:.3g}" in t and "distance travelled" in t for t in msgs)
    assert f"lazy training, α = {want:.3g}" in lab.caption.text()
    assert plain > 0


def test_two_and_three_points(qtbot, lab):
    lab.data_panel.n_points.setValue(2)
    assert len(lab.state.xs) == len(lab.state.ys) == 2
    qtbot.waitUntil(lambda: len(lab.landscape["request"].xs) == 2, timeout=30000)
    assert lab.landscape["solution"].curves
    assert len(lab.curve_item.pos) > 20
    lab.widget("model").setCurrentIndex(1)  # linear in w
    assert lab.state.model == "quadratic"
    lab.data_panel.n_points.setValue(3)
    qtbot.waitUntil(lambda: len(lab.landscape["request"].xs) == 3 and lab.landscape["request"].model == "quadratic",
                    timeout=30000)
    assert len(lab.landscape["solution"].points) == 1
    assert "isolated points" in lab.caption.text()


def test_typed_start_bad_input_and_linear_projection(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    edit = lab.widget("start")
    for bad, words in (("1, two, 3", "numbers"), ("1, 2", "3"), ("1, 2, 1e9", "out of range")):
        type_enter(qtbot, edit, bad)
        assert lab.runs == [] and lab.state.start == [1.5, -1.0, 0.8], bad
        assert not lab.form.error_label("start").isHidden() and words in lab.form.error_label("start").text()
        assert msgs and msgs[-1][1] and "start" in msgs[-1][0]
    lab.widget("model").setCurrentIndex(1)
    qtbot.waitUntil(lambda: lab.landscape["request"].model == "quadratic", timeout=20000)
    type_enter(qtbot, edit, "1.2, -0.7, 0.5")  # taken, and Enter starts a descent from it
    assert lab.state.start == [1.2, -0.7, 0.5] and lab.form.error_label("start").isHidden()
    assert len(lab.runs) == 1 and np.allclose(lab.runs[0].starts, [[1.2, -0.7, 0.5]])
    run = lab.runs[0]
    qtbot.waitUntil(lambda: run.finished, timeout=60000)
    assert np.linalg.norm(run.trajs[0].last_params - run.projections[0]) < 1e-6
    lab.widget("action:descent").click()  # the button beside the field: from the same start
    assert len(lab.runs) == 2 and np.allclose(lab.runs[1].starts, [[1.2, -0.7, 0.5]])
    lab.reset()
    lab.toggle_run()  # Space with nothing running: the default start is the typed one
    assert len(lab.runs) == 1 and np.allclose(lab.runs[0].starts, [[1.2, -0.7, 0.5]])


def test_bad_expression_and_huge_grid(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    edit = lab.widget("expression")
    assert not edit.isEnabled()  # only the custom model reads it
    lab.widget("model").setCurrentIndex(3)
    assert lab.state.model == "custom" and edit.isEnabled()
    good = lab.state.expression
    type_enter(qtbot, edit, "w3 * (")
    err = lab.form.error_label("expression")
    assert not err.isHidden() and err.text().startswith("✗")
    assert lab.state.expression == good and any(e and "refused" in t for t, e in msgs)
    qtbot.waitUntil(lambda: not lab.busy() and lab.landscape["request"].model == "custom", timeout=20000)
    assert lab.landscape["request"].expression == good
    # a grid finer than 160³ cannot be asked for: not by the control, not by a scene
    assert lab.widget("resolution").maximum() == 160
    with pytest.raises(SettingError, match=r"resolution.*\[16, 160\]"):
        lab.apply_settings({"resolution": 2000})
    assert lab.state.resolution == 64 and lab.widget("resolution").value() == 64
    assert not lab.busy() and lab.landscape["request"].resolution == 64


def test_stored_values_out_of_range_fall_back_to_their_defaults(qtbot, fresh_settings):
    from visualizer import settings as store

    # the bug of issue 10: a stored alpha of 0.01 trained at 0.01 while the slider showed 0.1
    store.save_json("labs/manifold3d", {"scaling": "lazy", "alpha": 0.01, "resolution": 2000, "shell_level": 0,
                                        "lr": 0.2, "xs": [1.0, 2.0], "ys": [0.5], "expression": "w3 * (",
                                        "slice_w3": 2.0, "extent": 1.0})
    lab = Manifold3DLab(start=False)
    qtbot.addWidget(lab)
    qtbot.addWidget(lab.controls())
    s = lab.state
    assert (s.scaling, s.lr, s.alpha, s.resolution, s.shell_level) == ("lazy", 0.2, 1.0, 64, 0.05)
    assert (s.xs, s.ys, s.expression) == ([1.0], [0.5], "w3*sin(w1*x) + w2")
    assert (s.extent, s.slice_w3) == (1.0, 0.8)  # a slice outside [-a, a]: back to its default, a kept
    assert lab.train_alpha() == 1.0
    slider = lab.widget("alpha")
    assert slider.isEnabled() and slider.value() == round(SLIDER_TICKS / 3)  # log10(1) of -1 .. 2
    text = " ".join(lab.restore_problems)
    for words in ("alpha", "[0.1, 100]", "resolution", "[16, 160]", "shell_level", "xs", "expression",
                  "slice_w3"):
        assert words in text, words
    run = lab.start_descent([0.7, -0.4, 1.2])
    assert run.params["alpha"] == 1.0 and run.params["scaling"] == "lazy"
    lab.shutdown()
    # data beyond what a landscape can be drawn of (it overflowed the colour bar's range)
    store.save_json("labs/manifold3d", {"model": "quadratic", "xs": [1e300], "ys": [0.5]})
    lab = Manifold3DLab()
    qtbot.addWidget(lab)
    assert lab.state.model == "quadratic" and lab.state.xs == [1.0]
    assert "xs" in " ".join(lab.restore_problems) and "[-1e+06, 1e+06]" in " ".join(lab.restore_problems)
    qtbot.waitUntil(lambda: lab.landscape is not None and not lab.busy(), timeout=30000)
    assert lab.landscape["request"].xs == (1.0,) and np.isfinite(lab.landscape["range"]).all()
    lab.shutdown()


def test_the_slice_follows_the_extent(qtbot, lab):
    slider = lab.widget("slice_w3")
    slider.setValue(SLIDER_TICKS)
    assert lab.state.slice_w3 == 2.5
    lab.widget("extent").setValue(1.0)  # (a step of the spin box: committed at once)
    assert lab.state.extent == 1.0 and lab.state.slice_w3 == 1.0 and slider.value() == SLIDER_TICKS
    qtbot.waitUntil(lambda: not lab.busy() and lab.landscape["request"].extent == 1.0, timeout=30000)
    assert lab.landscape["request"].slice_w3 == 1.0 and "slice w₃ = 1.00" in lab.caption.text()
    lab.apply_settings({"extent": 2.0})  # the slice stays where it is, which is now mid-way up
    assert lab.state.slice_w3 == 1.0 and slider.value() == round(0.75 * SLIDER_TICKS)
    with pytest.raises(SettingError, match=r"slice_w3.*\[-2, 2\]"):
        lab.apply_settings({"slice_w3": 2.5})
    qtbot.waitUntil(lambda: not lab.busy() and lab.landscape["request"].extent == 2.0, timeout=30000)
    assert lab.scene.extent == (-2.0, 2.0, -2.0, 2.0)


def test_manifold_mesh_is_drawn(qtbot, lab):
    from tests.gl.test_render import qimage_to_array

    qtbot.wait(300)
    shot = qimage_to_array(lab.scene.grabFramebuffer())
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    # the translucent light-blue solution surface over the dark background
    bluish = (b > 60) & (b > r + 15) & (g > r)
    assert bluish.sum() > 2000
    assert lab.has_drawn() and lab.views() == {"3d": lab.scene, "2d": lab.plane}


def test_slice_coloured_by_the_tangent_kernel(qtbot, lab):
    assert not lab.widget("mu").isEnabled()
    lab.widget("slice_color").setCurrentIndex(1)
    assert lab.widget("mu").isEnabled()
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
    lab.widget("model").setCurrentIndex(3)
    expr = "w1**2 + w2**2 + w3**2 + 1"
    type_enter(qtbot, lab.widget("expression"), expr)
    assert lab.state.expression == expr
    qtbot.waitUntil(lambda: lab.landscape["request"].model == "custom" and lab.landscape["request"].expression == expr,
                    timeout=20000)
    assert lab._mesh_items == []
    assert any("no solutions in view" in t for t in msgs)
    assert "w1**2 + w2**2 + w3**2 + 1" in lab.caption.text()


def test_lazy_descent_of_the_linear_model_lands_on_its_projection(qtbot, lab):
    lab.widget("model").setCurrentIndex(1)  # w1 x + w2 x^2 + w3, linear in w
    qtbot.waitUntil(lambda: lab.landscape["request"].model == "quadratic", timeout=20000)
    lab.widget("scaling").setCurrentIndex(1)
    lab.set_setting("alpha", 10.0)
    assert lab.widget("alpha").value() == round(2 * SLIDER_TICKS / 3)  # log10(10) of -1 .. 2
    lab.widget("steps").setValue(200000)
    w0 = np.array([1.5, -1.0, 0.8])
    run = lab.start_descent(w0)
    assert run.params["alpha"] == 10.0
    qtbot.waitUntil(lambda: run.finished, timeout=60000)
    # alpha X (w - w0) = y: the nearest such w is w0 + X^+ y / alpha, a tenth of the plain move away
    x, y = np.array(lab.state.xs), np.array(lab.state.ys)
    X = np.column_stack([x, x**2, np.ones_like(x)])
    expected = w0 + np.linalg.pinv(X) @ y / 10.0
    assert np.allclose(run.projections[0], expected)
    assert np.linalg.norm(run.trajs[0].last_params - expected) < 1e-6


def test_the_lab_names_the_engines_variables():
    from models.toy3d import VARIABLES
    from visualizer.labs.manifold3d import VARIABLES as shown

    assert shown == VARIABLES
