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
    assert b.dir_file and os.path.exists(tmp_path / b.dir_file)  # the direction file it names is next to it


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


# ------------------------------------------------------------------------------------ hostile and odd files
# (issue 11): every dataset's shape, type and storage is checked before any data is read; the cases that
# declare more than memory holds are read in a child process under an address-space limit (LimitedReader),
# since HDF5's own allocations escape Python's tracing and one such read must not take the machine's memory.

#: what a read may need beyond what Python, numpy and h5py use once imported (the child's limit)
READ_BUDGET = int(1.5 * 1024**3)

_READER = r"""
import json, resource, sys, time, traceback

import numpy as np

from models.limits import MAX_FILE_AXIS, MAX_FILE_GRID_POINTS
from models.surface_io import MAX_ATTRS, MAX_TEXT_BYTES, SurfaceFileError, read_surface


def vm(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


base = vm("VmSize")
resource.setrlimit(resource.RLIMIT_AS, (base + int(sys.argv[1]), base + int(sys.argv[1])))
print(json.dumps({"base": base}), flush=True)
for line in sys.stdin:
    path = json.loads(line)
    t0 = time.perf_counter()
    try:
        s = read_surface(path)
        nx, ny = len(s.x), len(s.y)
        mono = lambda c: bool(len(c) < 2 or (np.diff(c) > 0).all() or (np.diff(c) < 0).all())
        out = {"kind": "ok", "nx": nx, "ny": ny, "checks": {
            "coordinates finite": bool(np.isfinite(s.x).all() and np.isfinite(s.y).all()),
            "coordinates monotonic": mono(s.x) and mono(s.y),
            "float64 coordinates": s.x.dtype == np.float64 and s.y.dtype == np.float64,
            "axes within limits": 2 <= nx <= MAX_FILE_AXIS and 1 <= ny <= MAX_FILE_AXIS,
            "grid within limits": nx * ny <= MAX_FILE_GRID_POINTS,
            "some arrays": len(s.values) > 0,
            "arrays are (nx, ny) float64": all(v.shape == (nx, ny) and v.dtype == np.float64
                                               for v in s.values.values()),
            "dir_file bounded": isinstance(s.dir_file, str) and len(s.dir_file) <= MAX_TEXT_BYTES,
            "attrs bounded": len(s.attrs) <= MAX_ATTRS and all(
                isinstance(v, str) and len(v) <= MAX_TEXT_BYTES for v in s.attrs.values()),
        }}
        if nx * ny <= 256:
            out.update(x=s.x.tolist(), y=s.y.tolist(), values={k: v.tolist() for k, v in s.values.items()},
                       dir_file=s.dir_file[:300])
    except SurfaceFileError as exc:
        out = {"kind": "SurfaceFileError", "message": str(exc)}
    except BaseException as exc:
        out = {"kind": type(exc).__name__, "message": str(exc)[:500], "traceback": traceback.format_exc()[-4000:]}
    out["seconds"] = time.perf_counter() - t0
    out["peak"] = vm("VmPeak") - base
    print(json.dumps(out), flush=True)
"""


class LimitedReader:
    """``read_surface`` in a child process whose address space is limited to READ_BUDGET beyond what it had
    after its imports; one child serves many reads (a crash or a hang is reported, and the next read gets a
    fresh child)."""

    def __init__(self, budget: int = READ_BUDGET) -> None:
        self.budget = budget
        self.proc = None
        self.base = 0

    def _start(self) -> None:
        import json
        import tempfile

        self.err = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed with the child, in close)
        self.proc = subprocess.Popen([sys.executable, "-c", _READER, str(self.budget)], cwd=ROOT, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)
        first = self._line(60)
        assert first, f"the reader child did not start: {self._stderr()}"
        self.base = json.loads(first)["base"]

    def _line(self, timeout: float) -> str:
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else ""

    def _stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()[-3000:]

    def read(self, path, timeout: float = 60) -> dict:
        import json

        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps(str(path)) + "\n")
        self.proc.stdin.flush()
        line = self._line(timeout)
        if not line:
            self.close()
            return {"kind": "crash or hang", "message": f"no answer in {timeout} s", "stderr": self._stderr()}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdin.close()
            self.proc.stdout.close()
            self.err.close()
            self.proc = None


