"""The main window: lab switcher, controls dock, status bar (device, step, loss, FPS), shortcuts."""

from __future__ import annotations

import datetime as _dt
import math
import os
import signal
import sys
import tempfile
import time

from PySide6.QtCore import QStandardPaths, Qt, QThread, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QStackedWidget,
    QStyle,
    QToolBar,
    QWidget,
)

from visualizer import settings as store
from visualizer.labs import DEFAULT_LAB, LABS
from visualizer.qtsetup import collect_garbage_on_gui_thread, grab_window, prepare_qt

DARK_STYLE = """
QMainWindow, QWidget { background: #1b1e25; color: #d8dee9; }
QGroupBox { border: 1px solid #2e3440; border-radius: 5px; margin-top: 14px; padding-top: 4px; }
QGroupBox::title { subcontrol-origin: margin; left: 8px; padding: 0 4px; color: #88c0d0; }
QToolBar { border: none; spacing: 6px; padding: 3px; }
QStatusBar QLabel { padding: 0 6px; }
QPushButton { background: #2e3440; border: 1px solid #3b4252; border-radius: 4px; padding: 4px 10px; }
QPushButton:hover { background: #3b4252; }
QLineEdit, QSpinBox, QDoubleSpinBox, QComboBox, QTableWidget {
    background: #12141a; border: 1px solid #3b4252; border-radius: 3px; padding: 2px; }
QHeaderView::section { background: #2e3440; color: #d8dee9; border: none; }
QToolTip { background: #2e3440; color: #eceff4; border: 1px solid #4c566a; }
QLineEdit:disabled, QSpinBox:disabled, QDoubleSpinBox:disabled, QComboBox:disabled, QCheckBox:disabled,
QPushButton:disabled, QSlider:disabled, QLabel:disabled { color: #5c6370; }
QLineEdit:disabled, QSpinBox:disabled, QDoubleSpinBox:disabled, QComboBox:disabled { background: #181a20; }
"""


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def save_image(img, path: str) -> str | None:
    """Write the QImage ``img`` to ``path`` (PNG or JPEG, from the name) through a temporary file in the same
    folder and a rename, with the permissions a new file gets (the umask respected). None when written, else
    why not, in words."""
    from models.export import new_file_mode

    folder = os.path.dirname(os.path.abspath(path))
    fmt = "JPG" if path.lower().endswith((".jpg", ".jpeg")) else "PNG"
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".losslab-", suffix="." + fmt.lower(), dir=folder)
        os.close(fd)
        if img.isNull() or not img.save(tmp, fmt):
            raise OSError("the image could not be encoded")
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        return str(exc)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return None


class TorchLoader(QThread):
    """Imports torch off the GUI thread and reports the compute devices."""

    devices = Signal(list)

    def run(self) -> None:
        try:
            from models.procrun import warm_up
            from models.train import available_devices

            warm_up()
            self.devices.emit(available_devices())
        except Exception:  # torch failed to import: the labs report it when they compute
            self.devices.emit(["cpu"])


