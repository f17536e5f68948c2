"""The scene player: a scene previewed in the app (``losslab SCENE.toml``), scrubbed through its timeline,
edited ("Add keyframe" appends the current camera) and saved ("Save scene" writes the current lab, its
settings and camera as a scene to start from), and rendered to a video by ``losslab record`` in a child
process with a progress bar.

Preview runs the same SceneDriver as the headless render, with synchronous runs, one frame per tick while
the lab is idle, so the frame shown at time t is the frame the render writes at t. Scrubbing back replays
from the start (the simulation cannot run backwards); the replay runs in ticks and never blocks the window.
"""

from __future__ import annotations

import os
import re
import sys
import time
import weakref

from PySide6.QtCore import QProcess, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from visualizer.recording.keyframes import Camera
from visualizer.recording.scene import Scene, save_scene


def current_camera(lab) -> Camera:
    o = lab.views()["3d"].opts
    c = o["center"]
    return Camera(float(o["azimuth"]), float(o["elevation"]), float(o["distance"]),
                  (float(c.x()), float(c.y()), float(c.z())))


def scene_from_lab(lab, duration: float = 10.0) -> Scene:
    """A scene to start from: the lab, all its current settings, and the current camera at t = 0."""
    settings = lab.settings_dict()
    sc = Scene(lab=lab.key, seed=int(settings.get("seed", 0)), size=(1920, 1080), fps=30, duration=duration,
               steps_per_frame=5, settings=settings, title=lab.title, overlays={"step": True, "loss": True})
    if "3d" in lab.views():
        sc.camera.append((0.0, current_camera(lab)))
    return sc


