"""Tours (issue 20): the shipped tour parses and every chapter renders its first frames; a short tour renders to one
MP4 whose chapters (titles, start times), frame count and WebVTT captions are read back from the files; an
interrupted render resumes after its last finished chapter; presenter mode's keys, exploring by hand, blanking,
and the next chapter's first grid computed beforehand."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from visualizer.labs import LABS
from visualizer.recording.tour import load_tour

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "assets" / "tours" / "foundations.toml"

SCENE3D = """
lab = "manifold3d"
fps = 10
duration = 1.0
steps_per_frame = 2
[settings]
model = "tanh"
resolution = 24
[[caption]]
start = 0.2
end = 0.8
text = "a surface of solutions"
"""

TOUR = """title = "Test tour"
size = [160, 96]
fps = 5

[[chapter]]
title = "Two parameters"
caption = "Descent lands on the nearest solution (Liu, Zhu, Belkin 2022)"
pauses = [0.6]
notes = "Say this first."
[chapter.scene]
lab = "manifold2d"
fps = 10
duration = 1.2
steps_per_frame = 3
[chapter.scene.settings]
model = "linear"
lr = 0.05
[[chapter.scene.event]]
time = 0.2
action = "descent"
start = [2.0, 2.5]
[[chapter.scene.caption]]
start = 0.0
end = 1.0
text = "lands on the projection"

[[chapter]]
title = "A card; = and # in a title"
duration = 1.0
card = { heading = "Why networks train", text = "p > n", formula = '\\frac{1}{2}\\|\\nabla L\\|^2 \\geq \\mu L' }

