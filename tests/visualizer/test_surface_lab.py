import dataclasses

import numpy as np
import pytest

from visualizer.labs.base import SettingError
from visualizer.labs.surface import SurfaceLab, SurfaceState


@pytest.fixture
def make_lab(qtbot, fresh_settings):
    made = []

    def make(**kw):
        w = SurfaceLab(restore=False, start=False, **kw)
        w.resize(1200, 800)
        qtbot.addWidget(w)
        qtbot.addWidget(w.controls())
        w.show()
        w.widget("n").setValue(300)
        type_into(qtbot, w.widget("hidden"), "12x12")
        w.widget("steps").setValue(120)
        w.widget("grid").setValue(17)
        assert (w.state.n, w.state.hidden, w.state.steps, w.state.grid) == (300, "12x12", 120, 17)
        made.append(w)
        return w

    yield make
    for w in made:
        w.shutdown()


@pytest.fixture
def lab(make_lab):
    return make_lab()


def type_into(qtbot, edit, text: str) -> None:
    """Type ``text`` into a line edit and press Return (editing finished: a text setting commits)."""
    from PySide6.QtCore import Qt

    edit.clear()
    qtbot.keyClicks(edit, text)
    qtbot.keyClick(edit, Qt.Key.Key_Return)


def wait_surface(qtbot, lab):
    """Until training has ended and its full surface (not a live one) is computed and drawn."""
    qtbot.waitUntil(lab.surface_ready, timeout=180000)
    assert lab.landscape["stride"] == 1 and lab.line_curve.getData()[0] is not None


def test_the_controls_come_from_the_declared_settings(qtbot, lab):
    from PySide6.QtWidgets import QCheckBox, QComboBox, QGroupBox, QLineEdit, QSpinBox

    form = lab.controls()
    assert [g.title() for g in form.findChildren(QGroupBox)] == ["Data and network", "Training", "Plane and grid",
                                                                 "Files"]
    net, dirs = lab.widget("network"), lab.widget("directions")
    assert isinstance(net, QComboBox) and [net.itemText(i) for i in range(net.count())] == [
        "MLP", "small CNN (8x8 digits)"]
    assert [dirs.itemData(i) for i in range(dirs.count())] == ["filter", "pca", "three"]
    assert dirs.currentData() == "filter" and "random" in dirs.currentText()
    grid = lab.widget("grid")
    assert isinstance(grid, QSpinBox) and (grid.minimum(), grid.maximum(), grid.value()) == (5, 201, 17)
    assert isinstance(lab.widget("hidden"), QLineEdit) and lab.widget("hidden").text() == "12x12"
    assert isinstance(lab.widget("live_pca"), QCheckBox) and lab.widget("live_pca").isChecked()
    assert lab.state.live_pca is True
    # the buttons and the scene actions come from one declaration; the Files buttons are no scene actions
    assert lab.widget("action:train").text() == "Train and plot (Space)"
    assert lab.widget("action:surface").text() == "Recompute the surface"
    assert set(lab.scene_actions) == {"train", "surface", "reset"}
    for name in ("cancel", "save", "open", "mesh", "data", "png", "png2d"):
        assert lab.widget(f"action:{name}").isVisibleTo(form)
    # the panel fits the app's controls dock (at least 310 pixels wide) without a horizontal scroll bar
    assert form.minimumSizeHint().width() <= 310
    assert set(lab.views()) == {"3d", "2d"} and lab.views()["3d"] is lab.scene
    assert "filter-normalized" in lab.help_html() and not lab.has_drawn()
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    lab.widget("action:surface").click()  # nothing trained yet
    assert msgs and msgs[-1][1] and "Train first" in msgs[-1][0] and lab.surface_runner is None


def test_training_streams_and_the_surface_refines(qtbot, lab):
    strides = []
    orig = lab._on_surface_items

    def spy(items):
        strides.extend(i[1] for i in items if i[0] == "grid")
        orig(items)

    lab._on_surface_items = spy  # connected when the surface computation starts
    lab.train()
    assert lab.trainer is lab.runner and lab.runners() == [lab.trainer]
    qtbot.waitUntil(lambda: len(lab.snaps) > 20, timeout=60000)
    wait_surface(qtbot, lab)
    assert strides[0] > 1 and strides[-1] == 1  # coarse first, then finer
    v = lab.grid_values
    assert v.shape == (17, 17) and np.isfinite(v).all()
    # the centre of the plane is the trained network: its loss is the last training loss
    assert v[8, 8] == pytest.approx(lab.snaps[-1].loss, rel=1e-4)
    assert lab.snaps[-1].loss < lab.snaps[0].loss
    assert abs(lab.plane["cosine"]) < 1e-5  # orthogonalized
    assert lab.has_drawn() and lab.shown["log"]
    # log scale: only the display is redone (a worker), from the same grid
    lab.widget("log_scale").setChecked(False)
    qtbot.waitUntil(lambda: not lab.shown["log"] and not lab.busy(), timeout=30000)
    assert lab.grid_values is v and lab.shown["values"] is v
    assert lab.shown["range"] == pytest.approx((float(v.min()), float(v.max())))


