"""Headless scene rendering: frame-exact, deterministic, decodable; bad input fails before rendering."""

import subprocess
import sys
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


def record(scene: Path, out: Path, *extra):
    return subprocess.run([sys.executable, "-m", "visualizer", "record", str(scene), "-o", str(out), *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


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
