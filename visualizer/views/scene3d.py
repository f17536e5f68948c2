"""A 3D OpenGL view of a loss surface over a parameter box, with curves and markers on it.

Heights are mapped into a box of fixed visual proportions: the plane spans its real parameter range,
and the displayed loss value (linear or log10) spans [0, height]. ``height_of`` maps loss values to the
same scene heights so that trajectories and curves sit on the surface.
"""

from __future__ import annotations

import atexit
import time
import weakref

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
from pyqtgraph.opengl.GLViewWidget import GLViewMixin
from PySide6.QtCore import Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtOpenGL import QOpenGLWindow
from PySide6.QtWidgets import QWidget

from visualizer.gl.heightfield import HeightFieldItem

_SCENES: weakref.WeakSet[Scene3D] = weakref.WeakSet()


def _delete_containers_at_exit() -> None:
    """The container owns its GL window in C++, but PySide counts the window as Python-owned and deletes
    it first when the interpreter exits; the container would then touch a dangling pointer. Registered
    after PySide's own exit hook, this runs before it and deletes each container (and so its window)."""
    import shiboken6

    for scene in list(_SCENES):
        try:
            c = scene.container
            if shiboken6.isValid(c):
                shiboken6.delete(c)
        except RuntimeError:
            pass


atexit.register(_delete_containers_at_exit)


def polylines_to_segments(polys: list[np.ndarray]) -> np.ndarray:
    """Polylines (k, 3) to pairs of points for GL 'lines' mode (no NaN breaks needed)."""
    segs = [np.stack([p[:-1], p[1:]], axis=1).reshape(-1, p.shape[1]) for p in polys if len(p) >= 2]
    return np.concatenate(segs) if segs else np.zeros((0, 3))


