"""View helpers every lab uses once: the caption line, the error banner, splitters, dark plots, lit mesh
colours, and images written atomically."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QLabel, QSplitter, QVBoxLayout, QWidget

PLOT_BACKGROUND = "#14161c"
LIGHT = np.array([0.35, -0.45, 0.82]) / np.linalg.norm([0.35, -0.45, 0.82])


def caption() -> QLabel:
    """The line above a lab's views: rich text that wraps instead of widening the window."""
    label = QLabel()
    label.setStyleSheet("color:#c9d1d9;padding:2px 6px;")
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setWordWrap(True)
    return label


class Banner(QLabel):
    """An error line above the views, shown for ten seconds."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setVisible(False)
        self.setStyleSheet("QLabel{background:#5c1d24;color:#ffe3e3;padding:6px 10px;border-radius:4px;}")
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)

    def show_text(self, text: str, ms: int = 10000) -> None:
        self.setText("⚠ " + text)
        self.setVisible(True)
        self._timer.start(ms)

    def stop(self) -> None:
        self._timer.stop()


def splitter(orientation: str, *widgets: QWidget, stretch: tuple = (), min_width: int = 0) -> QSplitter:
    """A splitter ('h' or 'v') of ``widgets`` with their stretch factors; children never collapse."""
    split = QSplitter(Qt.Orientation.Horizontal if orientation == "h" else Qt.Orientation.Vertical)
    for i, w in enumerate(widgets):
        split.addWidget(w)
        if min_width:
            w.setMinimumWidth(min_width)
        if i < len(stretch):
            split.setStretchFactor(i, stretch[i])
    split.setChildrenCollapsible(False)
    return split


def lab_layout(lab: QWidget, *top: QWidget, body: QWidget) -> QVBoxLayout:
    """The lab's own layout: the ``top`` lines (banner, caption) over the ``body`` (its splitters)."""
    lay = QVBoxLayout(lab)
    lay.setContentsMargins(4, 4, 4, 4)
    for w in top:
        lay.addWidget(w)
    lay.addWidget(body, 1)
    return lay


def no_si_prefix(plot) -> None:
    """Axes that show their numbers as they are: pyqtgraph's automatic SI prefix rescales the ticks and moves the
    scale into the label ("(x0.001)"), which an audience misreads as part of the quantity."""
    item = plot.getPlotItem() if hasattr(plot, "getPlotItem") else plot
    for side in ("left", "bottom", "right", "top"):
        item.getAxis(side).enableAutoSIPrefix(False)


def dark_plot(title: str | None = None, x: str | None = None, y: str | None = None, log_y: bool = False,
              tooltip: str = "") -> pg.PlotWidget:
    plot = pg.PlotWidget(title=title)
    plot.setBackground(PLOT_BACKGROUND)
    no_si_prefix(plot)
    if log_y:
        plot.setLogMode(x=False, y=True)
    if x:
        plot.setLabel("bottom", x)
    if y:
        plot.setLabel("left", y)
    if tooltip:
        plot.setToolTip(tooltip)
    return plot


def lit_colors(normals: np.ndarray | None, rgba: tuple, n: int) -> np.ndarray:
    """Per-vertex colours of a mesh in ``rgba`` lit from one fixed direction (two-sided)."""
    base = np.tile(np.array(rgba, dtype=np.float32), (n, 1))
    if normals is None or len(normals) != n:
        return base
    d = np.abs(normals @ LIGHT).astype(np.float32)
    base[:, :3] *= (0.45 + 0.6 * d)[:, None]
    np.clip(base, 0, 1, out=base)
    return base


def save_atomically(path: str, write) -> None:
    """``write(tmp_path)`` into a temporary file beside ``path``, then renamed over it: a reader never sees a
    half-written image, and nothing is left behind on failure (OSError)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1] or ".tmp", dir=folder)
    os.close(fd)
    try:
        if write(tmp) is False:
            raise OSError("the image could not be encoded")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
