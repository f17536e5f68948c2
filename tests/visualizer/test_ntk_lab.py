"""The ntk lab (issue 12): a width sweep streaming from its child process into every view."""

import math

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt

from tests.visualizer.fakes import FakeRunner
from visualizer.labs.base import SettingError
from visualizer.labs.ntk import WIDTH_COLORS, NTKLab

SMALL = {"widths": [64, 256, 1024], "n_points": 12, "steps": 60, "metric_every": 10, "path_points": [1, 5, 9]}


@pytest.fixture
def lab(qtbot, fresh_settings):
    w = NTKLab(restore=False, start=False)
    w.resize(1400, 850)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


def run_small(qtbot, lab, **extra):
    lab.apply_settings({**SMALL, **extra})  # one update: one sweep starts
    qtbot.waitUntil(lambda: lab.finished and lab.reason == "completed", timeout=60000)
    lab.flush()


def test_sweep_streams_every_measurement_into_the_views(qtbot, lab):
    statuses = []
    lab.status.connect(statuses.append)
    assert not lab.has_drawn() and set(lab.views()) == {"3d", "2d"}
    run_small(qtbot, lab)
    qtbot.waitUntil(lambda: lab.runners() == [], timeout=10000)  # (its thread ends its child after 'done')
    h = lab.hist
    assert lab.has_drawn() and {"running": False} in statuses
    assert h.last_step == 60 and [r[0] for r in h.metric_rows] == list(range(0, 61, 10))
    steps, loss = h.losses()
    assert loss.shape == (61, 3) and np.all(loss[-1] < loss[0])  # every width trains
    last = h.metric_rows[-1][1]
    # lazier with width (NTK parameterization): the weights and the kernel move less, the gap shrinks
    assert last.wchange[0] > last.wchange[1] > last.wchange[2] > 0
    assert last.kchange[0] > last.kchange[2] > 0
    assert h.init.dist_inf[0] > h.init.dist_inf[2]
    assert lab.slopes["wchange"] < -0.3 and lab.slopes["dist_inf"] < -0.3
    assert "slope of ‖Δw‖/‖w₀‖ against m: <b>" in lab.info.text() and "analytic relu NTK" in lab.info.text()
    # every view holds data: losses, functions, the kernel now, the residual modes, the output-space paths
    for tr, te in lab.loss_curves:
        assert len(tr.getData()[0]) == 61 and len(te.getData()[0]) == 7
    assert all(len(c.getData()[0]) == 128 for c in lab.fn_curves)
    assert len(lab.fn_inf.getData()[0]) == 128 and len(lab.fn_lin.getData()[0]) == 128
    assert lab.k_images[1].image.shape == (12, 12)
    assert "m = 1024" in lab.k_title.text and "step 60" in lab.k_title.text
    assert len(lab.mode_curves[0][0].getData()[0]) == 7
    assert all(len(p.pos) == 61 for p in lab.paths) and len(lab.inf_path.pos) == 7
    legend = [label.text for _, label in lab.scale_legend.items]
    assert sum("slope" in t for t in legend) == 4
    assert statuses[-1]["step"] == 60 and math.isfinite(statuses[-1]["loss"])


def test_kernel_model_is_exact_for_the_linearization_and_the_limit_is_relu(qtbot, lab):
    """What the views show is the engine's: the dashed curve is the kernel model of K0 at the step shown."""
    from models.ntk_sweep import LinearModel

    run_small(qtbot, lab)
    init, d = lab.hist.init, lab.run_data
    step, m = lab.hist.metrics_at(None)
    hi = lab.highlighted()
    assert lab.run_widths[hi] == 1024
    # recompute the linearization at K0 with the test block from the engine's own kernel function
    import torch

    from models import ntk

    net = ntk.NTKNet(ntk.NTKSpec(2, 1024, 1, "relu", "ntk", torch.float32), seed=0)
    K = ntk.empirical_ntk(net, np.concatenate([d.x, d.x_test])).double().numpy()
    with torch.no_grad():
        f0 = net(torch.as_tensor(np.concatenate([d.x, d.x_test]), dtype=torch.float32)).double().numpy()
    lin = LinearModel(K[:12, :12], K[12:, :12], f0[:12], f0[12:], d.y, init.etas[hi])
    np.testing.assert_allclose(lab.fn_lin.getData()[1], lin.at(step)[1], rtol=1e-4, atol=1e-5)