class MainWindow(QMainWindow):
    def __init__(self, lab: str | None = None, device: str | None = None, lab_options: dict | None = None) -> None:
        """``lab_options``: lab key -> keyword arguments for that lab's constructor (the surface lab's
        ``open_path`` and ``user_model`` from the command line)."""
        super().__init__()
        self.lab_options = dict(lab_options or {})
        self.setWindowTitle("losslab")
        self.setStyleSheet(DARK_STYLE)
        self.device = device or "cpu"
        self._device_requested = device
        self.labs: dict[str, QWidget] = {}
        self._control_scrolls: dict[str, QScrollArea] = {}  # the controls of each lab, in its own scroll area
        self._frames = 0
        self._closing = False
        self._closed = False
        self._started = False
        self._started_labs: set[int] = set()
        #: the last error a lab reported (a file that cannot be opened, a failed computation); the window's own
        #: notes (stored settings that went back to their defaults) are not counted. ``--screenshot`` exits 1 on it
        self.lab_error: str | None = None

        self.stack = QStackedWidget()
        self.setCentralWidget(self.stack)
        self.dock = QDockWidget("Controls")
        self.dock.setObjectName("controls")
        self.dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.dock)

        self._build_toolbar()
        self._build_status()

        geo = store.get("window/geometry")
        restored = False
        if isinstance(geo, str) and len(geo) < 10000:
            from PySide6.QtCore import QByteArray

            restored = self.restoreGeometry(QByteArray.fromBase64(geo.encode("ascii", "ignore")))
        if not restored or self.width() < 400:
            self.resize(1500, 900)
        stored_lab = store.get("window/lab", DEFAULT_LAB)
        start = lab or (stored_lab if isinstance(stored_lab, str) else DEFAULT_LAB)
        if start not in LABS:
            start = DEFAULT_LAB
        self.switch_lab(start)
        if store.last_problem:
            self._on_message(store.last_problem, True)
            store.last_problem = None

        self._fps_timer = QTimer(self)
        self._fps_timer.setInterval(1000)
        self._fps_timer.timeout.connect(self._update_fps)
        self._fps_timer.start()
        self._loader = TorchLoader(self)
        self._loader.devices.connect(self._on_devices)

    def paintEvent(self, ev) -> None:
        super().paintEvent(ev)
        if not self._started:
            # Heavy work (importing torch, the first grid) starts only once the window is on screen: an
            # import in a thread holds the GIL for long stretches and would delay the first frame.
            self._started = True
            QTimer.singleShot(30, self._start_background)
            from visualizer.workers import test_event

            test_event("first-frame")

    def _start_background(self) -> None:
        if self._closing:
            return
        self._loader.start()
        if self.pending_scene:
            path, self.pending_scene = self.pending_scene, None
            if self.open_scene(path, play=True):
                return
        self._start_lab(self.lab())

    def mark_started(self, lab) -> None:
        """``lab`` was started by someone else (the scene player): do not start it again."""
        self._started_labs.add(id(lab))

    def _start_lab(self, lab) -> None:
        if id(lab) not in self._started_labs:
            self._started_labs.add(id(lab))
            lab.start()

    # ----------------------------------------------------------------------------- building
    def _build_toolbar(self) -> None:
        tb = QToolBar("Main")
        tb.setObjectName("main_toolbar")
        tb.setMovable(False)
        self.addToolBar(tb)
        tb.addWidget(QLabel(" Lab: "))
        self.lab_combo = QComboBox()
        for key, info in LABS.items():
            self.lab_combo.addItem(info.title, key)
            self.lab_combo.setItemData(self.lab_combo.count() - 1, info.summary, Qt.ItemDataRole.ToolTipRole)
        self.lab_combo.currentIndexChanged.connect(lambda i: self.switch_lab(self.lab_combo.itemData(i)))
        tb.addWidget(self.lab_combo)
        tb.addSeparator()
        st = self.style()

        def action(text, icon, key, slot, tip):
            a = QAction(st.standardIcon(icon), text, self)
            a.setShortcut(QKeySequence(key))
            a.setToolTip(f"{tip} ({QKeySequence(key).toString()})")
            a.triggered.connect(slot)
            tb.addAction(a)
            return a

        P = QStyle.StandardPixmap
        self.run_state = "idle"
        self.last_error: str | None = None
        self.devices_known = False
        self.act_run = action("Start / pause", P.SP_MediaPlay, Qt.Key.Key_Space, lambda: self.lab().toggle_run(),
                              "Start a descent, or pause/resume all")
        self.act_step = action("Step", P.SP_MediaSeekForward, Qt.Key.Key_S, lambda: self.lab().single_step(),
                               "Advance every descent by one step")
        self.act_reset = action("Reset", P.SP_BrowserReload, Qt.Key.Key_R, lambda: self.lab().reset(),
                                "Stop and clear all descents")
        tb.addSeparator()
        self.act_shot = action("Screenshot", P.SP_DialogSaveButton, QKeySequence.StandardKey.Save,
                               self.save_screenshot, "Save a PNG of the active view")
        self.act_help = action("Help", P.SP_DialogHelpButton, Qt.Key.Key_F1, self.show_help,
                               "What this lab shows")
        tb.addSeparator()
        from visualizer.recording.live import record_icon

        self.act_record = QAction(record_icon(False), "Record", self)
        self.act_record.setShortcut(QKeySequence("Ctrl+R"))
        self.act_record.setToolTip("Record a video of the 3D view, the 2D view or the window (Ctrl+R; again to stop)")
        self.act_record.triggered.connect(self.toggle_recording)
        tb.addAction(self.act_record)
        self.act_open_scene = action("Open scene", P.SP_DirOpenIcon, QKeySequence("Ctrl+O"), self.ask_open_scene,
                                     "Open a scene file (TOML) to preview, scrub, edit and render")
        self.act_open_tour = action("Open tour", P.SP_DirLinkIcon, QKeySequence("Ctrl+Shift+O"),
                                    lambda: self.open_tour(), "Present a tour file (TOML) full screen: the lecture, "
                                    "chapter by chapter (Ctrl+Shift+O)")
        self.act_save_scene = action("Save scene", P.SP_FileDialogDetailedView, QKeySequence("Ctrl+Shift+S"),
                                     self.save_scene_as, "Save the current lab, settings and camera keyframes as a "
                                     "scene file to start a demo from")
        self.act_keyframe = action("Add keyframe", P.SP_FileDialogNewFolder, QKeySequence("Ctrl+K"),
                                   self.add_keyframe, "Append the current camera to the scene's timeline")

    def _build_status(self) -> None:
        sb = self.statusBar()
        self.step_label = QLabel("step —")
        self.loss_label = QLabel("loss —")
        self.fps_label = QLabel("— fps")
        self.device_combo = QComboBox()
        self.device_combo.addItem("cpu")
        self.device_combo.setToolTip("Compute device for new computations (CUDA appears when available)")
        self.device_combo.currentTextChanged.connect(self._on_device_changed)
        from visualizer.recording.live import RecordIndicator

        self.rec_indicator = RecordIndicator()
        self.recorder = None
        self.player = None
        self.player_dock = None
        self.edit_scene = None
        self.pending_scene: str | None = None
        for w in (self.rec_indicator, self.step_label, self.loss_label, self.fps_label, QLabel("device:"),
                  self.device_combo):
            sb.addPermanentWidget(w)

    # ----------------------------------------------------------------------------- labs
    def lab(self):
        return self.stack.currentWidget()

    def switch_lab(self, key: str) -> None:
        if key not in LABS or (key == getattr(self, "current_key", None) and self.labs.get(key) is self.lab()):
            return
        if self.recorder is not None and self.recorder.active and key != getattr(self, "current_key", key):
            self.stop_recording()
            self._on_message("Switching labs ended the recording", False)
        hint = LABS[key].load().hint  # first: a message from building the lab (a stored value refused) wins
        self.statusBar().showMessage(f"{hint} · F1 for help" if hint else "F1 for help")
        if key not in self.labs:
            self._add_lab(key)
        lab = self.labs[key]
        self.stack.setCurrentWidget(lab)
        if self._started:
            self._start_lab(lab)
        # one scroll area per lab, made once: a lab's controls handed to a second scroll area stay watched by the
        # first, and the two resize them in turn without end (a stack overflow when a lab is shown again)
        scroll = self._control_scrolls.get(key)
        if scroll is None:
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setWidget(lab.controls())
            scroll.setMinimumWidth(310)
            self._control_scrolls[key] = scroll
        self.dock.setWidget(scroll)
        self.dock.setWindowTitle(f"Controls · {LABS[key].title}")
        i = self.lab_combo.findData(key)
        if i != self.lab_combo.currentIndex():
            self.lab_combo.blockSignals(True)
            self.lab_combo.setCurrentIndex(i)
            self.lab_combo.blockSignals(False)
        self.current_key = key

    def _add_lab(self, key: str):
        """The lab ``key`` built, wired to the window (status, messages, frame count) and put in its stack, not
        shown: what switching to a lab does first, and what a tour does to prepare a chapter's lab."""
        lab = self._build_lab(key)
        lab.status.connect(self._on_status)
        lab.message.connect(self._on_lab_message)
        lab.frame_drawn.connect(self._count_frame)
        self.labs[key] = lab
        self.stack.addWidget(lab)
        return lab

    def _build_lab(self, key: str):
        """The lab with its stored settings; if they make it fail to build, with its defaults (and a message
        that names the error and the log). A stored value never stops the app from starting."""
        from visualizer.errorlog import report

        cls = LABS[key].load()
        options = self.lab_options.get(key, {})
        try:
            lab = cls(device=self.device, start=False, **options)
        except Exception as exc:
            text = report(f"The stored settings of the {key} lab could not be used; it starts with its defaults",
                          exc)
            lab = cls(device=self.device, start=False, restore=False, **options)
            lab.save_state()  # the defaults replace what failed, so the next start is clean
            self._on_message(text, True)
            return lab
        if lab.restore_problems:
            n = len(lab.restore_problems)
            self._on_message(f"{n} stored setting{'s' if n > 1 else ''} of the {key} lab could not be used and "
                             f"went back to the default: " + " · ".join(lab.restore_problems), True)
        return lab

    # ----------------------------------------------------------------------------- status
    def _on_status(self, d: dict) -> None:
        if "step" in d:
            self.step_label.setText(f"step {d['step']:,}")
        if "loss" in d:
            loss = d["loss"]
            self.loss_label.setText("loss —" if not math.isfinite(loss) else f"loss {loss:.3e}")
        if "paused" in d:
            self._set_run_state("paused" if d["paused"] else "running")
        if "running" in d:
            self._set_run_state("running" if d["running"] else "idle")

    def _set_run_state(self, state: str) -> None:
        """The Start/pause button shows what Space will do: 'running' (pause), 'paused' or 'idle' (start)."""
        self.run_state = state
        running = state == "running"
        self.act_run.setIcon(self.style().standardIcon(
            QStyle.StandardPixmap.SP_MediaPause if running else QStyle.StandardPixmap.SP_MediaPlay))
        self.act_run.setText("Pause" if running else ("Resume" if state == "paused" else "Start"))

    def _on_lab_message(self, text: str, is_error: bool) -> None:
        if is_error:
            self.lab_error = text
        self._on_message(text, is_error)

    def _on_message(self, text: str, is_error: bool) -> None:
        if is_error:
            self.last_error = text  # what the status bar showed last as an error, after it has faded
        self.statusBar().setStyleSheet("QStatusBar{color:#ff8080;}" if is_error else "")
        self.statusBar().showMessage(text, 15000 if is_error else 8000)

    def _count_frame(self) -> None:
        self._frames += 1

    def _update_fps(self) -> None:
        self.fps_label.setText(f"{self._frames} fps")
        self._frames = 0

    def _on_devices(self, devices: list) -> None:
        self.device_combo.blockSignals(True)
        self.device_combo.clear()
        for d in devices:
            self.device_combo.addItem(d)
        want = self._device_requested or devices[0]
        if want not in devices:
            self._on_message(f"Device {want} is not available here; using {devices[0]}", True)
            want = devices[0]
        self.device_combo.setCurrentText(want)
        self.device_combo.blockSignals(False)
        self._on_device_changed(want)
        self.devices_known = True

    def _on_device_changed(self, dev: str) -> None:
        if not dev:
            return
        self.device = dev
        for lab in self.labs.values():
            lab.set_device(dev)

    # ----------------------------------------------------------------------------- actions
    def save_screenshot(self, path: str | None = None) -> str | None:
        view = self.lab().active_view()
        img = view.grabFramebuffer() if hasattr(view, "grabFramebuffer") else view.grab().toImage()
        if path is None:
            folder = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation) or os.getcwd()
            folder = os.path.join(folder, "losslab")
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            path = os.path.join(folder, f"losslab-{self.current_key}-{stamp}.png")
        problem = save_image(img, path)
        if problem is not None:
            self._on_message(f"Screenshot not saved: {problem}", True)
            return None
        self._on_message(f"Saved {path}", False)
        return path

    # ----------------------------------------------------------------------------- recording
    def toggle_recording(self) -> None:
        if self.recorder is not None and self.recorder.active:
            self.stop_recording()
            return
        from visualizer.recording.live import RecordDialog

        dlg = RecordDialog(self.lab(), self)
        if dlg.exec() != RecordDialog.DialogCode.Accepted or dlg.options is None:
            return
        self.start_recording(dlg.options)

    def start_recording(self, opts) -> bool:
        """Start recording with ``opts`` (a RecordOptions); False with a message when it cannot."""
        from visualizer.recording.live import LiveRecorder, record_icon

        if self.recorder is not None and self.recorder.active:
            self.stop_recording()
        try:
            rec = LiveRecorder(self, self.lab(), opts, self)
        except (OSError, ValueError) as exc:
            self._on_message(f"Cannot record: {exc}", True)
            return False
        rec.progress.connect(self.rec_indicator.update_progress)
        rec.finished.connect(lambda path, n: self._on_message(f"Saved {n} frames to {path}", False))
        rec.failed.connect(self._on_record_failed)
        self.recorder = rec
        rec.start()
        self.rec_indicator.begin(opts)
        self.act_record.setIcon(record_icon(True))
        self.act_record.setText("Stop recording")
        self._on_message(f"Recording to {opts.path} · Ctrl+R stops", False)
        return True

    def stop_recording(self, wait: bool = False) -> None:
        from visualizer.recording.live import record_icon

        if self.recorder is None:
            return
        self.recorder.stop(wait=wait)
        self.rec_indicator.end()
        self.act_record.setIcon(record_icon(False))
        self.act_record.setText("Record")
        if not wait:
            self._on_message(f"Finishing {self.recorder.opts.path}…", False)

    # ----------------------------------------------------------------------------- scenes
    def ask_open_scene(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self, "Open scene", os.getcwd(), "Scene (*.toml)")
        if path:
            self.open_scene(path, play=True)

    def open_scene(self, path: str, play: bool = False) -> bool:
        """Preview the scene in ``path`` in the player (``play``: start playing it); a malformed scene is
        reported and nothing changes."""
        from visualizer.recording.player import ScenePlayer
        from visualizer.recording.scene import SceneError, load_scene

        try:
            scene = load_scene(path, LABS)
        except SceneError as exc:
            self._on_message(str(exc), True)
            QMessageBox.warning(self, "Scene not opened", str(exc))
            return False
        if self.recorder is not None and self.recorder.active:
            self.stop_recording()
        if self.player is None:
            self.player = ScenePlayer(self)
            self.player.closed.connect(self._on_player_closed)
            self.player.message.connect(self._on_message)
            self.player_dock = QDockWidget("Scene")
            self.player_dock.setObjectName("scene_player")
            self.player_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
            self.player_dock.setWidget(self.player)
            self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.player_dock)
        self.player_dock.show()
        self.player.load(scene)
        if play:
            self.player.toggle_play()
        self._on_message(f"Scene {os.path.basename(path)}: Play, or scrub the timeline · Render… writes a video",
                         False)
        return True

    def _on_player_closed(self) -> None:
        self.player_dock.hide()

    def player_active(self) -> bool:
        return self.player is not None and self.player.scene is not None

    def add_keyframe(self):
        """Append the current camera to the scene being edited (the player's, else one started from the lab)."""
        from visualizer.recording.player import current_camera, scene_from_lab

        if self.player_active():
            return self.player.add_keyframe()
        lab = self.lab()
        if "3d" not in lab.views():
            self._on_message("This lab has no 3D view to take a camera from", True)
            return None
        sc = self.edit_scene
        if sc is None or sc.lab != self.current_key:
            sc = self.edit_scene = scene_from_lab(lab)
            t, cam = sc.camera[0]
        else:
            t, cam = (sc.camera[-1][0] + 2.0 if sc.camera else 0.0), current_camera(lab)
            sc.camera.append((t, cam))
            sc.duration = max(sc.duration, t)
        self._on_message(f"Keyframe {len(sc.camera)} at {t:.1f} s (azimuth {cam.azimuth:.0f}°, elevation "
                         f"{cam.elevation:.0f}°) · Save scene writes the timeline", False)
        return t, cam

    def save_scene_as(self, path: str | None = None) -> str | None:
        """Write the scene being edited (or the current lab, settings and camera) as a scene file."""
        from PySide6.QtWidgets import QFileDialog

        from visualizer.recording.player import scene_from_lab
        from visualizer.recording.scene import save_scene

        if self.player_active():
            if path is None:
                self.player.save_as()
                return self.player.scene.path if self.player.scene else None
            return path if self.player.save(path) else None
        lab = self.lab()
        sc = self.edit_scene
        if sc is None or sc.lab != self.current_key:
            sc = self.edit_scene = scene_from_lab(lab)
        sc.settings = lab.settings_dict()
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save scene", os.path.join(os.getcwd(),
                                                  f"{self.current_key}.toml"), "Scene (*.toml)")
            if not path:
                return None
            if not path.lower().endswith(".toml"):
                path += ".toml"
        try:
            save_scene(sc, path, comment=f"losslab scene: {lab.title}")
        except (OSError, ValueError) as exc:
            self._on_message(f"Scene not saved: {exc}", True)
            return None
        sc.path = path
        self._on_message(f"Saved {path} · open it with: losslab {path}", False)
        return path

    def open_tour(self, path: str | None = None):
        """Open tour: present the tour file in ``path`` (asked for when None) full screen, with the speaker
        notes beside it (``visualizer.tour_presenter``). Returns the presenter, or None when none opened."""
        from visualizer.tour_presenter import open_tour

        if path is None:
            from PySide6.QtWidgets import QFileDialog

            path, _ = QFileDialog.getOpenFileName(self, "Open tour", os.getcwd(), "Tour (*.toml)")
            if not path:
                return None
        return open_tour(self, path)

    def _on_record_failed(self, text: str) -> None:
        self.stop_recording()
        self._on_message(f"Recording failed: {text}", True)

    def show_help(self) -> None:
        box = QMessageBox(self)
        box.setWindowTitle(f"About this lab · {LABS[self.current_key].title}")
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setText(self.lab().help_html())
        box.setStandardButtons(QMessageBox.StandardButton.Ok)
        box.setModal(False)
        box.show()
        self._help_box = box

    def closeEvent(self, ev) -> None:
        """Finish a recording, stop every lab and worker, end every training process (whatever it is doing:
        abort, then SIGTERM, then SIGKILL, each wait bounded), save the window's settings."""
        if self._closed:
            super().closeEvent(ev)
            return
        self._closing = True
        from visualizer.errorlog import report

        try:
            self._fps_timer.stop()
            if self.recorder is not None:
                self.stop_recording(wait=True)  # a recording in progress is finished into a valid file first
            if self.player_active():
                self.player.close_player()
            for lab in self.labs.values():
                try:
                    lab.shutdown()
                except Exception as exc:  # one lab failing to stop must not keep the others' processes alive
                    report(f"The {getattr(lab, 'key', 'lab')} lab did not shut down cleanly", exc)
        finally:
            from models.procrun import end_runs
            from visualizer.workers import join_all

            join_all(8.0)  # the window is closing: the workers end their child processes (bounded)
            end_runs()  # a child whose runner could not end it (its thread stuck): SIGTERM, then SIGKILL
            self._loader.wait(5000)
            self._closed = True
        store.put("window/geometry", bytes(self.saveGeometry().toBase64()).decode("ascii"))
        store.put("window/lab", self.current_key)
        super().closeEvent(ev)


