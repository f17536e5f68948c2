"""Reference-layout HDF5 files, the headless surface command, its resume after a kill, and bad input."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from models.surface_io import (
    Surface,
    SurfaceFileError,
    read_directions,
    read_surface,
    write_directions,
    write_surface,
)

ROOT = Path(__file__).resolve().parents[2]


def test_reads_a_file_written_in_the_reference_layout(tmp_path):
    # an independent writer, the way the reference code fills its arrays: meshgrid(x, y).ravel() order, -1 missing
    x = np.linspace(-1, 1, 4)
    y = np.linspace(-2, 2, 3)
    f_true = lambda a, b: 10 * a + b  # noqa: E731
    xm, ym = np.meshgrid(x, y)
    flat = f_true(xm.ravel(), ym.ravel())
    flat[5] = -1  # not computed yet
    path = tmp_path / "ref.h5"
    with h5py.File(path, "w") as f:
        f["xcoordinates"] = x
        f["ycoordinates"] = y
        f["train_loss"] = flat.reshape(len(x), len(y))
        f["dir_file"] = "ref_dirs.h5"
    s = read_surface(str(path))
    assert s.values["train_loss"].shape == (4, 3) and s.dir_file == "ref_dirs.h5"
    for ix in range(4):
        for iy in range(3):
            k = iy * 4 + ix
            if k == 5:
                assert np.isnan(s.values["train_loss"][ix, iy])
            else:
                assert s.values["train_loss"][ix, iy] == pytest.approx(f_true(x[ix], y[iy]))


def test_our_files_round_trip_and_directions(tmp_path):
    x = np.linspace(-1, 1, 5)
    v = np.arange(25.0).reshape(5, 5)
    v[2, 3] = np.nan
    write_surface(str(tmp_path / "s.h5"), Surface(x, x, {"train_loss": v}, "s.dirs.h5"))
    back = read_surface(str(tmp_path / "s.h5"))
    assert np.array_equal(np.isnan(back.values["train_loss"]), np.isnan(v))
    assert np.allclose(np.nan_to_num(back.values["train_loss"]), np.nan_to_num(v))
    dx = [np.ones((3, 2)), np.zeros(3)]
    dy = [np.full((3, 2), 2.0), np.ones(3)]
    write_directions(str(tmp_path / "d.h5"), dx, dy)
    rx, ry = read_directions(str(tmp_path / "d.h5"), shapes=[(3, 2), (3,)])
    assert np.array_equal(rx[0], dx[0]) and np.array_equal(ry[1], dy[1])
    with pytest.raises(SurfaceFileError, match="do not match"):
        read_directions(str(tmp_path / "d.h5"), shapes=[(2, 3), (3,)])


def test_corrupt_and_truncated_files_are_refused_and_kept(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(SurfaceFileError, match="bad.h5"):
        read_surface(str(bad))
    x = np.linspace(-1, 1, 5)
    good = tmp_path / "good.h5"
    write_surface(str(good), Surface(x, x, {"train_loss": np.zeros((5, 5))}))
    data = good.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(SurfaceFileError):
        read_surface(str(trunc))
    assert trunc.read_bytes() == data[: len(data) // 2]  # nothing overwritten
    # the headless command refuses to resume from a corrupt file and leaves it alone
    out = subprocess.run([sys.executable, "-m", "visualizer", "surface", "--model", "mlp:4:tanh", "--data", "xor:64",
                          "--grid", "5", "--train-steps", "2", "--out", str(bad)], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 2 and "cannot read" in out.stderr
    assert bad.read_bytes() == b"not an hdf5 file at all"


def run_job(out, grid=21, extra=()):
    return [sys.executable, "-m", "visualizer", "surface", "--model", "mlp:32x32:tanh", "--data", "spirals:600",
            "--grid", str(grid), "--train-steps", "40", "--out", str(out), *extra]


def test_killed_run_resumes_without_recomputing(tmp_path):
    full = tmp_path / "full.h5"
    r = subprocess.run(run_job(full), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and "computed 441 points" in r.stdout
    part = tmp_path / "part.h5"
    # the job kills itself (SIGKILL, nothing flushed or cleaned) after writing 7 of its 21 rows: the same
    # point of death every run, wherever the scheduler puts it
    env = dict(os.environ, LOSSLAB_TEST_KILL_AFTER_ROWS="7")
    p = subprocess.run(run_job(part), cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == -signal.SIGKILL
    first = read_surface(str(part))  # the file written row by row, atomically: whole after a kill
    done_before = int((~np.isnan(first.values["train_loss"])).sum())
    assert done_before == 7 * 21
    r2 = subprocess.run(run_job(part), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r2.returncode == 0
    assert f"computed {441 - done_before} points" in r2.stdout  # nothing computed twice
    a, b = read_surface(str(full)), read_surface(str(part))
    assert np.allclose(a.values["train_loss"], b.values["train_loss"], rtol=1e-6)
    assert os.path.exists(tmp_path / "part.dirs.h5")


def test_user_factory_and_bad_factories(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "visualizer", "surface", "--model",
                         "assets/examples/user_model.py:build", "--grid", "5", "--out", str(tmp_path / "u.h5")],
                        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert np.isfinite(read_surface(str(tmp_path / "u.h5")).values["train_loss"]).all()
    bad = tmp_path / "bad_model.py"
    bad.write_text("def raises():\n    raise RuntimeError('boom')\n\ndef wrong():\n    return 42\n"
                   "import torch\ndef nan():\n    m = torch.nn.Linear(1, 1)\n"
                   "    return m, (lambda o, t: (o.squeeze(-1) - t).pow(2).mean() * float('nan')), "
                   "(torch.zeros(4, 1), torch.zeros(4))\n")
    for fn, expect in (("raises", "raised RuntimeError: boom"), ("wrong", "must return"), ("missing", "no callable")):
        r = subprocess.run([sys.executable, "-m", "visualizer", "surface", "--model", f"{bad}:{fn}", "--grid", "3",
                            "--out", str(tmp_path / f"{fn}.h5")], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 2 and expect in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "visualizer", "surface", "--model", f"{bad}:nan", "--grid", "3",
                        "--out", str(tmp_path / "nan.h5")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "not finite at 9 grid points" in r.stderr
    assert np.isinf(read_surface(str(tmp_path / "nan.h5")).values["train_loss"]).all()


def test_headless_cnn_on_digits(tmp_path):
    r = subprocess.run([sys.executable, "-m", "visualizer", "surface", "--model", "cnn", "--data", "digits:400",
                        "--grid", "5", "--train-steps", "20", "--directions", "pca", "--out", str(tmp_path / "c.h5")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    s = read_surface(str(tmp_path / "c.h5"))
    acc = s.values["train_acc"]
    assert np.isfinite(s.values["train_loss"]).all() and (acc >= 0).all() and (acc <= 1).all()
    bad = subprocess.run([sys.executable, "-m", "visualizer", "surface", "--model", "cnn", "--data", "moons:100",
                          "--grid", "3", "--out", str(tmp_path / "x.h5")], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "8x8 images" in bad.stderr
