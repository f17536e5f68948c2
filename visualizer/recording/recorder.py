"""Headless, frame-exact rendering of a scene to MP4/GIF: ``losslab record SCENE.toml -o OUT.mp4``.

A SceneDriver plays the scene on the lab with synchronous runs (frames follow the simulation clock and the
same scene gives the same frames); each frame is rendered off screen at the scene's size, overlays and
captions are burned in, and an Encoder thread feeds FFmpeg (shipped inside imageio-ffmpeg) while the next
frame renders.
"""

from __future__ import annotations

import os
import sys


def _lab_for(scene):
    from visualizer.labs import LABS

    return LABS[scene.lab].load()


def render(scene, out: str, size: tuple[int, int] | None = None, fps: int | None = None, progress=True,
           frames: int | None = None, on_frame=None) -> int:
    """Render ``scene`` to ``out`` (.mp4 or .gif); returns the number of frames written. ``frames`` stops
    after that many (a quick check of a long scene); ``on_frame(i, frame)`` sees each frame as rendered,
    before the overlays."""
    import dataclasses

    from PySide6.QtWidgets import QApplication

    from visualizer.qtsetup import collect_garbage_on_gui_thread, prepare_qt
    from visualizer.recording.driver import SceneDriver, SyncRunner, wait_idle
    from visualizer.recording.frames import Encoder, burn_overlays, capture, check_output, release

    width, height = size or scene.size
    if fps and fps != scene.fps:
        # another frame rate keeps the scene's pace: the same training steps per second of video
        spf = max(1, round(scene.steps_per_frame * scene.fps / fps)) if scene.steps_per_frame else 0
        scene = dataclasses.replace(scene, fps=fps, steps_per_frame=spf)
    check_output(out)
    prepare_qt()
    app = QApplication.instance() or QApplication([])
    collect_garbage_on_gui_thread()
    import tempfile

    # the labs save their settings on shutdown: a render must not change the user's (a folder of its own,
    # removed again at the end)
    own_cfg = None
    if not os.environ.get("LOSSLAB_CONFIG_DIR"):
        own_cfg = tempfile.mkdtemp(prefix="losslab-record-")
        os.environ["LOSSLAB_CONFIG_DIR"] = own_cfg
    lab = _lab_for(scene)(restore=False, start=False, runner_factory=SyncRunner)
    # frames are rendered off screen at full size; the window itself stays small so that its own repaints
    # (the 2D view, the on-screen GL surface) cost little
    lab.resize(480, 320)
    lab.show()
    last = {"step": None, "loss": None}

    def on_status(d: dict) -> None:
        last.update({k: d[k] for k in ("step", "loss") if k in d})

    lab.status.connect(on_status)
    driver = SceneDriver(scene, lab, settle=lambda: wait_idle(app, lab))
    n_frames = scene.frames if frames is None else min(frames, scene.frames)
    tty = sys.stderr.isatty()  # a terminal gets one updating line, a log a line every 5%
    cr, nl = ("\r", "") if tty else ("", "\n")
    enc = None
    try:
        driver.setup()
        # from here on only off-screen frames are needed: a hidden window spends nothing on its own repaints
        lab.hide()
        app.processEvents()
        enc = Encoder(out, width, height, scene.fps)
        enc.start()
        for i in range(n_frames):
            driver.frame(i)
            frame = capture(lab, "3d", width, height)
            if on_frame is not None:
                on_frame(i, frame)
            burn_overlays(frame, title=scene.title or None,
                          step=last["step"] if scene.overlays.get("step") else None,
                          loss=last["loss"] if scene.overlays.get("loss") else None,
                          caption=driver.captions(i) or None)
            enc.put_wait(frame)
            if progress and (tty or i + 1 == n_frames or (i + 1) % max(1, n_frames // 20) == 0):
                sys.stderr.write(f"{cr}frame {i + 1}/{n_frames}  ({(i + 1) / n_frames:4.0%}){nl}")
                sys.stderr.flush()
        enc.finish(wait=True)
        if enc.error:
            raise OSError(enc.error)
    except BaseException:
        if enc is not None and enc.isRunning():
            enc.abort()  # no half-rendered file under the output's name
        raise
    finally:
        if enc is not None and enc.isRunning():
            enc.finish(wait=True)
        release(lab)
        lab.shutdown()
        lab.close()
        if own_cfg is not None:
            import shutil

            os.environ.pop("LOSSLAB_CONFIG_DIR", None)
            shutil.rmtree(own_cfg, ignore_errors=True)
    if progress and tty:
        sys.stderr.write("\n")
    return n_frames


def main(argv: list[str] | None = None) -> int:
    import argparse

    from visualizer.labs import LABS
    from visualizer.recording.frames import check_output, check_size
    from visualizer.recording.scene import SceneError, load_scene

    p = argparse.ArgumentParser(prog="losslab record", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scene")
    p.add_argument("-o", "--out", required=True, help="output .mp4 or .gif")
    p.add_argument("--size", help="WIDTHxHEIGHT (default: the scene's)")
    p.add_argument("--fps", type=int, help="frames per second (default: the scene's; the training steps per second "
                                           "of video stay the scene's)")
    p.add_argument("--frames", type=int, help="stop after this many frames (a quick look at a long scene)")
    args = p.parse_args(argv)
    size = None
    if args.size:
        try:
            size = tuple(int(v) for v in args.size.lower().split("x"))
        except ValueError:
            print(f"losslab record: --size wants WIDTHxHEIGHT, not '{args.size}'", file=sys.stderr)
            return 2
    try:
        check_output(args.out)
        if size is not None:
            check_size(*size)
        scene = load_scene(args.scene, LABS)
        n = render(scene, args.out, size, args.fps, frames=args.frames)
    except (SceneError, OSError, ValueError) as exc:
        print(f"losslab record: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} frames to {args.out}")
    return 0
