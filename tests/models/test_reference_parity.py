"""Parity with the reference loss-landscape tool's files (issue 17), checked with the independent writer and
reader of tests/reference_layout.py: our files read by the reference's reading give the same values at the same
coordinates (accuracies in percent); the reference's files (square, 11x7, asymmetric ranges, partial with -1,
1D, without train_acc) read by ``read_surface`` give every value at its coordinates and NaN where -1; and
``losslab surface`` resumes a partial reference file by computing exactly its missing points."""

import copy

import h5py
import numpy as np
import pytest
import torch

from models import landscape as ls
from models import surface_job as sj
from models.surface_io import (
    Surface,
    SurfaceFileError,
    read_directions,
    read_surface,
    write_directions,
    write_surface,
)
from tests.reference_layout import (
    read_reference_directions,
    read_reference_surface,
    write_reference_directions,
    write_reference_surface,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def loss_at(a, b):
    """A surface that is not symmetric in either axis nor under a swap of them: a flip or a transpose shows."""
    return 2.0 + 0.7 * a + 0.3 * b + 0.1 * a * b + 0.05 * a ** 2


def acc_at(a, b):  # percent, as the reference writes it
    return 100.0 * (0.2 + 0.5 / (1 + (a - 0.1) ** 2 + 2 * b ** 2))


GRIDS = {  # name -> (x, y); y None: a 1D plot
    "square": (np.linspace(-1, 1, 5), np.linspace(-1, 1, 5)),
    "11x7": (np.linspace(-1, 1, 11), np.linspace(-1, 1, 7)),
    "asymmetric": (np.linspace(-0.5, 1.5, 9), np.linspace(-1, 1, 5)),
    "1D": (np.linspace(-1, 1, 13), None),
}


def on_grid(f, x, y):
    return f(x[:, None], (np.zeros(1) if y is None else y)[None, :])


@pytest.mark.parametrize("case", list(GRIDS))
def test_our_files_read_by_the_reference_give_each_value_at_its_coordinates(tmp_path, case):
    x, y = GRIDS[case]
    loss = on_grid(loss_at, x, y)
    acc = on_grid(acc_at, x, y) / 100  # fractions in memory
    loss[2, 0] = np.nan  # not computed: the reference's -1
    path = tmp_path / "ours.h5"
    write_surface(str(path), Surface(x, np.zeros(1) if y is None else y, {"train_loss": loss, "train_acc": acc},
                                     "ours.h5.dirs.h5"))
    ref = read_reference_surface(str(path))  # asserts the reference's array shapes
    assert np.array_equal(ref["x"], x) and ref["dir_file"] == "ours.h5.dirs.h5"
    if y is None:
        assert ref["y"] is None
        ref_loss, ref_acc = ref["train_loss"][:, None], ref["train_acc"][:, None]
    else:
        assert np.array_equal(ref["y"], y)
        ref_loss, ref_acc = ref["train_loss"], ref["train_acc"]
    want = on_grid(loss_at, x, y)
    for ix in range(len(x)):
        for iy in range(ref_loss.shape[1]):
            if (ix, iy) == (2, 0):
                assert np.isnan(ref_loss[ix, iy])
            else:
                assert ref_loss[ix, iy] == pytest.approx(want[ix, iy], rel=1e-12)
            assert ref_acc[ix, iy] == pytest.approx(acc_at(x[ix], 0 if y is None else y[iy]), rel=1e-12)
    with h5py.File(path, "r") as f:
        assert f.attrs["losslab_acc_units"] == "percent"
    back = read_surface(str(path))
    assert back.one_d == (y is None)
    assert np.allclose(back.values["train_acc"], acc, rtol=1e-12)


REFERENCE = {  # name -> (grid, missing mask maker or None, arrays)
    "square": ("square", None, ("train_loss", "train_acc")),
    "11x7": ("11x7", None, ("train_loss", "train_acc")),
    "asymmetric": ("asymmetric", None, ("train_loss", "train_acc")),
    "partial": ("11x7", lambda shape: np.arange(np.prod(shape)).reshape(shape[::-1]).T >= 40,
                ("train_loss", "train_acc")),
    "1D": ("1D", None, ("train_loss", "train_acc")),
    "partial 1D": ("1D", lambda shape: np.arange(shape[0]) % 3 == 1, ("train_loss", "train_acc")),
    "no train_acc": ("asymmetric", None, ("train_loss",)),
}


@pytest.mark.parametrize("case", list(REFERENCE))
def test_reference_files_read_with_every_value_at_its_coordinates_and_gaps_where_minus_one(tmp_path, case):
    grid, mask, names = REFERENCE[case]
    x, y = GRIDS[grid]
    shape = (len(x),) if y is None else (len(x), len(y))
    missing = None if mask is None else mask(shape)
    fns = {"train_loss": loss_at, "train_acc": acc_at}
    arrays = {n: (lambda a, f=fns[n]: f(a, 0.0)) if y is None else fns[n] for n in names}
    path = tmp_path / "ref.h5"
    write_reference_surface(str(path), x, y, arrays, dir_file="cifar10/trained_nets/model_300.t7_weights.h5",
                            missing=missing)
    s = read_surface(str(path))
    assert s.one_d == (y is None) and np.array_equal(s.x, x)
    assert np.array_equal(s.y, np.zeros(1) if y is None else y)
    assert s.dir_file == "cifar10/trained_nets/model_300.t7_weights.h5"
    assert sorted(s.values) == sorted(names)
    gaps = np.zeros((len(x), len(s.y)), dtype=bool) if missing is None else missing.reshape(len(x), len(s.y))
    for name in names:
        v = s.values[name]
        assert v.shape == (len(x), len(s.y))
        assert np.array_equal(np.isnan(v), gaps), name
        for ix in range(len(x)):
            for iy in range(len(s.y)):
                if not gaps[ix, iy]:
                    want = fns[name](x[ix], s.y[iy])
                    assert v[ix, iy] == pytest.approx(want / 100 if name == "train_acc" else want, rel=1e-12)


def test_accuracy_units_are_read_either_way_and_kept_exactly(tmp_path):
    x = np.linspace(-1, 1, 3)
    pct = 100.0 * np.arange(9).reshape(3, 3) * 4823 / 50000  # numbers x / 100 * 100 does not give back exactly
    assert (pct / 100 * 100 != pct).any()
    write_reference_surface(str(tmp_path / "ref.h5"), x, x, {"train_loss": np.ones((3, 3)), "train_acc": pct})
    s = read_surface(str(tmp_path / "ref.h5"))
    assert np.allclose(s.values["train_acc"], pct / 100, rtol=1e-15)
    s.values["train_acc"][0, 0] = 0.5  # one changed value: written as 50 %, the others as they were
    write_surface(str(tmp_path / "back.h5"), s)
    back = read_reference_surface(str(tmp_path / "back.h5"))["train_acc"]
    assert back[0, 0] == 50.0
    assert np.array_equal(back.ravel()[1:], pct.ravel()[1:])  # bit for bit
    # a file of an earlier losslab version: fractions, no unit attribute
    frac = np.full((3, 3), 0.75)
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f["xcoordinates"], f["ycoordinates"], f["dir_file"] = x, x, ""
        f["train_loss"], f["train_acc"] = np.ones((3, 3)), frac
    assert np.array_equal(read_surface(str(tmp_path / "old.h5")).values["train_acc"], frac)
    # the attribute decides, whatever the numbers (below 1 percent everywhere here)
    with h5py.File(tmp_path / "old.h5", "a") as f:
        f.attrs["losslab_acc_units"] = "percent"
    assert np.allclose(read_surface(str(tmp_path / "old.h5")).values["train_acc"], 0.0075)


def test_one_d_direction_files_both_ways(tmp_path):
    xdir = [np.arange(6.0).reshape(2, 3), np.ones(2)]
    write_reference_directions(str(tmp_path / "ref_dirs.h5"), xdir)
    rx, ry = read_directions(str(tmp_path / "ref_dirs.h5"), shapes=[(2, 3), (2,)])
    assert ry is None and all(np.array_equal(a, b) for a, b in zip(rx, xdir))
    write_directions(str(tmp_path / "ours.h5"), xdir, None)
    ox, oy = read_reference_directions(str(tmp_path / "ours.h5"))
    assert oy is None and all(np.array_equal(a, b) for a, b in zip(ox, xdir))
    with pytest.raises(SurfaceFileError, match=r"'xdirection/1' has shape \(2,\), this model's tensor 1 \(3,\)"):
        read_directions(str(tmp_path / "ours.h5"), shapes=[(2, 3), (3,)])


def test_a_direction_file_and_a_surface_file_are_told_apart(tmp_path):
    write_reference_directions(str(tmp_path / "dirs.h5"), [np.ones(3)], [np.zeros(3)])
    write_reference_surface(str(tmp_path / "surf.h5"), np.linspace(-1, 1, 3), np.linspace(-1, 1, 3),
                            {"train_loss": loss_at})
    with pytest.raises(SurfaceFileError, match=r"dirs.h5: a direction file .*not a loss-surface file"):
        read_surface(str(tmp_path / "dirs.h5"))
    with pytest.raises(SurfaceFileError, match=r"surf.h5: a loss-surface file .*not a direction file"):
        read_directions(str(tmp_path / "surf.h5"))


# ------------------------------------------------------------------------- resuming a reference partial file
FACTORY = """
import torch
from torch import nn


def build():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(48, 3, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)), nn.functional.cross_entropy, (x, y)
"""


def load_build(tmp_path):
    (tmp_path / "factory.py").write_text(FACTORY)
    spec = f"{tmp_path / 'factory.py'}:build"
    return spec, sj.load_factory(spec)


def direct_loss(build, d1, d2, a, b):
    """Loss and accuracy (percent) of the factory's model moved to centre + a d1 + b d2, computed here: the
    parameters set one by one, the whole data set in one forward pass."""
    model, loss_fn, (x, y) = build()
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p, u, v in zip(model.parameters(), d1, d2):
            p.add_(a * torch.as_tensor(u) + b * torch.as_tensor(v))
        out = model(x)
        return float(loss_fn(out, y)), 100.0 * float((out.argmax(-1) == y).double().mean())


def test_a_partial_reference_file_resumes_computing_exactly_its_missing_points(tmp_path, capsys, monkeypatch):
    spec, build = load_build(tmp_path)
    model = build()[0]
    g = np.random.default_rng(0)
    d1 = [g.standard_normal(tuple(p.shape)).astype(np.float32) for p in model.parameters()]
    d2 = [g.standard_normal(tuple(p.shape)).astype(np.float32) for p in model.parameters()]
    # the reference wrote its direction file beside the surface file, and recorded the path it was run with
    write_reference_directions(str(tmp_path / "model.t7_weights.h5"), d1, d2)
    x, y = np.linspace(-0.5, 1.5, 5), np.linspace(-1, 1, 4)
    done = g.random((5, 4)) < 0.5  # the points the reference got to, in no particular order
    kept_loss = g.uniform(1, 3, (5, 4))  # whatever it computed there: kept bit for bit
    kept_acc = 100.0 * g.integers(0, 48, (5, 4)) / 48
    out = tmp_path / "model.t7_weights.h5_[-0.5,1.5,5]x[-1.0,1.0,4].h5"
    write_reference_surface(str(out), x, y, {"train_loss": kept_loss, "train_acc": kept_acc},
                            dir_file="trained_nets/model.t7_weights.h5", missing=~done)
    points = []
    real = ls.evaluate_points

    def counted(*a, **k):
        points.extend(zip(a[6], a[7]))
        return real(*a, **k)

    monkeypatch.setattr(ls, "evaluate_points", counted)
    assert sj.main(["--model", spec, "--out", str(out)]) == 0
    assert f"{done.sum()} of 20 points are there, {20 - done.sum()} remain" in capsys.readouterr().out
    want = {(x[i], y[j]) for i, j in zip(*np.nonzero(~done))}
    assert len(points) == len(want) and set(points) == want  # each missing point once, nothing else
    ref = read_reference_surface(str(out))
    assert np.array_equal(ref["x"], x) and np.array_equal(ref["y"], y)
    assert ref["dir_file"] == "trained_nets/model.t7_weights.h5"
    assert np.array_equal(ref["train_loss"][done], kept_loss[done])
    assert np.array_equal(ref["train_acc"][done], kept_acc[done])
    for i, j in zip(*np.nonzero(~done)):
        loss, acc = direct_loss(build, d1, d2, x[i], y[j])
        assert ref["train_loss"][i, j] == pytest.approx(loss, rel=1e-5)
        assert ref["train_acc"][i, j] == pytest.approx(acc, abs=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".h5") == sorted([out.name,
                                                                                       "model.t7_weights.h5"])
    # finished: a second run computes nothing and changes nothing
    before = read_reference_surface(str(out))
    assert sj.main(["--model", spec, "--out", str(out)]) == 0
    assert len(points) == len(want)
    after = read_reference_surface(str(out))
    assert all(np.array_equal(before[k], after[k]) for k in ("train_loss", "train_acc"))


def test_a_reference_file_resumes_with_the_coordinates_given_or_refuses_other_ones(tmp_path, capsys):
    spec, build = load_build(tmp_path)
    model = build()[0]
    d1 = [np.full(tuple(p.shape), 0.1, dtype=np.float32) for p in model.parameters()]
    write_reference_directions(str(tmp_path / "elsewhere.h5"), d1)  # a 1D plot's directions
    x = np.linspace(-1, 1, 7)
    out = tmp_path / "line.h5"
    write_reference_surface(str(out), x, None, {"train_loss": lambda a: 5.0}, dir_file="gone.h5",
                            missing=np.arange(7) >= 3)
    kept = out.read_bytes()
    # its dir_file is not beside it: refused, naming the file, until --dir-file gives it
    assert sj.main(["--model", spec, "--out", str(out)]) == 2
    assert "gone.h5" in capsys.readouterr().err and out.read_bytes() == kept
    assert sj.main(["--model", spec, "--x", "-1:1:9", "--dir-file", str(tmp_path / "elsewhere.h5"),
                    "--out", str(out)]) == 2
    assert "other coordinates (--x -1:1:7)" in capsys.readouterr().err and out.read_bytes() == kept
    assert sj.main(["--model", spec, "--x", "-1:1:7", "--dir-file", str(tmp_path / "elsewhere.h5"),
                    "--out", str(out)]) == 0
    ref = read_reference_surface(str(out))
    assert ref["y"] is None and ref["dir_file"] == "gone.h5"
    assert np.array_equal(ref["train_loss"][:3], [5.0, 5.0, 5.0])
    zero = [np.zeros_like(t) for t in d1]
    for i in range(3, 7):
        assert ref["train_loss"][i] == pytest.approx(direct_loss(build, d1, zero, x[i], 0)[0], rel=1e-5)
