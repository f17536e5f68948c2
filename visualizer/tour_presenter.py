"""Presenter mode: a tour (``visualizer.recording.tour``) presented live on the main window, full screen.

The current chapter plays on its lab exactly as the scene player plays a scene (the same driver, synchronous
runs, the simulation clock), and waits at each of its pause points. Keys (a presenter clicker sends the same):
Right / Page Down / Down go on to the next pause point or chapter (pressed while a step plays, they finish it at
once), Left / Page Up / Up go back a step or a chapter, Space pauses and resumes, B or . blanks the screen (any
key restores it), 1-9 and 0 jump to chapters 1-10, Escape leaves. The chapter list, the speaker notes, the next
chapter and the time since the start show in a second window on another screen, or in a side panel when there
is one screen.

While the tour waits (a pause point, Space) the lab is the lecturer's: a click starts a descent, a point can be
dragged, and runs go to child processes as in the app. Going on then restores the chapter where the tour left
it, replayed on the simulation clock from its start (a progress bar shows the replay), and plays on.

Switching chapters never blocks the window, and the next chapter's first grid is computed while the current
one plays: its lab is set up on the next scene's settings beforehand (its own workers compute in their threads;
a lab that the current chapter uses, or whose first picture comes from a run on the scene's clock, is set up when
its chapter starts). Title cards are painted by
``tour.card_image``, as in the rendered video.
"""

from __future__ import annotations

import json
import os
import time
import weakref

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QColor, QGuiApplication, QPainter
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QDockWidget,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QProgressBar,
    QSizePolicy,
    QStackedWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

NEXT_KEYS = (Qt.Key.Key_Right, Qt.Key.Key_PageDown, Qt.Key.Key_Down)
BACK_KEYS = (Qt.Key.Key_Left, Qt.Key.Key_PageUp, Qt.Key.Key_Up)
BLANK_KEYS = (Qt.Key.Key_B, Qt.Key.Key_Period)
DIGITS = {getattr(Qt.Key, f"Key_{d}"): (d - 1) % 10 for d in range(10)}  # 1 -> chapter 1, ..., 0 -> chapter 10
KEYS = (*NEXT_KEYS, *BACK_KEYS, *BLANK_KEYS, *DIGITS, Qt.Key.Key_Space, Qt.Key.Key_Escape)
KEY_HELP = "→ / PgDn next · ← / PgUp back · Space pause · B blank · 1-9, 0 chapter · Esc leave"


class CardView(QWidget):
    """A title card, painted at the widget's size (as the rendered video paints it)."""

    def __init__(self, footer: str = "", parent=None) -> None:
        super().__init__(parent)
        self.card = None
        self.footer = footer
        self._image = None

    def show_card(self, card) -> None:
        self.card, self._image = card, None
        self.update()

    def paintEvent(self, ev) -> None:
        from visualizer.recording.tour import CARD_BACKGROUND, card_image

        if self.card is not None and (self._image is None or self._image.size() != self.size()):
            self._image = card_image(self.card, max(16, self.width()), max(16, self.height()), self.footer)
        p = QPainter(self)
        if self.card is None:
            p.fillRect(self.rect(), QColor(CARD_BACKGROUND))
        else:
            p.drawImage(0, 0, self._image)
        p.end()


