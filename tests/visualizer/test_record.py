"""Headless scene rendering: frame-exact, deterministic, decodable; bad input fails before rendering; a signal,
a lab's error or a dying X server stops a render and leaves nothing behind."""

import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = """
lab = "manifold2d"
size = [320, 240]
fps = 10
duration = 1.0
steps_per_frame = 3
[settings]
model = "linear"
[[camera]]
time = 0.0
azimuth = -60
[[camera]]
time = 1.0
azimuth = 30
[[event]]
time = 0.1
action = "descent"
start = [2.0, 2.5]
[[caption]]
start = 0.0
end = 1.0
text = "hello"
"""


def record(scene: Path, out: Path, *extra, env=None, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "visualizer", "record", str(scene), "-o", str(out), *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env, **kw)


def decode(path: Path):
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    return meta, [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen]


def test_scene_renders_to_mp4_deterministically(tmp_path):
    scene = tmp_path / "tiny.toml"
    scene.write_text(TINY)
    r1 = record(scene, tmp_path / "a.mp4")
    assert r1.returncode == 0, r1.stderr
    meta, frames = decode(tmp_path / "a.mp4")
    assert meta["size"] == (320, 240) and meta["fps"] == pytest.approx(10) and len(frames) == 10
    # the animation moved (camera and descent), and the lab's surface colours are in the frames
    assert np.abs(frames[-1].astype(int) - frames[0]).mean() > 3
    r, g, b = (frames[5][..., k].astype(int) for k in range(3))
    assert ((g > b + 40) & (r > 60)).sum() > 500
    r2 = record(scene, tmp_path / "b.mp4")
    assert r2.returncode == 0
    _, again = decode(tmp_path / "b.mp4")
    # the same scene renders the same frames (Mesa and the encoder are deterministic here: tolerance 1 level)
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(frames, again)) <= 1


def test_bad_output_and_bad_scene_fail_before_rendering(tmp_path):
    scene = tmp_path / "tiny.toml"
    scene.write_text(TINY)
    r = record(scene, Path("/proc/forbidden/out.mp4"))
    assert r.returncode == 2 and "not a writable folder" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace("fps = 10", "fps = 'ten'"))
    r = record(bad, tmp_path / "x.mp4")
    assert r.returncode == 2 and "bad.toml" in r.stderr and "field 'fps'" in r.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_shipped_scenes_parse():
    from visualizer.labs import LABS
    from visualizer.recording.scene import load_scene

    scenes = sorted((ROOT / "assets" / "scenes").glob("*.toml"))
    assert scenes
    for p in scenes:
        s = load_scene(str(p), LABS)
        assert s.frames > 0 and s.lab in LABS


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "assets" / "scenes").glob("*.toml")))
def test_every_shipped_scene_renders_its_first_frames(tmp_path, name):
    out = tmp_path / f"{name}.mp4"
    # the first half second (the surface lab's first live plane arrives after ~36 training steps)
    r = record(ROOT / "assets" / "scenes" / f"{name}.toml", out, "--frames", "15", "--size", "320x180")
    assert r.returncode == 0, r.stderr
    meta, frames = decode(out)
    assert meta["size"] == (320, 180) and len(frames) == 15
    f = frames[-1].astype(int)
    # the title overlay (light text on a dark plate, top left) and the lab's content (something coloured)
    assert (f[:14, :120].max(axis=2) > 180).sum() > 20
    assert (f[20:150].max(axis=2) - f[20:150].min(axis=2) > 40).sum() > 200


