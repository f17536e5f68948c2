"""A 2D view of a parameter plane: a scalar field as a colour map with colour bar and contour lines,
curves and points on top, and clicks reported in parameter coordinates.

Each value of the field is drawn as the cell around its own coordinates (the cell reaches halfway to the
neighbours), on axes of any length and spacing: an evenly spaced axis is the image's own pixels, an unevenly
spaced one is drawn through a finer image whose pixels each take the value of the cell they lie in (values
are never interpolated)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal

from visualizer.views.common import no_si_prefix


def polylines_to_nan_separated(polys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Join polylines into one (x, y) pair with NaN breaks, for a single fast curve item."""
    if not polys:
        return np.zeros(0), np.zeros(0)
    parts = []
    for p in polys:
        parts.append(p)
        parts.append(np.full((1, 2), np.nan))
    xy = np.concatenate(parts)
    return xy[:, 0], xy[:, 1]


#: the pixels of an unevenly spaced axis's image: enough for its narrowest cell to get about four
MAX_CELL_PIXELS = 4096


def _evenly_spaced(t: np.ndarray) -> bool:
    step = (t[-1] - t[0]) / (len(t) - 1)
    return bool(np.allclose(np.diff(t), step, rtol=1e-6, atol=1e-9 * abs(t[-1] - t[0])))


def cell_edges(t: np.ndarray) -> np.ndarray:
    """The edges of the cells of an ascending axis: halfway between neighbours, half a step beyond the ends."""
    mid = 0.5 * (t[1:] + t[:-1])
    return np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])


def _cell_index(t: np.ndarray) -> np.ndarray | None:
    """For each pixel of an axis's image, the index of its cell (None for an evenly spaced axis: its own)."""
    if _evenly_spaced(t):
        return None
    edges = cell_edges(t)
    n = int(min(MAX_CELL_PIXELS, np.ceil(4 * (edges[-1] - edges[0]) / np.diff(edges).min())))
    centres = edges[0] + (np.arange(n) + 0.5) * (edges[-1] - edges[0]) / n
    return np.clip(np.searchsorted(edges, centres, side="right") - 1, 0, len(t) - 1)


