"""Process-wide Qt set-up and helpers that the app, the recorder, the bench and the tests share.

Kept apart from ``visualizer.app`` so that recording (which grabs windows) does not import the main window:
imports inside ``visualizer`` go one way.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtWidgets import QApplication, QWidget


def grab_window(win: QWidget):
    """A QImage of the whole window with the GL views' content painted in (a plain widget grab leaves
    native GL child windows black)."""
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QPainter

    img = win.grab().toImage()
    painter = QPainter(img)
    dpr = img.devicePixelRatio() or 1.0
    for child in win.findChildren(QWidget):
        gl_window = getattr(child, "_gl_window", None)
        if gl_window is None or not child.isVisible():
            continue
        pos = child.mapTo(win, QPoint(0, 0))
        frame = gl_window.grabFramebuffer()
        frame.setDevicePixelRatio(dpr)
        painter.drawImage(pos, frame)
    painter.end()
    return img


class GuiThreadGC(QObject):
    """Python's cyclic garbage collector, run by a timer on the GUI thread only.

    Left automatic, the collector runs in whichever thread happens to allocate; if it frees a cycle holding a
    Qt object while in a worker thread (a grid computation), the QObject's destructor there can deadlock
    with the GUI thread (seen once in the test suite: a worker in ~QObject waiting for the GIL, the GUI thread
    holding it and waiting for Qt's lock). Reference counting still frees everything else at once."""

    def __init__(self, interval_ms: int = 400, parent=None) -> None:
        import gc

        super().__init__(parent)
        self.threshold = gc.get_threshold()
        gc.disable()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.check)
        self.timer.start(interval_ms)

    def check(self) -> None:
        import gc

        c0, c1, c2 = gc.get_count()
        if c0 > self.threshold[0]:
            gc.collect(0)
            if c1 > self.threshold[1]:
                gc.collect(1)
                if c2 > self.threshold[2]:
                    gc.collect(2)


_GC: GuiThreadGC | None = None


def collect_garbage_on_gui_thread() -> None:
    """Install the GuiThreadGC once the QApplication exists (idempotent)."""
    global _GC
    app = QApplication.instance()
    if _GC is None and app is not None:
        _GC = GuiThreadGC(parent=app)


#: glibc's malloc: blocks up to this size come from the heap (not a fresh mmap each time), and up to this much freed
#: memory at the heap's top is kept for reuse (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD)
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20


def reuse_freed_memory() -> bool:
    """Tune glibc's malloc so that memory freed and asked for again every frame is reused, not handed back to the
    system and faulted in anew. Mesa's software rasterizer bins a frame's triangles into blocks of 64 KB, about
    21 MB for a 401x401 height field, and frees them after the frame; with glibc's defaults (give back what is
    free at the heap's top beyond 128 KB) every frame faulted that memory in again: 5,350 page faults a frame,
    46-50 ms a frame, against none and 38-43 ms with these settings (four alternating runs each). Returns
    whether the settings took (glibc only)."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): its own defaults stand
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold, TRIM_THRESHOLD))


def prepare_qt() -> None:
    """Process-wide Qt set-up that must precede the QApplication.

    Every GL view shares one context group: pyqtgraph caches compiled shader programs globally, which is
    only valid when the contexts share objects (and Qt's global share context outlives any one view).
    """
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtGui import QSurfaceFormat

    if QCoreApplication.instance() is not None:
        return  # too late (and already done): these settings only act before the application exists
    reuse_freed_memory()


    QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
    fmt = QSurfaceFormat.defaultFormat()
    fmt.setSwapInterval(0)  # never block the GUI thread waiting for a vertical blank; frames are paced by us
    fmt.setDepthBufferSize(24)
    QSurfaceFormat.setDefaultFormat(fmt)