class Scene3D(GLViewMixin, QOpenGLWindow):
    """GL view with a shared HeightFieldItem (``surface``); emits ``frame_drawn`` after every paint (for the FPS meter).

    It is a QOpenGLWindow shown through a window container (``self.container``), not a QOpenGLWidget: a
    QOpenGLWidget makes Qt compose the whole top-level window through OpenGL on every update of any widget,
    which under a software rasterizer stalled the GUI for 60-90 ms a frame; a native GL child window
    swaps only its own surface. Mouse: left-drag rotates, middle-drag or Ctrl+drag pans, wheel zooms.
    """

    frame_drawn = Signal()

    def __init__(self, cmap: pg.ColorMap, parent=None, labels=("w₁", "w₂", "loss")) -> None:
        self.software_gl = None
        super().__init__()
        self.container = QWidget.createWindowContainer(self, parent)
        self.container._gl_window = self
        _SCENES.add(self)
        self.container.setMinimumSize(200, 200)
        self.setBackgroundColor(QColor("#0d0f14"))
        self.surface = HeightFieldItem(cmap)
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
        self.extent: tuple | None = None
        self.zheight = 1.0
        self.value_range = (0.0, 1.0)
        self.log_scale = False
        self.floor_value = -12.0
        self.set_home((0.0, 0.0, 0.0), 10.0, elevation=28, azimuth=-60)
        self.software_gl: bool | None = None
        self.renderer = ""
        self.last_frame_ms = 0.0

    def set_home(self, center: tuple, distance: float, elevation: float | None = None,
                 azimuth: float | None = None) -> None:
        """The view the lab chose for its content: the camera goes there, and a scene's keyframes that name
        no centre or distance use these."""
        self.home = (tuple(float(c) for c in center), float(distance))
        self.setCameraPosition(pos=pg.Vector(*center), distance=distance, elevation=elevation, azimuth=azimuth)

    def render_offscreen(self, width: int, height: int, keep: bool = False) -> np.ndarray:
        """One frame at any size (up to the GL limits) in a single framebuffer: (height, width, 4) BGRA uint8,
        top row first. ``keep``: keep the framebuffer for the next frame of this size (a recording; free it
        with ``release_offscreen``).

        pyqtgraph's renderToArray draws the scene once per 1024-pixel tile; one framebuffer of the full size
        draws it once."""
        from OpenGL import GL
        from PySide6.QtOpenGL import QOpenGLFramebufferObject, QOpenGLFramebufferObjectFormat

        self.makeCurrent()
        fbo = getattr(self, "_offscreen_fbo", None)
        if fbo is None or (fbo.width(), fbo.height()) != (width, height):
            fmt = QOpenGLFramebufferObjectFormat()
            fmt.setAttachment(QOpenGLFramebufferObject.Attachment.CombinedDepthStencil)
            fbo = QOpenGLFramebufferObject(width, height, fmt)
        self._offscreen_fbo = fbo if keep else None
        out = np.empty((height, width, 4), dtype=np.uint8)
        # text items paint through a QPainter on the window, which would rebind the window's own framebuffer
        # in the middle of the frame: they are left out of off-screen frames
        texts = [i for i in self.items if isinstance(i, gl.GLTextItem) and i.visible()]
        for i in texts:
            i.setVisible(False)
        try:
            fbo.bind()
            GL.glViewport(0, 0, width, height)
            # drawn upside down (the region's y axis reversed): glReadPixels returns rows bottom first, so the
            # pixels come back top row first with no flip copy (no item culls faces, so nothing else changes)
            self.paint(region=(0, height, width, -height), viewport=(0, 0, width, height))
            fbo.bind()
            GL.glReadPixels(0, 0, width, height, GL.GL_BGRA, GL.GL_UNSIGNED_BYTE, out)
        finally:
            fbo.release()
            for i in texts:
                i.setVisible(True)
        return out

    def release_offscreen(self) -> None:
        """Free the framebuffer kept by ``render_offscreen(..., keep=True)`` (a 4K one holds ~64 MB)."""
        if getattr(self, "_offscreen_fbo", None) is not None:
            self.makeCurrent()
            self._offscreen_fbo = None  # deleted with its GL objects while the context is current

    def rect(self):
        """QWidget-style rect (pyqtgraph's text item asks its view for one)."""
        from PySide6.QtCore import QRect

        return QRect(0, 0, self.width(), self.height())

    def paintGL(self, *args, **kwargs):
        if self.software_gl is None:
            self._detect_renderer()
        t = time.perf_counter()
        super().paintGL(*args, **kwargs)
        self.last_frame_ms = (time.perf_counter() - t) * 1e3
        self.frame_drawn.emit()

    def _detect_renderer(self) -> None:
        """Software rasterizers (Mesa llvmpipe under Xvfb) draw smooth wide lines very slowly: skip it there."""
        from OpenGL import GL

        try:
            name = (GL.glGetString(GL.GL_RENDERER) or b"").decode(errors="replace").lower()
        except Exception:
            name = ""
        self.renderer = name
        self.software_gl = any(k in name for k in ("llvmpipe", "softpipe", "swrast", "software"))
        if self.software_gl:
            for item in self.items:
                if isinstance(item, gl.GLLinePlotItem):
                    item.antialias = False

    def addItem(self, item) -> None:
        if self.software_gl and isinstance(item, gl.GLLinePlotItem):
            item.antialias = False
        super().addItem(item)

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
        # the values themselves go to the GPU: the clamp into the box and its scale are uniforms there
        self.surface.set_display(self.zheight / (hi - lo if hi > lo else 1.0), lo, (lo, hi))
        self.surface.set_data(w1, w2, values, colors=colors, z_range=value_range)
        new_extent = (float(w1[0]), float(w1[-1]), float(w2[0]), float(w2[-1]))
        if new_extent != self.extent or reset_camera:
            self.extent = new_extent
            cx, cy = 0.5 * (w1[0] + w1[-1]), 0.5 * (w2[0] + w2[-1])
            self.floor.resetTransform()
            self.floor.setSize(w1[-1] - w1[0], w2[-1] - w2[0])
            self.floor.setSpacing((w1[-1] - w1[0]) / 12, (w2[-1] - w2[0]) / 12)
            self.floor.translate(cx, cy, -0.002 * self.zheight)
            self.set_home((cx, cy, 0.3 * self.zheight), 1.45 * span, elevation=30, azimuth=-60)
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
