"""`losslab surface` as an input path (issue 11): every refusal comes before training, in one line; a job's
identity includes fingerprints of its weights, directions and data; direction files belong to their surface
file; memory is estimated before anything is allocated; user models that fail are named; Ctrl+C, kills,
temporary files and the umask."""

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from models import landscape as ls
from models import nets
from models import surface_job as sj
from models.limits import MEMORY_CAP_BYTES
from models.surface_io import read_surface, to_reference

ROOT = Path(__file__).resolve().parents[2]
JOB = ["--model", "mlp:8:tanh", "--data", "xor:64", "--grid", "5", "--train-steps", "5"]


def run(argv):
    try:
        return sj.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own refusals
        return exc.code
    except KeyboardInterrupt:  # (not a stop of the whole test session)
        pytest.fail("Ctrl+C escaped `losslab surface` as a KeyboardInterrupt")


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.lstrip().startswith("[")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def no_training(monkeypatch):
    """Any training (or a user factory's call) fails the test: the refusal had to come first."""
    def boom(*a, **k):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(sj, "train_mlp", boom)
    monkeypatch.setattr(sj, "from_factory", boom)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "__pycache__")


@pytest.mark.parametrize("bad, word", [
    (["--range", "nan"], "--range"), (["--range", "inf"], "--range"), (["--range", "-inf"], "--range"),
    (["--range", "0"], "--range"), (["--range", "-1"], "--range"), (["--range", "1e300"], "--range"),
    (["--train-steps", "-5"], "--train-steps"), (["--seed", "9" * 20], "--seed"), (["--seed", "-1"], "--seed"),
    (["--grid", "0"], "--grid"), (["--grid", "-3"], "--grid"), (["--grid", "100000"], "--grid"),
    (["--grid", "abc"], "--grid"), (["--data", "spirals:x"], "--data"), (["--data", "nope:100"], "--data"),
    (["--data", "spirals:100:nan"], "noise"), (["--data", "spirals:1"], "two points"), (["--model", "mlp:0"], "mlp:0"),
    (["--model", "mlp:64x"], "mlp:64x"), (["--model", "cnn"], "8x8 images"),
    (["--directions", "pca", "--train-steps", "1"], "pca"),
])
def test_bad_arguments_are_refused_in_one_line_before_training(tmp_path, capsys, no_training, bad, word):
    rc = run([*JOB, *bad, "--out", tmp_path / "s.h5"])
    err = capsys.readouterr().err
    assert rc == 2
    assert word in one_line(err)
    assert files(tmp_path) == []


@pytest.mark.parametrize("out, word", [
    ("", "must name a file"), ("missing/s.h5", "does not exist"), ("sub/", "names a folder"),
    ("sub", "names a folder"), ("a_file/s.h5", "is not a folder"), ("x" * 250 + ".h5", "too long"),
    ("s\0.h5", "NUL"),
])
def test_out_is_checked_before_training(tmp_path, capsys, monkeypatch, no_training, out, word):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "a_file").write_text("x")
    rc = run([*JOB, "--out", out])
    assert rc == 2 and word in one_line(capsys.readouterr().err)
    assert files(tmp_path) == ["a_file", "sub"] and files(tmp_path / "sub") == []  # no stray ./.dirs.h5


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc (a folder nobody can write)")
def test_an_unwritable_folder_is_refused_before_training(capsys, no_training):
    assert run([*JOB, "--out", "/proc/losslab_surface_test.h5"]) == 2
    assert "cannot write to the folder /proc" in one_line(capsys.readouterr().err)


def test_an_existing_file_of_another_job_is_refused_before_training(tmp_path, capsys, monkeypatch):
    out = tmp_path / "s.h5"
    assert run([*JOB, "--out", out]) == 0
    before = {n: (tmp_path / n).read_bytes() for n in files(tmp_path)}
    capsys.readouterr()

    def boom(*a, **k):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(sj, "train_mlp", boom)
    assert run([*JOB, "--seed", "1", "--out", out]) == 2
    assert "another job's surface" in one_line(capsys.readouterr().err)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file")
    assert run([*JOB, "--out", bad]) == 2
    assert "cannot read" in one_line(capsys.readouterr().err)
    assert bad.read_bytes() == b"not an hdf5 file"
    assert {n: (tmp_path / n).read_bytes() for n in files(tmp_path) if n != "bad.h5"} == before


