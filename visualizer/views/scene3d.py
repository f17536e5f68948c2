"""A 3D OpenGL view of a loss surface over a parameter box, with curves and markers on it.

Heights are mapped into a box of fixed visual proportions: the plane spans its real parameter range,
and the displayed loss value (linear or log10) spans [0, height]. ``height_of`` maps loss values to the
same scene heights so that trajectories and curves sit on the surface.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
from PySide6.QtCore import Signal
from PySide6.QtGui import QColor, QFont

from visualizer.gl.surface import SurfaceItem


def polylines_to_segments(polys: list[np.ndarray]) -> np.ndarray:
    """Polylines (k, 3) to pairs of points for GL 'lines' mode (no NaN breaks needed)."""
    segs = [np.stack([p[:-1], p[1:]], axis=1).reshape(-1, p.shape[1]) for p in polys if len(p) >= 2]
    return np.concatenate(segs) if segs else np.zeros((0, 3))


class Scene3D(gl.GLViewWidget):
    """GL view with a shared SurfaceItem; emits ``frame_drawn`` after every paint (for the FPS meter)."""

    frame_drawn = Signal()

    def __init__(self, cmap: pg.ColorMap, parent=None, labels=("w₁", "w₂", "loss")) -> None:
        super().__init__(parent)
        self.setBackgroundColor(QColor("#0d0f14"))
        self.surface = SurfaceItem(cmap)
        self.addItem(self.surface)
        self.floor = gl.GLGridItem(color=(255, 255, 255, 28))
        self.addItem(self.floor)
        self.contour_lines = gl.GLLinePlotItem(mode="lines", color=(1, 1, 1, 0.28), width=1.0,
                                               glOptions="translucent", antialias=True)
        self.addItem(self.contour_lines)
        self.labels = [gl.GLTextItem(text=t, color=(220, 220, 220, 255), font=QFont("Sans", 12))
                       for t in labels]
        for item in self.labels:
            self.addItem(item)
        self.extent = (-1.0, 1.0, -1.0, 1.0)
        self.zheight = 1.0
        self.value_range = (0.0, 1.0)
        self.log_scale = False
        self.floor_value = -12.0
        self.setCameraPosition(distance=10, elevation=28, azimuth=-60)

    def paintGL(self, *args, **kwargs):  # noqa: N802 - Qt override
        super().paintGL(*args, **kwargs)
        self.frame_drawn.emit()

    # --- height mapping ----------------------------------------------------------------------------
    def display_value(self, loss: np.ndarray) -> np.ndarray:
        loss = np.asarray(loss, dtype=np.float64)
        if self.log_scale:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.log10(np.maximum(loss, 10.0**self.floor_value))
        return loss

    def height_of(self, loss: np.ndarray, lift: float = 0.0) -> np.ndarray:
        lo, hi = self.value_range
        v = np.clip(self.display_value(loss), lo, hi)
        return (v - lo) / (hi - lo if hi > lo else 1.0) * self.zheight + lift * self.zheight

    # --- content -----------------------------------------------------------------------------------
    def set_surface(self, w1: np.ndarray, w2: np.ndarray, values: np.ndarray, value_range: tuple[float, float],
                    log_scale: bool, floor_value: float, colors: np.ndarray | None = None,
                    reset_camera: bool = False) -> None:
        self.log_scale = log_scale
        self.floor_value = floor_value
        self.value_range = value_range
        span = max(w1[-1] - w1[0], w2[-1] - w2[0])
        self.zheight = 0.55 * span
        lo, hi = value_range
        z = (np.clip(values, lo, hi) - lo) / (hi - lo if hi > lo else 1.0) * self.zheight
        if colors is None:
            colors = self.surface.colors_for(values, value_range)
        self.surface.set_data(w1, w2, z, colors=colors, z_range=(0.0, self.zheight))
        new_extent = (float(w1[0]), float(w1[-1]), float(w2[0]), float(w2[-1]))
        if new_extent != self.extent or reset_camera:
            self.extent = new_extent
            cx, cy = 0.5 * (w1[0] + w1[-1]), 0.5 * (w2[0] + w2[-1])
            self.floor.resetTransform()
            self.floor.setSize(w1[-1] - w1[0], w2[-1] - w2[0])
            self.floor.setSpacing((w1[-1] - w1[0]) / 12, (w2[-1] - w2[0]) / 12)
            self.floor.translate(cx, cy, -0.002 * self.zheight)
            self.setCameraPosition(pos=pg.Vector(cx, cy, 0.35 * self.zheight), distance=1.9 * span)
            self.labels[0].setData(pos=(w1[-1] + 0.06 * span, cy, 0))
            self.labels[1].setData(pos=(cx, w2[-1] + 0.06 * span, 0))
            self.labels[2].setData(pos=(w1[0], w2[-1], self.zheight * 1.08))
        self.update()

    def set_contours(self, polys_by_level: list[tuple[float, list[np.ndarray]]]) -> None:
        """Contour lines of the displayed value, lifted onto the surface."""
        polys3 = []
        lo, hi = self.value_range
        for level, polys in polys_by_level:
            z = (level - lo) / (hi - lo if hi > lo else 1.0) * self.zheight + 0.004 * self.zheight
            polys3 += [np.column_stack([p, np.full(len(p), z)]) for p in polys]
        seg = polylines_to_segments(polys3)
        self.contour_lines.setData(pos=seg if len(seg) else np.zeros((0, 3)))
        self.contour_lines.setVisible(len(seg) > 0)
