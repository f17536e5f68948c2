"""What every lab offers the main window, the recorder and scene files: the lab contract.

A lab declares its settings (``state_cls``, a dataclass of ``schema.setting`` fields), its actions
(``actions``: buttons and scene-file actions from one list), its help (``help``), and answers
``views()``, ``busy()``, ``runners()``, ``has_drawn()``. The base class does the rest: restoring the
settings leniently (``restore_problems`` names what fell back to its default), the generated controls form,
strict scene settings, debounced saving, and calling the reaction each change declares (``react_<name>``).
Nothing else is read from a lab.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QWidget

from visualizer import settings as store
from visualizer.labs import schema
from visualizer.labs.schema import SettingError, Settings
from visualizer.views.form import Action, SettingsForm

__all__ = ["Action", "Lab", "SettingError", "SingleRunLab", "check_settings"]

SAVE_DELAY_MS = 600  # settings are written this long after the last change (not on every spin-box tick)


def check_settings(state_cls, values: dict, where: str = "settings", base: dict | None = None) -> dict:
    """``values`` checked strictly against the lab's declared settings (scene files): known names, values of
    the field's kind, within its range or choices (dependent ranges judged with ``base``, the settings in
    force by then). Returns the values converted."""
    return schema.check_values(state_cls, values, where, base)


class Lab(QWidget):
    """A lab: its views (this widget), its controls form, and run control.

    Signals: ``status(dict)`` with keys among step, loss, running, paused; ``message(str, bool)`` with
    (text, is_error); ``failed(str)`` when a computation the lab needs failed (the engine raised, a process
    died, a file could not be read): what it shows is incomplete, and a render stops. A result the user should
    see (a diverging descent, a refused value) is an error message, not a failure. ``frame_drawn()`` after
    each GL frame.
    """

    key = "lab"
    title = "Lab"
    help = ""
    #: one line for the status bar when the lab opens: what to do first
    hint = ""
    status = Signal(dict)
    message = Signal(str, bool)
    failed = Signal(str)
    frame_drawn = Signal()
    state_cls: type | None = None
    actions: tuple[Action, ...] = (Action("reset", "Reset (R)", "reset", button=False,
                                          scene="stop and clear every run"),)
    scene_actions: dict[str, str] = {}
    #: the stored settings that could not be used (each went back to its default), in words
    restore_problems: list[str] = []
    runner_factory: Callable | None = None
    #: the lab's runs are paused (Space): a recorder on the steps clock waits
    paused: bool = False

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        cls.scene_actions = {a.name: a.scene for a in cls.actions if a.scene}

    def __init__(self, device: str = "cpu", parent=None, restore: bool = True, start: bool = True,
                 runner_factory: Callable | None = None) -> None:
        super().__init__(parent)
        self.device = device
        #: who runs the lab's training generators: None is a child process (``ProcessRunner``); the recorder
        #: and the scene player pass their synchronous runner to the one lab they drive
        self.runner_factory = runner_factory
        self.restore_problems: list[str] = []
        self.form: SettingsForm | None = None
        if self.state_cls is not None:
            state = self.state_cls()
            if restore:
                state, self.restore_problems = schema.restore(self.state_cls, store.load_json(self.settings_key))
            self.settings = Settings(state)
            self.state = state  # the same object for the lab's life: changed only through self.settings
            self.settings.subscribe(self._on_settings_changed)
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(SAVE_DELAY_MS)
        self._save_timer.timeout.connect(self.save_state)

    @property
    def settings_key(self) -> str:
        return f"labs/{self.key}"

    # ------------------------------------------------------------------ settings
    def make_form(self, custom: dict | None = None) -> SettingsForm:
        """The controls generated from the declared settings and actions (call once, after the views)."""
        self.form = SettingsForm(self.settings, lab=self, custom=custom, actions=self.actions,
                                 on_error=lambda text: self.message.emit(text, True))
        return self.form

    def widget(self, name: str) -> QWidget:
        """The control showing setting ``name``."""
        return self.form.widget(name)

    def set_setting(self, name: str, value) -> None:
        """Programmatic equivalent of a user setting one control (strict: SettingError)."""
        self.settings.update({name: value}, "user")

    def apply_settings(self, values: dict) -> None:
        """Set several settings at once (a scene file): checked strictly, together, then the reactions."""
        try:
            self.settings.update(dict(values), "scene")
        except SettingError as exc:
            raise SettingError(f"settings.{exc}") from None

    def settings_dict(self) -> dict:
        """The current settings (what "Save scene" writes)."""
        return dataclasses.asdict(self.state) if self.state_cls is not None else {}

    def _on_settings_changed(self, changed: dict, source: str) -> None:
        self._save_timer.start()
        for reaction in self.settings.reactions(changed):
            getattr(self, f"react_{reaction}")(changed)

    def report_failure(self, text: str) -> None:
        """A computation the lab needs failed: say so (an error message) and tell a recorder (``failed``)."""
        self.message.emit(text, True)
        self.failed.emit(text)

    def react_none(self, changed: dict) -> None:
        """A setting used the next time it is needed (the next run, the next surface)."""

    def react_redraw(self, changed: dict) -> None:
        """A setting that changes only how the results are drawn."""

    def save_state(self) -> None:
        """Write the settings now (the debounced save, and on shutdown)."""
        self._save_timer.stop()
        if self.state_cls is not None:
            store.save_json(self.settings_key, dataclasses.asdict(self.state))

    # ------------------------------------------------------------------ runners
    def make_runner(self, target: str, kwargs: dict, **options):
        """A runner for the generator ``target`` ('module:function') called with ``kwargs``."""
        if self.runner_factory is not None:
            return self.runner_factory(target, kwargs, **options)
        from visualizer.workers import ProcessRunner

        return ProcessRunner(target, kwargs, **options)

    def use_runner_factory(self, factory: Callable | None) -> None:
        """From now on runs go to ``factory`` (None: child processes again). The scene player's hook."""
        self.runner_factory = factory

    # ------------------------------------------------------------------ the contract
    def start(self) -> None:
        """Begin the lab's first computation; labs are created with start=False by the main window."""

    def controls(self) -> QWidget:
        return self.form

    def help_html(self) -> str:
        return self.help

    def toggle_run(self) -> None:
        """Space: start (from a default point if nothing runs yet) or pause/resume."""

    def single_step(self) -> None:
        """S: advance every run by one step (pausing them)."""

    def reset(self) -> None:
        """R: stop and clear every run."""

    def active_view(self) -> QWidget:
        return self

    def set_device(self, device: str) -> None:
        """New computations go to this torch device."""
        self.device = device

    def shutdown(self) -> None:
        """Stop every worker (without waiting on it) and save the settings: called before the window closes."""
        self._save_timer.stop()
        self.save_state()

    def scene_action(self, action: str, start=None) -> None:
        """Perform a timeline action named in ``scene_actions``."""
        for a in self.actions:
            if a.name == action and a.scene:
                fn = getattr(self, a.method)
                fn(start) if a.with_start else fn()
                return
        raise SettingError(f"the {self.key} lab has no action '{action}'")

    def views(self) -> dict[str, QWidget]:
        """What can be recorded: '3d' (a Scene3D) and/or '2d' (a widget)."""
        return {}

    def runners(self) -> list:
        """The runners (child processes, or the recorder's synchronous ones) now producing steps."""
        return []

    def busy(self) -> bool:
        """True while a grid, mesh or surface asked for is still being computed."""
        return False

    def has_drawn(self) -> bool:
        """Something is on screen (the first grid, surface or sample arrived)."""
        return True

    def flush(self) -> None:
        """Draw now what is waiting for a paced redraw (a recorder calls this before each frame)."""

    def recording_title(self) -> str:
        return self.title


