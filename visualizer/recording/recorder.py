"""Headless, frame-exact rendering of a scene to MP4/GIF: ``losslab record SCENE.toml -o OUT.mp4``.

A SceneDriver plays the scene on the lab with synchronous runs (frames follow the simulation clock and the
same scene gives the same frames); each frame is rendered off screen at the scene's size, overlays and
captions are burned in, and an Encoder thread feeds FFmpeg (shipped inside imageio-ffmpeg) while the next
frame renders.

Two processes: the one started (``supervise``: light, no Qt) starts the renderer as its child and, on a
machine without a display, an X server of its own (Xvfb on a free display number, with its own cookie) for
it; it owns the render's temporary folder (``losslab-record-*``) and the partial video (a unique name next
to the output), and removes them however the render ends. SIGTERM, SIGINT or SIGHUP to either process, or
the X server stopping, stops the render at the next frame: no partial file, no X server and no temporary
folder are left, and the exit status is non-zero (128 + the signal) with one line saying why. A lab that
reports an error during the render fails it (exit 1, the lab's words). Bad input fails before anything is
rendered (exit 2).
"""

from __future__ import annotations

import os
import sys

#: set in the renderer's environment by its supervisor: the partial video's path, the config folder to use,
#: and the supervisor's pid (a renderer whose supervisor is gone removes the supervisor's folder itself)
CHILD_ENV = "LOSSLAB_RECORD_CHILD"
PARTIAL_ENV = "LOSSLAB_RECORD_PARTIAL"
CONFIG_ENV = "LOSSLAB_RECORD_CONFIG"
PARENT_ENV = "LOSSLAB_RECORD_PARENT"
#: after a stop was asked for, the renderer has this long to finish its frame and clean up; then it is killed
GRACE_S = 10.0
XVFB_START_S = 30.0
XVFB_SCREEN = "1920x1080x24"
PROG = "losslab record"


class RenderError(RuntimeError):
    """A render that failed half way (a lab's error, the encoder stopping): the message is one line."""


class Stopped(RenderError):
    """A render stopped by a signal."""

    def __init__(self, signum: int, frame: int = 0, frames: int = 0) -> None:
        self.signum, self.frame, self.frames = signum, frame, frames
        at = f" after {frame} of {frames} frames" if frames else " before the first frame"
        super().__init__(f"stopped by {signal_name(signum)}{at}; no video written")


class UsageError(ValueError):
    """Bad command-line input (exit 2)."""


def signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _say(text: str) -> None:
    """One line on stderr: the first line of ``text`` (an FFmpeg error brings its whole command line)."""
    lines = [ln for ln in str(text).splitlines() if ln.strip()]
    sys.stderr.write(f"{PROG}: {lines[0] if lines else text}\n")
    sys.stderr.flush()


def _lab_for(scene):
    from visualizer.labs import LABS

    return LABS[scene.lab].load()


