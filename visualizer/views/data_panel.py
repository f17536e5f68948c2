"""The data panel the manifold labs share: draggable points in a small plot, the same points in a table.

A custom control of the settings form (``visualizer/views/form.py``) for the settings ``xs`` and ``ys``: every
edit (a drag, a typed cell, a new point count) is written through ``Settings.update``; ``show_state`` shows
what the state holds, whoever changed it. ``error(str)`` when a typed cell is not a number.
"""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

DATA_COLORS = ["#ffb703", "#8ecae6", "#c77dff"]
NEW_POINTS = [(-1.5, -0.6), (2.0, 0.9), (-0.5, 0.3)]


class DataPanel(QWidget):
    error = Signal(str)

    def __init__(self, settings, max_points: int, count_tip: str, parent=None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.xs, self.ys = list(settings.get("xs")), list(settings.get("ys"))
        self._moving = False
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("points:"))
        self.n_points = QSpinBox()
        self.n_points.setRange(1, max_points)
        self.n_points.setValue(len(self.xs))
        self.n_points.setToolTip(count_tip)
        self.n_points.valueChanged.connect(self._on_count)
        row.addWidget(self.n_points)
        row.addStretch(1)
        lay.addLayout(row)
        self.plot = pg.PlotWidget()
        self.plot.setBackground("#14161c")
        self.plot.setMinimumHeight(150)
        self.plot.setLabel("bottom", "x")
        self.plot.setLabel("left", "y")
        self.plot.setXRange(-3, 3, padding=0)
        self.plot.setYRange(-2, 2, padding=0)
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.fit_curve = self.plot.plot(pen=pg.mkPen("#ff9f1c", width=1.6))
        self.fit_curve.setToolTip("the model f(x; w) at the latest descent's current parameters")
        self.targets: list[pg.TargetItem] = []
        lay.addWidget(self.plot)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["x", "y"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setMaximumHeight(110)
        self.table.itemChanged.connect(self._on_cell)
        lay.addWidget(self.table)
        self.rebuild()

    def rebuild(self) -> None:
        for t in self.targets:
            self.plot.removeItem(t)
        self.targets = []
        for i, (x, y) in enumerate(zip(self.xs, self.ys)):
            t = pg.TargetItem(pos=(x, y), size=14, movable=True, symbol="o",
                              pen=pg.mkPen("#000", width=1), brush=pg.mkBrush(DATA_COLORS[i]),
                              hoverBrush=pg.mkBrush("#ffffff"), label="({:.2f}, {:.2f})",
                              labelOpts={"color": DATA_COLORS[i], "offset": (8, -8)})
            t.sigPositionChanged.connect(lambda item, i=i: self._on_drag(i, item))
            self.plot.addItem(t)
            self.targets.append(t)
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.xs))
        for i, (x, y) in enumerate(zip(self.xs, self.ys)):
            for j, val in enumerate((x, y)):
                item = QTableWidgetItem(f"{val:.4g}")
                item.setForeground(QColor(DATA_COLORS[i]))
                self.table.setItem(i, j, item)
        self.table.blockSignals(False)

    def _on_count(self, n: int) -> None:
        while len(self.xs) < n:
            x, y = NEW_POINTS[len(self.xs) - 1]
            self.xs.append(x)
            self.ys.append(y)
        del self.xs[n:]
        del self.ys[n:]
        self.rebuild()
        self._commit()

    def _commit(self) -> None:
        from visualizer.labs.schema import SettingError

        try:
            self.settings.update({"xs": list(self.xs), "ys": list(self.ys)}, "user")
        except SettingError as exc:  # (a typed 1e7): say why, and show what the state keeps
            self.error.emit(str(exc))
            self.show_state(self.settings.state)

    def show_state(self, state) -> None:
        """Show ``state.xs``/``state.ys`` (a scene, a restore): moves the points, rebuilds on a new count."""
        xs, ys = list(state.xs), list(state.ys)
        if (xs, ys) == (self.xs, self.ys):
            return
        if len(xs) != len(self.xs):
            self.xs, self.ys = xs, ys
            self.n_points.blockSignals(True)
            self.n_points.setValue(len(xs))
            self.n_points.blockSignals(False)
            self.rebuild()
            return
        self.xs, self.ys = xs, ys
        for i, (x, y) in enumerate(zip(xs, ys)):
            self._show_point(i, x, y)

    def _on_drag(self, i: int, item) -> None:
        if self._moving:
            return
        p = item.pos()
        self.set_point(i, float(p.x()), float(p.y()), from_drag=True)

    def set_point(self, i: int, x: float, y: float, from_drag: bool = False) -> None:
        """Move point i to (x, y) everywhere it is shown, then write the change."""
        self.xs[i], self.ys[i] = float(x), float(y)
        self._show_point(i, x, y, move=not from_drag)
        self._commit()

    def _show_point(self, i: int, x: float, y: float, move: bool = True) -> None:
        if move:
            self._moving = True  # setPos re-emits sigPositionChanged (which also updates its label)
            try:
                self.targets[i].setPos(x, y)
            finally:
                self._moving = False
        self.table.blockSignals(True)
        self.table.item(i, 0).setText(f"{x:.4g}")
        self.table.item(i, 1).setText(f"{y:.4g}")
        self.table.blockSignals(False)

    def _on_cell(self, item: QTableWidgetItem) -> None:
        i, j = item.row(), item.column()
        try:
            val = float(item.text())
            if not math.isfinite(val):
                raise ValueError
        except ValueError:
            self.error.emit(f"'{item.text()}' is not a number: point {i + 1} keeps its {'xy'[j]}")
            self.table.blockSignals(True)
            item.setText(f"{(self.xs if j == 0 else self.ys)[i]:.4g}")
            self.table.blockSignals(False)
            return
        self.set_point(i, val if j == 0 else self.xs[i], val if j == 1 else self.ys[i])
