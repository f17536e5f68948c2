"""The controls form generated from a lab's declared settings (``visualizer.labs.schema``), bound both ways.

The ``Settings`` object is the source of truth: a control writes through ``Settings.update`` (a refused value
reverts the control and says why), and every change, whoever made it (a user, a scene file), is shown by the
controls it concerns. Enabled states and dependent ranges are re-evaluated after each change. Controls no
generic widget fits plug in as custom widgets: ``custom[name](settings) -> QWidget`` with a
``show_state(state)`` method, declared by ``widget=name`` on the fields they show.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from visualizer.labs.schema import SettingError, Settings, range_of

SLIDER_TICKS = 1000


@dataclass(frozen=True)
class Action:
    """A lab's action: a button in its group of the form (``button``) and/or a scene-file action (``scene``,
    its description). ``method`` is the lab's method to call; ``beside`` puts the button in the row of that
    setting; buttons with the same ``row`` (in one group) share a row; ``with_start`` passes a scene event's
    ``start`` to the method."""

    name: str
    label: str
    method: str
    group: str = ""
    tooltip: str = ""
    scene: str = ""
    beside: str = ""
    button: bool = True
    with_start: bool = False
    row: str = ""


def _fmt(v: float, decimals: int | None) -> str:
    return f"{v:.{decimals}f}" if decimals is not None else f"{v:.3g}"


class SettingsForm(QWidget):
    """Group boxes of controls, one per declared setting (in declaration order), plus the lab's buttons."""

    def __init__(self, settings: Settings, lab=None, custom: dict | None = None, actions=(),
                 on_error: Callable | None = None, parent=None) -> None:
        super().__init__(parent)
        self.settings = settings
        self._on_error = on_error
        self._widgets: dict[str, QWidget] = {}
        self._errors: dict[str, QLabel] = {}
        self._value_labels: dict[str, QLabel] = {}
        self._custom: dict[str, QWidget] = {}
        self.groups: dict[str, QGroupBox] = {}
        self._forms: dict[str, QFormLayout] = {}
        self._writing: str | None = None
        self._rows: dict[str, QHBoxLayout] = {}
        self._lay = QVBoxLayout(self)
        self._lay.setContentsMargins(6, 6, 6, 6)
        custom = custom or {}
        beside = {a.beside: a for a in actions if a.button and a.beside}
        for name, spec in settings.specs.items():
            if spec.widget == "hidden":
                continue
            form = self._form(spec.group)
            if spec.widget in custom:
                if spec.widget not in self._custom:
                    w = custom[spec.widget](settings)
                    self._custom[spec.widget] = w
                    form.addRow(w)
                self._widgets[name] = self._custom[spec.widget]
                continue
            w = self._make(name, spec)
            if spec.tooltip:
                w.setToolTip(spec.tooltip)
            self._widgets[name] = w
            field = w
            if name in self._value_labels or name in beside:
                row = QHBoxLayout()
                row.setContentsMargins(0, 0, 0, 0)
                row.addWidget(w, 1)
                if name in self._value_labels:
                    row.addWidget(self._value_labels[name])
                if name in beside:
                    row.addWidget(self._button(lab, beside[name]))
                field = QWidget()
                field.setLayout(row)
                self._rows[name] = row
            if isinstance(w, QCheckBox):
                form.addRow(field)
            else:
                form.addRow(spec.label, field)
            if isinstance(w, QLineEdit):
                err = QLabel()
                err.setWordWrap(True)
                err.setStyleSheet("color:#ff6b6b;")
                err.setVisible(False)
                self._errors[name] = err
                form.addRow(err)
        rows: dict = {}
        for a in actions:
            if not a.button or a.beside:
                continue
            if not a.row:
                self._form(a.group).addRow(self._button(lab, a))
                continue
            if (a.group, a.row) not in rows:
                holder = QWidget()
                rows[a.group, a.row] = QHBoxLayout(holder)
                rows[a.group, a.row].setContentsMargins(0, 0, 0, 0)
                self._form(a.group).addRow(holder)
            rows[a.group, a.row].addWidget(self._button(lab, a))
        self._lay.addStretch(1)
        settings.subscribe(self._on_changed)
        self.refresh()

    # ------------------------------------------------------------------ building
    def _form(self, group: str) -> QFormLayout:
        if group not in self._forms:
            box = QGroupBox(group)
            form = QFormLayout(box)
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            if self._lay.count() and self._lay.itemAt(self._lay.count() - 1).spacerItem() is not None:
                self._lay.insertWidget(self._lay.count() - 1, box)  # a group added later goes above the stretch
            else:
                self._lay.addWidget(box)
            self.groups[group] = box
            self._forms[group] = form
        return self._forms[group]

    def add_row(self, group: str, widget: QWidget, label: str | None = None) -> None:
        """An extra widget (a plot, an info line, a progress bar) at the end of ``group`` (made if new)."""
        form = self._form(group)
        if label is None:
            form.addRow(widget)
        else:
            form.addRow(label, widget)

    def _button(self, lab, a: Action) -> QPushButton:
        b = QPushButton(a.label)
        if a.tooltip:
            b.setToolTip(a.tooltip)
        if lab is not None:
            import weakref

            ref, method = weakref.ref(lab), a.method
            b.clicked.connect(lambda _=False: (lambda obj: obj is not None and getattr(obj, method)())(ref()))
        b.setObjectName(f"action_{a.name}")
        self._widgets[f"action:{a.name}"] = b
        return b

    def _make(self, name: str, spec) -> QWidget:
        v = self.settings.get(name)
        if isinstance(v, bool):
            w = QCheckBox(spec.label)
            w.toggled.connect(lambda on, n=name: self._write(n, bool(on)))
        elif spec.choices:
            w = QComboBox()
            for i, (value, text) in enumerate(spec.choices):
                w.addItem(text, value)
                w.setItemData(i, text, Qt.ItemDataRole.ToolTipRole)  # in full, should the box be narrower
            # the panel keeps its width: a long item shows in full in the open list
            w.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            w.setMinimumContentsLength(10)
            w.currentIndexChanged.connect(lambda i, n=name, c=w: self._write(n, c.itemData(i)))
        elif spec.widget == "slider" and isinstance(v, (int, float)):
            w = QSlider(Qt.Orientation.Horizontal)
            w.setRange(0, SLIDER_TICKS)
            self._value_labels[name] = QLabel()
            self._value_labels[name].setMinimumWidth(44)
            w.valueChanged.connect(lambda pos, n=name: self._write(n, self._from_slider(n, pos)))
        elif isinstance(v, int):
            w = QSpinBox()
            w.setRange(-2**31 + 1, 2**31 - 1)  # a declared range replaces this in refresh()
            if spec.step:
                w.setSingleStep(int(spec.step))
            self._connect_spin(w, name, spec, int)
        elif isinstance(v, float):
            w = QDoubleSpinBox()
            w.setRange(-1e12, 1e12)
            w.setDecimals(spec.decimals if spec.decimals is not None else 3)
            if spec.step:
                w.setSingleStep(spec.step)
            if spec.log:
                w.setStepType(QAbstractSpinBox.StepType.AdaptiveDecimalStepType)
            self._connect_spin(w, name, spec, float)
        else:  # text, or a list of numbers typed as "1.5, -1, 0.8"
            w = QLineEdit()
            sig = w.returnPressed if spec.commit == "enter" else w.editingFinished
            sig.connect(lambda n=name, e=w: self._write_text(n, e.text()))
        return w

    def _connect_spin(self, w, name: str, spec, conv) -> None:
        # "finish": typed digits commit on Return or focus loss (typing 20 never passes through 2), an arrow
        # or wheel step at once; "change": every keystroke
        w.setKeyboardTracking(spec.commit == "change")
        w.valueChanged.connect(lambda val, n=name: self._write(n, conv(val)))

    # ------------------------------------------------------------------ slider mapping
    def _slider_range(self, name: str) -> tuple[float, float]:
        lo, hi = range_of(self.settings.specs[name], self.settings.state)
        return float(lo), float(hi)

    def _from_slider(self, name: str, pos: int):
        lo, hi = self._slider_range(name)
        t = pos / SLIDER_TICKS
        spec = self.settings.specs[name]
        v = 10 ** (math.log10(lo) + t * (math.log10(hi) - math.log10(lo))) if spec.log else lo + t * (hi - lo)
        v = min(max(v, lo), hi)
        if isinstance(self.settings.get(name), int):
            return int(round(v))
        if spec.decimals is not None:
            v = min(max(round(v, spec.decimals), lo), hi)
        return float(v)

    def _to_slider(self, name: str, v: float) -> int:
        lo, hi = self._slider_range(name)
        if self.settings.specs[name].log:
            t = (math.log10(max(v, lo)) - math.log10(lo)) / max(math.log10(hi) - math.log10(lo), 1e-12)
        else:
            t = (v - lo) / (hi - lo) if hi > lo else 0.0
        return int(round(min(max(t, 0.0), 1.0) * SLIDER_TICKS))

    # ------------------------------------------------------------------ writing
    def _write(self, name: str, value) -> bool:
        if self._writing is not None or value == self.settings.get(name):
            return True
        self._writing = name
        try:
            self.settings.update({name: value}, "user")
        except SettingError as exc:
            self._writing = None
            self._show(name)  # the control shows the state again
            if self._on_error is not None:
                self._on_error(str(exc))
            return False
        finally:
            self._writing = None
        return True

    def _write_text(self, name: str, text: str) -> bool:
        value = text.strip()
        if isinstance(self.settings.get(name), list):
            try:
                value = [float(t) for t in text.replace("(", "").replace(")", "").replace(";", ",").split(",")
                         if t.strip()]
            except ValueError:
                return self._text_error(name, f"'{text}': write numbers separated by commas")
        if value == self.settings.get(name):
            self._errors[name].setVisible(False)
            return True
        self._writing = name
        try:
            self.settings.update({name: value}, "user")
        except SettingError as exc:
            return self._text_error(name, str(exc).split(": ", 1)[-1] if ": " in str(exc) else str(exc))
        finally:
            self._writing = None
        self._errors[name].setVisible(False)
        return True

    def _text_error(self, name: str, text: str) -> bool:
        self._errors[name].setText(f"✗ {text}")
        self._errors[name].setVisible(True)
        if self._on_error is not None:
            self._on_error(f"{self.settings.specs[name].label or name} refused: {text}")
        return False

    # ------------------------------------------------------------------ showing
    def _on_changed(self, changed: dict, source: str) -> None:
        for name in changed:
            if name != self._writing:
                self._show(name)
        self.refresh(skip_values=True)

    def _show(self, name: str) -> None:
        w = self._widgets.get(name)
        if w is None:
            return
        v = self.settings.get(name)
        w.blockSignals(True)
        try:
            if hasattr(w, "show_state"):
                w.show_state(self.settings.state)
            elif isinstance(w, QCheckBox):
                w.setChecked(bool(v))
            elif isinstance(w, QComboBox):
                w.setCurrentIndex(max(0, w.findData(v)))
            elif isinstance(w, QSlider):
                w.setValue(self._to_slider(name, v))
            elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
                w.setValue(v)
            elif isinstance(w, QLineEdit):
                w.setText(", ".join(f"{a:g}" for a in v) if isinstance(v, list) else str(v))
                if name in self._errors:
                    self._errors[name].setVisible(False)
        finally:
            w.blockSignals(False)
        if name in self._value_labels:
            self._value_labels[name].setText(_fmt(v, self.settings.specs[name].decimals))

    def refresh(self, skip_values: bool = False) -> None:
        """Ranges (fixed or dependent), enabled states and, unless ``skip_values``, every control's value."""
        for name, w in self._widgets.items():
            spec = self.settings.specs.get(name)
            if spec is None:
                continue
            if isinstance(w, (QSpinBox, QDoubleSpinBox)) and spec.range is not None:
                lo, hi = range_of(spec, self.settings.state)
                if (w.minimum(), w.maximum()) != (lo, hi):
                    w.blockSignals(True)
                    w.setRange(lo, hi)
                    w.blockSignals(False)
            if not skip_values or (isinstance(w, QSlider) and callable(spec.range)):
                self._show(name)
            on = self.settings.enabled(name)
            w.setEnabled(on)
            if name in self._value_labels:
                self._value_labels[name].setEnabled(on)

    def enter_text(self, name: str, text: str) -> bool:
        """Type ``text`` into the text field of ``name`` and commit it, as a user would (False: refused, and the
        reason shows under the field)."""
        self._widgets[name].setText(text)
        return self._write_text(name, text)

    # ------------------------------------------------------------------ lookup
    def widget(self, name: str) -> QWidget:
        """The control of setting ``name`` (or ``'action:NAME'`` for a button)."""
        return self._widgets[name]

    def error_label(self, name: str) -> QLabel:
        return self._errors[name]
