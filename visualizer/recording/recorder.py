"""Headless, frame-exact rendering of a scene to MP4/GIF: ``losslab record SCENE.toml -o OUT.mp4``.

Descents run synchronously here (a SyncRunner the recorder steps ``steps_per_frame`` times per frame), grid
computations are awaited after every change, and the camera follows the scene's keyframes, so the same scene
renders the same frames every time, however slow the machine. Frames are rendered off screen at the scene's
size and encoded by FFmpeg (shipped inside imageio-ffmpeg).
"""

from __future__ import annotations

import importlib
import os
import sys
import time

import numpy as np
from PySide6.QtCore import QObject, Signal

_SYNC: list = []


class SyncRunner(QObject):
    """The interface of ProcessRunner, stepped by the recorder instead of a child process."""

    batch = Signal(object)
    done = Signal(object)
    failed = Signal(str)

    def __init__(self, target: str, kwargs: dict, start_paused: bool = False, **_) -> None:
        super().__init__()
        module, name = target.split(":")
        self._gen = getattr(importlib.import_module(module), name)(**kwargs)
        self._finished = False
        _SYNC.append(self)

    def start(self) -> None:
        self.advance(1)  # the step-0 snapshot

    def advance(self, n: int) -> None:
        if self._finished:
            return
        items = []
        try:
            for _ in range(n):
                items.append(next(self._gen))
        except StopIteration as stop:
            self._finished = True
            if items:
                self.batch.emit(items)
            self.done.emit(stop.value)
            return
        if items:
            self.batch.emit(items)

    def isRunning(self) -> bool:
        return not self._finished

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def step_once(self) -> None:
        self.advance(1)

    def abort(self, *_) -> None:
        self._finished = True


def _wait_idle(app, lab, timeout: float = 60.0) -> None:
    """Let the lab's grid workers finish what was asked (frames never show half-computed views)."""
    end = time.perf_counter() + timeout
    workers = [w for w in (getattr(lab, "grid_worker", None), getattr(lab, "worker", None)) if w is not None]
    while time.perf_counter() < end:
        app.processEvents()
        busy = any(w.busy or getattr(w, "_has_pending", False) for w in workers)
        if not busy and getattr(lab, "landscape", True) is not None:
            app.processEvents()
            return
        time.sleep(0.005)