def test_changing_the_width_list_mid_run_restarts_cleanly(qtbot, lab):
    lab.apply_settings({**SMALL, "steps": 100000})
    first = lab.runner
    qtbot.waitUntil(lambda: lab.hist.last_step >= 20, timeout=60000)
    lab.picker.buttons[128].click()  # add a width while the sweep runs
    assert lab.state.widths == [64, 256, 1024, 128] or sorted(lab.state.widths) == [64, 128, 256, 1024]
    assert lab.runner is not first and lab.run_widths == [64, 128, 256, 1024]
    assert len(lab.loss_curves) == len(lab.paths) == len(lab.fn_curves) == 4
    qtbot.waitUntil(lambda: lab.hist.init is not None and lab.hist.last_step >= 5, timeout=60000)
    # only the new sweep is drawn: four widths, counted from step 0
    assert lab.hist.init.widths == [64, 128, 256, 1024] and lab.hist.loss_rows[0][0] == 0
    assert all(r[1].shape == (4,) for r in lab.hist.loss_rows)
    lab.picker.buttons[64].click()  # and remove one
    assert lab.run_widths == [128, 256, 1024]
    qtbot.waitUntil(lambda: lab.hist.init is not None and lab.hist.last_step >= 3, timeout=60000)
    assert lab.hist.init.widths == [128, 256, 1024]
    lab.stop_run()


def test_a_diverging_step_in_the_standard_parameterization_names_the_width(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    run_small(qtbot, lab, parameterization="standard", eta=0.02, widths=[16, 4096], steps=40)
    h = lab.hist
    assert list(h.diverged) == [1]  # 4096 diverged, 16 trained
    assert h.last_loss[0] < h.loss_rows[0][1][0]
    errors = [t for t, e in msgs if e and "diverged" in t]
    assert len(errors) == 1
    assert errors[0].startswith(f"width 4096 diverged at step {h.diverged[1]}: η = 0.02 is above its stability "
                                "limit 2/λ_max(K₀) = ")
    assert "grows with the width" in errors[0]
    assert "m = 4096 at step" in lab.info.text() and "λ_max(K₀) grows with width: slope" in lab.info.text()
    # scaled with 1/width the same step trains both
    msgs.clear()
    run_small(qtbot, lab, parameterization="standard", eta=0.02, widths=[16, 4096], steps=40,
              step_scaling="width")
    assert lab.hist.diverged == {} and not [t for t, e in msgs if "diverged" in t]
    assert lab.hist.init.etas == [0.02, 0.02 * 16 / 4096]
    assert lab.hist.last_loss[1] < lab.hist.loss_rows[0][1][1]


def _click_scene(qtbot, plot, x: float, y: float, double: bool = False) -> None:
    vb = plot.getPlotItem().vb
    scene_pos = vb.mapViewToScene(QPointF(x, y))
    pos = plot.mapFromScene(scene_pos)
    at = QPoint(pos.x(), pos.y())
    qtbot.mouseClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=at)
    if double:  # (as a mouse does: press, release, double-click, release)
        qtbot.mouseDClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=at)
        qtbot.mouseRelease(plot.viewport(), Qt.MouseButton.LeftButton, pos=at)