USER_MODEL = """
import torch
from torch import nn
WSEED, DSEED = {wseed}, {dseed}  # {pad}


def build():
    g = torch.Generator().manual_seed(DSEED)
    x = torch.randn(64, 3, generator=g)
    y = (x[:, 0] * x[:, 1] > 0).float()
    torch.manual_seed(WSEED)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    return model, lambda out, t: nn.functional.binary_cross_entropy_with_logits(out.squeeze(-1), t), (x, y)
"""


def _forget_rows(path: Path, rows: slice) -> None:
    """Mark rows of a finished surface as not computed yet, as a killed run leaves them: -1 at their points in
    the file's arrays, every other number as it is (in the file's units)."""
    s = read_surface(str(path))
    gone = np.zeros(s.values["train_loss"].shape)
    gone[rows] = np.nan
    in_file = to_reference(gone) == -1
    with h5py.File(path, "r+") as f:
        for name in s.values:
            raw = f[name][()].reshape(in_file.shape)
            raw[in_file] = -1
            f[name][...] = raw.reshape(f[name].shape)


@pytest.mark.parametrize("change, what", [(dict(wseed=1), "centre weights"), (dict(dseed=1), "data")])
def test_a_resume_after_the_factory_changed_is_refused(tmp_path, capsys, change, what):
    model = tmp_path / "user_model.py"
    model.write_text(USER_MODEL.format(wseed=0, dseed=0, pad=""))
    out = tmp_path / "u.h5"
    job = ["--model", f"{model}:build", "--grid", "5", "--out", out]
    assert run(job) == 0
    _forget_rows(out, slice(3, None))
    kept = out.read_bytes()
    capsys.readouterr()
    # another model behind the same arguments (the file's size differs, so no stale bytecode is reused)
    model.write_text(USER_MODEL.format(**{"wseed": 0, "dseed": 0, **change}, pad="changed"))
    assert run(job) == 2
    line = one_line(capsys.readouterr().err)
    assert what in line and "fingerprint" in line and str(out) in line
    assert out.read_bytes() == kept  # nothing mixed in
    model.write_text(USER_MODEL.format(wseed=0, dseed=0, pad="back again"))
    assert run(job) == 0
    assert "15 of 25 points are there, 10 remain" in capsys.readouterr().out
    assert np.isfinite(read_surface(str(out)).values["train_loss"]).all()


def test_the_file_records_fingerprints_of_weights_directions_and_data(tmp_path):
    out = tmp_path / "s.h5"
    assert run([*JOB, "--out", out]) == 0
    with h5py.File(out, "r") as f:
        prints = {k: f.attrs[k] for k, _ in sj.FINGERPRINTS}
    assert all(isinstance(v, str) and len(v) == 64 for v in prints.values())
    with h5py.File(tmp_path / "s.h5.dirs.h5", "r") as f:
        assert f.attrs["losslab_directions_sha256"] == prints["losslab_directions_sha256"]
        assert f.attrs["losslab_surface"] == "s.h5"


def test_direction_files_are_named_after_their_own_surface_file(tmp_path, capsys, monkeypatch):
    assert run([*JOB, "--out", tmp_path / "s.h5"]) == 0
    a_name = read_surface(str(tmp_path / "s.h5")).dir_file
    a_dirs = (tmp_path / a_name).read_bytes()
    # another job next to it, s.hdf5: its own direction file, the first job's untouched
    assert run([*JOB, "--seed", "1", "--out", tmp_path / "s.hdf5"]) == 0
    b_name = read_surface(str(tmp_path / "s.hdf5")).dir_file
    assert (tmp_path / a_name).read_bytes() == a_dirs
    assert (a_name, b_name) == ("s.h5.dirs.h5", "s.hdf5.dirs.h5")
    assert files(tmp_path) == ["s.h5", "s.h5.dirs.h5", "s.hdf5", "s.hdf5.dirs.h5"]
    # a file in the way of a new job's direction file is never overwritten: refused before training
    (tmp_path / "t.h5.dirs.h5").write_bytes(b"somebody else's")
    monkeypatch.setattr(sj, "train_mlp", lambda *a, **k: pytest.fail("trained before refusing"))
    assert run([*JOB, "--out", tmp_path / "t.h5"]) == 2
    assert "t.h5.dirs.h5" in one_line(capsys.readouterr().err)
    assert (tmp_path / "t.h5.dirs.h5").read_bytes() == b"somebody else's" and not (tmp_path / "t.h5").exists()
    # ... nor is another job's direction file
    (tmp_path / "s.h5.dirs.h5").rename(tmp_path / "t.h5.dirs.h5")
    assert run([*JOB, "--out", tmp_path / "t.h5"]) == 2
    assert "not this job's direction file" in one_line(capsys.readouterr().err)