[[chapter]]
title = "Three parameters"
caption = "A surface of solutions"
scene = "three.toml"
"""


def write_tour(folder: Path) -> Path:
    (folder / "three.toml").write_text(SCENE3D)
    p = folder / "tour.toml"
    p.write_text(TOUR)
    return p


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def read_chapters(path: Path) -> list[tuple[str, float, float]]:
    """The MP4's chapters read back by FFmpeg: (title, start s, end s)."""
    r = subprocess.run([ffmpeg(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"], capture_output=True,
                       text=True, check=True)
    out = []
    for block in r.stdout.split("[CHAPTER]")[1:]:
        kv = dict(line.split("=", 1) for line in block.strip().splitlines() if "=" in line and "\\" not in line)
        num, den = (int(v) for v in kv["TIMEBASE"].split("/"))
        title = re.search(r"^title=(.*)$", block, re.M).group(1)
        title = re.sub(r"\\(.)", r"\1", title)
        out.append((title, int(kv["START"]) * num / den, int(kv["END"]) * num / den))
    return out


def decode(path: Path) -> list[np.ndarray]:
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    return [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen]


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    """WebVTT cues (start, end, text), parsed independently of the writer."""
    assert text.startswith("WEBVTT\n")

    def secs(stamp: str) -> float:
        h, m, s = stamp.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    cues = []
    for block in text.strip().split("\n\n")[1:]:
        lines = block.splitlines()
        timing = next(ln for ln in lines if "-->" in ln)
        a, b = timing.split("-->")
        cues.append((secs(a.strip()), secs(b.split()[0]), " ".join(lines[lines.index(timing) + 1:])))
    return cues


def test_the_shipped_tour_parses_and_every_chapter_renders_its_first_frames(tmp_path):
    tour = load_tour(str(SHIPPED), LABS)
    assert 8 * 60 <= tour.frames() / tour.fps <= 12 * 60  # about 8-12 minutes
    labs_shown = {ch.scene.lab for ch in tour.chapters if ch.scene is not None}
    assert labs_shown == set(LABS)  # every lab of the argument
    for ch in tour.chapters:
        assert ch.title and (ch.card is not None or ch.notes)
        if ch.scene is not None:
            # one line (as burned in at 1920x1080) that names the paper
            assert ch.caption and len(ch.caption) <= 110 and re.search(r"(19|20)\d\d\)$", ch.caption), ch.caption
            assert all(0 < t < ch.duration for t in ch.pauses)
    out = tmp_path / "f.mp4"
    r = subprocess.run([sys.executable, "-c", "import sys; from visualizer.recording.tour_render import cli; "
                        f"sys.exit(cli({[str(SHIPPED), '-o', str(out), '--frames', '1', '--size', '160x90', '--fps', '5']!r}))"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    n = len(tour.chapters)
    assert len(decode(out)) == n
    chapters = read_chapters(out)
    assert [c[0] for c in chapters] == [ch.title for ch in tour.chapters]
    assert [c[1] for c in chapters] == pytest.approx([0.2 * k for k in range(n)])
    assert f"chapter {n}/{n}" in r.stderr and "(100%)" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["f.mp4", "f.vtt"]  # the work folder is gone


#: the renders of the next test, in a child process as every render of the suite runs (a render's GL windows
#: must not meet the test process's interpreter shutdown: the renderer leaves with os._exit, as `losslab record`)
RENDERS = """
import json, os, signal, sys
from visualizer.labs import LABS
from visualizer.recording.tour import load_tour
from visualizer.recording.tour_render import TourStopped, render_tour

path, out, sub = sys.argv[1:4]
said = {}
begun = []
try:  # stopped (a signal) as the third chapter begins: the two finished chapters stay for the resume
    render_tour(load_tour(path, LABS), out, progress=False, on_chapter=lambda k, i, kept: begun.append((k, kept)),
                stop=lambda: signal.SIGTERM if len(begun) == 3 else None)
except TourStopped as exc:
    said["stopped"] = str(exc)
said["parts"] = sorted(os.listdir(out[:-4] + ".tour-parts"))
said["out_after_stop"] = os.path.exists(out)
begun.clear()
result = render_tour(load_tour(path, LABS), out, progress=False, on_chapter=lambda k, i, kept: begun.append((k, kept)))
said["begun"], said["resumed"] = begun, result["resumed"]
render_tour(load_tour(path, LABS), sub, progress=False, chapters=[1, 2])
print(json.dumps(said))
sys.stdout.flush()
os._exit(0)
"""


def test_a_tour_renders_to_one_video_with_chapters_captions_and_resumes(tmp_path):
    path = write_tour(tmp_path)
    out, sub = tmp_path / "course.mp4", tmp_path / "sub.mp4"
    r = subprocess.run([sys.executable, "-c", RENDERS, str(path), str(out), str(sub)], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    said = json.loads(r.stdout.strip().splitlines()[-1])
    assert "in chapter 3" in said["stopped"] and "resumes" in said["stopped"]
    assert not said["out_after_stop"] and {"chapter-001.mp4", "chapter-002.mp4"} <= set(said["parts"])
    assert said["begun"] == [[1, True], [2, True], [3, False]] and said["resumed"] == [0, 1]
    assert sorted(os.listdir(tmp_path)) == ["course.mp4", "course.vtt", "sub.mp4", "sub.vtt", "three.toml",
                                            "tour.toml"]
    # 1.2 s + 1.0 s + 1.0 s at 5 frames a second
    frames = decode(out)
    assert len(frames) == 6 + 5 + 5 and frames[0].shape == (96, 160, 3)
    assert read_chapters(out) == [("Two parameters", 0.0, 1.2), ("A card; = and # in a title", 1.2, 2.2),
                                  ("Three parameters", 2.2, 3.2)]
    # the card is the app's background with its light heading; the lab's chapters are coloured surfaces
    card = frames[8].astype(int)
    assert np.abs(card[:, :8] - [0x1b, 0x1e, 0x25]).max() < 12 and (card.min(axis=2) > 120).sum() > 30
    lab = frames[3].astype(int)
    assert (lab.max(axis=2) - lab.min(axis=2) > 60).sum() > 300
    # the captions: the chapter's caption over the chapter, its scene's captions at their times, in order
    cues = parse_vtt((tmp_path / "course.vtt").read_text())
    assert cues == [(0.0, 1.2, "Descent lands on the nearest solution (Liu, Zhu, Belkin 2022)"),
                    (0.0, 1.0, "lands on the projection"), (2.2, 3.2, "A surface of solutions"),
                    (2.4, 3.0, "a surface of solutions")]
    # a subset: its chapters start at 0
    assert [c[1:] for c in read_chapters(sub)] == [(0.0, 1.0), (1.0, 2.0)] and len(decode(sub)) == 10
    assert parse_vtt((tmp_path / "sub.vtt").read_text())[0] == (1.0, 2.0, "A surface of solutions")


def test_a_malformed_tour_fails_the_render_before_anything_is_written(tmp_path):
    path = write_tour(tmp_path)
    path.write_text(TOUR.replace('scene = "three.toml"', 'scene = "gone.toml"'))
    code = ("import sys; from visualizer.recording.tour_render import cli; "
            f"sys.exit(cli([{str(path)!r}, '-o', {str(tmp_path / 'x.mp4')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "field 'chapter[2].scene': no scene file 'gone.toml'" in r.stderr, r.stderr
    assert re.search(r"tour.toml: line \d+, ", r.stderr)
    assert sorted(os.listdir(tmp_path)) == ["three.toml", "tour.toml"]


# --- presenter mode ------------------------------------------------------------------------------------------------
@pytest.fixture
def presenting(qtbot, fresh_settings, tmp_path):
    from visualizer.app import MainWindow

    path = write_tour(tmp_path)
    win = MainWindow(lab="manifold2d")
    qtbot.addWidget(win)
    win.resize(900, 600)
    win.show()
    qtbot.waitUntil(lambda: win._started, timeout=30000)
    from visualizer.tour_presenter import open_tour

    p = open_tour(win, str(path), notes="panel", full_screen=False)
    assert p is not None and win.presenter is p
    win.resize(1400, 800)  # (room for the notes panel beside the lab)
    qtbot.waitUntil(lambda: win.width() == 1400)
    yield win, p
    win.close()


def press(qtbot, win, key) -> None:
    qtbot.keyClick(win, key)


def test_presenter_keys_walk_through_steps_and_chapters(qtbot, presenting):
    win, p = presenting
    qtbot.waitUntil(lambda: p.mode == "held", timeout=60000)
    assert p.index == 0 and p.player.current == 6 and p.step == 0  # the pause point at 0.6 s (10 fps)
    assert "1 / 3" in p.title_label.text() and p.panel.notes.toPlainText() == "Say this first."
    press(qtbot, win, Qt.Key.Key_Right)  # on to the chapter's end
    assert p.mode == "playing"
    qtbot.waitUntil(lambda: p.mode == "held", timeout=60000)
    assert p.player.current == 11 and p.reached() and p.step == 1
    press(qtbot, win, Qt.Key.Key_Left)  # back a step: replayed from the start to the pause point
    qtbot.waitUntil(lambda: p.mode == "held", timeout=60000)
    assert p.index == 0 and p.player.current == 6 and p.step == 0 and p.reached()
    press(qtbot, win, Qt.Key.Key_Right)  # pressed while a step plays: the step is finished at once
    press(qtbot, win, Qt.Key.Key_Right)
    qtbot.waitUntil(lambda: p.mode == "held", timeout=60000)
    assert p.player.current == 11 and p.index == 0
    press(qtbot, win, Qt.Key.Key_PageDown)  # a clicker's key: the next chapter, a title card
    assert p.index == 1 and p.stage.currentWidget() is p.card_view and not p.top.isVisible()
    assert p.panel.chapters.currentRow() == 1 and "Three parameters" in p.panel.next.text()
    press(qtbot, win, Qt.Key.Key_PageUp)  # at a chapter's start: the previous chapter, from its start
    assert p.index == 0 and p.mode == "playing" and p.stage.currentIndex() == 0
    press(qtbot, win, Qt.Key.Key_3)  # a number: that chapter
    assert p.index == 2 and p.player.scene.lab == "manifold3d" and p.stage.currentIndex() == 0
    assert win.lab().key == "manifold3d" and "3 / 3" in p.title_label.text()
    qtbot.waitUntil(lambda: p.mode == "held", timeout=60000)
    press(qtbot, win, Qt.Key.Key_Left)  # back to the chapter's start (its first step), then a chapter back
    qtbot.waitUntil(lambda: p.mode == "held", timeout=60000)
    assert p.index == 2 and p.player.current == 0
    press(qtbot, win, Qt.Key.Key_Left)
    assert p.index == 1 and p.stage.currentWidget() is p.card_view
    press(qtbot, win, Qt.Key.Key_Right)
    assert p.index == 2
    press(qtbot, win, Qt.Key.Key_Escape)  # presenter mode ends: the window is the app again
    assert win.presenter is None and win.centralWidget() is win.stack and win.dock.isVisible()


def test_exploring_by_hand_then_right_restores_the_scene_and_goes_on(qtbot, presenting):
    from visualizer.recording.driver import SyncRunner

    win, p = presenting
    qtbot.waitUntil(lambda: p.mode == "held", timeout=60000)
    lab = win.lab()
    assert len(lab.runs) == 1 and lab.runner_factory is None  # waiting: the lab is the lecturer's
    scene_start = lab.runs[0].trajs[0].w[0].copy() if hasattr(lab.runs[0].trajs[0], "w") else None
    lab.set_data_point(0, 1.25, -0.5)  # drag the point
    lab.start_descent(np.array([-2.0, 1.0]))  # click a start
    assert lab.state.xs == [1.25] and len(lab.runs) >= 1
    press(qtbot, win, Qt.Key.Key_Right)
    # the scene replays from its start to frame 6, where the tour left it, and shows how far it is
    assert p.mode == "restoring" and p.player.current == -1 and p.player.target == 6
    assert p.progress.isVisibleTo(win) and p.progress.maximum() == 7 and p.progress.value() == 0
    qtbot.waitUntil(lambda: p.mode == "playing", timeout=60000)  # restored, then playing on
    assert not p.progress.isVisibleTo(win)
    qtbot.waitUntil(lambda: p.mode == "held", timeout=60000)
    assert p.player.current == 11 and p.step == 1
    # the scene's state: its data point, its one descent (run synchronously on the scene's clock)
    assert lab.state.xs == [1.0] and len(lab.runs) == 1 and isinstance(lab.runs[0].runner, SyncRunner)
    if scene_start is not None:
        assert np.allclose(lab.runs[0].trajs[0].w[0], scene_start)


def test_b_blanks_the_screen_and_restores_it(qtbot, presenting):
    from visualizer.qtsetup import grab_window
    from visualizer.recording.frames import image_to_frame

    win, p = presenting
    qtbot.waitUntil(lambda: p.mode == "held", timeout=60000)
    lab_box = p.stage.geometry()
    before = image_to_frame(grab_window(win)).astype(int)
    press(qtbot, win, Qt.Key.Key_B)
    assert p.blanked and p.stage.currentWidget() is p.blank and not p.top.isVisible()
    assert "BLANKED" in p.panel.state.text()
    qtbot.waitUntil(lambda: p.stage.geometry() == win.rect())  # bars and the notes panel gone: all black
    assert image_to_frame(grab_window(win))[..., :3].max() <= 8
    press(qtbot, win, Qt.Key.Key_B)
    assert not p.blanked and p.stage.currentIndex() == 0 and p.top.isVisible() and p.index == 0
    qtbot.waitUntil(lambda: p.stage.geometry() == lab_box)
    after = image_to_frame(grab_window(win)).astype(int)
    assert np.abs(after - before).mean() < 3  # the lab is back as it was (the clock has moved on)
    press(qtbot, win, Qt.Key.Key_B)
    press(qtbot, win, Qt.Key.Key_Right)  # any key restores first, and does nothing else
    assert not p.blanked and p.index == 0 and p.mode == "held"


def test_the_next_chapters_first_grid_is_computed_while_the_current_one_plays(qtbot, presenting, monkeypatch):
    win, p = presenting
    press(qtbot, win, Qt.Key.Key_2)  # the card: the chapter after it (manifold3d) is set up now
    lab = p._prepared[2]
    assert lab.key == "manifold3d" and win.lab() is not lab  # not shown yet
    qtbot.waitUntil(lambda: not lab.busy() and lab.has_drawn(), timeout=60000)
    assert lab.state.resolution == 24  # the next scene's settings
    asked = []
    for w in lab._workers:
        monkeypatch.setattr(w, "submit", lambda req, w=w: asked.append(req))
    press(qtbot, win, Qt.Key.Key_Right)
    assert win.lab() is lab
    qtbot.waitUntil(lambda: p.mode == "held", timeout=60000)
    assert asked == []  # its first grid was the one computed beforehand


def test_losslab_tour_opens_presenter_mode_and_refuses_a_malformed_tour(tmp_path):
    path = write_tour(tmp_path)
    code = ("import sys; from visualizer.app import run_app; from visualizer.tour_presenter import main; "
            f"sys.exit(main({str(path)!r}, run_app))")
    env = dict(os.environ, LOSSLAB_TEST_EVENTS="1", LOSSLAB_CONFIG_DIR=str(tmp_path / "cfg"))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if "losslab-test-event: tour-open" in line:
                break
        proc.stdin.write("close\n")
        proc.stdin.flush()
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bad = tmp_path / "bad.toml"
    bad.write_text(TOUR.replace("pauses = [0.6]", "pauses = [5.0]"))
    code = ("import sys; from visualizer.app import run_app; from visualizer.tour_presenter import main; "
            f"sys.exit(main({str(bad)!r}, run_app))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and re.fullmatch(r"losslab: .*bad.toml: line 8, field 'chapter\[0\]\.pauses': .*\n",
                                              r.stderr), r.stderr


def test_open_tour_in_the_app_presents_full_screen_and_escape_gives_the_window_back(qtbot, fresh_settings, tmp_path,
                                                                                     monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from visualizer.app import MainWindow

    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    path = write_tour(tmp_path)
    win = MainWindow(lab="manifold2d")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win._started, timeout=30000)
    bad = tmp_path / "bad.toml"
    bad.write_text(TOUR.replace('title = "Three parameters"', 'title = 3'))
    assert win.open_tour(str(bad)) is None and getattr(win, "presenter", None) is None
    assert shown and "field 'chapter[2].title'" in shown[0] and win.centralWidget() is win.stack
    p = win.open_tour(str(path))
    assert p is win.presenter and p.index == 0
    qtbot.waitUntil(win.isFullScreen)
    qtbot.waitUntil(lambda: p.notes_dock is not None and p.notes_dock.isVisible())  # one screen: notes beside the lab
    press(qtbot, win, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not win.isFullScreen())
    assert win.presenter is None and win.centralWidget() is win.stack
    win.close()


def test_a_signal_stops_the_render_and_the_same_command_resumes_after_the_finished_chapters(tmp_path):
    import select
    import time

    path = write_tour(tmp_path)
    long = TOUR.replace('scene = "three.toml"', 'scene = "long.toml"')
    (tmp_path / "long.toml").write_text(SCENE3D.replace("duration = 1.0", "duration = 600.0"))
    path.write_text(long)
    out = tmp_path / "c.mp4"
    code = ("import sys; from visualizer.recording.tour_render import cli; "
            f"sys.exit(cli([{str(path)!r}, '-o', {str(out)!r}]))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        buf, end = "", time.monotonic() + 240
        while "chapter 3/3 'Three parameters': frame 1/" not in buf:  # the third chapter is being rendered
            assert time.monotonic() < end and proc.poll() is None, buf[-2000:]
            if select.select([proc.stderr], [], [], 0.2)[0]:
                buf += os.read(proc.stderr.fileno(), 65536).decode(errors="replace")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        err = buf + proc.stderr.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    last = [ln for ln in err.splitlines() if ln.startswith("losslab record:")]
    assert last and "stopped by SIGTERM in chapter 3" in last[-1] and last[-1].endswith("no video written"), err
    work = tmp_path / "c.tour-parts"
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith("c.")) == ["c.tour-parts"]  # no video, no partial
    assert {"chapter-001.mp4", "chapter-002.mp4", "manifest.json"} <= set(os.listdir(work))
    path.write_text(TOUR)  # the same command, the last chapter shortened: the finished chapters are kept
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "chapter 1/3 'Two parameters': finished before, kept" in r.stderr
    assert "chapter 2/3 'A card; = and # in a title': finished before, kept" in r.stderr
    assert len(decode(out)) == 16 and not work.exists()