def test_pca_plane_holds_the_path_and_heights_toggle(qtbot, lab):
    lab.widget("directions").setCurrentIndex(1)
    assert lab.state.directions == "pca"
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
    lab.widget("true_height").setChecked(False)  # the "path" reaction: redrawn at once, nothing computed
    assert lab.state.true_height is False and not lab.busy()
    z_surf = lab.path3d.pos[:, 2]
    assert len(z_surf) == len(z_true) and not np.allclose(z_true, z_surf)
    assert "distance from the plane" in lab.info.text()


def test_bad_hidden_layers_are_refused(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append(t))
    edit, err = lab.widget("hidden"), lab.form.error_label("hidden")
    type_into(qtbot, edit, "64xabc")
    # refused where it is typed: the state keeps the old value, the reason shows under the field
    assert lab.state.hidden == "12x12" and not err.isHidden() and "widths" in err.text()
    assert any("widths" in t for t in msgs)
    for bad in ("0x3", "", "1x" * 9 + "1", "2000"):
        with pytest.raises(SettingError, match="hidden"):
            lab.set_setting("hidden", bad)
    with pytest.raises(SettingError, match="widths"):
        lab.apply_settings({"hidden": "64xabc", "steps": 7})  # a scene: all or nothing
    assert lab.state.hidden == "12x12" and lab.state.steps == 120 and lab.trainer is None
    type_into(qtbot, edit, "8 x 8")
    assert lab.state.hidden == "8 x 8" and err.isHidden()


def test_files_save_open_export(qtbot, make_lab, tmp_path):
    from PySide6.QtGui import QImage

    from models.surface_io import read_surface

    lab = make_lab()
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
    # written atomically: nothing but the files asked for is left in the folder
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png") == ["map.png", "s.png"]
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
    assert not (tmp_path / "x.png").exists()
    # a lab made to open a file (the app's open_path) starts with it instead of a training
    other = make_lab(open_path=str(tmp_path / "s.h5"))
    other.start()
    assert other.trainer is None and other.open_path is None
    assert np.allclose(other.grid_values, saved.values["train_loss"]) and str(tmp_path) in other.caption.text()


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


def spy_planes(lab) -> list:
    """The planes the surface job sends, in order (the lab's handler still runs)."""
    planes = []
    orig = lab._on_surface_items

    def spy(items):
        planes.extend(i[1] for i in items if i[0] == "plane")
        orig(items)

    lab._on_surface_items = spy
    return planes


def test_live_pca_plane_follows_training(qtbot, lab):
    planes = spy_planes(lab)
    lab.widget("directions").setCurrentIndex(1)
    lab.widget("steps").setValue(1500)
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


def test_without_live_pca_only_the_final_plane_is_computed(qtbot, lab):
    planes = spy_planes(lab)
    lab.widget("directions").setCurrentIndex(1)
    lab.widget("live_pca").setChecked(False)
    assert lab.state.live_pca is False
    lab.train()
    wait_surface(qtbot, lab)
    assert lab.live_updates == 0 and len(planes) == 1 and len(planes[0]["coords"]) == len(lab.checkpoints)


def test_small_cnn_on_digits(qtbot, lab):
    msgs = []
    lab.message.connect(lambda t, e: msgs.append(t))
    net, data = lab.widget("network"), lab.widget("data")
    net.setCurrentIndex(1)  # spirals with a CNN: refused, the control shows the MLP again
    assert lab.state.network == "mlp" and net.currentData() == "mlp" and any("8x8" in t for t in msgs)
    with pytest.raises(SettingError, match="8x8"):
        lab.apply_settings({"network": "cnn"})
    assert lab.trainer is None
    data.setCurrentText("digits")
    net.setCurrentIndex(1)
    assert (lab.state.data, lab.state.network) == ("digits", "cnn")
    data.setCurrentText("moons")  # while the CNN is chosen the data stays digits
    assert lab.state.data == "digits" and data.currentText() == "digits"
    lab.widget("n").setValue(300)
    lab.widget("steps").setValue(40)
    lab.widget("grid").setValue(9)
    lab.train()
    wait_surface(qtbot, lab)
    assert np.isfinite(lab.grid_values).all() and "CNN" in lab.caption.text()
    assert lab.snaps[-1].loss < lab.snaps[0].loss


