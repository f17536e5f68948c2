"""Recording in the app (Record button, Ctrl+R): the active 3D view, the 2D view or the whole window, to MP4
or GIF, at a chosen size and frame rate.

Frames follow the simulation clock: while runs are going, the recorder holds them and lets each advance
exactly k steps per frame (a slow machine records a smooth video, it just takes longer); with nothing
running, or paused, it records one frame per camera tick (1/fps of wall time) so orbiting and zooming are
captured. The 3D view renders off screen at the chosen size (up to 3840x2160, whatever the window's size);
encoding runs in a worker thread; the file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import time
import weakref
from dataclasses import dataclass

from PySide6.QtCore import QObject, QStandardPaths, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from visualizer import settings as store
from visualizer.recording.frames import SOURCES, Encoder, burn_overlays, capture, check_output, check_size

SIZES = ["1280x720", "1920x1080", "2560x1440", "3840x2160", "960x540", "640x360"]
CLOCKS = {"steps": "one frame per k training steps", "camera": "one frame per camera tick (real time)"}


@dataclass
class RecordOptions:
    path: str = ""
    source: str = "3d"
    width: int = 1920
    height: int = 1080
    fps: int = 30
    clock: str = "steps"
    steps_per_frame: int = 5
    show_title: bool = True
    title: str = ""
    show_step: bool = True
    show_loss: bool = True
    caption: str = ""

    @classmethod
    def load(cls) -> RecordOptions:
        d = store.load_json("recording")
        o = cls()
        for f in dataclasses.fields(cls):
            v = d.get(f.name) if isinstance(d, dict) else None
            if v is not None and type(v) is type(getattr(o, f.name)):
                setattr(o, f.name, v)
        if o.source not in SOURCES:
            o.source = "3d"
        if o.clock not in CLOCKS:
            o.clock = "steps"
        try:
            check_size(o.width, o.height)
        except ValueError:
            o.width, o.height = 1920, 1080
        o.fps = min(max(o.fps, 1), 120)
        o.steps_per_frame = min(max(o.steps_per_frame, 1), 10000)
        return o

    def save(self) -> None:
        store.save_json("recording", dataclasses.asdict(self))


def default_video_path(lab_key: str, ext: str = ".mp4") -> str:
    folder = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.MoviesLocation) or os.getcwd()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(folder, "losslab", f"losslab-{lab_key}-{stamp}{ext}")


def record_icon(on: bool = False) -> QIcon:
    pm = QPixmap(32, 32)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(QColor("#ffffff") if on else QColor("#7a1f1f"))
    p.setBrush(QColor("#ff3b30"))
    if on:  # a stop square while recording
        p.drawRoundedRect(8, 8, 16, 16, 2, 2)
    else:
        p.drawEllipse(5, 5, 22, 22)
    p.end()
    return QIcon(pm)


class LiveRecorder(QObject):
    """Records ``lab`` (or the window) into a video; see the module's docstring for the clock."""

    progress = Signal(int, float)  # frames, seconds since the start
    finished = Signal(str, int)  # path, frames
    failed = Signal(str)

    def __init__(self, window, lab, opts: RecordOptions, parent=None) -> None:
        super().__init__(parent)
        self.lab, self.opts = lab, opts
        self._window = weakref.ref(window) if window is not None else (lambda: None)  # no cycle with the window
        if opts.source != "window" and opts.source not in lab.views():
            raise ValueError(f"this lab has no {SOURCES[opts.source]}")
        os.makedirs(os.path.dirname(os.path.abspath(opts.path)) or ".", exist_ok=True)
        self.encoder = Encoder(opts.path, opts.width, opts.height, opts.fps)
        self.encoder.finished_file.connect(self.finished)
        self.encoder.failed.connect(self.failed)
        self.frames = 0
        self.frame_steps: list = []  # the step shown in each frame (the simulation clock, for checking)
        self.t0 = 0.0
        self._last_tick = 0.0
        self._pending = None
        # per runner taken over: [snapshots still owed (-1: not held yet), runner, its three slots]
        self._clock: dict[int, list] = {}
        self._last = {"step": None, "loss": None}
        self._timer = QTimer(self)
        self._timer.setInterval(5)
        self._timer.timeout.connect(self._tick)
        lab.status.connect(self._on_status)
        self.active = False

    def _on_status(self, d: dict) -> None:
        self._last.update({k: d[k] for k in ("step", "loss") if k in d})

    def start(self) -> None:
        self.encoder.start()
        self.t0 = time.perf_counter()
        self.active = True
        self._timer.start()

    def _capture(self) -> None:
        o = self.opts
        self.lab.flush()
        frame = capture(self.lab, o.source, o.width, o.height, self._window())
        self.frame_steps.append(self._last["step"])
        burn_overlays(frame, title=(o.title or self.lab.title) if o.show_title else None,
                      step=self._last["step"] if o.show_step else None,
                      loss=self._last["loss"] if o.show_loss else None, caption=o.caption or None)
        self._pending = frame
        self._push()

    def _push(self) -> bool:
        if self._pending is None:
            return True
        if not self.encoder.put(self._pending):
            return False  # the encoder is behind: wait (the runs wait with us)
        self._pending = None
        self.frames += 1
        self.progress.emit(self.frames, time.perf_counter() - self.t0)
        return True

    def _take(self, r) -> None:
        """Hold runner ``r``; count its snapshots as they are delivered here, after the lab has drawn them
        (the slots are connected after the lab's own), so a frame never shows a step still in the queue."""
        entry = [-1, r, None, None]

        # (an entry is emptied when the recording lets the runner go; a signal already queued may still come)
        def on_batch(items, entry=entry):
            if entry and entry[0] > 0:
                entry[0] = max(0, entry[0] - len(items))

        def on_holding(entry=entry):
            if entry:
                entry[0] = 0

        def on_done(_=None, entry=entry):
            if entry:
                entry[0] = 0

        entry[2], entry[3] = on_batch, on_holding
        entry.append(on_done)
        r.batch.connect(on_batch)
        r.holding.connect(on_holding)
        r.done.connect(on_done)
        self._clock[id(r)] = entry
        r.hold()

    def _release_all(self) -> None:
        for entry in self._clock.values():
            _owed, r, on_batch, on_holding, on_done = entry
            for sig, slot in ((r.batch, on_batch), (r.holding, on_holding), (r.done, on_done)):
                try:
                    sig.disconnect(slot)
                except (RuntimeError, TypeError):
                    pass
            entry.clear()  # the slots refer to their entry: empty it, so no cycle holds the runner
        self._clock.clear()

    def driven_runners(self) -> list:
        return [r for r in self.lab.runners() if hasattr(r, "advance")]

    def _tick(self) -> None:
        if self.encoder.error:
            self.stop()
            return
        if not self._push():
            return
        o = self.opts
        runs = self.driven_runners()
        if o.clock == "steps" and runs and not self.lab.paused:
            for r in runs:
                if id(r) not in self._clock:  # a run the recording has not taken over yet
                    self._take(r)
            if any(self._clock[id(r)][0] != 0 for r in runs) or self.lab.busy():
                return  # the last k steps are still on their way
            self._capture()
            for r in runs:
                self._clock[id(r)][0] = o.steps_per_frame
                r.advance(o.steps_per_frame)
            return
        now = time.perf_counter()
        if now - self._last_tick >= 1.0 / o.fps:
            self._last_tick = now
            self._capture()

    def stop(self, wait: bool = False) -> None:
        """End the recording: the runs go on as before, the file is finished in the worker (``wait``: here)."""
        if not self.active:
            if wait and self.encoder.isRunning():
                self.encoder.wait()
            return
        self.active = False
        self._timer.stop()
        try:
            self.lab.status.disconnect(self._on_status)
        except (RuntimeError, TypeError):
            pass
        if not self.lab.paused:
            for r in self.driven_runners():
                r.resume()
        self._release_all()
        if self._pending is not None and not self.encoder.error:
            self.encoder.put_wait(self._pending)
            self._pending = None
            self.frames += 1
        from visualizer.recording.frames import release

        release(self.lab)
        self.encoder.finish(wait=wait)


