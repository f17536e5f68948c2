"""A plot of two-class points edited by hand: left click adds a point of class +1, right click one of class -1,
dragging a point moves it, a middle click or the Delete key removes the point nearest the pointer.

The editor holds a copy of the points; every edit goes out as ``edited(xs, ys, labels, final)`` (``final`` is
false while a drag is still moving) and the owner writes it into its settings, then shows what they hold with
``set_points``. ``move_point`` is the path a drag takes (tests call it directly); ``refused(str)`` says why an edit was not made.
``set_locked(reason)`` makes the plot show-only (e.g. a projection of 3D points): every edit is refused with that
reason, and a drag pans.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal

POS_COLOR = "#ef476f"
NEG_COLOR = "#4895ef"
PICK_PX = 14  # a press this close to a point (pixels) grabs it


class _EditBox(pg.ViewBox):
    """A view box whose clicks and drags edit the points (the wheel still zooms; a drag off every point pans)."""

    def __init__(self, editor) -> None:
        super().__init__()
        self.editor = editor
        self._grab: int | None = None
        self.setMenuEnabled(False)

    def mouseClickEvent(self, ev) -> None:
        p = self.mapSceneToView(ev.scenePos())
        ev.accept()
        self.editor.on_click(ev.button(), float(p.x()), float(p.y()))

    def mouseDragEvent(self, ev, axis=None) -> None:
        if ev.button() != Qt.MouseButton.LeftButton:
            ev.ignore()
            return
        if ev.isStart():
            grab = self.editor.nearest(ev.buttonDownScenePos(), PICK_PX)
            if grab is not None and self.editor.locked:
                self.editor.refused.emit(self.editor.locked)
                grab = None
            self._grab = grab
        if self._grab is None:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        p = self.mapSceneToView(ev.scenePos())
        self.editor.move_point(self._grab, float(p.x()), float(p.y()), final=ev.isFinish())
        if ev.isFinish():
            self._grab = None


class PointEditor(pg.PlotWidget):
    edited = Signal(list, list, list, bool)
    refused = Signal(str)  # an edit that cannot be made, in words

    def __init__(self, limit: float = 10.0, max_points: int = 200, parent=None) -> None:
        self.box = _EditBox(self)
        super().__init__(parent, viewBox=self.box)
        self.limit = float(limit)
        self.max_points = int(max_points)
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.labels: list[float] = []
        self._hover: QPointF | None = None
        self.locked = ""  # non-empty: edits are refused with this reason
        self.setBackground("#14161c")
        self.setAspectLocked(True)
        self.box.setBackgroundColor("#0d0f14")
        self.showGrid(x=True, y=True, alpha=0.12)
        for side in ("left", "bottom"):
            self.getAxis(side).enableAutoSIPrefix(False)
        self.pos_item = pg.ScatterPlotItem(size=11, symbol="o", brush=pg.mkBrush(POS_COLOR), pen=pg.mkPen("#000"))
        self.neg_item = pg.ScatterPlotItem(size=11, symbol="s", brush=pg.mkBrush(NEG_COLOR), pen=pg.mkPen("#000"))
        for item in (self.pos_item, self.neg_item):
            item.setZValue(30)
            self.addItem(item)
        self.scene().sigMouseMoved.connect(self._on_move)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    # --- what is shown ---------------------------------------------------------------------------------
    def set_points(self, xs, ys, labels) -> None:
        self.xs, self.ys, self.labels = [float(v) for v in xs], [float(v) for v in ys], [float(v) for v in labels]
        x, y, lab = np.array(self.xs), np.array(self.ys), np.array(self.labels)
        self.pos_item.setData(x[lab > 0], y[lab > 0])
        self.neg_item.setData(x[lab < 0], y[lab < 0])

    def set_locked(self, reason: str = "") -> None:
        """Refuse every edit with ``reason`` (empty: editable again)."""
        self.locked = str(reason)

    def _refuse_locked(self) -> bool:
        if self.locked:
            self.refused.emit(self.locked)
            return True
        return False

    def view_to_widget(self, x: float, y: float) -> QPointF:
        """The widget pixel of a data point (tests click there)."""
        return self.mapFromScene(self.box.mapViewToScene(QPointF(x, y)))

    # --- edits -----------------------------------------------------------------------------------------
    def _clip(self, v: float) -> float:
        return float(min(max(v, -self.limit), self.limit))

    def _emit(self, final: bool = True) -> None:
        self.edited.emit(list(self.xs), list(self.ys), list(self.labels), final)

    def nearest(self, scene_pos, within_px: float | None = None) -> int | None:
        """The index of the point nearest ``scene_pos`` (within ``within_px`` pixels if given)."""
        if not self.xs:
            return None
        pts = [self.box.mapViewToScene(QPointF(x, y)) for x, y in zip(self.xs, self.ys)]
        d = [math.hypot(p.x() - scene_pos.x(), p.y() - scene_pos.y()) for p in pts]
        i = int(np.argmin(d))
        return i if within_px is None or d[i] <= within_px else None

    def on_click(self, button, x: float, y: float) -> None:
        if button in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton, Qt.MouseButton.MiddleButton) \
                and self._refuse_locked():
            return
        if button == Qt.MouseButton.LeftButton:
            self.add_point(x, y, 1.0)
        elif button == Qt.MouseButton.RightButton:
            self.add_point(x, y, -1.0)
        elif button == Qt.MouseButton.MiddleButton:
            i = self.nearest(self.box.mapViewToScene(QPointF(x, y)))
            if i is not None:
                self.remove_point(i)

    def add_point(self, x: float, y: float, label: float) -> None:
        if self._refuse_locked():
            return
        if len(self.xs) >= self.max_points:
            self.refused.emit(f"the lab takes at most {self.max_points} points: remove one first")
            return
        self.xs.append(self._clip(x))
        self.ys.append(self._clip(y))
        self.labels.append(1.0 if label > 0 else -1.0)
        self._emit()

    def remove_point(self, i: int) -> None:
        if self._refuse_locked():
            return
        if len(self.xs) <= 1:
            self.refused.emit("the last point stays (the data need at least one)")
            return
        for lst in (self.xs, self.ys, self.labels):
            del lst[i]
        self._emit()

    def move_point(self, i: int, x: float, y: float, final: bool = True) -> None:
        """Point i to (x, y): the path every drag step takes."""
        if self._refuse_locked():
            return
        self.xs[i], self.ys[i] = self._clip(x), self._clip(y)
        self._emit(final)

    def _on_move(self, scene_pos) -> None:
        self._hover = scene_pos

    def keyPressEvent(self, ev) -> None:
        if ev.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and self._hover is not None:
            i = self.nearest(self._hover)
            if i is not None:
                self.remove_point(i)
            ev.accept()
            return
        super().keyPressEvent(ev)
