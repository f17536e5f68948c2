"""Frames for videos: capture a lab's 3D view (off screen, at any size up to 3840x2160), its 2D view or the
whole window; burn in overlays (title, step, loss, caption); encode in a worker thread with FFmpeg (shipped
inside imageio-ffmpeg), written to a temporary file of a unique name next to the target (``NAME.XXXXXXXX.part.mp4``)
that replaces the target only when it is complete.

A frame is a (height, width, 4) uint8 array in BGRA order, top row first (QImage's ARGB32 in memory).
"""

from __future__ import annotations

import math
import os
import queue
import tempfile
import threading

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, QThread, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter

from models.export import new_file_mode
from visualizer.recording.scene import MAX_SIZE, MIN_SIZE

SOURCES = {"3d": "active 3D view", "2d": "2D view", "window": "whole window"}


def check_size(width: int, height: int) -> None:
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height))
    if not (whole and MIN_SIZE <= width <= MAX_SIZE[0] and MIN_SIZE <= height <= MAX_SIZE[1]):
        raise ValueError(f"a video frame must be within {MIN_SIZE}x{MIN_SIZE} .. {MAX_SIZE[0]}x{MAX_SIZE[1]}, "
                         f"not {width}x{height}")


def image_to_frame(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_ARGB32)
    w, h = img.width(), img.height()
    arr = np.frombuffer(img.constBits(), np.uint8, count=img.bytesPerLine() * h).reshape(h, img.bytesPerLine())
    return arr[:, : 4 * w].reshape(h, w, 4).copy()


def _fit(src_w: int, src_h: int, width: int, height: int) -> QRectF:
    """The rectangle of a (src_w, src_h) picture scaled to fit (width, height), centred (letterbox)."""
    s = min(width / max(src_w, 1), height / max(src_h, 1))
    w, h = src_w * s, src_h * s
    return QRectF((width - w) / 2, (height - h) / 2, w, h)


def render_widget(widget, width: int, height: int, background: str = "#14161c") -> np.ndarray:
    """A plain (non-GL) widget painted at (width, height): vector content is drawn at the target scale, not
    magnified pixels; the widget's aspect is kept (letterboxed)."""
    img = QImage(width, height, QImage.Format.Format_ARGB32)
    img.fill(QColor(background))
    box = _fit(widget.width(), widget.height(), width, height)
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    p.translate(box.topLeft())
    p.scale(box.width() / max(widget.width(), 1), box.height() / max(widget.height(), 1))
    widget.render(p)
    p.end()
    return image_to_frame(img)


def render_image(src: QImage, width: int, height: int, background: str = "#000000") -> np.ndarray:
    """An image scaled to fit (width, height), letterboxed."""
    img = QImage(width, height, QImage.Format.Format_ARGB32)
    img.fill(QColor(background))
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    p.drawImage(_fit(src.width(), src.height(), width, height), src)
    p.end()
    return image_to_frame(img)


def capture(lab, source: str, width: int, height: int, window=None, keep: bool = True) -> np.ndarray:
    """One frame of ``source`` ('3d', '2d' or 'window') at (width, height). ``keep``: the 3D view keeps its
    off-screen framebuffer for the next frame (``release(lab)`` frees it)."""
    check_size(width, height)
    views = lab.views()
    if source == "window":
        from visualizer.qtsetup import grab_window

        return render_image(grab_window(window or lab.window()), width, height)
    if source not in views:
        raise ValueError(f"the {lab.key} lab has no {SOURCES.get(source, source)} to record")
    view = views[source]
    if source == "3d":
        return np.ascontiguousarray(view.render_offscreen(width, height, keep=keep))
    return render_widget(view, width, height)


def release(lab) -> None:
    """Free what ``capture`` kept for the next frame."""
    view = lab.views().get("3d")
    if view is not None:
        view.release_offscreen()


def _fmt_loss(loss) -> str:
    try:
        loss = float(loss)
    except (TypeError, ValueError):
        return "—"
    return f"{loss:.3e}" if math.isfinite(loss) else "—"