def test_users_own_model_in_the_lab(qtbot, make_lab):
    from pathlib import Path

    spec = str(Path(__file__).resolve().parents[2] / "assets/examples/user_model.py") + ":build"
    lab = make_lab(user_model=spec)
    assert make_lab().user_model is None  # given to one lab, not to the class
    lab.widget("steps").setValue(30)
    lab.widget("grid").setValue(9)
    lab.train()
    wait_surface(qtbot, lab)
    assert "your model" in lab.caption.text()
    assert np.isfinite(lab.grid_values).all()
    assert lab.grid_values[4, 4] == pytest.approx(lab.snaps[-1].loss, rel=1e-4)


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
                               "grid": 10**12, "lr": -1.0, "steps": 50, "extent": 2.5})
    w = SurfaceLab(restore=True, start=False)
    qtbot.addWidget(w)
    s, d = w.state, SurfaceState()
    # each value out of its range or choices falls back to its default and is named; the others are kept
    assert (s.directions, s.data, s.hidden, s.optimizer, s.grid, s.lr) == (
        d.directions, d.data, d.hidden, d.optimizer, d.grid, d.lr) == ("filter", "spirals", "32x32", "adam", 31, 0.01)
    assert (s.steps, s.extent) == (50, 2.5)
    named = {p.split(":")[0] for p in w.restore_problems}
    assert named == {"directions", "data", "hidden", "optimizer", "grid", "lr"}
    text = " · ".join(w.restore_problems)
    assert "[5, 201]" in text and "[1e-05, 10]" in text and "hessian" in text
    assert w.widget("grid").value() == 31 and w.widget("directions").currentData() == "filter"
    w.shutdown()
    # a combination a setting's check refuses (the CNN with spirals): both fall back, named, in words
    store.put("labs/surface", {"network": "cnn", "data": "moons", "seed": 3})
    w = SurfaceLab(restore=True, start=False)
    qtbot.addWidget(w)
    assert (w.state.network, w.state.data, w.state.seed) == ("mlp", "spirals", 3)
    assert any(p.startswith("network:") and "8x8" in p for p in w.restore_problems)
    w.shutdown()


def test_edits_during_training_do_not_change_the_network_of_its_surface(qtbot, lab):
    lab.widget("steps").setValue(60)
    lab.train()
    type_into(qtbot, lab.widget("hidden"), "5x7")  # a different network, typed while the first one trains
    lab.widget("activation").setCurrentText("relu")
    assert (lab.state.hidden, lab.state.activation) == ("5x7", "relu")  # for the next training
    wait_surface(qtbot, lab)
    # the centre of the plane is the trained network: computed with the network it was trained as
    v = lab.grid_values
    assert np.isfinite(v).all()
    assert v[8, 8] == pytest.approx(lab.snaps[-1].loss, rel=1e-4)
    assert lab.trained["hidden"] == "12x12" and lab.trained["activation"] == "tanh"


def test_settings_dict_only_reads(qtbot, lab, monkeypatch):
    from visualizer import settings as store

    writes = []
    real = store.save_json
    monkeypatch.setattr(store, "save_json", lambda key, value: writes.append(dict(value)) or real(key, value))
    msgs = []
    lab.message.connect(lambda t, e: msgs.append(t))
    lab.widget("hidden").setText("64xabc")  # typed, editing not finished: not a setting yet
    lab.widget("lr").setValue(0.5)
    before = list(writes)
    d = lab.settings_dict()
    assert d["hidden"] == "12x12" and d["lr"] == 0.5 and d == dataclasses.asdict(lab.state)
    assert msgs == [] and writes == before
    # the settings are saved later, once (debounced), as the state holds them
    qtbot.waitUntil(lambda: store.get("labs/surface") == dataclasses.asdict(lab.state), timeout=5000)
    assert store.get("labs/surface")["lr"] == 0.5 and msgs == []


def test_cancel_returns_at_once_and_a_new_training_ignores_the_old_runs(qtbot, lab):
    lab.widget("grid").setValue(61)
    lab.train()
    qtbot.waitUntil(lambda: lab.surface_runner is not None and lab.surface_runner.isRunning(), timeout=120000)
    old = lab.surface_runner
    lab.widget("action:cancel").click()  # returns without waiting for the grid level in progress
    assert lab.surface_runner is None and old.aborted()
    lab.widget("grid").setValue(9)
    lab.widget("steps").setValue(20)
    lab.train()
    wait_surface(qtbot, lab)
    qtbot.waitUntil(old.isFinished, timeout=60000)
    assert lab.grid_values.shape == (9, 9) and lab.snaps[-1].step == 20


def test_a_network_too_big_for_memory_is_refused_before_training(qtbot, lab):
    """The GUI's largest settings (8 layers of 1024, 20000 points) would keep about 14 GB of checkpoints: refused
    by the same estimate `losslab surface` uses, with the largest size that fits, and nothing is trained."""
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    lab.apply_settings({"hidden": "x".join(["1024"] * 8), "n": 20000})
    lab.train()
    qtbot.waitUntil(lambda: any("limit" in t for t, e in msgs if e), timeout=60000)
    text = next(t for t, e in msgs if e and "limit" in t)
    assert "over the 2.0 GB limit" in text and "hidden layers of at most" in text
    qtbot.waitUntil(lambda: not lab.runners(), timeout=30000)
    assert lab.snaps == [] and lab.grid_values is None