def test_a_scene_with_a_wrong_setting_or_action_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace('model = "linear"', 'model = "linear"\nwarp = 3'))
    r = record(bad, tmp_path / "x.mp4")
    assert r.returncode == 2 and "settings.warp" in r.stderr and "line 9" in r.stderr
    bad.write_text(TINY.replace('model = "linear"', 'lr = "fast"'))
    r = record(bad, tmp_path / "x.mp4")
    assert r.returncode == 2 and "settings.lr" in r.stderr and "expected a number in [1e-05, 100]" in r.stderr
    bad.write_text(TINY.replace('action = "descent"', 'action = "walk"'))
    r = record(bad, tmp_path / "x.mp4")
    assert r.returncode == 2 and "event[0].action" in r.stderr and "random_starts" in r.stderr
    # the app refuses it the same way, before any window opens
    r = subprocess.run([sys.executable, "-m", "visualizer", str(bad)], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 2 and "event[0].action" in r.stderr
    assert not (tmp_path / "x.mp4").exists()


# --- issue 11: signals, lab errors, the partial file, the temporary folder, the options ---------------------------
def own_env(tmp_path: Path, drop=(), **extra) -> dict:
    """The environment of a render whose temporary folders go to tmp_path/'tmp' (to be looked at after)."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env.update(TMPDIR=str(tmp_path / "tmp"), **extra)
    return env


def record_folders(tmp_path: Path) -> list:
    return sorted(p.name for p in (tmp_path / "tmp").glob("losslab-record-*"))


def test_the_partial_file_has_a_unique_name_and_the_render_leaves_nothing_else(tmp_path):
    # the partial file was OUT.part.mp4: a user's own file of that name was overwritten, then renamed away
    scene = tmp_path / "tiny.toml"
    scene.write_text(TINY)
    mine = tmp_path / "a.part.mp4"
    mine.write_bytes(b"my own file")
    cfg = tmp_path / "cfg"  # the user's settings: a render must not write them
    env = own_env(tmp_path, drop=("LOSSLAB_CONFIG_DIR",), LOSSLAB_CONFIG_DIR=str(cfg))
    r = record(scene, tmp_path / "a.mp4", "--frames", "3", env=env, preexec_fn=lambda: os.umask(0o027))
    assert r.returncode == 0, r.stderr
    assert mine.read_bytes() == b"my own file"
    assert sorted(os.listdir(tmp_path)) == ["a.mp4", "a.part.mp4", "tiny.toml", "tmp"]
    # the video has the mode a new file gets under the umask (the partial file was made 0600)
    assert stat.S_IMODE(os.stat(tmp_path / "a.mp4").st_mode) == 0o640
    assert len(decode(tmp_path / "a.mp4")[1]) == 3
    assert not cfg.exists() and record_folders(tmp_path) == []


DIVERGING = TINY.replace('model = "linear"', 'model = "factor"\nlr = 100.0').replace("steps_per_frame = 3",
                                                                                     "steps_per_frame = 40")


def test_a_diverging_descent_is_a_result_and_is_recorded(tmp_path):
    # a descent that diverges is what the scene shows (the banner says so), not a failure of the render
    scene = tmp_path / "div.toml"
    scene.write_text(DIVERGING)
    r = record(scene, tmp_path / "x.mp4", "--frames", "6", env=own_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "x.mp4").stat().st_size > 0 and record_folders(tmp_path) == []


def test_a_lab_failure_fails_the_render(tmp_path):
    # a computation the lab needs failed (here the loss grid raises): exit 0 and a video of an empty lab before.
    # The renderer runs in a process of its own (as `losslab record` runs it), its grid function broken first
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    code = ("import os, sys\n"
            "from visualizer.labs import manifold2d\n"
            "def broken(req):\n"
            "    raise RuntimeError('the grid could not be computed')\n"
            "manifold2d.compute_landscape = broken\n"
            "from visualizer.recording.recorder import main\n"
            f"code = main([{str(path)!r}, '-o', {str(tmp_path / 'x.mp4')!r}])\n"
            "sys.stderr.flush()\n"
            "os._exit(code)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env=own_env(tmp_path))
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("losslab record: the manifold2d lab reported an error during the render: Cannot "
                           "evaluate the loss"), last
    assert "the grid could not be computed" in last and last.endswith("no video written")
    assert sorted(os.listdir(tmp_path)) == ["tiny.toml", "tmp"] and record_folders(tmp_path) == []


@pytest.mark.parametrize("args, fragment", [
    (["--fps", "1000000"], "--fps 1000000: the frame rate must be within 1..240"),
    (["--fps", "-5"], "--fps -5: the frame rate must be within 1..240"),
    (["--fps", "0"], "--fps 0"),
    (["--size", "320x240x2"], "--size wants WIDTHxHEIGHT"),
    (["--size", "320"], "--size wants WIDTHxHEIGHT"),
    (["--size", "8x8"], "--size 8x8: width and height must be within 16..3840 and 16..2160"),
    (["--size", "5000x100"], "--size 5000x100"),
    (["--frames", "0"], "--frames 0: at least 1"),
])
def test_bad_options_fail_up_front(tmp_path, args, fragment):
    # --fps 1e6 never finished, -5 failed at the end with FFmpeg's output; --size 320x240x2 raised a TypeError
    scene = tmp_path / "tiny.toml"
    scene.write_text(TINY)
    t0 = time.perf_counter()
    r = record(scene, tmp_path / "x.mp4", *args, env=own_env(tmp_path), timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("losslab record: ") and fragment in lines[0], \
        r.stderr[-2000:]
    assert time.perf_counter() - t0 < 30 and not re.search(r"frame \d", r.stderr)  # before any rendering
    assert sorted(os.listdir(tmp_path)) == ["tiny.toml", "tmp"] and record_folders(tmp_path) == []


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat_path.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1: text.rindex(")")], text[text.rindex(")") + 2:].split()
        if int(rest[1]) == pid:
            out.append((int(stat_path.parent.name), name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _read_until(proc, pattern: str, timeout: float) -> str:
    """stderr of ``proc`` until a line matches ``pattern`` (the render's first frame), or fail."""
    buf, end = "", time.monotonic() + timeout
    fd = proc.stderr.fileno()
    while not re.search(pattern, buf):
        assert time.monotonic() < end and proc.poll() is None, f"no {pattern!r} in: {buf[-2000:]}"
        if select.select([fd], [], [], 0.2)[0]:
            buf += os.read(fd, 65536).decode(errors="replace")
    return buf


LONG = TINY.replace("duration = 1.0", "duration = 60.0").replace("time = 1.0", "time = 60.0")


@pytest.mark.skipif(not shutil.which("Xvfb"), reason="needs Xvfb")
@pytest.mark.parametrize("target, sig", [("supervisor", signal.SIGTERM), ("supervisor", signal.SIGINT),
                                         ("renderer", signal.SIGTERM), ("renderer", signal.SIGINT),
                                         ("xserver", signal.SIGTERM), ("encoder", signal.SIGTERM)])
def test_a_signal_stops_the_render_and_everything_it_started(tmp_path, target, sig):
    # SIGTERM to the pid a caller holds (the xvfb-run wrapper) did not stop the render: the video was written
    # anyway and Xvfb ran on for ever. Here: a headless render (no DISPLAY) starts its own X server
    scene = tmp_path / "long.toml"
    scene.write_text(LONG)
    out = tmp_path / "out.mp4"
    env = own_env(tmp_path, drop=("DISPLAY", "XAUTHORITY", "WAYLAND_DISPLAY"))
    proc = subprocess.Popen([sys.executable, "-m", "visualizer", "record", str(scene), "-o", str(out)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started: list[int] = []
    try:
        _read_until(proc, r"frame \d+/600", 240)  # the first frame is rendered
        kids = _children(proc.pid)
        xvfb = [pid for pid, name in kids if name == "Xvfb"]
        renderer = [pid for pid, name in kids if name.startswith("python")]
        assert len(xvfb) == 1 and len(renderer) == 1, kids
        deadline = time.monotonic() + 30
        while True:  # the encoder's FFmpeg (its thread may start it just after the first frame)
            ffmpeg = [pid for pid, _ in _children(renderer[0]) if ".part." in _cmdline(pid)]
            if ffmpeg or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert len(ffmpeg) == 1
        started = xvfb + renderer + ffmpeg
        display = dict(kv.split("=", 1) for kv in Path(f"/proc/{renderer[0]}/environ").read_text().split("\0")
                       if "=" in kv)["DISPLAY"]
        pid = {"supervisor": proc.pid, "renderer": renderer[0], "xserver": xvfb[0], "encoder": ffmpeg[0]}[target]
        t0 = time.monotonic()
        os.kill(pid, sig)
        code = proc.wait(timeout=60)
        took = time.monotonic() - t0
        err = proc.stderr.read().decode(errors="replace")
        assert code != 0 and took < 20, (code, took, err)
        ours = [ln for ln in err.splitlines() if ln.startswith("losslab record:")]
        assert ours and "no video written" in ours[0], err
        if target in ("supervisor", "renderer"):  # (the supervisor passes a SIGTERM on)
            name = "SIGTERM" if target == "supervisor" else sig.name
            assert code == 128 + sig and len(ours) == 1 and re.fullmatch(
                rf"losslab record: stopped by {name} after \d+ of 600 frames; no video written", ours[0]), err
        elif target == "encoder":
            assert code == 1 and ours[0].startswith("losslab record: the video encoder (FFmpeg) stopped"), err
        assert sorted(os.listdir(tmp_path)) == ["long.toml", "tmp"]  # no video, no partial file
        assert record_folders(tmp_path) == []
        deadline = time.monotonic() + 10
        while any(map(_alive, started)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in started if _alive(p)], "a process it started is still running"
        assert not Path(f"/tmp/.X{display.lstrip(':')}-lock").exists()  # the X server ended cleanly
    finally:  # (a failed run: what it left is stopped, the X server with SIGTERM first so that it removes its lock)
        for sig_left in (signal.SIGTERM, signal.SIGKILL):
            for p in [proc.pid, *started]:
                if _alive(p):
                    os.kill(p, sig_left)
            time.sleep(0.5)
        proc.wait(timeout=30)
