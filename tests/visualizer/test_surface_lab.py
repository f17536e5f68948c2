import numpy as np
import pytest

from visualizer.labs.surface import SurfaceLab


@pytest.fixture
def lab(qtbot, fresh_settings):
    w = SurfaceLab(restore=False, start=False)
    w.resize(1200, 800)
    qtbot.addWidget(w)
    w.show()
    w.n_spin.setValue(300)
    w.hidden_edit.setText("12x12")
    w.steps_spin.setValue(120)
    w.grid_spin.setValue(17)
    yield w
    w.shutdown()


def wait_surface(qtbot, lab):
    """Until training has ended and its full surface (not a live one) is computed and drawn."""
    qtbot.waitUntil(lab.surface_ready, timeout=180000)
    assert lab.landscape["stride"] == 1 and lab.line_curve.getData()[0] is not None


def test_training_streams_and_the_surface_refines(qtbot, lab):
    strides = []
    orig = lab._on_surface_items

    def spy(items):
        strides.extend(i[1] for i in items if i[0] == "grid")
        orig(items)

    lab._on_surface_items = spy  # connected when the surface computation starts
    lab.train()
    qtbot.waitUntil(lambda: len(lab.snaps) > 20, timeout=60000)
    wait_surface(qtbot, lab)
    assert strides[0] > 1 and strides[-1] == 1  # coarse first, then finer
    v = lab.grid_values
    assert v.shape == (17, 17) and np.isfinite(v).all()
    # the centre of the plane is the trained network: its loss is the last training loss
    assert v[8, 8] == pytest.approx(lab.snaps[-1].loss, rel=1e-4)
    assert lab.snaps[-1].loss < lab.snaps[0].loss
    assert abs(lab.plane["cosine"]) < 1e-5  # orthogonalized


def test_pca_plane_holds_the_path_and_heights_toggle(qtbot, lab):
    lab.dir_combo.setCurrentIndex(1)
    lab.train()
    wait_surface(qtbot, lab)
    p = lab.plane
    ck = np.array(lab.checkpoints)
    # most of the path's spread is in the PCA plane: its distance from it is small next to its extent
    spread = np.linalg.norm(ck - ck[-1], axis=1).max()
    assert p["explained"][0] + p["explained"][1] > 0.6
    assert p["distance"].max() < 0.8 * spread
    z_true = lab.path3d.pos[:, 2].copy()
    assert len(z_true) == len(ck) == len(p["coords"])  # the whole path, final: training has ended
    lab.height_check.setChecked(False)
    z_surf = lab.path3d.pos[:, 2]
    assert len(z_surf) == len(z_true) and not np.allclose(z_true, z_surf)
    assert "distance from the plane" in lab.info.text()


def test_bad_hidden_layers_are_refused(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append(t))
    lab.hidden_edit.setText("64xabc")
    lab.train()
    assert lab.trainer is None and any("widths" in t for t in msgs)


def test_files_save_open_export(qtbot, lab, tmp_path):
    from PySide6.QtGui import QImage

    from models.surface_io import read_surface

    lab.train()
    wait_surface(qtbot, lab)
    assert lab.save_surface(str(tmp_path / "s.h5"))
    saved = read_surface(str(tmp_path / "s.h5"))
    assert np.allclose(saved.values["train_loss"], lab.grid_values)
    assert lab.export_mesh(str(tmp_path / "s.obj")) and lab.export_mesh(str(tmp_path / "s.ply"))
    assert (tmp_path / "s.obj").read_text().count("\nv ") == 17 * 17  # every vertex line follows a newline
    assert lab.export_data(str(tmp_path / "s.npz")) and lab.export_data(str(tmp_path / "s.csv"))
    assert np.load(tmp_path / "s.npz")["loss"].shape == (17, 17)
    assert (tmp_path / "s_path.csv").exists()
    assert lab.export_png(str(tmp_path / "s.png"), 800, 500)
    img = QImage(str(tmp_path / "s.png"))
    assert (img.width(), img.height()) == (800, 500)
    colors = {img.pixel(x, y) for x in range(0, 800, 40) for y in range(0, 500, 25)}
    assert len(colors) > 20  # the surface is in it, not a blank frame
    assert lab.export_png_2d(str(tmp_path / "map.png"), 1600)
    m = QImage(str(tmp_path / "map.png"))
    assert m.width() == 1600 and m.height() > 300
    # reopen: the surface comes back, the path is gone
    lab.grid_values = None
    assert lab.open_surface(str(tmp_path / "s.h5"))
    assert np.allclose(lab.grid_values, saved.values["train_loss"])
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"junk")
    assert not lab.open_surface(str(bad)) and any(e and "bad.h5" in t for t, e in msgs)
    assert not lab.export_png(str(tmp_path / "x.png"), 10000, 10)