def screenshot_problem(path: str) -> str | None:
    """Why ``--screenshot PATH`` cannot be written (a folder missing or not writable, a name that is not .png
    or .jpg), in one line; None when it can. Checked before the window opens."""
    from models.export import check_output_path

    return check_output_path(path, IMAGE_SUFFIXES, "--screenshot")


def _leave(code: int) -> None:
    """End every process this one started (bounded), then exit at once, skipping the interpreter's teardown of
    Qt objects: PySide's exit-time destruction of GL windows inside window containers is crash-prone."""
    try:
        from models.procrun import end_all

        end_all()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


class _SignalCloser:
    """SIGTERM, SIGINT and SIGHUP close the window as its close button does (the labs stop, the children end,
    the settings are saved), then the app exits with 128 + the signal's number. A second signal while closing
    ends every child process at once and leaves.

    Python runs a signal handler only between bytecodes of the main thread; while Qt's event loop waits in
    C++ nothing would run it, so a timer gives the interpreter a turn a few times a second."""

    NAMES = ("SIGTERM", "SIGINT", "SIGHUP")

    def __init__(self, app: QApplication) -> None:
        self.app = app
        self.win: MainWindow | None = None
        self.signum: int | None = None
        self.exiting = False  # the event loop has returned: the ending is under way, a signal changes nothing
        for name in self.NAMES:
            sig = getattr(signal, name, None)
            if sig is not None:
                try:
                    signal.signal(sig, self._handle)
                except (OSError, ValueError):  # not the main thread (a test): no handler
                    pass
        self.timer = QTimer(app)
        self.timer.setInterval(200)
        self.timer.timeout.connect(lambda: None)
        self.timer.start()

    def _handle(self, signum, frame) -> None:
        if self.exiting:
            return
        if self.signum is not None or (self.win is not None and self.win._closing):
            _leave(128 + signum)  # already closing (a signal, the close button): end the children now, leave
        self.signum = signum
        QTimer.singleShot(0, self._close)

    def _close(self) -> None:
        if self.win is not None:
            self.win.close()
        self.app.exit(128 + (self.signum or 0))


