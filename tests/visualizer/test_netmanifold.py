import numpy as np
import pytest

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
    lab.restart()
    qtbot.waitUntil(lambda: len(lab.samples) == 41, timeout=60000)
    qtbot.waitUntil(lambda: lab.landscape is not None, timeout=30000)
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