class NotesPanel(QWidget):
    """What only the lecturer sees: the chapter list (a click jumps), the speaker notes, the next chapter, the
    step, the time since the start and the keys."""

    def __init__(self, presenter: Presenter, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("losslab · presenter notes")
        self.setStyleSheet("QWidget { background: #1b1e25; color: #d8dee9; font-size: 15px; }"
                           "QListWidget::item:selected { background: #3b4252; color: #88c0d0; }")
        lay = QVBoxLayout(self)
        self.clock = QLabel()
        self.clock.setStyleSheet("font-size: 22px; font-weight: bold; color: #88c0d0;")
        lay.addWidget(self.clock)
        self.state = QLabel()
        lay.addWidget(self.state)
        self.chapters = QListWidget()
        self.chapters.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        for k, ch in enumerate(presenter.tour.chapters, 1):
            self.chapters.addItem(f"{k}. {ch.title}" + ("  (card)" if ch.card is not None else ""))
        self.chapters.itemClicked.connect(lambda item: presenter.goto(self.chapters.row(item)))
        lay.addWidget(self.chapters, 2)
        self.notes = QPlainTextEdit()
        self.notes.setReadOnly(True)
        self.notes.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.notes.setStyleSheet("font-size: 19px;")
        lay.addWidget(self.notes, 3)
        self.next = QLabel()
        self.next.setWordWrap(True)
        lay.addWidget(self.next)
        keys = QLabel(KEY_HELP)
        keys.setWordWrap(True)
        keys.setStyleSheet("color: #5c6370; font-size: 12px;")
        lay.addWidget(keys)


class Presenter(QObject):
    """Presents ``tour`` on the main window ``win``. ``notes``: 'window' (a second window, on another screen
    when there is one), 'panel' (a side panel of the main window) or 'auto' (a window when there are two
    screens, else the panel); ``full_screen`` as it says. ``leave()`` gives the window back as it was."""

    def __init__(self, win, tour, notes: str = "auto", full_screen: bool = True) -> None:
        super().__init__(win)
        from visualizer.recording.player import ScenePlayer

        self._win = weakref.ref(win)
        self.tour = tour
        self.index = -1
        self.step = 0
        self.mode = "idle"  # playing | seeking | restoring | held | card | failed
        self.blanked = False
        self._then_play = False
        self._fingerprint = None
        self._prepared: dict[int, object] = {}
        self._t0 = time.monotonic()
        self.player = ScenePlayer(win)  # never shown: the presenter shows its captions and progress
        self.player.message.connect(self._on_player_message)
        self._build(win, notes, full_screen)
        QApplication.instance().installEventFilter(self)
        self._timer = QTimer(self)
        self._timer.setInterval(30)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    # ------------------------------------------------------------------ the window
    def _build(self, win, notes: str, full_screen: bool) -> None:
        from visualizer.recording.tour import CARD_BACKGROUND

        self._was = {"full": win.isFullScreen(), "max": win.isMaximized(),
                     "hidden": [w for w in (win.findChild(QToolBar, "main_toolbar"), win.dock, win.player_dock,
                                            win.statusBar()) if w is not None and w.isVisible()]}
        for w in self._was["hidden"]:
            w.hide()
        # the labs' stack, a title card and the blank screen, one at a time in the window's centre
        self.stage = QStackedWidget()
        self.stage.addWidget(win.takeCentralWidget())  # (the window's lab stack, given back on leave)
        self.card_view = CardView(self.tour.title)
        self.stage.addWidget(self.card_view)
        self.blank = QWidget()
        self.blank.setStyleSheet("background: black;")
        self.stage.addWidget(self.blank)
        win.setCentralWidget(self.stage)
        self.top = QToolBar("Chapter")
        self.top.setObjectName("tour_chapter")
        self.top.setMovable(False)
        head = QWidget()
        lay = QVBoxLayout(head)
        lay.setContentsMargins(12, 4, 12, 4)
        self.title_label = QLabel()
        self.title_label.setStyleSheet("font-size: 26px; font-weight: bold; color: #88c0d0;")
        self.caption_label = QLabel()
        self.caption_label.setWordWrap(True)
        self.caption_label.setStyleSheet("font-size: 20px; color: #eceff4;")
        lay.addWidget(self.title_label)
        lay.addWidget(self.caption_label)
        head.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.top.addWidget(head)
        win.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.top)
        self.bottom = QToolBar("Captions")
        self.bottom.setObjectName("tour_captions")
        self.bottom.setMovable(False)
        foot = QWidget()
        lay = QVBoxLayout(foot)
        lay.setContentsMargins(12, 4, 12, 4)
        self.scene_caption = QLabel()
        self.scene_caption.setWordWrap(True)
        self.scene_caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.scene_caption.setStyleSheet("font-size: 22px; color: #ffffff;")
        self.scene_caption.setMinimumHeight(60)
        self.progress = QProgressBar()
        self.progress.setFormat("restoring the chapter on its simulation clock: frame %v of %m")
        self.progress.setVisible(False)
        self.step_label = QLabel()
        self.step_label.setAlignment(Qt.AlignmentFlag.AlignRight)
        self.step_label.setStyleSheet("color: #81a1c1; font-size: 15px;")
        lay.addWidget(self.scene_caption)
        lay.addWidget(self.progress)
        lay.addWidget(self.step_label)
        foot.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.bottom.addWidget(foot)
        win.addToolBar(Qt.ToolBarArea.BottomToolBarArea, self.bottom)
        for bar in (self.top, self.bottom):
            bar.setStyleSheet(f"QToolBar {{ background: {CARD_BACKGROUND}; border: none; }}")
        self.panel = NotesPanel(self)
        screens = QGuiApplication.screens()
        self.notes_dock = None
        if notes == "window" or (notes == "auto" and len(screens) > 1):
            others = [s for s in screens if s is not win.screen()]
            if others:
                self.panel.setGeometry(others[0].availableGeometry())
            self.panel.show()
        else:
            self.notes_dock = QDockWidget("Presenter notes")
            self.notes_dock.setObjectName("tour_notes")
            self.notes_dock.setFeatures(QDockWidget.DockWidgetFeature.NoDockWidgetFeatures)
            self.notes_dock.setWidget(self.panel)
            self.notes_dock.setFixedWidth(380)  # (the lab beside it keeps its size whatever the stage shows)
            win.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.notes_dock)
        if full_screen:
            win.showFullScreen()

    def leave(self) -> None:
        """End presenter mode: the scene stops, the window gets its lab stack, bars and docks back."""
        win = self._win()
        QApplication.instance().removeEventFilter(self)
        self._timer.stop()
        self.player.close_player()
        for lab in self._prepared.values():
            lab.use_runner_factory(None)
        self._prepared.clear()
        if win is None:
            return
        stack = self.stage.widget(0)
        self.stage.removeWidget(stack)
        win.takeCentralWidget()
        win.setCentralWidget(stack)
        self.stage.deleteLater()
        for w in (self.top, self.bottom, self.notes_dock):
            if w is not None:
                win.removeToolBar(w) if isinstance(w, QToolBar) else win.removeDockWidget(w)
                w.deleteLater()
        self.panel.close()
        self.panel.deleteLater()
        for w in self._was["hidden"]:
            w.show()
        if not self._was["full"]:
            win.showMaximized() if self._was["max"] else win.showNormal()
        if getattr(win, "presenter", None) is self:
            win.presenter = None
        self.player.deleteLater()
        self.deleteLater()

    # ------------------------------------------------------------------ the chapters
    def chapter(self):
        return self.tour.chapters[self.index]

    def bounds(self) -> list[int]:
        """The frames of the current chapter's steps: its pause points, then its last frame."""
        ch = self.chapter()
        last = ch.scene.frames - 1
        return [min(last, max(0, round(t * ch.scene.fps))) for t in ch.pauses] + [last]

    def reached(self) -> bool:
        """The step the tour plays to has been reached (the tour waits for the presenter)."""
        return self.player.scene is not None and self.player.current >= self.bounds()[self.step]

    def goto(self, i: int) -> None:
        """Show chapter ``i`` from its start (playing to its first pause point)."""
        if not 0 <= i < len(self.tour.chapters):
            return
        prepared = self._prepared.pop(i, None) is not None
        for lab in self._prepared.values():  # set up for a chapter that does not come next now
            if lab is not self.player.lab:
                lab.use_runner_factory(None)
        self._prepared.clear()
        self.index, self.step, self.blanked = i, 0, False
        self._fingerprint = None
        ch = self.chapter()
        self.player.playing = False
        self._show_bars(ch.card is None)
        if ch.card is not None:  # the card says it all: no bars around it
            self.mode = "card"
            self.card_view.show_card(ch.card)
            self.stage.setCurrentWidget(self.card_view)
        else:
            self.stage.setCurrentIndex(0)
            self.player.load(ch.scene, prepared=prepared)
            self.player.seek(0)  # (the player's target was the last chapter's)
            self._play_to_step()
        self._show_chapter()
        self._prepare_next()

    def next(self) -> None:
        """Right: on to the next pause point or chapter; while a step plays, finish it at once."""
        if self._unblank():
            return
        if self.mode in ("card", "failed"):
            self.goto(self.index + 1)
        elif self.mode == "playing":
            self.player.playing = False
            self.player.seek(self.bounds()[self.step])
            self.mode = "seeking"
        elif self.mode in ("seeking", "restoring"):
            if self.step + 1 < len(self.bounds()):
                self.step += 1
                self.player.seek(self.bounds()[self.step])
                self._then_play = False
            else:
                self.goto(self.index + 1)
        elif self.mode == "held":
            if not self.reached():
                self._go_on()
            elif self.step + 1 < len(self.bounds()):
                self.step += 1
                self._go_on()
            else:
                self.goto(self.index + 1)
        self._show_chapter()

    def back(self) -> None:
        """Left: back to the previous pause point (replayed), or to the previous chapter's start."""
        if self._unblank():
            return
        if self.mode in ("card", "failed") or self.player.scene is None or self.player.current <= 0:
            if self.index > 0:
                self.goto(self.index - 1)
            return
        earlier = [j for j, b in enumerate(self.bounds()) if b < self.player.current]
        self.step, frame = (earlier[-1], self.bounds()[earlier[-1]]) if earlier else (0, 0)
        self._take_lab_back(restart=self._touched())
        self.player.playing = False
        self.player.seek(frame)
        self.mode, self._then_play = "seeking", False
        self._show_progress()
        self._show_chapter()

    def toggle_pause(self) -> None:
        """Space: pause (the lab is the lecturer's meanwhile), or go on (restored first when it was touched)."""
        if self._unblank():
            return
        if self.mode == "playing":
            self.player.playing = False
            self._hold()
        elif self.mode == "held" and not self.reached():
            self._go_on()
        else:
            self.next()
        self._show_chapter()

    def toggle_blank(self) -> None:
        """B: a black screen (the bars too, and the notes panel on a single screen), and back."""
        if self._unblank():
            return
        self.blanked = True
        self._stage_page = self.stage.currentIndex()
        self.stage.setCurrentWidget(self.blank)
        self._show_bars(False)
        if self.notes_dock is not None:  # (one screen: the audience sees the panel too)
            self.notes_dock.hide()
        self._show_chapter()

    def _unblank(self) -> bool:
        if not self.blanked:
            return False
        self.blanked = False
        self.stage.setCurrentIndex(self._stage_page)
        self._show_bars(self.chapter().card is None)
        if self.notes_dock is not None:
            self.notes_dock.show()
        self._show_chapter()
        return True

    def _show_bars(self, shown: bool) -> None:
        self.top.setVisible(shown)
        self.bottom.setVisible(shown)

    # ------------------------------------------------------------------ playing, holding, restoring
    def _play_to_step(self) -> None:
        self.player.hold_at = self.bounds()[self.step]
        self.player.playing = False
        self.player.toggle_play()
        self.mode = "playing"

    def _go_on(self) -> None:
        """Play on to the current step; a lab the lecturer changed is first restored where the tour left it."""
        if self._touched():
            frame = max(self.player.current, 0)
            self._take_lab_back(restart=True)
            self.player.seek(frame)
            self.mode, self._then_play = "restoring", True
            self._show_progress()
            return
        self._take_lab_back(restart=False)
        self._play_to_step()

    def _hold(self) -> None:
        """The tour waits: the lab runs as in the app (the lecturer may explore) until the tour goes on."""
        self.mode = "held"
        lab = self.player.lab
        if lab is not None:
            self._fingerprint = _fingerprint(lab)
            lab.use_runner_factory(None)

    def _touched(self) -> bool:
        lab = self.player.lab
        return lab is not None and self._fingerprint is not None and _fingerprint(lab) != self._fingerprint

    def _take_lab_back(self, restart: bool) -> None:
        from visualizer.recording.driver import SyncRunner

        self._fingerprint = None
        if self.player.lab is None:
            return
        self.player.lab.use_runner_factory(SyncRunner)
        if restart:
            self.player.restart()  # (the lecturer's runs end; the scene replays from its start)

    def _tick(self) -> None:
        """Follows the player: a step reached, a replay done; keeps the bars and the notes current."""
        p = self.player
        if self.mode == "playing" and not p.playing and p.ready():
            self._hold()
        elif self.mode in ("seeking", "restoring") and p.ready():
            if self._then_play:
                self._then_play = False
                self._take_lab_back(restart=False)
                self._play_to_step()
            else:
                self._hold()
        self._show_progress()
        if p.scene is not None and p.driver is not None and self.mode != "card":
            self.scene_caption.setText(p.driver.captions(max(p.current, 0)))
        elapsed = int(time.monotonic() - self._t0)
        self.panel.clock.setText(f"{elapsed // 60:02d}:{elapsed % 60:02d} · chapter {self.index + 1} of "
                                 f"{len(self.tour.chapters)}")
        self._show_state()

    def _show_progress(self) -> None:
        """While the scene is replayed (restored, or moved to a step): how far the replay is."""
        p = self.player
        replaying = self.mode in ("seeking", "restoring") and p.scene is not None and p.current < p.target - 1
        if replaying:
            self.progress.setRange(0, p.target + 1)
            self.progress.setValue(max(p.current + 1, 0))
        self.progress.setVisible(replaying)

    def _prepare_next(self) -> None:
        """The next scene chapter's lab set up on its settings now, so that its first grid is computed (by the
        lab's own workers) while this chapter plays, not when the presenter presses Right. A lab this chapter
        plays on, and a lab whose first picture comes from a run, are set up when their chapter starts."""
        from visualizer.recording.driver import SceneDriver, SyncRunner

        j = self.index + 1
        if j >= len(self.tour.chapters) or self.tour.chapters[j].scene is None:
            return
        scene = self.tour.chapters[j].scene
        playing = self.player.lab if self.mode != "card" else None
        win = self._win()
        lab = win.labs.get(scene.lab) or win._add_lab(scene.lab)
        if lab is playing:
            return
        win.mark_started(lab)
        lab.use_runner_factory(SyncRunner)  # (runs it starts wait for the scene's clock)
        lab.reset()
        try:
            SceneDriver(scene, lab).begin(defaults=True)
        except ValueError as exc:  # it will fail again, and be reported, when its chapter starts
            win._on_message(f"Chapter {j + 1} could not be set up beforehand: {exc}", True)
            return
        if lab.runners():  # its first picture comes from a run, which starts with its chapter's clock
            lab.reset()
            return
        self._prepared[j] = lab

    # ------------------------------------------------------------------ what is shown
    def _show_chapter(self) -> None:
        ch = self.chapter()
        n = len(self.tour.chapters)
        self.title_label.setText(f"{self.index + 1} / {n}   {ch.title}")
        self.caption_label.setText(ch.caption)
        self.caption_label.setVisible(bool(ch.caption))
        if ch.card is not None:
            self.scene_caption.setText("")
        panel = self.panel
        panel.chapters.setCurrentRow(self.index)
        panel.notes.setPlainText(ch.notes or "(no notes for this chapter)")
        nxt = self.tour.chapters[self.index + 1].title if self.index + 1 < n else "(the end)"
        panel.next.setText(f"Next: {nxt}")
        self._show_state()

    def _show_state(self) -> None:
        ch = self.chapter() if self.index >= 0 else None
        if ch is None:
            return
        if ch.card is not None:
            text = "title card · → next chapter"
        else:
            steps = len(self.bounds())
            words = {"playing": "playing", "seeking": "moving to the step", "restoring": "restoring the scene",
                     "held": "waiting · the lab is yours" if not self.reached() or self.step + 1 < steps
                     else "chapter done · → next chapter", "failed": "this chapter stopped · → next"}
            text = f"step {min(self.step + 1, steps)} of {steps} · {words.get(self.mode, self.mode)}"
        if self.blanked:
            text = "SCREEN BLANKED (B or any key restores it) · " + text
        self.panel.state.setText(text)
        if ch.card is None:  # the audience sees where the chapter is: a dot a step, filled when reached
            done = self.step + (1 if self.reached() else 0)
            self.step_label.setText(" ".join("●" if j < done else "○" for j in range(len(self.bounds()))))

    def _on_player_message(self, text: str, is_error: bool) -> None:
        win = self._win()
        if win is not None:
            win._on_message(text, is_error)
        if is_error:
            self.mode = "failed"
            self.scene_caption.setText(text)

    # ------------------------------------------------------------------ keys
    def eventFilter(self, obj, ev) -> bool:
        kind = ev.type()
        if kind == QEvent.Type.Close and obj is self._win():  # the window closes: the scene stops first
            self._timer.stop()
            self.player.close_player()
            return False
        if kind not in (QEvent.Type.KeyPress, QEvent.Type.ShortcutOverride):
            return False
        key = ev.key()
        if key not in KEYS or ev.modifiers() & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier):
            return False
        if isinstance(QApplication.focusWidget(), (QLineEdit, QAbstractSpinBox)):
            return False  # typing into a control while exploring
        if kind == QEvent.Type.ShortcutOverride:
            ev.accept()  # the key comes as a key press (to here), not as the window's shortcut (Space: start)
            return True
        if ev.isAutoRepeat():
            return True
        self.key(key)
        return True

    def key(self, key) -> None:
        """What a presenter's key does (tests press them through qtbot; this is the one place they act)."""
        if key in NEXT_KEYS:
            self.next()
        elif key in BACK_KEYS:
            self.back()
        elif key == Qt.Key.Key_Space:
            self.toggle_pause()
        elif key in BLANK_KEYS:
            self.toggle_blank()
        elif key in DIGITS:
            if not self._unblank():
                self.goto(DIGITS[key])
        elif key == Qt.Key.Key_Escape and not self._unblank():
            self.leave()