class RecordDialog(QDialog):
    """What to record, where, how big, how fast, on which clock, with which overlays."""

    def __init__(self, lab, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Record a video")
        self.lab = lab
        o = RecordOptions.load()
        if not o.path or not os.path.isdir(os.path.dirname(os.path.abspath(o.path))):
            o.path = default_video_path(lab.key)
        else:  # a fresh name in the same folder, with the same format
            o.path = os.path.join(os.path.dirname(o.path),
                                  os.path.basename(default_video_path(lab.key, os.path.splitext(o.path)[1] or ".mp4")))
        f = QFormLayout(self)
        self.source = QComboBox()
        views = lab.views()
        for key, label in SOURCES.items():
            if key == "window" or key in views:
                self.source.addItem(label, key)
        self.source.setCurrentIndex(max(0, self.source.findData(o.source)))
        self.source.setToolTip("The 3D view renders off screen at the chosen size; the 2D view is redrawn at it; "
                               "the whole window is scaled to it")
        f.addRow("record", self.source)
        row = QHBoxLayout()
        self.path = QLineEdit(o.path)
        self.path.setMinimumWidth(380)
        self.path.setToolTip("An .mp4 (H.264) or .gif file; written under a temporary name until it is complete")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        f.addRow("file", row)
        self.fmt = QComboBox()
        self.fmt.addItem("MP4 (H.264)", ".mp4")
        self.fmt.addItem("GIF", ".gif")
        self.fmt.setCurrentIndex(1 if o.path.lower().endswith(".gif") else 0)
        self.fmt.currentIndexChanged.connect(self._on_format)
        f.addRow("format", self.fmt)
        self.size = QComboBox()
        self.size.setEditable(True)
        self.size.addItems(SIZES)
        self.size.setCurrentText(f"{o.width}x{o.height}")
        self.size.setToolTip("WIDTHxHEIGHT, up to 3840x2160; independent of the window's size")
        f.addRow("size", self.size)
        self.fps = QSpinBox()
        self.fps.setRange(1, 120)
        self.fps.setValue(o.fps)
        self.fps.setSuffix(" fps")
        f.addRow("frame rate", self.fps)
        self.clock = QComboBox()
        for key, label in CLOCKS.items():
            self.clock.addItem(label, key)
        self.clock.setCurrentIndex(max(0, self.clock.findData(o.clock)))
        self.clock.setToolTip("Steps: the runs advance exactly k steps per frame, so the video is smooth however "
                              "slow the machine. With nothing running (or paused) frames follow the camera.")
        f.addRow("clock", self.clock)
        self.k = QSpinBox()
        self.k.setRange(1, 10000)
        self.k.setValue(o.steps_per_frame)
        self.k.setToolTip("Training steps per frame")
        f.addRow("k (steps per frame)", self.k)
        row = QHBoxLayout()
        self.show_title = QCheckBox("title")
        self.show_title.setChecked(o.show_title)
        self.title = QLineEdit(o.title)
        self.title.setPlaceholderText(lab.title)
        row.addWidget(self.show_title)
        row.addWidget(self.title, 1)
        f.addRow("overlays", row)
        row = QHBoxLayout()
        self.show_step = QCheckBox("step counter")
        self.show_step.setChecked(o.show_step)
        self.show_loss = QCheckBox("loss")
        self.show_loss.setChecked(o.show_loss)
        row.addWidget(self.show_step)
        row.addWidget(self.show_loss)
        row.addStretch(1)
        f.addRow("", row)
        self.caption = QLineEdit(o.caption)
        self.caption.setPlaceholderText("a caption line at the bottom (optional)")
        f.addRow("caption", self.caption)
        self.error = QLabel()
        self.error.setStyleSheet("color:#ff6b6b;")
        self.error.setWordWrap(True)
        f.addRow(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Record")
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        f.addRow(buttons)
        self.options: RecordOptions | None = None

    def _on_format(self) -> None:
        root, _ = os.path.splitext(self.path.text())
        self.path.setText(root + self.fmt.currentData())

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Record to", self.path.text(), "Video (*.mp4 *.gif)")
        if path:
            self.path.setText(path)
            self.fmt.setCurrentIndex(1 if path.lower().endswith(".gif") else 0)

    def read(self) -> RecordOptions:
        """The options as entered; raises ValueError with a message for the user."""
        try:
            w, h = (int(v) for v in self.size.currentText().lower().replace(" ", "").split("x"))
        except ValueError:
            raise ValueError(f"size: WIDTHxHEIGHT, like 1920x1080, not '{self.size.currentText()}'") from None
        check_size(w, h)
        path = os.path.expanduser(self.path.text().strip())
        if not path:
            raise ValueError("choose a file to record to")
        if not path.lower().endswith((".mp4", ".gif")):
            path += self.fmt.currentData()
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create {folder}: {exc.strerror or exc}") from None
        try:
            check_output(path)
        except OSError as exc:
            raise ValueError(str(exc)) from None
        return RecordOptions(path=path, source=self.source.currentData(), width=w, height=h, fps=self.fps.value(),
                             clock=self.clock.currentData(), steps_per_frame=self.k.value(),
                             show_title=self.show_title.isChecked(), title=self.title.text(),
                             show_step=self.show_step.isChecked(), show_loss=self.show_loss.isChecked(),
                             caption=self.caption.text())

    def _accept(self) -> None:
        try:
            self.options = self.read()
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        self.options.save()
        self.accept()


class RecordIndicator(QWidget):
    """The status-bar indicator: a blinking red dot, elapsed time, frame count."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.dot = QLabel("●")
        self.text = QLabel()
        self.text.setStyleSheet("color:#ff6b6b;font-weight:bold;")
        lay.addWidget(self.dot)
        lay.addWidget(self.text)
        self._on = True
        self._blink = QTimer(self)
        self._blink.setInterval(500)
        self._blink.timeout.connect(self._toggle)
        self.setVisible(False)

    def _toggle(self) -> None:
        self._on = not self._on
        self.dot.setStyleSheet(f"color:{'#ff3b30' if self._on else '#1b1e25'};font-size:14pt;")

    def begin(self, opts: RecordOptions) -> None:
        self.opts = opts
        self.update_progress(0, 0.0)
        self._toggle()
        self._blink.start()
        self.setToolTip(f"Recording {SOURCES[opts.source]} to {opts.path} ({opts.width}x{opts.height}, "
                        f"{opts.fps} fps). Ctrl+R stops.")
        self.setVisible(True)

    def update_progress(self, frames: int, elapsed: float) -> None:
        m, s = divmod(int(elapsed), 60)
        vm, vs = divmod(frames / max(self.opts.fps, 1), 60)
        self.text.setText(f"REC {m:02d}:{s:02d} · {frames} frames ({int(vm)}:{vs:04.1f} of video)")

    def end(self) -> None:
        self._blink.stop()
        self.setVisible(False)