def test_a_file_of_the_earlier_layout_resumes_with_its_own_direction_file(tmp_path, capsys):
    # as the previous version wrote it: FILE minus extension + .dirs.h5, no fingerprints
    out = tmp_path / "old.h5"
    assert run([*JOB, "--out", out]) == 0
    (tmp_path / "old.h5.dirs.h5").rename(tmp_path / "old.dirs.h5")
    with h5py.File(tmp_path / "old.dirs.h5", "r+") as f:
        for k in list(f.attrs):
            del f.attrs[k]
    with h5py.File(out, "r+") as f:
        for k, _ in sj.FINGERPRINTS:
            del f.attrs[k]
        del f["dir_file"]
        f["dir_file"] = "old.dirs.h5"
    _forget_rows(out, slice(2, None))
    old_dirs = (tmp_path / "old.dirs.h5").read_bytes()
    capsys.readouterr()
    assert run([*JOB, "--out", out]) == 0
    assert "15 remain" in capsys.readouterr().out
    assert files(tmp_path) == ["old.dirs.h5", "old.h5"]
    assert (tmp_path / "old.dirs.h5").read_bytes() == old_dirs
    s = read_surface(str(out))
    assert s.dir_file == "old.dirs.h5" and np.isfinite(s.values["train_loss"]).all()
    with h5py.File(out, "r") as f:  # fingerprinted from now on
        assert all(k in f.attrs for k, _ in sj.FINGERPRINTS)


def _largest_in(message: str, before: str) -> int:
    return int(message.split("at most ")[1].split(before)[0])