def limited_read(path) -> dict:
    reader = LimitedReader()
    try:
        return reader.read(path)
    finally:
        reader.close()


def surface_file(path, x=None, y=None, loss=None, **more):
    """A surface file in the reference layout (``None``: a small valid default; a callable: called with the open
    file and the name, to make that dataset some other way)."""
    x = np.linspace(-1, 1, 5) if x is None else x
    y = np.linspace(-1, 1, 4) if y is None else y
    items = {"xcoordinates": x, "ycoordinates": y}
    if loss is None and not callable(x) and not callable(y):
        loss = np.add.outer(np.asarray(x, dtype=float) ** 2, np.asarray(y, dtype=float) ** 2).ravel() + 0.5
    items["train_loss"] = loss
    items.update(more)
    with h5py.File(path, "w") as f:
        for name, v in items.items():
            if callable(v):
                v(f, name)
            elif v is not None:
                f[name] = v
    return str(path)


def declared(shape, dtype="f8", chunks=None):
    """A dataset declared ``shape`` with no data written (a tiny file): reading it would fill all of it."""
    def make(f, name):
        chunked = chunks or tuple(min(n, 1024) for n in shape) or None  # a scalar is not chunked
        f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunked)
    return make


HUGE = {
    "x of 2e9 values": (dict(x=declared((2_000_000_000,)), loss=np.zeros(20)), "xcoordinates", "100000"),
    "a 100000 x 100000 loss": (dict(x=np.linspace(-1, 1, 100_000), y=np.linspace(-1, 1, 100_000),
                                    loss=declared((100_000, 100_000))), "train_loss", "4004001"),
    "a 5000 x 5000 grid": (dict(x=np.linspace(-1, 1, 5000), y=np.linspace(-1, 1, 5000),
                                loss=declared((5000, 5000))), "train_loss", "4004001"),
}


@pytest.mark.parametrize("case", list(HUGE))
def test_declared_huge_datasets_are_refused_before_anything_is_read(tmp_path, case):
    kw, dataset, limit = HUGE[case]
    path = surface_file(tmp_path / "huge.h5", **kw)
    assert os.path.getsize(path) < 2 * 1024**2  # a small file that declares gigabytes
    out = limited_read(path)
    assert out["kind"] == "SurfaceFileError", out
    msg = out["message"]
    assert "huge.h5" in msg and f"'{dataset}'" in msg and limit in msg, msg
    assert out["peak"] < 100 * 1024**2, out  # nothing of the declared size was allocated
    with pytest.raises(SurfaceFileError, match=dataset):  # and so it is safe to call here, too
        read_surface(path)


def test_the_largest_grid_within_the_limits_is_read_within_the_budget(tmp_path):
    t = np.linspace(-1, 1, 2001)

    def ones(f, name):  # 2001 x 2001 values (32 MB as float64) in a small compressed file
        f.create_dataset(name, data=np.ones((2001, 2001), dtype="f4"), chunks=(256, 256), compression="gzip")

    path = surface_file(tmp_path / "largest.h5", x=t, y=t, loss=ones, train_acc=ones)
    out = limited_read(path)
    assert out["kind"] == "ok" and (out["nx"], out["ny"]) == (2001, 2001) and all(out["checks"].values()), out
    assert out["peak"] < 400 * 1024**2, out