def render(scene, out: str, size: tuple[int, int] | None = None, fps: int | None = None, progress=True,
           frames: int | None = None, on_frame=None, stop=None, tmp: str | None = None,
           config_dir: str | None = None) -> int:
    """Render ``scene`` to ``out`` (.mp4 or .gif); returns the number of frames written. ``frames`` stops
    after that many (a quick check of a long scene); ``on_frame(i, frame)`` sees each frame as rendered,
    before the overlays. ``stop()`` is asked at every frame (and while the lab computes): a true value (a
    signal number) stops the render with ``Stopped``, no file written. A lab that reports an error (its
    ``message(text, True)``) fails the render with ``RenderError``. ``tmp``: the partial file to write
    (default: a unique one next to ``out``); ``config_dir``: the folder for the lab's settings (default: a new
    ``losslab-record-*`` folder). Either way both are gone when this returns or raises."""
    import dataclasses
    import shutil
    import tempfile

    from PySide6.QtWidgets import QApplication

    from visualizer.qtsetup import collect_garbage_on_gui_thread, prepare_qt
    from visualizer.recording.driver import SceneDriver, SyncRunner, wait_idle
    from visualizer.recording.frames import Encoder, burn_overlays, capture, check_output, check_size, release

    width, height = size or scene.size
    check_size(width, height)
    if fps and fps != scene.fps:
        # another frame rate keeps the scene's pace: the same training steps per second of video
        spf = max(1, round(scene.steps_per_frame * scene.fps / fps)) if scene.steps_per_frame else 0
        scene = dataclasses.replace(scene, fps=fps, steps_per_frame=spf)
    check_output(out)
    n_frames = scene.frames if frames is None else max(1, min(frames, scene.frames))
    # the labs save their settings on shutdown: a render must not change the user's (a folder of its own,
    # removed again at the end)
    own_cfg = config_dir or tempfile.mkdtemp(prefix="losslab-record-")
    os.makedirs(own_cfg, exist_ok=True)
    old_cfg = os.environ.get("LOSSLAB_CONFIG_DIR")
    os.environ["LOSSLAB_CONFIG_DIR"] = own_cfg
    lab = enc = None
    errors: list[str] = []
    state = {"frame": 0}

    def on_failure(text: str) -> None:
        if not errors:
            # (the lab's log of details is in the render's own folder, which goes at the end)
            errors.append(str(text).replace(f" (details in {os.path.join(own_cfg, 'losslab.log')})", ""))

    def halted():
        return bool(errors) or (stop is not None and stop())

    def check() -> None:
        sig = stop() if stop is not None else None
        if sig:
            raise Stopped(int(sig), state["frame"], n_frames)
        if errors:
            raise RenderError(f"the {scene.lab} lab reported an error during the render: {errors[0]}")

    try:
        check()
        prepare_qt()
        app = QApplication.instance() or QApplication([])
        collect_garbage_on_gui_thread()
        lab = _lab_for(scene)(restore=False, start=False, runner_factory=SyncRunner)
        lab.failed.connect(on_failure)  # a failed computation; a diverging descent is a result, not a failure
        # frames are rendered off screen at full size; the window itself stays small so that its own repaints
        # (the 2D view, the on-screen GL surface) cost little
        whole = scene.view == "window"
        # (the whole lab is laid out at the scene's size, as it is on screen, and scaled to the output)
        lab.resize(*(scene.size if whole else (480, 320)))
        if whole:  # as in the app's window
            from visualizer.app import DARK_STYLE

            lab.setStyleSheet(DARK_STYLE)
        lab.show()
        last = {"step": None, "loss": None}

        def on_status(d: dict) -> None:
            last.update({k: d[k] for k in ("step", "loss") if k in d})

        def settle() -> None:
            wait_idle(app, lab, stop=halted)
            check()

        lab.status.connect(on_status)
        driver = SceneDriver(scene, lab, settle=settle)
        tty = sys.stderr.isatty()  # a terminal gets one updating line, a log a line every 5% (and the first)
        cr, nl = ("\r", "") if tty else ("", "\n")
        check()
        driver.setup()
        # from here on only off-screen frames are needed: a hidden window spends nothing on its own repaints
        if not whole:
            lab.hide()
        app.processEvents()
        check()
        enc = Encoder(out, width, height, scene.fps, tmp=tmp)
        enc.start()
        for i in range(n_frames):
            state["frame"] = i
            driver.frame(i)
            check()
            frame = capture(lab, scene.view, width, height, window=lab)
            if on_frame is not None:
                on_frame(i, frame)
            burn_overlays(frame, title=scene.title or None,
                          step=last["step"] if scene.overlays.get("step") else None,
                          loss=last["loss"] if scene.overlays.get("loss") else None,
                          caption=driver.captions(i) or None)
            try:
                enc.put_wait(frame)
            except OSError as exc:
                raise RenderError(f"the video encoder (FFmpeg) stopped: {str(exc).splitlines()[0]}") from None
            state["frame"] = i + 1
            if progress and (tty or i == 0 or i + 1 == n_frames or (i + 1) % max(1, n_frames // 20) == 0):
                sys.stderr.write(f"{cr}frame {i + 1}/{n_frames}  ({(i + 1) / n_frames:4.0%}){nl}")
                sys.stderr.flush()
        check()
        enc.finish(wait=True)
        if enc.error:
            raise RenderError(f"the video encoder (FFmpeg) failed: {enc.error.splitlines()[0]}")
    except BaseException:
        if enc is not None and enc.isRunning():
            enc.abort()  # no half-rendered file under the output's name
        if progress and sys.stderr.isatty():
            sys.stderr.write("\n")
        raise
    finally:
        if enc is not None and enc.isRunning():
            enc.finish(wait=True)
        for path in {tmp, enc.tmp if enc is not None else None} - {None}:
            try:
                os.unlink(path)  # (renamed over the output after a success; removed by the encoder on failure)
            except OSError:
                pass
        if lab is not None:
            release(lab)
            lab.shutdown()
            lab.close()
        if old_cfg is None:
            os.environ.pop("LOSSLAB_CONFIG_DIR", None)
        else:
            os.environ["LOSSLAB_CONFIG_DIR"] = old_cfg
        shutil.rmtree(own_cfg, ignore_errors=True)
    if progress and sys.stderr.isatty():
        sys.stderr.write("\n")
    return n_frames


# ---------------------------------------------------------------------------------------------------------
# the command line: arguments, the renderer, and its supervisor
# ---------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str]):
    """The arguments, checked (UsageError: one line); argparse's own errors exit 2 as usual."""
    import argparse
    import re

    from models.limits import MAX_FPS
    from visualizer.recording.scene import MAX_SIZE, MIN_SIZE

    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scene")
    p.add_argument("-o", "--out", required=True, help="output .mp4 or .gif")
    p.add_argument("--size", help=f"WIDTHxHEIGHT within {MIN_SIZE}x{MIN_SIZE}..{MAX_SIZE[0]}x{MAX_SIZE[1]} "
                                  "(default: the scene's)")
    p.add_argument("--fps", type=int, help=f"frames per second, 1..{MAX_FPS} (default: the scene's; the training "
                                           "steps per second of video stay the scene's)")
    p.add_argument("--frames", type=int, help="stop after this many frames (a quick look at a long scene)")
    args = p.parse_args(argv)
    args.size_wh = None
    if args.size is not None:
        m = re.fullmatch(r"\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*", args.size)
        if not m:
            raise UsageError(f"--size wants WIDTHxHEIGHT (e.g. 1280x720), not {args.size!r}")
        w, h = int(m.group(1)), int(m.group(2))
        if not (MIN_SIZE <= w <= MAX_SIZE[0] and MIN_SIZE <= h <= MAX_SIZE[1]):
            raise UsageError(f"--size {w}x{h}: width and height must be within {MIN_SIZE}..{MAX_SIZE[0]} and "
                             f"{MIN_SIZE}..{MAX_SIZE[1]}")
        args.size_wh = (w, h)
    if args.fps is not None and not 1 <= args.fps <= MAX_FPS:
        raise UsageError(f"--fps {args.fps}: the frame rate must be within 1..{MAX_FPS}")
    if args.frames is not None and args.frames < 1:
        raise UsageError(f"--frames {args.frames}: at least 1")
    return args


def cli(argv: list[str]) -> int:
    """``losslab record ...``: the supervisor, or (started by it) the renderer."""
    if os.environ.get(CHILD_ENV) == "1":
        return main(argv)
    return supervise(argv)


def _install(handler) -> dict:
    import signal

    return {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}


def main(argv: list[str] | None = None) -> int:
    """The renderer: render in this process (the display is the caller's). SIGTERM, SIGINT and SIGHUP stop
    it at the next frame."""
    from visualizer.recording.scene import load_scene

    def draw(scene, args, stop, tmp, cfg) -> str:
        n = render(scene, args.out, args.size_wh, args.fps, frames=args.frames, stop=stop, tmp=tmp, config_dir=cfg)
        return f"wrote {n} frames to {args.out}"

    return renderer_main(argv, parse_args, lambda args, labs: load_scene(args.scene, labs), draw)


def renderer_main(argv, parse, load, draw) -> int:
    """What the renderer of a scene or of a tour does around its render: signal handlers installed first (a
    signal from then on stops the render at its next frame), the arguments parsed (``parse``) and the file
    loaded (``load(args, LABS)``) with their refusals as one line and exit 2, then ``draw(loaded, args, stop,
    tmp, cfg)``, which renders and returns the line to print; the exit status says how it ended. Run by the
    supervisor, its temporary output and (when the supervisor is gone) the supervisor's folder are removed."""
    got: list[int] = []
    _install(lambda signum, _frame: got.append(signum))  # first: a signal from here on stops the render
    child = os.environ.get(CHILD_ENV) == "1"
    tmp = os.environ.get(PARTIAL_ENV) if child else None
    cfg = os.environ.get(CONFIG_ENV) if child else None
    try:
        try:
            args = parse(argv)
        except UsageError as exc:
            _say(str(exc))
            return 2
        from visualizer.labs import LABS
        from visualizer.recording.frames import check_output
        from visualizer.recording.scene import SceneError

        try:
            check_output(args.out)
            loaded = load(args, LABS)
        except (SceneError, OSError, ValueError) as exc:
            _say(str(exc))
            return 2
        try:
            line = draw(loaded, args, lambda: got[0] if got else None, tmp, cfg)
        except Stopped as exc:
            _say(str(exc))
            return 128 + exc.signum
        except RenderError as exc:
            _say(f"{str(exc).splitlines()[0]}; no video written")
            return 1
        except (OSError, ValueError) as exc:
            _say(f"{exc}; no video written")
            return 2
        print(line)
        return 0
    finally:
        if tmp and os.path.exists(tmp):  # (renamed over the output when the render succeeded)
            try:
                os.unlink(tmp)
            except OSError:
                pass
        parent = os.environ.get(PARENT_ENV)
        if child and cfg and parent and str(os.getppid()) != parent:  # the supervisor is gone: its folder too
            import shutil

            shutil.rmtree(os.path.dirname(cfg), ignore_errors=True)


def _child_setup(ignore_sigint: bool):
    """A ``preexec_fn``: the child gets SIGTERM when this process dies (Linux), even by SIGKILL; ``ignore_sigint``
    until the renderer installs its own handler (no KeyboardInterrupt traceback from its first imports)."""
    import signal

    parent = os.getpid()
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            prctl = None

    def setup() -> None:
        if prctl is not None:
            prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before that: nobody would stop this child
            os._exit(1)
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    return setup


def _write_xauthority(path: str) -> None:
    """An Xauthority file with one random MIT-MAGIC-COOKIE-1 for any display of this machine (FamilyWild):
    the X server accepts only clients that present it (as xvfb-run does)."""
    import struct

    def field(b: bytes) -> bytes:
        return struct.pack(">H", len(b)) + b

    entry = struct.pack(">H", 0xFFFF) + field(b"") + field(b"") + field(b"MIT-MAGIC-COOKIE-1") + field(os.urandom(16))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(entry)


def _start_xvfb(folder: str, got: list):
    """Start Xvfb on a free display (``-displayfd``); returns (process, ':N'). Raises RenderError when it does
    not start, Stopped when a signal comes meanwhile."""
    import select
    import subprocess
    import time

    auth = os.path.join(folder, "Xauthority")
    _write_xauthority(auth)
    log_path = os.path.join(folder, "xvfb.log")
    r, w = os.pipe()
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", XVFB_SCREEN, "-nolisten", "tcp",
                                     "-auth", auth], pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, preexec_fn=_child_setup(False))
        os.close(w)
        w = -1
        buf = b""
        deadline = time.monotonic() + XVFB_START_S
        while b"\n" not in buf:
            if got:
                _stop_process(proc)
                raise Stopped(got[0])
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop_process(proc)
                try:
                    with open(log_path, errors="replace") as fh:
                        tail = [ln.strip() for ln in fh if ln.strip()][-1:]
                except OSError:
                    tail = []
                why = f"exit code {proc.returncode}" + (f": {tail[0]}" if tail else "")
                raise RenderError(f"the X server (Xvfb) did not start ({why})")
            ready, _, _ = select.select([r], [], [], 0.05)
            if ready:
                chunk = os.read(r, 64)
                buf += chunk
                if not chunk:
                    time.sleep(0.05)  # closed without a number: it is exiting (seen above)
        return proc, ":" + buf.split()[0].decode("ascii", "replace")
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def _stop_process(proc, timeout: float = 5.0) -> None:
    import subprocess

    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def supervise(argv: list[str], parse=parse_args, command: list[str] | None = None) -> int:
    """Start the renderer (``main`` in a child process, in a session of its own) with an X server of its own
    when there is no display; pass it a stop (SIGTERM) when this process gets SIGTERM, SIGINT or SIGHUP, or
    when its X server stops; kill it when it has not stopped GRACE_S later. Whatever happens: the X server is
    stopped, the partial video and the temporary folder are removed. Returns the exit status.

    ``parse`` checks the arguments (another renderer's: a tour's); ``command`` is the child's command line
    before ``argv`` (default: ``python -m visualizer record``)."""
    import shutil
    import signal
    import subprocess
    import tempfile
    import time

    got: list[int] = []
    old = _install(lambda signum, _frame: got.append(signum))
    folder = partial = proc = xvfb = None
    try:
        try:
            args = parse(argv)
            from visualizer.recording.frames import check_output, partial_path

            check_output(args.out)
        except (UsageError, OSError) as exc:
            _say(str(exc))
            return 2
        folder = tempfile.mkdtemp(prefix="losslab-record-")
        partial = partial_path(args.out)
        cfg = os.path.join(folder, "config")
        os.mkdir(cfg, 0o700)
        env = dict(os.environ)
        env.update({CHILD_ENV: "1", PARTIAL_ENV: partial, CONFIG_ENV: cfg, PARENT_ENV: str(os.getpid())})
        platform = env.get("QT_QPA_PLATFORM", "").split(":")[0]  # (another than X11 chosen: left to it)
        headless = not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY") and platform in ("", "xcb")
        if headless and shutil.which("Xvfb"):  # an X server of its own
            try:
                xvfb, env["DISPLAY"] = _start_xvfb(folder, got)
            except RenderError as exc:
                _say(str(exc))
                return 128 + exc.signum if isinstance(exc, Stopped) else 1
            env["XAUTHORITY"] = os.path.join(folder, "Xauthority")
        if got:
            _say(str(Stopped(got[0])))
            return 128 + got[0]
        command = command or [sys.executable, "-m", "visualizer", "record"]
        proc = subprocess.Popen([*command, *argv], env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_child_setup(True))
        told = 0
        deadline = None
        x_gone = None
        while proc.poll() is None:
            if xvfb is not None and x_gone is None and xvfb.poll() is not None:
                x_gone = xvfb.returncode
                _say(f"the X server stopped during the render (exit code {x_gone}); no video written")
                proc.send_signal(signal.SIGTERM)
                deadline = deadline or time.monotonic() + GRACE_S
            if len(got) > told:
                told = len(got)
                proc.send_signal(signal.SIGTERM)  # the renderer stops at its next frame and cleans up
                deadline = deadline or time.monotonic() + GRACE_S
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.02)
        code = proc.returncode
        if code < 0:  # killed (by us after the grace, or by someone else): it could not say why
            if x_gone is None and got:
                _say(f"stopped by {signal_name(got[0])}; no video written")
            elif x_gone is None:
                hint = " (there is no display, and no Xvfb to start one)" if headless and xvfb is None else ""
                _say(f"the renderer ended by {signal_name(-code)}{hint}; no video written")
            code = 128 + (got[0] if got else -code)
        elif x_gone is not None and code != 0:
            code = 1
        elif got and code == 128 + signal.SIGTERM:
            code = 128 + got[0]  # (the stop passed on is a SIGTERM; the status says what this process got)
        return code  # (0 when it had finished anyway: the video is complete)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        _stop_process(xvfb)
        if partial is not None:
            try:
                os.unlink(partial)  # (renamed over the output when the render succeeded)
            except OSError:
                pass
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        for s, h in old.items():
            signal.signal(s, h)