class ScenePlayer(QWidget):
    """Preview, scrub, edit and render one scene on the main window's lab."""

    closed = Signal()
    #: (text, is_error) for the main window's status bar
    message = Signal(str, bool)

    def __init__(self, window, parent=None) -> None:
        super().__init__(parent)
        # a weak reference: the main window holds the player (no reference cycle through Qt objects, which only
        # the cyclic garbage collector, in whatever thread it runs, could free)
        self._main = weakref.ref(window)
        self.scene: Scene | None = None
        self.lab = None
        self.driver = None
        self.modified = False
        self.current = -1
        self.target = 0
        self.playing = False
        self._phase = "idle"
        self._events_done = False
        self._last_play = 0.0
        self._render: QProcess | None = None
        #: playing stops on reaching this frame (a tour's pause point; None: at the end)
        self.hold_at: int | None = None
        st = self.style()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 2, 6, 2)
        row = QHBoxLayout()
        self.name = QLabel()
        self.name.setStyleSheet("font-weight:bold;color:#88c0d0;")
        row.addWidget(self.name)
        self.play_btn = QPushButton(st.standardIcon(QStyle.StandardPixmap.SP_MediaPlay), "")
        self.play_btn.setToolTip("Play / pause the preview")
        self.play_btn.clicked.connect(self.toggle_play)
        row.addWidget(self.play_btn)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setToolTip("Scrub through the timeline (going back replays the scene from the start)")
        self.slider.valueChanged.connect(self._on_slider)
        row.addWidget(self.slider, 1)
        self.time_label = QLabel("0.0 / 0.0 s")
        self.time_label.setMinimumWidth(120)
        row.addWidget(self.time_label)
        for text, tip, slot in (
                ("Add keyframe", "Append the current camera to the timeline at the current time (Ctrl+K)",
                 self.add_keyframe),
                ("Save scene…", "Write this scene (lab, settings, seed, camera keyframes, events, captions) as TOML",
                 self.save_as),
                ("Render…", "Render the scene to MP4 or GIF with `losslab record`, in the background", self.render),
                ("Close", "Leave the preview: the lab runs freely again", self.close_player)):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            row.addWidget(b)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.caption = QLabel()
        self.caption.setStyleSheet("color:#eceff4;")
        row.addWidget(self.caption, 1)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setVisible(False)
        row.addWidget(self.progress)
        lay.addLayout(row)
        self._timer = QTimer(self)
        self._timer.setInterval(1)
        self._timer.timeout.connect(self._tick)

    # ------------------------------------------------------------------ loading
    def load(self, scene: Scene, prepared: bool = False) -> None:
        """Play ``scene`` on its lab (``prepared``: the lab was already started on the scene's settings, its
        first grid computed beforehand; see ``SceneDriver.begin``)."""
        from visualizer.recording.driver import SceneDriver, SyncRunner

        if self.lab is not None:
            self.lab.use_runner_factory(None)  # a lab left behind runs its own child processes again
        self.scene = scene
        self._main().switch_lab(scene.lab)
        self.lab = self._main().lab()
        self._main().mark_started(self.lab)
        self.lab.use_runner_factory(SyncRunner)  # this lab only: another lab opened meanwhile runs as usual
        self.driver = SceneDriver(scene, self.lab)
        self.slider.blockSignals(True)
        self.slider.setRange(0, scene.frames - 1)
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        self.modified = False
        self._update_name()
        self.restart(start=not prepared)
        self._timer.start()

    def _update_name(self) -> None:
        name = os.path.basename(self.scene.path) if self.scene.path else "new scene"
        self.name.setText(f"Scene: {name}{' *' if self.modified else ''}")

    def restart(self, start: bool = True) -> None:
        self.lab.reset()
        self._phase = "setup"
        try:
            self.driver.begin(defaults=True, start=start)
        except ValueError as exc:
            self._phase = "idle"
            QTimer.singleShot(0, lambda text=str(exc): self._fail(text))
            return
        self.current = -1
        self._events_done = False

    # ------------------------------------------------------------------ playing
    def time(self) -> float:
        return max(self.current, 0) / self.scene.fps

    def seek(self, i: int) -> None:
        i = min(max(int(i), 0), self.scene.frames - 1)
        if i < self.current:
            self.restart()
        self.target = i
        if self.slider.value() != i:
            self.slider.blockSignals(True)
            self.slider.setValue(i)
            self.slider.blockSignals(False)

    def _on_slider(self, v: int) -> None:
        self.playing = False
        self._update_play_icon()
        self.seek(v)

    def toggle_play(self) -> None:
        if self.scene is None:
            return
        if not self.playing and self.current >= self.scene.frames - 1:
            self.seek(0)
        self.playing = not self.playing
        self._last_play = time.perf_counter()
        self._update_play_icon()

    def _update_play_icon(self) -> None:
        pm = QStyle.StandardPixmap.SP_MediaPause if self.playing else QStyle.StandardPixmap.SP_MediaPlay
        self.play_btn.setIcon(self.style().standardIcon(pm))

    def ready(self) -> bool:
        """True when the frame asked for is the one shown."""
        return self._phase == "run" and self.current == self.target and not self.lab.busy()

    def _tick(self) -> None:
        try:
            self._step()
        except ValueError as exc:  # a setting the lab's control cannot take, a start of the wrong size
            self._fail(str(exc))

    def _step(self) -> None:
        if self.lab is None or self.lab.busy():
            return
        if self._phase == "idle":
            return
        if self._phase == "setup":
            self.driver.ready()
            self._phase = "run"
            return
        if self.current < self.target:
            i = self.current + 1
            if not self._events_done:
                self._events_done = True
                if self.driver.apply_events(i):
                    return  # let what the events asked for be computed first
            self.driver.advance()
            self.lab.flush()
            self.driver.set_camera(i)
            self.current = i
            self._events_done = False
            self._show_time()
            return
        if self.playing:
            now = time.perf_counter()
            if now - self._last_play >= 1.0 / self.scene.fps:
                self._last_play = now
                if self.current >= self.scene.frames - 1 or self.current == self.hold_at:
                    self.playing = False
                    self._update_play_icon()
                else:
                    self.seek(self.current + 1)

    def _show_time(self) -> None:
        t = self.time()
        self.time_label.setText(f"{t:.2f} / {self.scene.duration:.1f} s")
        text = self.driver.captions(max(self.current, 0))
        self.caption.setText(text)
        if self.slider.value() != self.current and self.current == self.target:
            self.slider.blockSignals(True)
            self.slider.setValue(self.current)
            self.slider.blockSignals(False)

    # ------------------------------------------------------------------ editing
    def add_keyframe(self) -> tuple[float, Camera] | None:
        """Append the current camera at the current time (2 s after the last keyframe when that is not later)."""
        if self.scene is None or "3d" not in self.lab.views():
            return None
        sc = self.scene
        t = self.time()
        if sc.camera and t <= sc.camera[-1][0]:
            t = sc.camera[-1][0] + 2.0
        cam = current_camera(self.lab)
        sc.camera = sorted([*sc.camera, (t, cam)], key=lambda k: k[0])
        if t > sc.duration:
            sc.duration = t
            self.slider.setRange(0, sc.frames - 1)
        self.modified = True
        self._update_name()
        self.message.emit(f"Keyframe {len(sc.camera)} at {t:.2f} s: azimuth {cam.azimuth:.0f}°, "
                                f"elevation {cam.elevation:.0f}°, distance {cam.distance:.3g}", False)
        return t, cam

    def save(self, path: str) -> bool:
        try:
            save_scene(self.scene, path, comment=f"losslab scene: {self.lab.title}")
        except (OSError, ValueError) as exc:
            self.message.emit(f"Scene not saved: {exc}", True)
            return False
        self.scene.path = path
        self.modified = False
        self._update_name()
        self.message.emit(f"Saved the scene to {path} · render it with: losslab record {path} -o OUT.mp4",
                                False)
        return True

    def save_as(self) -> None:
        start = self.scene.path or os.path.join(os.getcwd(), f"{self.scene.lab}.toml")
        path, _ = QFileDialog.getSaveFileName(self, "Save scene", start, "Scene (*.toml)")
        if path:
            if not path.lower().endswith(".toml"):
                path += ".toml"
            self.save(path)

    # ------------------------------------------------------------------ rendering
    def render(self, out: str | None = None) -> bool:
        """Render the (saved) scene in a child process: ``losslab record SCENE -o OUT``."""
        if self._render is not None:
            self.message.emit("A render is already running", True)
            return False
        if self.modified or not self.scene.path:
            self.save_as() if not self.scene.path else self.save(self.scene.path)
            if self.modified or not self.scene.path:
                return False
        if out is None:
            start = os.path.splitext(self.scene.path)[0] + ".mp4"
            out, _ = QFileDialog.getSaveFileName(self, "Render to", start, "Video (*.mp4 *.gif)")
            if not out:
                return False
        proc = QProcess(self)
        proc.setProgram(sys.executable)
        proc.setArguments(["-m", "visualizer", "record", self.scene.path, "-o", out])
        proc.readyReadStandardError.connect(self._on_render_output)
        proc.finished.connect(lambda code, _status: self._on_render_done(code, out))
        self._render = proc
        self._render_err = ""
        self.progress.setRange(0, self.scene.frames)
        self.progress.setValue(0)
        self.progress.setFormat(f"rendering %v / %m frames → {os.path.basename(out)}")
        self.progress.setVisible(True)
        proc.start()
        return True

    def _on_render_output(self) -> None:
        text = bytes(self._render.readAllStandardError()).decode(errors="replace")
        self._render_err = (self._render_err + text)[-2000:]
        found = re.findall(r"frame (\d+)/(\d+)", text)
        if found:
            self.progress.setValue(int(found[-1][0]))

    def _on_render_done(self, code: int, out: str) -> None:
        self.progress.setVisible(False)
        self._render = None
        if code == 0:
            self.message.emit(f"Rendered {out}", False)
        else:
            last = [ln for ln in self._render_err.replace("\r", "\n").splitlines() if ln.strip()]
            self.message.emit(f"Render failed: {last[-1] if last else f'exit code {code}'}", True)

    # ------------------------------------------------------------------ closing
    def _fail(self, text: str) -> None:
        """Leave the preview, then say why (after the lab's own messages about clearing its runs)."""
        self.close_player()
        self.message.emit(f"Scene stopped: {text}", True)

    def close_player(self) -> None:
        self._timer.stop()
        self.playing = False
        if self._render is not None:
            self._render.kill()
            self._render.waitForFinished(3000)
            self._render = None
        if self.lab is not None:
            self.lab.reset()
            self.lab.use_runner_factory(None)
        self.scene = None
        self.closed.emit()