def render(scene, out: str, size: tuple[int, int] | None = None, fps: int | None = None, progress=True) -> int:
    """Render ``scene`` to ``out`` (.mp4 or .gif); returns the number of frames written."""
    from PySide6.QtCore import QRectF, Qt
    from PySide6.QtGui import QColor, QFont, QImage, QPainter
    from PySide6.QtWidgets import QApplication

    from visualizer import runs
    from visualizer.app import prepare_qt
    from visualizer.labs import LABS
    from visualizer.recording.keyframes import camera_at

    width, height = size or scene.size
    fps = fps or scene.fps
    folder = os.path.dirname(os.path.abspath(out)) or "."
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise OSError(f"cannot write {out}: {folder} is not a writable folder")
    prepare_qt()
    app = QApplication.instance() or QApplication([])
    os.environ.setdefault("LOSSLAB_CONFIG_DIR", os.path.join(folder, ".losslab-record-cfg"))
    runs.RUNNER_FACTORY = SyncRunner
    _SYNC.clear()
    lab = LABS[scene.lab].load()(restore=False, start=False)
    # frames are rendered off screen at full size; the window itself stays small so that its own repaints
    # (the 2D view, the on-screen GL surface) cost little
    lab.resize(480, 320)
    lab.show()
    for k, v in scene.settings.items():
        setattr(lab.state, k, v)
    if hasattr(lab.state, "seed"):
        lab.state.seed = scene.seed
    lab.start()
    _wait_idle(app, lab)
    n_frames = max(1, round(scene.duration * fps))
    pending = sorted(scene.events, key=lambda e: e.time)
    tmp = out + ".part" + os.path.splitext(out)[1]
    writer = _writer(tmp, width, height, fps)
    next(writer)
    try:
        for i in range(n_frames):
            t = i / fps
            while pending and pending[0].time <= t + 1e-9:
                ev = pending.pop(0)
                for k, v in ev.set.items():
                    setattr(lab.state, k, v)
                if ev.set:
                    lab.start()
                if ev.action == "descent":
                    lab.start_descent(ev.start or lab.default_start())
                elif ev.action == "random_starts":
                    lab.random_starts()
                elif ev.action == "reset":
                    lab.reset()
                _wait_idle(app, lab)
            for r in list(_SYNC):
                r.advance(scene.steps_per_frame)
            app.processEvents()
            lab._redraw_runs()
            if scene.camera:
                cam = camera_at(scene.camera, t, scene.easing)
                lab.scene.setCameraPosition(distance=cam.distance, elevation=cam.elevation, azimuth=cam.azimuth)
            frame = np.ascontiguousarray(lab.scene.render_offscreen(width, height))  # BGRA, top row first
            caps = [c.text for c in scene.captions if c.start <= t <= c.end]
            if caps:  # drawn in place: the QImage shares the frame's memory (ARGB32 is BGRA in memory)
                img = QImage(frame.data, width, height, 4 * width, QImage.Format.Format_ARGB32)
                p = QPainter(img)
                p.setRenderHint(QPainter.RenderHint.Antialiasing)
                p.setFont(QFont("Sans", max(12, height // 30)))
                box = QRectF(0, height * 0.86, width, height * 0.12)
                p.fillRect(box, QColor(0, 0, 0, 150))
                p.setPen(QColor("#ffffff"))
                p.drawText(box, Qt.AlignmentFlag.AlignCenter, "  ·  ".join(caps))
                p.end()
            writer.send(frame)
            if progress:
                sys.stderr.write(f"\rframe {i + 1}/{n_frames}")
        writer.close()
        os.replace(tmp, out)
    finally:
        runs.RUNNER_FACTORY = runs.ProcessRunner
        if os.path.exists(tmp):
            os.unlink(tmp)
        lab.shutdown()
        lab.close()
    if progress:
        sys.stderr.write("\n")
    return n_frames


def _writer(path: str, width: int, height: int, fps: int):
    import imageio_ffmpeg

    if path.lower().endswith(".gif"):
        return imageio_ffmpeg.write_frames(path, (width, height), fps=fps, codec="gif", macro_block_size=1,
                                           pix_fmt_in="bgra", output_params=["-loop", "0"])
    return imageio_ffmpeg.write_frames(path, (width, height), fps=fps, codec="libx264", pix_fmt_in="bgra",
                                       pix_fmt_out="yuv420p", quality=8, macro_block_size=2, ffmpeg_log_level="error",
                                       output_params=["-preset", "superfast"])


def main(argv: list[str] | None = None) -> int:
    import argparse

    from visualizer.labs import LABS
    from visualizer.recording.scene import SceneError, load_scene

    p = argparse.ArgumentParser(prog="losslab record", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scene")
    p.add_argument("-o", "--out", required=True, help="output .mp4 or .gif")
    p.add_argument("--size", help="WIDTHxHEIGHT (default: the scene's)")
    p.add_argument("--fps", type=int, help="frames per second (default: the scene's)")
    args = p.parse_args(argv)
    size = None
    if args.size:
        try:
            size = tuple(int(v) for v in args.size.lower().split("x"))
        except ValueError:
            print(f"losslab record: --size wants WIDTHxHEIGHT, not '{args.size}'", file=sys.stderr)
            return 2
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        print(f"losslab record: cannot write {args.out}: {folder} is not a writable folder", file=sys.stderr)
        return 2
    if not args.out.lower().endswith((".mp4", ".gif")):
        print("losslab record: the output must end in .mp4 or .gif", file=sys.stderr)
        return 2
    try:
        scene = load_scene(args.scene, LABS)
        n = render(scene, args.out, size, args.fps)
    except (SceneError, OSError) as exc:
        print(f"losslab record: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} frames to {args.out}")
    return 0