def test_data_and_network_sizes_are_capped_by_the_memory_estimate(tmp_path, capsys, no_training):
    assert run([*JOB, "--data", "spirals:100000000", "--out", tmp_path / "s.h5"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "limit" in line
    n = _largest_in(line, " data points")
    assert nets.estimate_bytes(n, 2, (8,), grid=5) <= MEMORY_CAP_BYTES < nets.estimate_bytes(n + 1, 2, (8,), grid=5)
    assert run(["--model", "mlp:30000x30000", "--data", "spirals:2000", "--grid", "5", "--out", tmp_path / "s.h5"]) == 2
    line = one_line(capsys.readouterr().err)
    w = _largest_in(line, " units")
    assert nets.estimate_bytes(2000, 2, (w, w), grid=5) <= MEMORY_CAP_BYTES
    assert nets.estimate_bytes(2000, 2, (w + 1, w + 1), grid=5) > MEMORY_CAP_BYTES
    # the PCA path's checkpoints count: a network that fits with random directions may not with PCA ones
    assert run(["--model", f"mlp:{w}x{w}", "--data", "spirals:2000", "--grid", "5", "--directions", "pca",
                "--out", tmp_path / "s.h5"]) == 2
    assert "limit" in one_line(capsys.readouterr().err)
    assert files(tmp_path) == []


BAD_MODELS = """
import torch
from torch import nn


def _bce(out, t):
    return nn.functional.binary_cross_entropy_with_logits(out.squeeze(-1), t)


def wrong_dtype():
    return nn.Linear(2, 1), _bce, (torch.zeros(8, 2, dtype=torch.float64), torch.zeros(8))


def wrong_shape():
    return nn.Linear(2, 1), _bce, (torch.zeros(8, 3), torch.zeros(8))


def wrong_device():
    return nn.Linear(2, 1), _bce, (torch.zeros(8, 2, device="meta"), torch.zeros(8, device="meta"))


def not_scalar():
    return nn.Linear(2, 1), lambda out, t: (out.squeeze(-1) - t) ** 2, (torch.zeros(8, 2), torch.zeros(8))


def not_a_number():
    return nn.Linear(2, 1), lambda out, t: "small", (torch.zeros(8, 2), torch.zeros(8))


class Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x):
        raise RuntimeError("forward is broken\\nsecond line")


def raises_in_forward():
    return Raises(), _bce, (torch.zeros(8, 2), torch.zeros(8))


def raises_later():
    seen = []

    def loss(out, t):  # fine at the centre (the first call), fails away from it
        seen.append(out.detach().clone())
        if not torch.equal(out, seen[0]):
            raise ValueError("far from home")
        return _bce(out, t)
    return nn.Linear(2, 1), loss, (torch.ones(8, 2), torch.zeros(8))


def no_parameters():
    return nn.Tanh(), _bce, (torch.zeros(8, 1), torch.zeros(8))
"""


@pytest.mark.parametrize("factory, words", [
    ("wrong_dtype", ["module fails", "torch.float64"]), ("wrong_shape", ["module fails", "(8, 3)"]),
    ("wrong_device", ["module fails", "meta"]), ("not_scalar", ["must return a scalar", "(8,)"]),
    ("not_a_number", ["must return a number", "str"]), ("raises_in_forward", ["forward is broken second line"]),
    ("raises_later", ["failed when evaluated", "far from home"]), ("no_parameters", ["no parameters"]),
])
def test_a_failing_user_model_is_named_and_leaves_no_file(tmp_path, capsys, factory, words):
    (tmp_path / "bad_models.py").write_text(BAD_MODELS)
    spec = f"{tmp_path / 'bad_models.py'}:{factory}"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rc = run(["--model", spec, "--grid", "3", "--out", out_dir / "u.h5"])
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and f"'{spec}'" in line and all(w in line for w in words), line
    assert files(out_dir) == []


def test_ctrl_c_says_what_was_saved_and_the_resume_command(tmp_path, capsys, monkeypatch):
    out = tmp_path / "c.h5"
    real, calls = ls.grid_model, []

    def interrupted_at_row_3(*a, **k):
        calls.append(1)
        if len(calls) == 5:  # rows 1 and 2 (loss, accuracy) done and saved
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ls, "grid_model", interrupted_at_row_3)
    assert run([*JOB, "--out", out]) == 130
    err = capsys.readouterr().err
    line = one_line(err)
    assert "interrupted" in line and f"{out} holds 10 of 25 points" in line
    monkeypatch.setattr(ls, "grid_model", real)
    cmd = shlex.split(line.split("to resume, run: ")[1])
    assert cmd[:2] == ["losslab", "surface"]
    assert run(cmd[2:]) == 0
    assert "10 of 25 points are there, 15 remain" in capsys.readouterr().out
    assert files(tmp_path) == ["c.h5", "c.h5.dirs.h5"]


def test_ctrl_c_before_anything_is_saved(tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sj, "train_mlp", interrupted)
    assert run([*JOB, "--out", tmp_path / "c.h5"]) == 130
    line = one_line(capsys.readouterr().err)
    assert "nothing written" in line and "losslab surface --model mlp:8:tanh" in line
    assert files(tmp_path) == []


def test_a_run_killed_while_writing_leaves_a_temporary_file_the_next_run_removes(tmp_path, capsys):
    out = tmp_path / "k.h5"
    env = dict(os.environ, LOSSLAB_TEST_KILL_AFTER_ROWS="2:write")
    p = subprocess.Popen([sys.executable, "-m", "visualizer", "surface", *JOB, "--out", str(out)], cwd=ROOT,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=300)
    assert p.returncode == -signal.SIGKILL, err
    left = [n for n in files(tmp_path) if n.endswith(".tmp")]
    assert left == [f"k.h5.{p.pid}.tmp"]
    # a live process's temporary file is not touched
    live = tmp_path / f"k.h5.{os.getppid()}.tmp"
    live.write_bytes(b"being written")
    assert run([*JOB, "--out", out]) == 0
    cap = capsys.readouterr()
    assert f"removed k.h5.{p.pid}.tmp" in cap.err
    assert "5 of 25 points are there, 20 remain" in cap.out
    assert files(tmp_path) == sorted(["k.h5", "k.h5.dirs.h5", live.name])
    live.unlink()


@pytest.mark.parametrize("umask", [0o027, 0o002])
def test_written_files_respect_the_umask(tmp_path, umask):
    before = os.umask(umask)
    try:
        assert run([*JOB, "--out", tmp_path / "m.h5"]) == 0
    finally:
        os.umask(before)
    for name in ("m.h5", read_surface(str(tmp_path / "m.h5")).dir_file):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_sigterm_mid_job_saves_what_is_done_says_how_to_resume_and_leaves_no_temporary_file(tmp_path):
    """A real process, stopped by SIGTERM once its first row is saved (the file appearing is the event)."""
    import time

    out = tmp_path / "s.h5"
    cmd = [sys.executable, "-m", "visualizer", "surface", "--model", "mlp:32x32:tanh", "--data", "spirals:500:0.1",
           "--grid", "41", "--train-steps", "20", "--out", str(out)]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120  # a bound for a hang: the loop ends when the first row is on disk
    while not out.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert out.exists(), proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the job finished before the signal arrived")
    assert proc.returncode == 128 + signal.SIGTERM, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and "\r" not in ln]
    assert "Traceback" not in err and lines[-1].startswith("losslab surface: interrupted: ")
    assert "to resume, run:" in lines[-1]
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == []
    # the printed command resumes the job to the end
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "remain" in (r.stdout + r.stderr), r.stderr