def test_click_a_width_highlights_it_and_click_a_time_scrubs(qtbot, lab):
    run_small(qtbot, lab)
    assert lab.run_widths[lab.highlighted()] == 1024
    # the weight-change point of width 64 on the log-log plot
    w64 = lab.hist.metric_rows[-1][1].wchange[0]
    _click_scene(qtbot, lab.scale_plot, math.log10(64), math.log10(w64))
    assert lab.state.highlight == 64 and lab.highlighted() == 0
    assert lab.loss_curves[0][0].opts["pen"].widthF() > lab.loss_curves[2][0].opts["pen"].widthF()
    assert "m = 64" in lab.k_title.text and lab.hi_line.value() == pytest.approx(math.log10(64))
    # a time in the loss plot: every view goes back to that step
    _click_scene(qtbot, lab.loss_plot, 20, 0)
    assert lab.scrub == 20 and lab.scrub_line.isVisible()
    assert "step 20" in lab.k_title.text and all(len(p.pos) == 21 for p in lab.paths)
    assert "showing step 20 of 60" in lab.info.text()
    m20 = lab.hist.metrics_at(20)[1]
    np.testing.assert_allclose(lab.fn_curves[0].getData()[1], m20.f_test[0], rtol=1e-6)
    _click_scene(qtbot, lab.loss_plot, 30, 0, double=True)  # a double-click: follow the run again
    assert lab.scrub is None and not lab.scrub_line.isVisible() and "step 60" in lab.k_title.text
    lab.next_width()  # W
    assert lab.state.highlight == 256


def test_the_output_space_paths_are_drawn_in_the_gl_view(qtbot, lab):
    run_small(qtbot, lab)
    img = lab.scene.render_offscreen(480, 360)  # BGRA
    rgb = img[..., 2::-1].astype(int)

    def count(color: str, tol: int = 40) -> int:
        c = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(rgb - c).max(axis=2) < tol).sum())

    for m in (64, 256, 1024):
        assert count(WIDTH_COLORS[m]) > 30, m  # each width's path
    assert count("#ffb800", 30) > 20  # the target point
    assert count("#ffffff", 25) > 10  # the infinite-width kernel model's path


