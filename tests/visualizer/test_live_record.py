"""Recording in the app: frames on the simulation clock, every source, overlays, a valid file on stop and on
closing the window, bad options refused with a message."""

import numpy as np
import pytest

from visualizer.app import MainWindow
from visualizer.recording.live import RecordDialog, RecordOptions


def decode(path):
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    return meta, [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen]


def make_window(qtbot, lab="manifold2d"):
    win = MainWindow(lab=lab)
    qtbot.addWidget(win)
    win.resize(1000, 700)
    win.show()
    qtbot.waitUntil(lambda: win.lab().landscape is not None, timeout=30000)
    return win


def test_frames_follow_the_simulation_clock_and_the_file_decodes(qtbot, fresh_settings, tmp_path):
    win = make_window(qtbot)
    lab = win.lab()
    lab.widget("steps").setValue(100000)
    lab.widget("lr").setValue(0.02)  # far from converged during the test (a converged path stops growing)
    lab.start_descent([2.0, 2.0])
    # the recording takes the descent over from its first steps, so the frames show the path near its start,
    # where it moves most
    qtbot.waitUntil(lambda: lab.runs[0].trajs[0].last_step >= 0, timeout=30000)
    out = tmp_path / "live.mp4"
    assert win.start_recording(RecordOptions(path=str(out), source="3d", width=320, height=240, fps=10,
                                             clock="steps", steps_per_frame=7))
    assert win.rec_indicator.isVisible()
    qtbot.waitUntil(lambda: win.recorder.frames >= 12, timeout=60000)
    assert "frames" in win.rec_indicator.text.text()
    win.stop_recording(wait=True)
    assert not win.rec_indicator.isVisible()
    steps = win.recorder.frame_steps
    # exactly k steps between frames, however long each frame took to draw
    assert set(np.diff(np.array(steps[: win.recorder.frames]))) == {7}
    meta, frames = decode(out)
    assert meta["size"] == (320, 240) and meta["fps"] == pytest.approx(10)
    assert len(frames) == win.recorder.frames
    assert np.abs(frames[-1].astype(int) - frames[0]).mean() > 0.5  # the path grew
    # after the recording the descent runs on by itself again
    s0 = lab.runs[0].trajs[0].last_step
    qtbot.waitUntil(lambda: lab.runs[0].trajs[0].last_step > s0 + 50, timeout=10000)
    assert not (tmp_path / "live.part.mp4").exists()
    win.close()


@pytest.mark.parametrize("source", ["2d", "window"])
def test_2d_view_and_window_record_at_the_chosen_size(qtbot, fresh_settings, tmp_path, source):
    win = make_window(qtbot)
    out = tmp_path / f"{source}.gif"
    assert win.start_recording(RecordOptions(path=str(out), source=source, width=400, height=300, fps=20,
                                             clock="camera", show_title=False, show_step=False, show_loss=False))
    qtbot.waitUntil(lambda: win.recorder.frames >= 4, timeout=30000)
    win.stop_recording(wait=True)
    meta, frames = decode(out)
    assert meta["size"] == (400, 300) and len(frames) == win.recorder.frames
    f = frames[-1].astype(int)
    # the map's viridis colours are in the frame (not a blank or black picture)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    assert ((g > b + 30) & (g > 80)).sum() > 300 or ((b > r + 40) & (g > 40)).sum() > 300
    win.close()


def test_overlays_are_burned_in(qtbot, fresh_settings, tmp_path):
    from visualizer.recording.frames import burn_overlays

    frame = np.zeros((240, 320, 4), np.uint8)
    plain = frame.copy()
    burn_overlays(frame, title="Title", step=123, loss=0.5, caption="a caption")
    changed = np.any(frame != plain, axis=2)
    assert changed[:40, :120].sum() > 50  # title, top left
    assert changed[:40, 200:].sum() > 50  # step and loss, top right
    assert changed[200:, :].sum() > 50  # caption, bottom
    assert not changed[100:160, 100:220].any()  # the middle stays clear


def test_closing_the_window_while_recording_finishes_the_file(qtbot, fresh_settings, tmp_path):
    win = make_window(qtbot)
    out = tmp_path / "closing.mp4"
    win.start_recording(RecordOptions(path=str(out), width=256, height=160, fps=25, clock="camera"))
    qtbot.waitUntil(lambda: win.recorder.frames >= 3, timeout=30000)
    win.close()
    meta, frames = decode(out)
    assert meta["size"] == (256, 160) and len(frames) >= 3


def test_bad_record_options_get_a_message(qtbot, fresh_settings, tmp_path):
    win = make_window(qtbot)
    dlg = RecordDialog(win.lab(), win)
    qtbot.addWidget(dlg)
    dlg.size.setCurrentText("5000x5000")
    with pytest.raises(ValueError, match="3840x2160"):
        dlg.read()
    dlg.size.setCurrentText("wide")
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        dlg.read()
    dlg.size.setCurrentText("640x360")
    dlg.path.setText("/proc/forbidden/x.mp4")
    dlg._accept()
    assert dlg.options is None and dlg.error.text()
    dlg.path.setText(str(tmp_path / "ok"))
    dlg.fmt.setCurrentIndex(1)
    assert dlg.read().path.endswith(".gif")
    # a recorder that cannot start reports and the app goes on
    assert not win.start_recording(RecordOptions(path="/proc/forbidden/x.mp4", width=320, height=240))
    assert win.recorder is None or not win.recorder.active
    win.close()