class PlaneView(pg.GraphicsLayoutWidget):
    """Parameter-plane view. ``clicked(w1, w2)`` fires on a left click inside the plot."""

    clicked = Signal(float, float)

    def __init__(self, cmap: pg.ColorMap, parent=None, x_label: str = "w₁", y_label: str = "w₂",
                 zero_legend: bool = True) -> None:
        super().__init__(parent)
        self.setBackground("#14161c")
        self.plot = self.addPlot(row=0, col=0)
        no_si_prefix(self.plot)
        self.plot.setAspectLocked(True)
        self.plot.setLabel("bottom", x_label)
        self.plot.setLabel("left", y_label)
        self.plot.showGrid(x=False, y=False)
        self.plot.getViewBox().setBackgroundColor("#0d0f14")
        self.image = pg.ImageItem(axisOrder="col-major")
        self.plot.addItem(self.image)
        self.colorbar = pg.ColorBarItem(colorMap=cmap, interactive=False, width=14)
        self.colorbar.setImageItem(self.image)
        self.colorbar.axis.enableAutoSIPrefix(False)
        self.addItem(self.colorbar, row=0, col=1)
        self.overlay = pg.ImageItem(axisOrder="col-major")
        self.overlay.setZValue(2)
        self.plot.addItem(self.overlay)
        self.overlay_outline = pg.PlotCurveItem(pen=pg.mkPen("#ff5a5a", width=1.2, style=Qt.PenStyle.DashLine),
                                                connect="finite")
        self.overlay_outline.setZValue(3)
        self.plot.addItem(self.overlay_outline)
        self.contours = pg.PlotCurveItem(pen=pg.mkPen((255, 255, 255, 70), width=1), connect="finite")
        self.contours.setZValue(4)
        self.plot.addItem(self.contours)
        self.residual_curves: list[pg.PlotCurveItem] = []
        self.zero_shadow = pg.PlotCurveItem(pen=pg.mkPen((0, 0, 0, 200), width=6), connect="finite")
        self.zero_curve = pg.PlotCurveItem(pen=pg.mkPen("#ffffff", width=3), connect="finite",
                                           name="zero-loss set (solutions)")
        self.zero_points = pg.ScatterPlotItem(symbol="star", size=18, brush=pg.mkBrush("#ffffff"),
                                              pen=pg.mkPen("#000000", width=1.5))
        for z, item in enumerate((self.zero_shadow, self.zero_curve, self.zero_points)):
            item.setZValue(10 + z)
            self.plot.addItem(item)
        # static layers are cached as pixmaps, so a moving trajectory repaints cheaply
        from PySide6.QtWidgets import QGraphicsItem

        for item in (self.image, self.overlay, self.overlay_outline, self.contours, self.zero_shadow,
                     self.zero_curve):
            item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.legend = self.plot.addLegend(offset=(8, 8), labelTextColor="#dddddd",
                                          brush=pg.mkBrush(10, 12, 16, 190))
        if zero_legend:
            self.legend.addItem(self.zero_curve, "zero-loss set (solutions)")
        self.legend.setVisible(zero_legend)  # an empty legend would be a dark square in the corner
        self._legend_extra: dict[str, object] = {}
        self._rect = QRectF(-1, -1, 2, 2)
        self.plot.scene().sigMouseClicked.connect(self._on_click)

    def set_legend_entry(self, key: str, item, label: str, show: bool) -> None:
        """Add or remove an optional legend entry (landing points, projections, curvature shading)."""
        if show and key not in self._legend_extra:
            self.legend.addItem(item, label)
            self._legend_extra[key] = item
        elif not show and key in self._legend_extra:
            self.legend.removeItem(self._legend_extra.pop(key))
        self.legend.setVisible(bool(self.legend.items))

    # --- content ---------------------------------------------------------------------------------
    def set_field(self, w1: np.ndarray, w2: np.ndarray, values: np.ndarray, levels: tuple[float, float],
                  label: str, reset_view: bool = False, holes: bool = False) -> None:
        """``values[i, j]`` at ``(w1[i], w2[j])``, both axes ascending, at least 2 points each. ``holes``: values
        that are NaN are left transparent (the plot's background shows); otherwise drawn at the lowest level."""
        w1, w2 = np.asarray(w1, dtype=np.float64), np.asarray(w2, dtype=np.float64)
        e1, e2 = cell_edges(w1), cell_edges(w2)
        rect = QRectF(e1[0], e2[0], e1[-1] - e1[0], e2[-1] - e2[0])
        values = np.asarray(values)
        i1, i2 = _cell_index(w1), _cell_index(w2)
        if i1 is not None:
            values = values[i1]
        if i2 is not None:
            values = values[:, i2]
        image = values if holes else np.nan_to_num(values, nan=levels[0])
        self.image.setImage(image.astype(np.float32), autoLevels=False)
        self.image.setRect(rect)
        self.colorbar.setLevels(levels)
        self.colorbar.axis.setLabel(label)
        if reset_view or rect != self._rect:
            self.plot.setRange(rect, padding=0.0)
        self._rect = rect

    def set_overlay(self, mask: np.ndarray | None, outline: list[np.ndarray] | None = None,
                    color=(255, 60, 90, 62)) -> None:
        if mask is None:
            self.overlay.clear()
            self.overlay.setVisible(False)
            self.overlay_outline.setData([], [])
            return
        rgba = np.zeros(mask.shape + (4,), dtype=np.ubyte)
        rgba[mask] = color
        self.overlay.setImage(rgba, autoLevels=False)
        self.overlay.setRect(self._rect)
        self.overlay.setVisible(True)
        x, y = polylines_to_nan_separated(outline or [])
        self.overlay_outline.setData(x, y, connect="finite")

    def set_contours(self, polys: list[np.ndarray]) -> None:
        x, y = polylines_to_nan_separated(polys)
        self.contours.setData(x, y, connect="finite")

    def set_zero_set(self, curves: list[np.ndarray], points: np.ndarray) -> None:
        x, y = polylines_to_nan_separated(curves)
        self.zero_shadow.setData(x, y, connect="finite")
        self.zero_curve.setData(x, y, connect="finite")
        self.zero_points.setData(pos=np.asarray(points).reshape(-1, 2))

    def set_residual_curves(self, per_point: list[list[np.ndarray]], colors: list[str]) -> None:
        for item in self.residual_curves:
            self.plot.removeItem(item)
        self.residual_curves = []
        for polys, color in zip(per_point, colors):
            x, y = polylines_to_nan_separated(polys)
            item = pg.PlotCurveItem(x, y, pen=pg.mkPen(color, width=1.6, style=Qt.PenStyle.DashLine),
                                    connect="finite")
            item.setZValue(8)
            self.plot.addItem(item)
            self.residual_curves.append(item)

    # --- input -----------------------------------------------------------------------------------
    def _on_click(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton or ev.double():
            return
        vb = self.plot.getViewBox()
        if not vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        p: QPointF = vb.mapSceneToView(ev.scenePos())
        ev.accept()
        self.clicked.emit(float(p.x()), float(p.y()))

    def view_to_widget(self, w1: float, w2: float) -> QPointF:
        """Widget pixel position of a parameter point (used by tests to click precisely)."""
        vb = self.plot.getViewBox()
        scene = vb.mapViewToScene(QPointF(w1, w2))
        return self.mapFromScene(scene)