def _fingerprint(lab) -> tuple:
    """What a lecturer's exploring changes: the lab's settings and its runs."""
    return json.dumps(lab.settings_dict(), sort_keys=True, default=repr), tuple(id(r) for r in lab.runners())


def open_tour(win, path: str, notes: str = "auto", full_screen: bool = True) -> Presenter | None:
    """Present the tour in ``path`` on ``win`` (a malformed tour is reported, and nothing changes)."""
    from PySide6.QtWidgets import QMessageBox

    from visualizer.labs import LABS
    from visualizer.recording.scene import SceneError
    from visualizer.recording.tour import load_tour

    try:
        tour = load_tour(path, LABS)
    except SceneError as exc:
        win._on_message(str(exc), True)
        QMessageBox.warning(win, "Tour not opened", str(exc))
        return None
    old = getattr(win, "presenter", None)
    if old is not None:
        old.leave()
    if win.player_active():
        win.player.close_player()
    if win.recorder is not None and win.recorder.active:
        win.stop_recording()
    presenter = Presenter(win, tour, notes=notes, full_screen=full_screen)
    win.presenter = presenter
    presenter.goto(0)
    win._on_message(f"Tour {os.path.basename(path)}: {KEY_HELP}", False)
    from visualizer.workers import test_event

    test_event("tour-open")
    return presenter


def main(path: str, run_app, device: str | None = None, notes: str = "auto") -> int:
    """``losslab --tour FILE``: the app (``run_app``, i.e. ``visualizer.app.run_app``: passed in, since the app
    imports this module for Open tour), presenting the tour as soon as its window is up. A malformed tour fails
    before any window opens (exit 2, one line naming the file, the line and the field)."""
    import sys

    from visualizer.labs import LABS
    from visualizer.qtsetup import prepare_qt
    from visualizer.recording.scene import SceneError
    from visualizer.recording.tour import load_tour

    try:
        load_tour(path, LABS)
    except SceneError as exc:
        print(f"losslab: {exc}", file=sys.stderr)
        return 2
    prepare_qt()
    app = QApplication.instance() or QApplication(sys.argv[:1])

    def when_up() -> None:  # the main window has painted (its labs may start): present
        wins = [w for w in app.topLevelWidgets() if hasattr(w, "open_tour") and getattr(w, "_started", False)]
        if not wins:
            QTimer.singleShot(50, when_up)
            return
        if wins[0].open_tour(path) is None:
            wins[0].close()

    QTimer.singleShot(0, when_up)
    return run_app(device=device)