class SingleRunLab(Lab):
    """A lab that owns one run at a time (a walk, a training): start, pause, single step, stop, and the relay
    that drops signals of a run already replaced. Subclasses call ``start_run`` and implement ``restart``
    (Space or S with no live run) returning False when the settings do not make a run."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.paused = False
        self.runner = None
        self._relay = None

    def start_run(self, target: str, kwargs: dict, handlers: dict, **options):
        """Stop the current run and start ``target`` with ``kwargs``; ``handlers`` maps the runner's signals
        (batch, done, failed) to method names of the lab. Returns the runner."""
        from visualizer.workers import RunnerRelay

        self.stop_run()
        self.runner = self.make_runner(target, kwargs, **options)
        self._relay = RunnerRelay(self, self.runner, handlers, current="runner")
        self.status.emit({"paused": True} if options.get("start_paused") else {"running": True})
        self.runner.start()  # (a synchronous runner delivers its first item here)
        return self.runner

    def stop_run(self) -> None:
        """Stop the run at once (its process ends by itself); its late signals are dropped."""
        runner, self.runner = self.runner, None
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.release()
        if runner is not None:
            was = runner.isRunning()
            runner.abort()
            if was:
                self.status.emit({"running": False})

    def run_live(self) -> bool:
        return self.runner is not None and self.runner.isRunning()

    def end_of_run(self, result) -> None:
        """The run's generator returned (``result`` None: it was aborted): ``finished`` and ``reason`` say so, the
        last batch is drawn (``flush``), and the run button goes back to "play"."""
        self.finished = True
        self.reason = "aborted" if result is None else "completed"
        self.flush()
        self.status.emit({"running": False})

    def run_failed(self, title: str, text: str) -> None:
        """The run's engine raised or its process died: reported as a failure under ``title``, what arrived is
        drawn."""
        from visualizer import errorlog

        self.finished = True
        self.reason = "failed"
        self.report_failure(errorlog.report(title, text))
        self.flush()
        self.status.emit({"running": False})

    def restart(self) -> bool:
        raise NotImplementedError

    def toggle_run(self) -> None:
        if not self.run_live():
            was, self.paused = self.paused, False
            if not self.restart():
                self.paused = was
            return
        self.paused = not self.paused
        (self.runner.pause if self.paused else self.runner.resume)()
        self.status.emit({"paused": self.paused})

    def single_step(self) -> None:
        if not self.run_live():
            was, self.paused = self.paused, True
            if not self.restart():
                self.paused = was
                return
        self.paused = True
        self.runner.step_once()
        self.status.emit({"paused": True})

    def runners(self) -> list:
        return [self.runner] if self.run_live() else []

    def shutdown(self) -> None:
        self.stop_run()
        super().shutdown()
