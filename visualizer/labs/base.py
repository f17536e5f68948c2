"""What every lab offers the main window, the recorder and scene files."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QDoubleSpinBox,
    QLineEdit,
    QSpinBox,
    QWidget,
)


class SettingError(ValueError):
    """A setting a lab does not have, or a value of the wrong kind: the message names the field."""


def check_settings(state_cls, values: dict, where: str = "settings") -> dict:
    """``values`` checked against the fields of the lab's state dataclass: known names, values of the field's
    kind (an int where a float is expected is fine), finite numbers. Returns the values converted."""
    fields = {f.name: f for f in dataclasses.fields(state_cls)}
    defaults = state_cls()
    out = {}
    for k, v in values.items():
        if k not in fields:
            raise SettingError(f"{where}.{k}: no such setting; known: {', '.join(fields)}")
        cur = getattr(defaults, k)
        ok = True
        if isinstance(cur, bool):
            ok = isinstance(v, bool)
        elif isinstance(cur, int):
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif isinstance(cur, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            v = float(v) if ok else v
        elif isinstance(cur, str):
            ok = isinstance(v, str)
        elif isinstance(cur, list):
            ok = isinstance(v, list) and all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                             and math.isfinite(a) for a in v)
            v = [float(a) for a in v] if ok else v
        if not ok:
            raise SettingError(f"{where}.{k}: expected {type(cur).__name__} like {cur!r}, got {v!r}")
        out[k] = v
    return out


class Lab(QWidget):
    """A lab: its views (this widget), its controls panel, and run control.

    Signals: ``status(dict)`` with keys among step, loss, running; ``message(str, bool)`` with
    (text, is_error); ``frame_drawn()`` after each GL frame.

    For recordings and scene files a lab also names its settings (``state_cls``, a dataclass; controls
    registered with ``bind`` so that a scene moves them as a user would), its timeline actions
    (``scene_actions``), its views (``views``), the runners that advance with the simulation clock
    (``runners``), and whether it is still computing (``busy``).
    """

    key = "lab"
    title = "Lab"
    status = Signal(dict)
    message = Signal(str, bool)
    frame_drawn = Signal()
    state_cls: type | None = None
    #: action name -> what it does (scene files' ``[[event]] action = ...``)
    scene_actions: dict[str, str] = {"reset": "stop and clear every run"}

    #: who runs the lab's training generators: None is a child process (``ProcessRunner``); the recorder and
    #: the scene player set their synchronous runner on the one lab they drive (never process-wide)
    runner_factory: Callable | None = None

    def make_runner(self, target: str, kwargs: dict, **options):
        """A runner for the generator ``target`` ('module:function') called with ``kwargs``."""
        if self.runner_factory is not None:
            return self.runner_factory(target, kwargs, **options)
        from visualizer.workers import ProcessRunner

        return ProcessRunner(target, kwargs, **options)

    def start(self) -> None:
        """Begin the lab's first computation; labs are created with start=False by the main window."""

    def controls(self) -> QWidget:
        raise NotImplementedError

    def help_html(self) -> str:
        raise NotImplementedError

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

    def save_state(self) -> None:
        """Persist the lab's settings (called on close and on change)."""

    def shutdown(self) -> None:
        """Stop every worker and wait for it: called before the window closes."""

    # ------------------------------------------------------------------ settings, for scenes
    def bind(self, name: str, widget: QWidget | None = None, *, setter: str | None = None,
             to_widget: Callable | None = None) -> None:
        """Register the control that shows setting ``name``: a scene sets it through the control, so the lab
        reacts exactly as to a user's change. ``to_widget(lab, value)`` converts the value; ``setter`` (the name
        of a method of the lab taking the value) replaces all that.

        Nothing registered here refers back to the lab (a method *name*, a converter given the lab): a
        reference cycle through a Qt object would leave the lab to Python's cyclic garbage collector, which
        can run in any thread, and a QObject destroyed in a worker thread can deadlock with the GUI thread."""
        if setter is not None and not isinstance(setter, str):
            raise TypeError("setter: the name of a method of the lab")
        if not hasattr(self, "_bindings"):
            self._bindings = {}
        self._bindings[name] = (widget, setter, to_widget)

    def apply_settings(self, values: dict) -> None:
        """Set several settings (checked against ``state_cls``) through their controls."""
        if self.state_cls is not None:
            values = check_settings(self.state_cls, values)
        bindings = getattr(self, "_bindings", {})
        for k, v in values.items():
            w, setter, conv = bindings.get(k, (None, None, None))
            if setter is not None:
                getattr(self, setter)(v)
                continue
            if hasattr(self, "state"):
                setattr(self.state, k, v)
            if w is None:
                continue
            wv = conv(self, v) if conv else v
            if isinstance(w, QComboBox):
                i = w.findData(wv)
                i = w.findText(str(wv)) if i < 0 else i
                if i < 0:
                    raise SettingError(f"settings.{k}: '{v}' is not one of "
                                       f"{', '.join(str(w.itemData(j) or w.itemText(j)) for j in range(w.count()))}")
                w.setCurrentIndex(i)
            elif isinstance(w, (QSpinBox, QAbstractSlider, QDoubleSpinBox)) and not (
                    w.minimum() - 1e-9 <= float(wv) <= w.maximum() + 1e-9):
                raise SettingError(f"settings.{k}: {v} is outside the range of its control "
                                   f"[{w.minimum():g}, {w.maximum():g}]")
            elif isinstance(w, (QSpinBox, QAbstractSlider)):
                w.setValue(int(wv))
                if isinstance(w, QAbstractSpinBox):
                    w.editingFinished.emit()
            elif isinstance(w, QDoubleSpinBox):
                w.setValue(float(wv))
                w.editingFinished.emit()
            elif isinstance(w, QAbstractButton):
                w.setChecked(bool(wv))
            elif isinstance(w, QLineEdit):
                w.setText(str(wv))
                w.editingFinished.emit()
                w.returnPressed.emit()

    def settings_dict(self) -> dict:
        """The current settings (what "Save scene" writes)."""
        if not hasattr(self, "state") or not dataclasses.is_dataclass(self.state):
            return {}
        return dataclasses.asdict(self.state)

    # ------------------------------------------------------------------ recording
    def scene_action(self, action: str, start=None) -> None:
        """Perform a timeline action named in ``scene_actions``."""
        if action == "reset":
            self.reset()
        else:
            raise SettingError(f"the {self.key} lab has no action '{action}'")

    def views(self) -> dict[str, QWidget]:
        """What can be recorded: '3d' (a Scene3D) and/or '2d' (a widget)."""
        out = {}
        if hasattr(self, "scene"):
            out["3d"] = self.scene
        plane = getattr(self, "plane_view", None) or getattr(self, "plane", None)
        if isinstance(plane, QWidget):
            out["2d"] = plane
        return out

    def runners(self) -> list:
        """The runners (child processes, or the recorder's synchronous ones) now producing steps."""
        return []

    def busy(self) -> bool:
        """True while a grid, mesh or surface asked for is still being computed."""
        return False

    def flush(self) -> None:
        """Draw now what is waiting for a paced redraw (a recorder calls this before each frame)."""

    def recording_title(self) -> str:
        return self.title
