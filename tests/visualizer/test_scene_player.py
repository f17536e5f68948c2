"""The scene player: the preview shows the frames the headless render writes; scrubbing back replays;
"Add keyframe" and "Save scene" write a scene that reads back equal."""

import numpy as np
import pytest

from visualizer.app import MainWindow
from visualizer.labs import LABS
from visualizer.recording.scene import load_scene

SCENE = """
lab = "manifold2d"
seed = 0
size = [240, 160]
fps = 10
duration = 2.0
steps_per_frame = 4
[settings]
model = "linear"
lr = 0.05
[[camera]]
time = 0.0
azimuth = -60
elevation = 30
[[camera]]
time = 2.0
azimuth = 40
elevation = 45
[[event]]
time = 0.2
action = "descent"
start = [2.0, 2.5]
[[event]]
time = 1.0
set = { lr = 0.02 }
[[event]]
time = 1.1
action = "descent"
start = [-2.0, -1.0]
"""


def test_preview_shows_the_frames_the_render_writes(qtbot, fresh_settings, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import imageio_ffmpeg

    path = tmp_path / "s.toml"
    path.write_text(SCENE)
    r = subprocess.run([sys.executable, "-m", "visualizer", "record", str(path), "-o", str(tmp_path / "s.mp4")],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert r.returncode == 0, r.stderr
    gen = imageio_ffmpeg.read_frames(str(tmp_path / "s.mp4"))
    next(gen)
    video = [np.frombuffer(f, np.uint8).reshape(160, 240, 3).astype(int) for f in gen]
    win = MainWindow(lab="manifold2d")
    qtbot.addWidget(win)
    win.show()
    assert win.open_scene(str(path))
    player = win.player
    for i in (14, 5, 19):  # forward, back (a replay from the start), forward again
        player.seek(i)
        qtbot.waitUntil(player.ready, timeout=60000)
        got = win.lab().scene.render_offscreen(240, 160)[..., [2, 1, 0]].astype(int)  # BGRA -> RGB
        same = np.abs(got - video[i]).mean()
        other = np.abs(got - video[i - 4]).mean()
        # the same frame up to H.264's loss (thin lines at 240x160 cost ~3 levels); a frame 4 away differs clearly
        assert same < 5.0 and other > 3 * same, (i, same, other)
    assert len(win.lab().runs) == 2 and abs(win.lab().state.lr - 0.02) < 1e-12
    assert "1.90 / 2.0" in player.time_label.text()
    lab = win.lab()
    player.close_player()
    assert lab.runner_factory is None  # the lab runs child processes again
    win.close()


def test_add_keyframe_and_save_scene_read_back(qtbot, fresh_settings, tmp_path):
    win = MainWindow(lab="manifold2d")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.lab().landscape is not None, timeout=30000)
    lab = win.lab()
    lab.widget("lr").setValue(0.033)
    lab.set_data_point(0, 1.25, -0.5)
    lab.scene.setCameraPosition(azimuth=10, elevation=40, distance=7)
    t0, _ = win.add_keyframe()
    lab.scene.setCameraPosition(azimuth=80, elevation=20, distance=5)
    t1, _ = win.add_keyframe()
    assert (t0, t1) == (0.0, 2.0)
    out = tmp_path / "mine.toml"
    assert win.save_scene_as(str(out)) == str(out)
    sc = load_scene(str(out), LABS)
    assert sc.lab == "manifold2d" and sc.settings["lr"] == pytest.approx(0.033)
    assert sc.settings["xs"] == [1.25] and sc.settings["ys"] == [-0.5]
    (_, c0), (_, c1) = sc.camera
    assert (c0.azimuth, c0.elevation, c0.distance) == pytest.approx((10, 40, 7))
    assert (c1.azimuth, c1.elevation, c1.distance) == pytest.approx((80, 20, 5))
    # opened in the player, the scene sets the lab up as saved; a keyframe added there extends its timeline
    assert win.open_scene(str(out))
    qtbot.waitUntil(win.player.ready, timeout=30000)
    assert lab.state.lr == pytest.approx(0.033) and lab.state.xs == [1.25]
    t, _ = win.player.add_keyframe()
    assert t == pytest.approx(4.0) and win.player.modified and win.player.scene.duration >= 4.0
    assert win.save_scene_as(str(out)) == str(out)
    assert len(load_scene(str(out), LABS).camera) == 3
    win.close()


def test_a_malformed_scene_is_reported_and_nothing_changes(qtbot, fresh_settings, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    win = MainWindow(lab="manifold2d")
    qtbot.addWidget(win)
    win.show()
    bad = tmp_path / "bad.toml"
    bad.write_text(SCENE.replace("fps = 10", "fps = [10]"))
    assert not win.open_scene(str(bad))
    assert shown and "bad.toml" in shown[0] and "field 'fps'" in shown[0]
    assert not win.player_active()
    win.close()


def test_settings_move_gradually_over_time(qtbot, fresh_settings, tmp_path):
    path = tmp_path / "ramp.toml"
    path.write_text(SCENE.replace("duration = 2.0", "duration = 3.5") + """
[[event]]
time = 2.0
set = { lr = 0.09, xs = [2.0], ys = [0.0] }
over = 1.0
""")
    win = MainWindow(lab="manifold2d")
    qtbot.addWidget(win)
    win.show()
    assert win.open_scene(str(path))
    lab = win.lab()
    for frame, lr, x, y in ((20, 0.02, 1.0, 0.8), (25, 0.055, 1.5, 0.4), (29, 0.083, 1.9, 0.08), (30, 0.09, 2.0, 0.0)):
        win.player.seek(frame)
        qtbot.waitUntil(win.player.ready, timeout=60000)
        assert lab.state.lr == pytest.approx(lr, abs=1e-4) and lab.state.xs[0] == pytest.approx(x, abs=1e-3)
        assert lab.state.ys[0] == pytest.approx(y, abs=1e-3)
    win.close()


def test_a_scene_given_at_start_opens_in_the_player_and_plays(qtbot, fresh_settings, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SCENE)
    win = MainWindow(lab="manifold2d")
    win.pending_scene = str(path)  # what `losslab SCENE.toml` does
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.player_active() and win.player.current >= 6, timeout=60000)
    assert win.player_dock.isVisible() and win.player.playing
    assert len(win.lab().runs) == 1  # the event at 0.2 s started a descent
    win.close()


def test_a_value_out_of_its_declared_range_is_refused_before_the_scene_plays(qtbot, fresh_settings, tmp_path,
                                                                             monkeypatch):
    import subprocess
    import sys
    from pathlib import Path

    from PySide6.QtWidgets import QMessageBox

    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    path = tmp_path / "big.toml"
    path.write_text(SCENE.replace("lr = 0.05", "lr = 1e9"))
    r = subprocess.run([sys.executable, "-m", "visualizer", "record", str(path), "-o", str(tmp_path / "x.mp4")],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert r.returncode == 2 and "settings.lr" in r.stderr and "range" in r.stderr
    assert not list(tmp_path.glob("x*.mp4"))
    win = MainWindow(lab="manifold2d")
    qtbot.addWidget(win)
    win.show()
    assert not win.open_scene(str(path)) and not win.player_active()
    assert shown and "settings.lr" in shown[0] and "1e+09 is out of range" in shown[0] and "[1e-05, 100]" in shown[0]
    assert "settings.lr" in win.statusBar().currentMessage()
    assert win.lab().runner_factory is None and win.lab().state.lr != 1e9
    win.close()


def test_another_lab_opened_while_a_scene_is_loaded_runs_its_own_descents(qtbot, fresh_settings, tmp_path):
    from visualizer.recording.driver import SyncRunner
    from visualizer.workers import ProcessRunner

    path = tmp_path / "s.toml"
    path.write_text(SCENE)
    win = MainWindow(lab="manifold2d")
    qtbot.addWidget(win)
    win.show()
    assert win.open_scene(str(path))
    scene_lab = win.lab()
    assert scene_lab.runner_factory is SyncRunner
    win.switch_lab("manifold3d")
    other = win.lab()
    qtbot.waitUntil(lambda: other.landscape is not None, timeout=60000)
    run = other.start_descent(np.array([1.0, -1.0, 0.5]))
    assert isinstance(run.runner, ProcessRunner)  # not the player's synchronous runner, which nobody steps
    qtbot.waitUntil(lambda: run.trajs[0].last_step > 10, timeout=30000)
    assert scene_lab.runner_factory is SyncRunner  # the scene's lab is still the player's
    win.close()