def _listen_for_test_commands(win: MainWindow):
    """With LOSSLAB_TEST_EVENTS set: a line ``close`` on standard input closes the window (as its close button
    would), for the process-hygiene tests."""
    if not os.environ.get("LOSSLAB_TEST_EVENTS"):
        return None
    from PySide6.QtCore import QSocketNotifier

    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    notifier = QSocketNotifier(fd, QSocketNotifier.Type.Read, win)

    def read() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            notifier.setEnabled(False)
        elif b"close" in data:
            win.close()

    notifier.activated.connect(read)
    return notifier


def run_app(lab=None, device=None, size=None, screenshot=None, report_startup=False, t0=None,
            open_path=None, scene_path=None, user_model=None) -> int:
    """Create the application and the main window; returns the exit code (in fact never returns: the process
    exits, once every process it started has ended). With ``screenshot`` the exit code is 1 when the picture
    could not be saved or the lab reported an error, 2 when the path cannot be written (before any window)."""
    if screenshot:
        problem = screenshot_problem(screenshot)
        if problem:
            print(f"losslab: {problem}", file=sys.stderr)
            return 2
    line = store.check_config()
    if line:
        print(f"losslab: {line}", file=sys.stderr, flush=True)
        store.last_problem = f"{store.last_problem} · {line}" if store.last_problem else line
    prepare_qt()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("losslab")
    app.setOrganizationName("losslab")
    closer = _SignalCloser(app)
    collect_garbage_on_gui_thread()
    surface = {k: v for k, v in (("open_path", open_path), ("user_model", user_model)) if v}
    win = MainWindow(lab=lab, device=device, lab_options={"surface": surface} if surface else None)
    closer.win = win
    win.pending_scene = scene_path
    if size:
        win.resize(*size)
    win.show()
    commands = _listen_for_test_commands(win)  # noqa: F841 - kept alive while the app runs
    if report_startup:
        from PySide6.QtCore import QEvent, QObject

        class FirstPaint(QObject):
            def eventFilter(self, obj, ev):
                if ev.type() == QEvent.Type.Paint:
                    print(f"startup_ms {(time.perf_counter() - (t0 or 0)) * 1e3:.1f}", flush=True)
                    QTimer.singleShot(0, win.close)
                    app.removeEventFilter(self)
                return False

        filt = FirstPaint()
        app.installEventFilter(filt)
    shot: dict = {"taken": False, "problem": None}
    if screenshot:
        tries = [0]

        def take() -> None:
            shot["taken"] = True
            shot["problem"] = save_image(grab_window(win), screenshot)
            win.close()

        def grab_when_ready():
            labw = win.lab()
            # the lab's own word (its contract): nothing computing, no run producing steps, something drawn
            # (or an error reported: then nothing more will come, and the picture shows the error)
            settled = not labw.busy() and not labw.runners()
            ready = settled and (labw.has_drawn() or win.lab_error is not None)
            tries[0] += 1
            if not ready and tries[0] < 600:
                QTimer.singleShot(100, grab_when_ready)
                return
            QTimer.singleShot(600, take)

        QTimer.singleShot(300, grab_when_ready)
    code = 1
    try:
        code = app.exec()
    finally:
        closer.exiting = True
        try:
            if not win._closed:  # the event loop ended without the window closing: close it now
                win.close()
        except Exception:
            pass
        if closer.signum is not None:
            code = 128 + closer.signum
        elif screenshot:
            if not shot["taken"]:
                print("losslab: the window closed before the screenshot was taken", file=sys.stderr)
                code = code or 1
            elif shot["problem"]:
                print(f"losslab: screenshot not saved to {screenshot}: {shot['problem']}", file=sys.stderr)
                code = code or 1
            if win.lab_error:
                first = win.lab_error.strip().splitlines()[0] if win.lab_error.strip() else "an error"
                print(f"losslab: the lab reported an error: {first}", file=sys.stderr)
                code = code or 1
        # Everything is saved and every worker stopped in closeEvent; the processes still running end now.
        _leave(code)
    return code
