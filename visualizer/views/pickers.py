"""Two custom controls of the settings form (``visualizer/views/form.py``): a row of width toggles on a log scale,
and a small panel where a 1D target curve is drawn by hand. Each writes through ``Settings.update`` and shows the
state (``show_state``), whoever changed it; a refused value is reported with ``error(str)`` and not kept.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import QGridLayout, QToolButton, QVBoxLayout, QWidget


class WidthPicker(QWidget):
    """Checkable buttons for the widths on offer (powers of two): the checked ones are setting ``name``."""

    error = Signal(str)

    def __init__(self, settings, name: str, choices, colors: dict, per_row: int = 5, parent=None) -> None:
        super().__init__(parent)
        self.settings, self.name = settings, name
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(3)
        self.buttons: dict[int, QToolButton] = {}
        for i, m in enumerate(choices):
            b = QToolButton()
            b.setText(str(m))
            b.setCheckable(True)
            b.setMinimumWidth(46)
            b.setToolTip(f"train a network of width {m} in the sweep (click to add or remove it)")
            c = colors.get(m, "#c9d1d9")
            b.setStyleSheet(f"QToolButton:checked {{ background: {c}; color: #101010; font-weight: bold; }}")
            b.toggled.connect(self._on_toggle)
            grid.addWidget(b, i // per_row, i % per_row)
            self.buttons[m] = b
        self.show_state(settings.state)

    def checked(self) -> list[int]:
        return [m for m, b in self.buttons.items() if b.isChecked()]

    def _on_toggle(self, _on: bool) -> None:
        from visualizer.labs.schema import SettingError

        try:
            self.settings.update({self.name: self.checked()}, "user")
        except SettingError as exc:
            self.error.emit(str(exc))
            self.show_state(self.settings.state)

    def show_state(self, state) -> None:
        want = {int(m) for m in getattr(state, self.name)}
        for m, b in self.buttons.items():
            if b.isChecked() != (m in want):
                b.blockSignals(True)
                b.setChecked(m in want)
                b.blockSignals(False)


class _DrawBox(pg.ViewBox):
    """A view box where a left-button drag draws instead of panning."""

    def __init__(self, panel: DrawPanel) -> None:
        super().__init__(enableMenu=False)
        self.panel = panel
        self.setMouseEnabled(False, False)

    def mouseDragEvent(self, ev, axis=None) -> None:
        if ev.button() != Qt.MouseButton.LeftButton:
            ev.ignore()
            return
        ev.accept()
        a = self.mapSceneToView(ev.lastScenePos())
        b = self.mapSceneToView(ev.scenePos())
        self.panel.paint((a.x(), a.y()), (b.x(), b.y()))
        if ev.isFinish():
            self.panel.commit()

    def mouseClickEvent(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton:
            ev.ignore()
            return
        ev.accept()
        p = self.mapSceneToView(ev.scenePos())
        self.panel.paint((p.x(), p.y()), (p.x(), p.y()))
        self.panel.commit()


class DrawPanel(QWidget):
    """Setting ``name``: a curve of ``len(heights)`` heights at evenly spaced x in ``domain``; drag across the
    panel to redraw it (the data's points are taken from the curve when the drag ends)."""

    error = Signal(str)

    def __init__(self, settings, name: str, domain: tuple, y_range: tuple, parent=None) -> None:
        super().__init__(parent)
        self.settings, self.name = settings, name
        self.y_range = y_range
        self.heights = np.asarray(getattr(settings.state, name), dtype=np.float64).copy()
        self.xs = np.linspace(domain[0], domain[1], len(self.heights))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.box = _DrawBox(self)
        self.plot = pg.PlotWidget(viewBox=self.box)
        self.plot.setBackground("#14161c")
        self.plot.setMinimumHeight(130)
        self.plot.setMaximumHeight(200)
        self.plot.setMinimumWidth(0)
        self.plot.setLabel("bottom", "x")
        self.plot.setLabel("left", "target")
        self.plot.setXRange(*domain, padding=0.02)
        self.plot.setYRange(*y_range, padding=0.02)
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.setToolTip("Drag across the panel to draw the target curve; the training points are taken "
                             "from it when you let go")
        self.curve = self.plot.plot(pen=pg.mkPen("#ffb703", width=2))
        self.points = pg.ScatterPlotItem(size=7, brush=pg.mkBrush("#ffb703"), pen=pg.mkPen("#000"))
        self.plot.addItem(self.points)
        lay.addWidget(self.plot)
        self._draw()

    def sizeHint(self) -> QSize:
        return QSize(240, 170)  # (a plot's own hint is wide: the controls dock must not grow with it)

    def paint(self, a: tuple, b: tuple) -> None:
        """Set the heights of the slots between a and b on the straight line from a to b (a stroke)."""
        (x0, y0), (x1, y1) = a, b
        lo, hi = self.y_range
        if x1 < x0:
            x0, y0, x1, y1 = x1, y1, x0, y0
        step = self.xs[1] - self.xs[0]
        sel = (self.xs >= x0 - step / 2) & (self.xs <= x1 + step / 2)
        if not sel.any():
            return
        if x1 - x0 < 1e-12:
            vals = np.full(sel.sum(), y1)
        else:
            vals = y0 + (np.clip(self.xs[sel], x0, x1) - x0) * (y1 - y0) / (x1 - x0)
        self.heights[sel] = np.clip(vals, lo, hi)
        self._draw()

    def commit(self) -> None:
        from visualizer.labs.schema import SettingError

        try:
            self.settings.update({self.name: [round(float(v), 4) for v in self.heights]}, "user")
        except SettingError as exc:
            self.error.emit(str(exc))
            self.show_state(self.settings.state)

    def set_points(self, x: np.ndarray, y: np.ndarray) -> None:
        """Show the training points the lab takes from the curve."""
        self.points.setData(x, y)

    def _draw(self) -> None:
        self.curve.setData(self.xs, self.heights)

    def show_state(self, state) -> None:
        h = np.asarray(getattr(state, self.name), dtype=np.float64)
        if h.shape == self.heights.shape and np.array_equal(h, self.heights):
            return
        self.heights = h.copy()
        self._draw()