def test_bad_settings_are_refused_in_words(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    assert lab.draw_panel.isHidden()  # (points on the circle: no drawing panel)
    with pytest.raises(SettingError, match="each width is a power of two from 16 to 8192"):
        lab.apply_settings({"widths": [100]})
    with pytest.raises(SettingError, match="path_points: three of the training points 1 to 12"):
        lab.apply_settings({"n_points": 12, "path_points": [1, 2, 13]})
    lab.runner_factory = lambda *a, **k: pytest.fail("no sweep may start")
    lab.apply_settings({"widths": [8192], "depth": 4})  # far over the memory cap: refused before anything starts
    assert lab.runner is None
    assert msgs[-1][1] and "the width sweep needs about" in msgs[-1][0] and "drop the widest widths" in msgs[-1][0]
    # unchecking the only width is refused and the button shows the state again
    lab.picker.buttons[8192].click()
    assert lab.state.widths == [8192] and lab.picker.buttons[8192].isChecked()
    assert "widths" in msgs[-1][0] and msgs[-1][1]
    # the drawn curve: a drag in the panel changes the target (and a sweep would start with it)
    lab.runner_factory = None
    lab.apply_settings({"widths": [64], "depth": 1, "steps": 5, "data": "drawn"})
    assert not lab.draw_panel.isHidden()
    before = list(lab.state.drawn)
    lab.draw_panel.paint((-2.0, 1.5), (2.0, 1.5))
    lab.draw_panel.commit()
    assert lab.state.drawn != before and max(lab.state.drawn) == pytest.approx(1.5)
    qtbot.waitUntil(lambda: lab.finished, timeout=60000)
    assert lab.run_data.in_dim == 1 and np.allclose(lab.run_data.y, 1.5)


# --- issue 13: the conditioning page ------------------------------------------------------------------------------
def test_the_conditioning_page_follows_the_highlighted_width(qtbot, lab):
    run_small(qtbot, lab, hessian_every=20)
    rows = [r[1] for r in lab.hist.metric_rows]
    c = lab.hist.init.kernel_scale
    lab.tabs.setCurrentIndex(1)  # the second page is a setting too (scenes switch it)
    assert lab.state.page == "conditioning"
    for width, k in ((64, 0), (1024, 2)):
        lab.highlight(width)
        np.testing.assert_allclose(lab.c_lmax.getOriginalDataset()[1], [c * m.lam_max[k] for m in rows], rtol=1e-12)
        np.testing.assert_allclose(lab.d_dist.getOriginalDataset()[1], [m.wdist[k] for m in rows][1:], rtol=1e-12)
        ratio = [0.5 * m.grad_sq[k] / m.loss[k] for m in rows]
        np.testing.assert_allclose(lab.pl_ratio.getOriginalDataset()[1], ratio, rtol=1e-12)
        assert np.all(lab.pl_ratio.getOriginalDataset()[1] >= lab.pl_lmin.getOriginalDataset()[1] * (1 - 1e-4))
        pens = [cv.opts["pen"].widthF() for cv in lab.sharp_runs]
        assert pens[k] == max(pens) and pens.count(max(pens)) == 1
        assert lab.cond_note.text().startswith(f"<b>m = {width}</b> at step 60")
        assert len(lab.sharp_runs[k].getData()[0]) == 4  # steps 0, 20, 40, 60
    # every width's network Hessian, with its slope against width
    assert len(lab.mh_pts.getData()[0]) == 3
    assert "slope" in [label.text for _, label in lab.mh_legend.items][0]
    assert "inside R =" in lab.cond_note.text() and "sharpness now" in lab.cond_note.text()
    lab.apply_settings({"page": "widths"})
    assert lab.tabs.currentIndex() == 0


def test_the_edge_of_stability_preset_starts_its_runs(qtbot, lab):
    from visualizer.labs.ntk import EOS_PRESET

    lab.runner_factory = FakeRunner
    lab.widget("action:eos_preset").click()
    kw = lab.runner.kwargs
    assert lab.runner.target == "models.ntk_sweep:sweep_run"
    assert kw["widths"] == [128, 128] and kw["run_etas"] == [0.06, 0.09] and kw["loss_norm"] == "mean"
    assert (kw["depth"], kw["activation"], kw["parameterization"], kw["hessian_every"]) == (2, "tanh", "standard", 20)
    assert lab.tabs.currentIndex() == 1 and lab.state.time_axis == "flow"
    assert "step sizes 0.06, 0.09" in lab.caption.text()
    assert [label.text for _, label in lab.loss_legend.items] == ["η = 0.06", "η = 0.09"]
    assert [label.text for _, label in lab.sharp_legend.items][:2] == ["η = 0.06", "η = 0.09"]
    assert not lab.widget("widths").isEnabled() and lab.widget("etas").isEnabled()
    # a short real run of the preset: both step sizes stream their sharpness, on the flow-time axis
    lab.runner_factory = None
    lab.apply_settings({**EOS_PRESET, "steps": 60})
    qtbot.waitUntil(lambda: lab.finished and lab.reason == "completed", timeout=60000)
    lab.flush()
    for k, eta in enumerate((0.06, 0.09)):
        x, y = lab.sharp_runs[k].getData()
        assert len(x) == 4 and x[-1] == pytest.approx(60 * eta) and np.all(y > 5)
    assert sorted(round(line.getData()[1][0], 3) for _, line in lab.sharp_limits) == [22.222, 33.333]
    assert "one width, 2 step sizes" in lab.info.text()
    assert lab.scale_plot.getPlotItem().titleLabel.text.endswith("(one width: none)")
    lab.next_width()  # W: the next step size
    assert lab.state.highlight_run == 1 and "η = 0.09" in lab.k_title.text