def burn_overlays(frame: np.ndarray, *, title: str | None = None, step: int | None = None, loss=None,
                  caption: str | None = None) -> np.ndarray:
    """Draw the overlays into ``frame`` in place (it must be C-contiguous BGRA) and return it."""
    if not (title or step is not None or loss is not None or caption):
        return frame
    h, w = frame.shape[:2]
    img = QImage(frame.data, w, h, 4 * w, QImage.Format.Format_ARGB32)  # shares the frame's memory
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setRenderHint(QPainter.RenderHint.TextAntialiasing)
    size = max(11, h // 36)
    pad = size // 2
    font = QFont("Sans", 1)
    font.setPixelSize(size)
    p.setFont(font)
    fm = QFontMetrics(font)

    def plate(x: float, y: float, text: str, align_right: bool = False) -> float:
        tw = fm.horizontalAdvance(text)
        box = QRectF(x - tw - 2 * pad if align_right else x, y, tw + 2 * pad, fm.height() + pad)
        p.fillRect(box, QColor(0, 0, 0, 140))
        p.setPen(QColor("#eceff4"))
        p.drawText(QPointF(box.left() + pad, box.top() + pad / 2 + fm.ascent()), text)
        return box.right()

    title_right = 0.0
    if title:
        bold = QFont(font)
        bold.setBold(True)
        p.setFont(bold)
        fm = QFontMetrics(bold)
        title_right = plate(pad, pad, title)
        p.setFont(font)
        fm = QFontMetrics(font)
    right = []
    if step is not None:
        right.append(f"step {int(step):,}")
    if loss is not None:
        right.append(f"loss {_fmt_loss(loss)}")
    if right:
        text = "   ".join(right)
        # beside the title when there is room, else on the row below it
        y = pad if w - pad - fm.horizontalAdvance(text) - 2 * pad > title_right + pad else 2 * pad + fm.height()
        plate(w - pad, y, text, align_right=True)
    if caption:
        cap = QFont(font)
        cap.setPixelSize(max(12, h // 30))
        p.setFont(cap)
        box = QRectF(0, h * 0.86, w, h * 0.12)
        p.fillRect(box, QColor(0, 0, 0, 150))
        p.setPen(QColor("#ffffff"))
        p.drawText(box, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, caption)
    p.end()
    return frame


def open_writer(path: str, width: int, height: int, fps: int):
    """An FFmpeg writer (a primed generator: ``send`` BGRA frames, ``close`` to finish) for .mp4 or .gif."""
    import imageio_ffmpeg

    if path.lower().endswith(".gif"):
        # one palette for the whole clip, computed from the frames (good colours, small files)
        gen = imageio_ffmpeg.write_frames(
            path, (width, height), fps=fps, codec="gif", macro_block_size=1, pix_fmt_in="bgra",
            ffmpeg_log_level="error",
            output_params=["-filter_complex", "split[a][b];[a]palettegen=stats_mode=diff[p];"
                           "[b][p]paletteuse=dither=bayer:bayer_scale=5:diff_mode=rectangle",
                           "-loop", "0"])
    else:
        # x264 ultrafast at CRF 18: half the CPU of superfast at imageio's quality 8 (CRF 10), half the bitrate,
        # 0.5 dB lower PSNR (~39-40 dB on the labs' frames)
        gen = imageio_ffmpeg.write_frames(path, (width, height), fps=fps, codec="libx264", pix_fmt_in="bgra",
                                          pix_fmt_out="yuv420p", quality=None, macro_block_size=2,
                                          ffmpeg_log_level="error", output_params=["-preset", "ultrafast", "-crf", "18"])
    gen.send(None)
    return gen


def partial_path(out: str) -> str:
    """A new, empty file of a unique name next to ``out`` (same folder: the final rename stays on one file
    system), for the video while it is written: ``clip.mp4`` -> ``clip.k2j4x9qa.part.mp4`` (the extension last:
    FFmpeg picks the format by it). Never the name of a file that exists, so no user's file is overwritten."""
    folder = os.path.dirname(os.path.abspath(out))
    stem, ext = os.path.splitext(os.path.basename(out))
    fd, path = tempfile.mkstemp(prefix=f"{stem}.", suffix=f".part{ext}", dir=folder)
    os.close(fd)
    return path




def publish(tmp: str, out: str) -> None:
    """Rename the finished ``tmp`` over ``out`` with the mode a new file gets (mkstemp made it 0600)."""
    os.chmod(tmp, new_file_mode())
    os.replace(tmp, out)


def check_output(out: str) -> None:
    """Fail early (before any rendering) when ``out`` cannot be written."""
    if not out.lower().endswith((".mp4", ".gif")):
        raise OSError(f"cannot write {out}: a video must end in .mp4 or .gif")
    folder = os.path.dirname(os.path.abspath(out)) or "."
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise OSError(f"cannot write {out}: {folder} is not a writable folder")
    if os.path.isdir(out):
        raise OSError(f"cannot write {out}: it is a folder")


class Encoder(QThread):
    """Encodes frames in its own thread. ``put`` never blocks: it returns False while the queue is full (the
    caller waits and tries again on its next tick). ``finish`` ends the file; ``finished_file(path, frames)``
    or ``failed(text)`` follows. The output replaces ``out`` atomically once FFmpeg has closed it; until then
    it is ``tmp`` (default: a new ``partial_path(out)``, made when the thread starts), removed on failure."""

    finished_file = Signal(str, int)
    failed = Signal(str)

    def __init__(self, out: str, width: int, height: int, fps: int, max_bytes: int = 384 << 20, parent=None,
                 tmp: str | None = None) -> None:
        super().__init__(parent)
        check_output(out)
        check_size(width, height)
        self.out, self.width, self.height, self.fps = out, width, height, fps
        self.tmp = tmp
        self.frames = 0
        self.error: str | None = None
        self._q: queue.Queue = queue.Queue(maxsize=max(2, max_bytes // (4 * width * height)))
        self._done = threading.Event()
        self._aborted = False

    def put(self, frame: np.ndarray) -> bool:
        if frame.shape != (self.height, self.width, 4):
            raise ValueError(f"frame {frame.shape[1]}x{frame.shape[0]} does not match the video's "
                             f"{self.width}x{self.height}")
        try:
            self._q.put_nowait(frame)
        except queue.Full:
            return False
        return True

    def put_wait(self, frame: np.ndarray) -> None:
        """For headless rendering: wait for room (the encoder runs meanwhile). An encoder that failed (FFmpeg
        stopped) raises at once, not once the queue is full."""
        if self.error or self._done.is_set():
            raise OSError(self.error or "the encoder stopped")
        while not self.put(frame):
            if self.error or not self.isRunning():
                raise OSError(self.error or "the encoder stopped")
            self._done.wait(0.002)

    def backlog(self) -> int:
        return self._q.qsize()

    def abort(self) -> None:
        """Stop without a file: the frames still queued are dropped, what was encoded is deleted (a render
        that failed or was stopped half way)."""
        self._aborted = True
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self.finish(wait=True)

    def finish(self, wait: bool = False) -> None:
        self._q.put(None)
        if wait:
            self.wait()

    def run(self) -> None:
        writer = None
        try:
            if self.tmp is None:
                self.tmp = partial_path(self.out)
            writer = open_writer(self.tmp, self.width, self.height, self.fps)
            while True:
                frame = self._q.get()
                if frame is None or self._aborted:
                    break
                writer.send(frame)
                self.frames += 1
            writer.close()
            writer = None
            if self._aborted:
                raise OSError("aborted")
            if self.frames == 0:
                raise OSError("no frames were recorded")
            publish(self.tmp, self.out)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            if writer is not None:
                try:
                    writer.close()
                except Exception:
                    pass
            try:
                if self.tmp is not None:
                    os.unlink(self.tmp)
            except OSError:
                pass
            while True:  # drain, so that a producer waiting for room goes on
                try:
                    if self._q.get_nowait() is None:
                        break
                except queue.Empty:
                    break
            self.failed.emit(self.error)
            return
        finally:
            self._done.set()
        self.finished_file.emit(self.out, self.frames)