def test_command_line_opens_a_surface_file(tmp_path):
    import subprocess
    import sys

    from models.surface_io import Surface, write_surface

    t = np.linspace(-1, 1, 21)
    write_surface(str(tmp_path / "s.h5"), Surface(t, t, {"train_loss": np.add.outer(t * t, t * t) + 0.1}))
    env = dict(__import__("os").environ, LOSSLAB_CONFIG_DIR=str(tmp_path / "cfg"))
    out = subprocess.run([sys.executable, "-m", "visualizer", str(tmp_path / "s.h5"), "--screenshot",
                          str(tmp_path / "shot.png"), "--size", "1200x800"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    from PySide6.QtGui import QImage

    assert not QImage(str(tmp_path / "shot.png")).isNull()


def test_live_pca_plane_follows_training(qtbot, lab):
    planes = []
    orig = lab._on_surface_items

    def spy(items):
        planes.extend(i[1] for i in items if i[0] == "plane")
        orig(items)

    lab._on_surface_items = spy
    lab.dir_combo.setCurrentIndex(1)
    lab.steps_spin.setValue(1500)
    lab.train()
    wait_surface(qtbot, lab)
    assert lab.live_updates >= 2 and len(planes) >= 3  # live planes while training, then the final one
    # each live plane is the PCA of the checkpoints so far: the path it holds grows
    lengths = [len(p["coords"]) for p in planes]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1] == len(lab.checkpoints)
    # each plane is aligned with the one before (signs and order chosen so the picture does not flip)
    for a, b in zip(planes, planes[1:]):
        assert float(a["u"] @ b["u"]) > 0 and float(a["v"] @ b["v"]) > 0
    steps, dist = lab.dist_curve.getData()
    assert len(dist) == len(lab.plane["distance"]) == len(lab.checkpoints) and np.all(dist >= 0)


def test_small_cnn_on_digits(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append(t))
    lab.net_combo.setCurrentIndex(1)
    lab.train()  # spirals with a CNN: refused
    assert lab.trainer is None and any("8x8" in t for t in msgs)
    lab.data_combo.setCurrentText("digits")
    lab.n_spin.setValue(300)
    lab.steps_spin.setValue(40)
    lab.grid_spin.setValue(9)
    lab.train()
    wait_surface(qtbot, lab)
    assert np.isfinite(lab.grid_values).all() and "CNN" in lab.caption.text()
    assert lab.snaps[-1].loss < lab.snaps[0].loss


def test_users_own_model_in_the_lab(qtbot, lab):
    from pathlib import Path

    SurfaceLab.user_model = str(Path(__file__).resolve().parents[2] / "assets/examples/user_model.py") + ":build"
    try:
        lab.steps_spin.setValue(30)
        lab.grid_spin.setValue(9)
        lab.train()
        wait_surface(qtbot, lab)
        assert "your model" in lab.caption.text()
        assert np.isfinite(lab.grid_values).all()
        assert lab.grid_values[4, 4] == pytest.approx(lab.snaps[-1].loss, rel=1e-4)
    finally:
        SurfaceLab.user_model = None


def test_command_line_refuses_a_bad_model_spec(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "visualizer", "--model", "no_such_module_xyz:build"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "cannot import" in out.stderr


def test_the_surface_is_prepared_off_the_gui_thread(qtbot, lab, monkeypatch):
    import threading

    from tests.threads import record_threads
    from visualizer.labs import surface as mod

    threads = record_threads(monkeypatch, mod, "fill_gaps")
    lab.train()
    wait_surface(qtbot, lab)
    assert threads and threading.main_thread() not in threads  # gap fill, contours, interpolation: a worker's
    assert lab.plane_view.image.image is not None and lab.path3d.pos is not None


def test_a_stale_stored_choice_does_not_break_the_lab(qtbot, fresh_settings):
    from visualizer import settings as store

    store.put("labs/surface", {"directions": "hessian", "data": "mnist", "hidden": "0x-3", "optimizer": "lbfgs",
                               "grid": 10**12, "lr": -1.0})
    w = SurfaceLab(restore=True, start=False)
    qtbot.addWidget(w)
    s = w.state
    assert (s.directions, s.data, s.hidden, s.optimizer, s.grid) == ("filter", "spirals", "32x32", "adam", 201)
    assert s.lr == 1e-5
    w.shutdown()


def test_edits_during_training_do_not_change_the_network_of_its_surface(qtbot, lab):
    lab.steps_spin.setValue(60)
    lab.train()
    lab.hidden_edit.setText("5x7")  # a different network, typed while the first one trains
    lab.act_combo.setCurrentText("relu")
    wait_surface(qtbot, lab)
    # the centre of the plane is the trained network: computed with the network it was trained as
    v = lab.grid_values
    assert np.isfinite(v).all()
    assert v[8, 8] == pytest.approx(lab.snaps[-1].loss, rel=1e-4)
    assert lab.trained["hidden"] == "12x12" and lab.trained["activation"] == "tanh"


def test_settings_dict_only_reads(qtbot, lab):
    from visualizer import settings as store

    before = store.get("labs/surface")
    msgs = []
    lab.message.connect(lambda t, e: msgs.append(t))
    lab.hidden_edit.setText("64xabc")
    lab.lr_spin.setValue(0.5)
    d = lab.settings_dict()
    assert d["hidden"] == "64xabc" and d["lr"] == 0.5
    assert msgs == [] and store.get("labs/surface") == before


def test_cancel_returns_at_once_and_a_new_training_ignores_the_old_runs(qtbot, lab):
    lab.grid_spin.setValue(61)
    lab.train()
    qtbot.waitUntil(lambda: lab.surface_runner is not None and lab.surface_runner.isRunning(), timeout=120000)
    old = lab.surface_runner
    lab.cancel_surface()  # returns without waiting for the grid level in progress
    assert lab.surface_runner is None and old.aborted()
    lab.grid_spin.setValue(9)
    lab.steps_spin.setValue(20)
    lab.train()
    wait_surface(qtbot, lab)
    qtbot.waitUntil(old.isFinished, timeout=60000)
    assert lab.grid_values.shape == (9, 9) and lab.snaps[-1].step == 20