def _other_file(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.arange(20.0)
        f["axis"] = np.linspace(-1, 1, 5)
    return str(other)


def _external_storage(target, size):
    def make(f, name):
        f.create_dataset(name, shape=(size,), dtype="u1", external=[(target, 0, size)])
    return make


def _virtual(source, n):
    def make(f, name):
        layout = h5py.VirtualLayout(shape=(n,), dtype="f8")
        layout[:] = h5py.VirtualSource(source, "data", shape=(20,))[:n]
        f.create_virtual_dataset(name, layout, fillvalue=0)
    return make


def _link(link):
    def make(f, name):
        f[name] = link
    return make


def _loop(f, name):
    f[name] = h5py.SoftLink("/loop_b")
    f["loop_b"] = h5py.SoftLink("/" + name)


REACHING = {
    "raw storage in /etc/passwd": (lambda o: dict(loss=_external_storage("/etc/passwd", 20)), "train_loss",
                                   "external files"),
    "coordinates in another file's raw bytes": (lambda o: dict(x=_external_storage(o, 5)), "xcoordinates",
                                                "external files"),
    "an external link": (lambda o: dict(loss=_link(h5py.ExternalLink(o, "/data"))), "train_loss",
                         "external link"),
    "an external link for an axis": (lambda o: dict(x=_link(h5py.ExternalLink(o, "/axis"))), "xcoordinates",
                                     "external link"),
    "a dangling external link": (lambda o: dict(loss=_link(h5py.ExternalLink("/no/such.h5", "/d"))),
                                 "train_loss", "external link"),
    "a virtual dataset": (lambda o: dict(loss=_virtual(o, 20)), "train_loss", "virtual"),
    "a soft link": (lambda o: dict(loss=None, elsewhere=np.ones(20), train_loss=_link(h5py.SoftLink("/elsewhere"))),
                    "train_loss", "soft link"),
    "a soft-link loop": (lambda o: dict(x=_loop), "xcoordinates", "soft link"),
    "a soft link for dir_file": (lambda o: dict(dir_file=_link(h5py.SoftLink("/ycoordinates"))), "dir_file",
                                 "soft link"),
    "an external link for dir_file": (lambda o: dict(dir_file=_link(h5py.ExternalLink(o, "/data"))), "dir_file",
                                      "external link"),
}


@pytest.mark.parametrize("case", list(REACHING))
def test_links_and_storage_that_reach_other_files_are_refused(tmp_path, case):
    make, dataset, words = REACHING[case]
    path = surface_file(tmp_path / "reach.h5", **make(_other_file(tmp_path)))
    with pytest.raises(SurfaceFileError) as err:
        read_surface(path)
    msg = str(err.value)
    assert "reach.h5" in msg and f"'{dataset}'" in msg and words in msg, msg


def _strings(f, name):
    f[name] = np.array([b"a", b"b", b"c"])


def _compound(f, name):
    f[name] = np.zeros(5, dtype=[("a", "f8"), ("b", "i4")])


def _empty(f, name):
    f[name] = h5py.Empty("f8")


def _group(f, name):
    f.create_group(name)


ODD = {
    "NaN coordinates": (dict(x=np.array([-1, -0.5, np.nan, 0.5, 1])), "xcoordinates", "not finite"),
    "infinite coordinates": (dict(y=np.array([-1, 0, 1, np.inf])), "ycoordinates", "not finite"),
    "duplicate coordinates": (dict(x=np.array([-1, 0, 0, 0.5, 1.0])), "xcoordinates", "repeats a value"),
    "coordinates up and down": (dict(x=np.array([-1, 0, -0.5, 0.5, 1.0])), "xcoordinates", "up and down"),
    "a 1 x 1 grid": (dict(x=np.zeros(1), y=np.zeros(1), loss=np.ones(1)), "xcoordinates", "at least 2"),
    "a 0 x 0 grid": (dict(x=np.zeros(0), y=np.zeros(0), loss=np.ones(0)), "xcoordinates", "at least 2"),
    "a 5 x 1 grid": (dict(y=np.zeros(1), loss=np.ones(5)), "ycoordinates", "at least 2"),
    "text coordinates": (dict(x=_strings, loss=np.ones(12)), "xcoordinates", "text"),
    "compound coordinates": (dict(x=_compound, loss=np.ones(20)), "xcoordinates", "compound"),
    "complex losses": (dict(loss=np.ones(20) * 1j), "train_loss", "complex"),
    "an empty dataspace": (dict(loss=_empty), "train_loss", "no data"),
    "a group for the loss": (dict(loss=_group), "train_loss", "not a dataset"),
    "a loss of the wrong size": (dict(loss=np.ones(19)), "train_loss", "holds 19 values"),
    "an accuracy of the wrong size": (dict(train_acc=np.ones((4, 6))), "train_acc", "5 x 4 grid of 20 points"),
    "numbers for dir_file": (dict(dir_file=np.arange(3)), "dir_file", "not text"),
    "a 100 MB fixed-length dir_file": (dict(dir_file=declared((), "S100000000")), "dir_file", "at most 4096"),
}


@pytest.mark.parametrize("case", list(ODD))
def test_odd_files_are_refused_with_a_named_error(tmp_path, case):
    kw, dataset, words = ODD[case]
    path = surface_file(tmp_path / "odd.h5", **kw)
    with pytest.raises(SurfaceFileError) as err:
        read_surface(path)
    msg = str(err.value)
    assert "odd.h5" in msg and f"'{dataset}'" in msg and words in msg, msg


def test_descending_coordinates_are_read_in_the_files_order(tmp_path):
    # the reference writes a range like 1:-1:N descending; flat entry k = iy * nx + ix holds (x[ix], y[iy])
    x, y = np.linspace(1, -1, 5), np.linspace(2, -2, 3)
    xm, ym = np.meshgrid(x, y)
    path = surface_file(tmp_path / "desc.h5", x=x, y=y, loss=(10 * xm + ym).ravel().reshape(5, 3) + 30)
    s = read_surface(path)
    assert np.array_equal(s.x, x) and np.array_equal(s.y, y)
    assert np.allclose(s.values["train_loss"], 10 * x[:, None] + y[None, :] + 30)
    # the reference's 1D plot (no ycoordinates) is read as an nx x 1 surface at y = 0
    one = read_surface(surface_file(tmp_path / "one.h5", y=None, loss=np.arange(5.0), ycoordinates=None))
    assert one.y.tolist() == [0.0] and one.values["train_loss"][:, 0].tolist() == [0, 1, 2, 3, 4]


def test_file_text_is_read_bounded_and_kept_as_text(tmp_path):
    from models.surface_io import MAX_TEXT_BYTES

    html = '<h1 style="font-size:300px">INJECTED</h1><img src="file:///etc/hostname">'
    s = read_surface(surface_file(tmp_path / "html.h5", dir_file=html))
    assert s.dir_file == html  # kept as it is: showing it as plain text is the display's job
    big = "d" * 20_000_000
    path = surface_file(tmp_path / "big.h5", dir_file=big)
    with h5py.File(path, "a") as f:
        f.attrs["losslab_job"] = '{"grid": 5}'
        f.attrs["long"] = "L" * 100_000
        f.attrs["number"] = 3
        f.attrs["bytes"] = np.bytes_(b"B" * 10)
    s = read_surface(path)
    assert s.dir_file == big[:MAX_TEXT_BYTES]
    assert s.attrs == {"losslab_job": '{"grid": 5}', "long": "L" * MAX_TEXT_BYTES, "bytes": "B" * 10}
    out = limited_read(path)
    assert out["kind"] == "ok" and all(out["checks"].values()), out


def test_any_h5py_failure_is_a_surface_file_error(tmp_path, monkeypatch):
    good = surface_file(tmp_path / "good.h5", dir_file="d.h5")
    data = Path(good).read_bytes()
    for i, cut in enumerate(range(0, len(data), max(1, len(data) // 97))):
        part = tmp_path / f"cut{i}.h5"
        part.write_bytes(data[:cut])
        try:
            s = read_surface(str(part))
        except SurfaceFileError as exc:
            assert f"cut{i}.h5" in str(exc)
        else:  # only the file's unused tail was cut
            assert np.allclose(s.values["train_loss"], read_surface(good).values["train_loss"])
        part.unlink()
    for junk in (b"", b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4, b"\x89HDF\r\n\x1a\n\x02" + b"\xff" * 2000):
        (tmp_path / "junk.h5").write_bytes(junk)
        with pytest.raises(SurfaceFileError, match="junk.h5"):
            read_surface(str(tmp_path / "junk.h5"))
    with pytest.raises(SurfaceFileError, match="missing.h5"):
        read_surface(str(tmp_path / "missing.h5"))
    with pytest.raises(SurfaceFileError, match="a_folder"):
        (tmp_path / "a_folder").mkdir()
        read_surface(str(tmp_path / "a_folder"))
    for exc in (RuntimeError("boom"), IndexError("index"), TypeError("type"), AttributeError("attr")):
        def fail(*a, exc=exc, **k):
            raise exc

        monkeypatch.setattr(h5py, "File", fail)
        with pytest.raises(SurfaceFileError, match=f"good.h5.*{exc}"):
            read_surface(good)


def test_unknown_filters_and_huge_chunks_are_refused(tmp_path):
    def unknown_filter(f, name):
        f.create_dataset(name, data=np.ones(20), chunks=(20,), compression=32015, allow_unknown_filter=True)

    def huge_chunk(f, name):
        f.create_dataset(name, shape=(20,), maxshape=(None,), chunks=(20_000_000,), dtype="f8")

    def many_chunks(f, name):
        f.create_dataset(name, shape=(20,), maxshape=(None,), chunks=(1,), dtype="f8")

    for make, words in ((unknown_filter, "filter 32015"), (huge_chunk, "chunks of")):
        with pytest.raises(SurfaceFileError, match=f"'train_loss'.*{words}"):
            read_surface(surface_file(tmp_path / "f.h5", loss=make))
    # built-in filters and small chunks are fine
    def gzip(f, name):
        f.create_dataset(name, data=np.ones(20), chunks=(4,), compression="gzip", shuffle=True, fletcher32=True)

    assert read_surface(surface_file(tmp_path / "g.h5", loss=gzip)).values["train_loss"].shape == (5, 4)
    assert read_surface(surface_file(tmp_path / "m.h5", loss=many_chunks)).values["train_loss"].shape == (5, 4)


def test_the_writer_is_atomic_and_respects_the_umask(tmp_path):
    x = np.linspace(-1, 1, 3)
    path = tmp_path / "s.h5"
    old = os.umask(0o027)
    try:
        write_surface(str(path), Surface(x, x, {"train_loss": np.ones((3, 3))}))
        assert path.stat().st_mode & 0o777 == 0o640
        os.umask(0o002)
        write_directions(str(tmp_path / "d.h5"), [np.ones(2)], [np.ones(2)])
        assert (tmp_path / "d.h5").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)
    before = path.read_bytes()
    with pytest.raises(ValueError):  # fails while the file is being filled: the old file stays, no leftovers
        write_surface(str(path), Surface(x, x, {"train_loss": np.ones((3, 3)), "train_acc": np.ones(3)}))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5", "s.h5"]


def test_direction_files_get_the_same_checks(tmp_path):
    other = _other_file(tmp_path)
    for name, make in (("ext.h5", lambda f: f.__setitem__("xdirection/0", h5py.ExternalLink(other, "/data"))),
                       ("soft.h5", lambda f: f.__setitem__("xdirection", h5py.SoftLink("/ydirection"))),
                       ("efl.h5", lambda f: f.create_dataset("xdirection/0", shape=(4,), dtype="u1",
                                                              external=[("/etc/passwd", 0, 4)])),
                       ("huge.h5", lambda f: f.create_dataset("xdirection/0", shape=(10**6, 10**6), dtype="f8",
                                                               chunks=(1000, 1000)))):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_group("ydirection")["0"] = np.ones(4)
            if name != "soft.h5":
                f.create_group("xdirection")
            make(f)
        with pytest.raises(SurfaceFileError, match=f"{name}: .*'xdirection"):
            read_directions(str(tmp_path / name))


# ------------------------------------------------------------------------------------ opening in the lab
@pytest.fixture
def surface_lab(qtbot, fresh_settings):
    from visualizer.labs.surface import SurfaceLab

    lab = SurfaceLab(restore=False, start=False)
    lab.resize(1000, 700)
    qtbot.addWidget(lab)
    qtbot.addWidget(lab.controls())
    lab.show()
    lab.msgs = []
    lab.message.connect(lambda text, error: lab.msgs.append((text, error)))
    yield lab
    lab.shutdown()


def drawn(qtbot, lab):
    qtbot.waitUntil(lambda: lab.shown is not None and lab.shown["values"] is lab.grid_values and not lab.busy(),
                    timeout=30000)


def reference_file(path, x, y, f_true, **more):
    xm, ym = np.meshgrid(x, y)
    return surface_file(path, x=x, y=y, loss=f_true(xm, ym).ravel().reshape(len(x), len(y)), **more)


def test_the_lab_draws_descending_coordinates_where_they_belong(qtbot, surface_lab, tmp_path):
    lab = surface_lab
    f_true = lambda a, b: 3 + a + 0.25 * b  # noqa: E731  (not symmetric: a flip of either axis shows)
    path = reference_file(tmp_path / "desc.h5", np.linspace(1, -1, 21), np.linspace(1, -1, 21), f_true)
    assert lab.open_surface(path)
    drawn(qtbot, lab)
    assert not [m for m in lab.msgs if m[1]], lab.msgs
    t = lab.grid_x
    assert np.allclose(t, np.linspace(-1, 1, 21)) and np.allclose(lab.grid_y, t)  # the views take ascending axes
    assert np.allclose(lab.grid_values, f_true(t[:, None], t[None, :]))  # each value at its own (a, b)
    assert np.allclose(lab.shown["shown"], np.log10(f_true(t[:, None], t[None, :])))
    rect = lab.plane_view.image.mapRectToParent(lab.plane_view.image.boundingRect())
    assert rect.left() == pytest.approx(-1.05) and rect.width() == pytest.approx(2.1)
    assert lab.scene.extent == pytest.approx((-1, 1, -1, 1))
    assert "descending in the file" in lab.caption.text()
    # a descending, b ascending on another range and count: each axis its own (issue 17: nothing resampled),
    # still each value at its (a, b)
    path = reference_file(tmp_path / "mixed.h5", np.linspace(1, -1, 11), np.linspace(-2, 2, 41), f_true)
    assert lab.open_surface(path)
    drawn(qtbot, lab)
    x, y = lab.grid_x, lab.grid_y
    assert np.allclose(x, np.linspace(-1, 1, 11)) and np.allclose(y, np.linspace(-2, 2, 41))
    assert np.allclose(lab.grid_values, f_true(x[:, None], y[None, :]))


def test_the_lab_refuses_odd_files_and_keeps_what_it_showed(qtbot, surface_lab, tmp_path, monkeypatch):
    lab = surface_lab
    good = reference_file(tmp_path / "good.h5", np.linspace(-1, 1, 9), np.linspace(-1, 1, 9),
                          lambda a, b: 1 + a * a + b * b)
    assert lab.open_surface(good)
    drawn(qtbot, lab)
    shown, values, text = lab.shown, lab.grid_values, lab.caption.text()
    other = _other_file(tmp_path)
    data = Path(good).read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 2])
    bad = {
        "nan.h5": dict(x=np.array([-1, -0.5, np.nan, 0.5, 1])),
        "dup.h5": dict(x=np.array([-1, 0, 0, 0.5, 1.0])),
        "one.h5": dict(x=np.zeros(1), y=np.zeros(1), loss=np.ones(1)),
        "zero.h5": dict(x=np.zeros(0), y=np.zeros(0), loss=np.ones(0)),
        "loop.h5": dict(x=_loop),
        "size.h5": dict(loss=np.ones(19)),
        "passwd.h5": dict(loss=_external_storage("/etc/passwd", 20)),
        "elink.h5": dict(loss=_link(h5py.ExternalLink(other, "/data"))),
        "wide.h5": dict(x=np.array([-1.7e308, 0, 1.7e308]), y=np.array([-1.0, 0, 1]), loss=np.ones(9)),
    }  # (a 2 x 2 grid and a 1D file open since issue 17: every file on its own coordinates, a 1D one as a curve)
    for name, kw in bad.items():
        surface_file(tmp_path / name, **kw)
    for name in [*bad, "truncated.h5", "missing.h5"]:
        lab.msgs.clear()
        assert not lab.open_surface(str(tmp_path / name)), name
        assert len(lab.msgs) == 1 and lab.msgs[0][1] and name in lab.msgs[0][0], (name, lab.msgs)
        assert "Traceback" not in lab.msgs[0][0]
        assert lab.grid_values is values and lab.shown is shown and lab.caption.text() == text, name
    # an error that is not the file's: reported in one line, and the lab still shows what it showed
    from visualizer.labs import surface as mod

    monkeypatch.setattr(mod, "surface_for_views", lambda *a: 1 / 0)
    lab.msgs.clear()
    assert not lab.open_surface(good)
    assert lab.msgs[-1][1] and "Could not open" in lab.msgs[-1][0] and "good.h5" in lab.msgs[-1][0]
    assert lab.grid_values is values and lab.caption.text() == text


def test_the_caption_shows_file_text_as_plain_text(qtbot, surface_lab, tmp_path):
    import time

    lab = surface_lab
    html = '<h1 style="font-size:300px">INJECTED</h1><img src="file:///etc/hostname" width=2000 height=2000>'
    path = reference_file(tmp_path / "<i>odd & name.h5", np.linspace(-1, 1, 5), np.linspace(-1, 1, 5),
                          lambda a, b: 1 + a + b * b, dir_file=html)
    assert lab.open_surface(path)
    text = lab.caption.text()
    assert "<h1" not in text and "<img" not in text and "<i>" not in text
    assert "&lt;h1" in text and "&lt;i&gt;odd &amp; name.h5" in text
    assert lab.caption.heightForWidth(1000) < 60  # a line or two of text, no giant heading, no image
    big = reference_file(tmp_path / "big.h5", np.linspace(-1, 1, 5), np.linspace(-1, 1, 5),
                         lambda a, b: 1 + a + b * b, dir_file="<b>x</b>" * 2_500_000)  # 20 MB
    t0 = time.perf_counter()
    assert lab.open_surface(big)
    lab.caption.sizeHint()
    qtbot.wait(10)
    assert time.perf_counter() - t0 < 10
    assert len(lab.caption.text()) < 1000 and "<b>x" not in lab.caption.text()
    drawn(qtbot, lab)


def test_a_surface_off_centre_is_drawn_with_its_contours_in_place(qtbot, surface_lab, tmp_path):
    """An axis that is not centred on 0 (here a, b in [-3, -1]): image, contours and 3D extent all on it."""
    lab = surface_lab
    axis = np.linspace(-3, -1, 21)
    path = reference_file(tmp_path / "off.h5", axis, axis, lambda a, b: 1 + (a + 2) ** 2 + (b + 2) ** 2)
    assert lab.open_surface(path)
    drawn(qtbot, lab)
    assert not [m for m in lab.msgs if m[1]], lab.msgs
    assert np.allclose(lab.grid_x, axis) and np.allclose(lab.grid_y, axis)
    pts = np.concatenate(lab.shown["contours"])
    assert len(pts) and pts.min() >= -3 - 1e-9 and pts.max() <= -1 + 1e-9  # the rings round (-2, -2)
    assert np.abs(pts.mean(0) + 2).max() < 0.1
