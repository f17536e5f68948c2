"""`losslab surface` with the reference tool's options (issue 17): axes of any shape and range and 1D plots,
--dir-file, --dir-type states, --model-file/2/3 planes through checkpoints, --model-folder PCA, data loaders,
test sets and --batch-size, tqdm progress; and a bad value of each refused in one line before anything is
trained. Values are checked against losses computed here, directly with the module."""

import copy
import io

import h5py
import numpy as np
import pytest
import torch

from models import surface_job as sj
from models.surface_io import read_surface
from tests.models.test_surface_job_cli import files, one_line, run
from tests.reference_layout import read_reference_directions, read_reference_surface

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FACTORIES = """
import torch
from torch import nn


def data(n=40, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, (x[:, 0] - 0.5 * x[:, 2] > 0).long()


def net(seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))


def tensors():
    return net(), nn.functional.cross_entropy, data()


def loader():
    x, y = data()
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    return net(), nn.functional.cross_entropy, batches, [data(12, seed=4)]


def with_test():
    return net(), nn.functional.cross_entropy, data(), data(12, seed=4)


def shuffled():  # batches in another order every run: the same data
    x, y = data()
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
    return net(), nn.functional.cross_entropy, batches


def bad_batches():  # its first batch is fine, a later one is not
    return net(), nn.functional.cross_entropy, [data(), "not a batch"]


def one_shot():
    return net(), nn.functional.cross_entropy, iter([data()])


def calibrated():  # batch norm with running statistics of its own, so that moving them changes the loss
    model = net()
    model.train()
    with torch.no_grad():
        model(data()[0] * 3 + 1)
    return model, nn.functional.cross_entropy, data()
"""


@pytest.fixture
def fac(tmp_path):
    (tmp_path / "factories.py").write_text(FACTORIES)
    return lambda name: f"{tmp_path / 'factories.py'}:{name}"


def direct(spec: str, state: dict | None = None, moves=(), data=None) -> float:
    """The loss of the factory's module, with ``state`` loaded and then each (tensors, coefficient) of
    ``moves`` added to its parameters (or, with len(state_dict()) tensors, to its state dict), in eval mode,
    over the whole data set in one pass: computed here, not with models.landscape."""
    model, loss_fn, train, *_ = sj.load_factory(spec)()
    model = copy.deepcopy(model)
    if state is not None:
        model.load_state_dict(state)
    with torch.no_grad():
        for tensors, c in moves:
            own = list(model.state_dict().values()) if len(tensors) == len(model.state_dict()) else \
                list(model.parameters())
            for t, d in zip(own, tensors):
                if t.is_floating_point():
                    t.add_(c * torch.as_tensor(np.asarray(d)))
        model.eval()
        x, y = train if data is None else data
        return float(loss_fn(model(x), y))


def test_a_one_d_job_writes_the_reference_one_d_layout(tmp_path, fac):
    out = tmp_path / "line.h5"
    assert run(["--model", fac("tensors"), "--x", "-1:2:7", "--out", out]) == 0
    ref = read_reference_surface(str(out))
    assert ref["y"] is None and ref["train_loss"].shape == (7,) and ref["train_acc"].shape == (7,)
    assert np.array_equal(ref["x"], np.linspace(-1, 2, 7))
    xdir, ydir = read_reference_directions(str(tmp_path / ref["dir_file"]))
    assert ydir is None
    for a, v in zip(ref["x"], ref["train_loss"]):
        assert v == pytest.approx(direct(fac("tensors"), moves=[(xdir, a)]), rel=1e-5)
    assert read_surface(str(out)).one_d


def test_non_square_asymmetric_axes_and_dir_file_reproduce_a_job(tmp_path, fac):
    first = tmp_path / "a.h5"
    assert run(["--model", fac("tensors"), "--x", "-0.5:1.5:5", "--y", "1:-1:3", "--seed", "4", "--out", first]) == 0
    ref = read_reference_surface(str(first))
    assert np.array_equal(ref["x"], np.linspace(-0.5, 1.5, 5)) and np.array_equal(ref["y"], np.linspace(1, -1, 3))
    xdir, ydir = read_reference_directions(str(tmp_path / "a.h5.dirs.h5"))
    for i, a in enumerate(ref["x"]):
        for j, b in enumerate(ref["y"]):
            assert ref["train_loss"][i, j] == pytest.approx(direct(fac("tensors"), moves=[(xdir, a), (ydir, b)]),
                                                           rel=1e-5)
    # another job with those directions (another seed, which would draw others): the same values, and no
    # direction file of its own
    again = tmp_path / "b.h5"
    assert run(["--model", fac("tensors"), "--x", "-0.5:1.5:5", "--y", "1:-1:3", "--seed", "9",
                "--dir-file", tmp_path / "a.h5.dirs.h5", "--out", again]) == 0
    assert np.array_equal(read_reference_surface(str(again))["train_loss"], ref["train_loss"])
    assert read_surface(str(again)).dir_file == "a.h5.dirs.h5"
    assert files(tmp_path) == ["a.h5", "a.h5.dirs.h5", "b.h5", "factories.py"]


@pytest.mark.parametrize("dir_type", ["weights", "states"])
def test_planes_through_checkpoints_pass_through_each_model(tmp_path, fac, dir_type):
    spec = fac("calibrated")
    net = sj.load_factory(spec)()[0]
    states = {}
    for k in (1, 2, 3):
        torch.manual_seed(10 + k)
        other = copy.deepcopy(net)
        with torch.no_grad():  # weight directions move the parameters only: checkpoints that differ in those
            moved = other.state_dict().values() if dir_type == "states" else other.parameters()
            for t in moved:
                if t.is_floating_point():
                    t.add_(0.5 * torch.randn(t.shape))
        states[k] = other.state_dict()
        # the reference's checkpoints keep the state dict under 'state_dict'
        torch.save({"state_dict": states[k], "epoch": 300} if k == 2 else states[k], tmp_path / f"model_{k}.t7")
    out = tmp_path / "plane.h5"
    assert run(["--model", spec, "--model-file", tmp_path / "model_1.t7", "--model-file2", tmp_path / "model_2.t7",
                "--model-file3", tmp_path / "model_3.t7", "--x", "0:1:2", "--y", "0:1:2", "--dir-type", dir_type,
                "--out", out]) == 0
    loss = read_surface(str(out)).values["train_loss"]
    assert loss[0, 0] == pytest.approx(direct(spec, states[1]), rel=1e-5)
    assert loss[1, 0] == pytest.approx(direct(spec, states[2]), rel=1e-5)
    assert loss[0, 1] == pytest.approx(direct(spec, states[3]), rel=1e-5)
    assert len({round(v, 6) for v in loss.ravel()}) == 4  # three different models and a fourth point


def test_state_directions_include_the_batch_norm_buffers(tmp_path, fac):
    spec = fac("calibrated")
    out = tmp_path / "states.h5"
    # (on positive coefficients: a copy of the running variance added keeps it positive)
    axes = ["--x", "0:1:3", "--y", "0:0.5:2"]
    assert run(["--model", spec, "--dir-type", "states", "--xignore", "none", "--yignore", "none", *axes,
                "--out", out]) == 0
    model = sj.load_factory(spec)()[0]
    state = model.state_dict()
    xdir, ydir = read_reference_directions(str(tmp_path / "states.h5.dirs.h5"))
    assert [tuple(t.shape) for t in xdir] == [tuple(t.shape) for t in state.values()]
    names = list(state)
    mean, var = names.index("1.running_mean"), names.index("1.running_var")
    # --xignore none: a one-dimensional entry's direction is a copy of it (the reference's behaviour)
    assert np.array_equal(xdir[mean], state["1.running_mean"].numpy()) and np.abs(xdir[mean]).sum() > 0
    assert np.array_equal(ydir[var], state["1.running_var"].numpy())
    assert float(xdir[names.index("1.num_batches_tracked")]) == 0
    s = read_surface(str(out))
    for i, a in enumerate(s.x):
        for j, b in enumerate(s.y):
            assert s.values["train_loss"][i, j] == pytest.approx(direct(spec, moves=[(xdir, a), (ydir, b)]),
                                                                 rel=1e-5)
    # the same job with weight directions: other values (the statistics stay put)
    assert run(["--model", spec, "--xignore", "none", "--yignore", "none", *axes,
                "--out", tmp_path / "weights.h5"]) == 0
    assert not np.allclose(read_surface(str(tmp_path / "weights.h5")).values["train_loss"], s.values["train_loss"])


def test_a_loader_factory_and_the_tensor_factory_give_the_same_surface(tmp_path, fac):
    assert run(["--model", fac("with_test"), "--x", "-1:1:4", "--y", "-1:1:3", "--out", tmp_path / "t.h5"]) == 0
    assert run(["--model", fac("loader"), "--x", "-1:1:4", "--y", "-1:1:3", "--out", tmp_path / "l.h5"]) == 0
    assert run(["--model", fac("with_test"), "--x", "-1:1:4", "--y", "-1:1:3", "--batch-size", "7",
                "--out", tmp_path / "b.h5"]) == 0
    t, loader, batched = (read_surface(str(tmp_path / n)) for n in ("t.h5", "l.h5", "b.h5"))
    for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert np.isfinite(t.values[name]).all(), name
        assert np.allclose(loader.values[name], t.values[name], rtol=1e-6, atol=1e-6), name
        assert np.allclose(batched.values[name], t.values[name], rtol=1e-6, atol=1e-6), name
    xdir, ydir = read_reference_directions(str(tmp_path / "t.h5.dirs.h5"))
    test_set = sj.load_factory(fac("with_test"))()[3]
    assert t.values["test_loss"][3, 0] == pytest.approx(direct(fac("with_test"), moves=[(xdir, 1), (ydir, -1)],
                                                               data=test_set), rel=1e-5)
    assert (read_reference_surface(str(tmp_path / "l.h5"))["test_acc"] > 1).any()  # percent in the file


def test_pca_directions_of_a_checkpoint_folder(tmp_path, fac):
    spec = fac("tensors")
    net = sj.load_factory(spec)()[0]
    folder = tmp_path / "epochs"
    folder.mkdir()
    w0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).double()
    torch.manual_seed(0)
    p, q = torch.randn(len(w0), dtype=torch.float64), torch.randn(len(w0), dtype=torch.float64)
    offsets = {1: 0.3 * p, 2: 0.2 * q, 10: 0.1 * p - 0.4 * q}  # all in one plane through the centre
    for k, off in offsets.items():
        other = copy.deepcopy(net)
        torch.nn.utils.vector_to_parameters((w0 + off).float(), other.parameters())
        torch.save(other.state_dict(), folder / f"model_{k}.t7")
    (folder / "notes.txt").write_text("not a checkpoint")
    out = tmp_path / "pca.h5"
    assert run(["--model", spec, "--directions", "pca", "--model-folder", folder, "--grid", "3", "--out", out]) == 0
    xdir, ydir = read_reference_directions(str(tmp_path / "pca.h5.dirs.h5"))
    u, v = (np.concatenate([t.ravel() for t in d]).astype(np.float64) for d in (xdir, ydir))
    assert np.linalg.norm(u) == pytest.approx(1, rel=1e-5) and np.linalg.norm(v) == pytest.approx(1, rel=1e-5)
    assert abs(u @ v) < 1e-5
    # the directions span the checkpoints' plane: each offset is its own projection onto them
    for off in offsets.values():
        w = (w0 + off).float().double().numpy() - w0.numpy()
        assert np.linalg.norm(w - (w @ u) * u - (w @ v) * v) < 1e-5 * np.linalg.norm(w)
    s = read_surface(str(out))
    assert s.values["train_loss"][1, 1] == pytest.approx(direct(spec), rel=1e-5)


@pytest.mark.parametrize("factory, axes", [("tensors", ["--x", "-1:2:7"]),
                                            ("tensors", ["--x", "-0.5:1.5:5", "--y", "1:-1:3"]),
                                            ("shuffled", ["--x", "-1:1:4", "--y", "-1:1:3"])])
def test_new_kinds_of_job_resume_computing_only_what_is_missing(tmp_path, fac, capsys, factory, axes):
    from tests.models.test_surface_job_cli import _forget_rows

    out = tmp_path / "r.h5"
    job = ["--model", fac(factory), *axes, "--out", out]
    assert run(job) == 0
    full = read_surface(str(out)).values
    _forget_rows(out, slice(2, None))
    n = full["train_loss"].size
    capsys.readouterr()
    assert run(job) == 0
    kept = 2 * full["train_loss"].shape[1]
    assert f"{kept} of {n} points are there, {n - kept} remain" in capsys.readouterr().out
    again = read_surface(str(out)).values
    for name in ("train_loss", "train_acc"):
        assert np.allclose(again[name], full[name], rtol=1e-6, atol=1e-6), name
    # another job on the same file: refused (the axes are part of the job)
    other = [a.replace(":3", ":4").replace(":7", ":8") for a in axes]
    assert run(["--model", fac(factory), *other, "--out", out]) == 2
    assert "another job's surface" in one_line(capsys.readouterr().err)


def test_progress_is_a_tqdm_bar_on_a_terminal_only(tmp_path, fac, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr("sys.stderr", term)
    assert run(["--model", fac("tensors"), "--grid", "3", "--out", tmp_path / "p.h5"]) == 0
    text = term.getvalue()
    assert "9/9" in text and "point/s" in text and "100%" in text
    quiet = io.StringIO()  # not a terminal: no bar
    monkeypatch.setattr("sys.stderr", quiet)
    assert run(["--model", fac("tensors"), "--grid", "3", "--out", tmp_path / "q.h5"]) == 0
    assert "point/s" not in quiet.getvalue()


def _surface_file(tmp_path):
    x = np.linspace(-1, 1, 3)
    with h5py.File(tmp_path / "surf.h5", "w") as f:
        f["xcoordinates"], f["ycoordinates"], f["train_loss"], f["dir_file"] = x, x, np.ones(9), "d.h5"
    return tmp_path / "surf.h5"


def _direction_file(tmp_path, name, shapes, one_d=False):
    from tests.reference_layout import write_reference_directions

    d = [np.ones(s, dtype=np.float32) for s in shapes]
    write_reference_directions(str(tmp_path / name), d, None if one_d else d)
    return tmp_path / name


NET_SHAPES = [(4, 3), (4,), (4,), (4,), (2, 4), (2,)]
BAD = {  # name -> (arguments, words in the message); {F} is the factory, {T} the test's folder
    "x without N": (["--x", "-1:1"], "--x '-1:1': expected MIN:MAX:N"),
    "x not numbers": (["--x", "a:b:3"], "expected MIN:MAX:N"),
    "x of one point": (["--x", "-1:1:1"], "N must be between 2"),
    "x of a huge N": (["--x", "-1:1:100000"], "N must be between 2"),
    "x empty range": (["--x", "1:1:5"], "MIN and MAX must differ"),
    "x not finite": (["--x", "nan:1:5"], "MIN and MAX must be numbers"),
    "y not numbers": (["--x", "-1:1:3", "--y", "1:2:x"], "--y '1:2:x'"),
    "y without x": (["--y", "-1:1:3"], "--y needs --x"),
    "x and grid": (["--x", "-1:1:3", "--grid", "5"], "use one or the other"),
    "dir-type": (["--dir-type", "biases"], "--dir-type must be one of weights, states"),
    "xnorm": (["--xnorm", "unit"], "--xnorm must be one of filter, layer, weight, dfilter, dlayer, none"),
    "ynorm": (["--ynorm", "unit"], "--ynorm must be one of"),
    "xignore": (["--xignore", "bias"], "--xignore must be one of biasbn, none"),
    "yignore on a 1D plot": (["--x", "-1:1:3", "--yignore", "none"], "a 1D plot (--x without --y) has no y"),
    "batch size": (["--batch-size", "0"], "--batch-size must be an integer from 1"),
    "model-file for a built-in": (["--model", "mlp:4", "--model-file", "{T}/none.pt"], "needs a user factory"),
    "model-file missing": (["--model-file", "{T}/none.pt"], "--model-file '{T}/none.pt': no such file"),
    "model-file2 missing": (["--model-file2", "{T}/none.pt"], "no such file"),
    "model-file3 on a 1D plot": (["--x", "-1:1:3", "--model-file3", "{T}/none.pt"], "has no y direction"),
    "model-file2 with xnorm": (["--model-file2", "{T}/factories.py", "--xnorm", "layer"],
                               "--xnorm normalizes a random direction"),
    "model-folder without pca": (["--model-folder", "{T}"], "add --directions pca"),
    "model-folder missing": (["--directions", "pca", "--model-folder", "{T}/none"], "no such folder"),
    "model-folder of one checkpoint": (["--directions", "pca", "--model-folder", "{T}/one"],
                                       "holds 1 checkpoint file"),
    "pca without a path": (["--directions", "pca"], "needs a training path"),
    "dir-file missing": (["--dir-file", "{T}/none.h5"], "--dir-file '{T}/none.h5': no such file"),
    "dir-file with xnorm": (["--dir-file", "{T}/surf.h5", "--xnorm", "layer"], "cannot be used with it"),
    "dir-file is a surface file": (["--dir-file", "{T}/surf.h5"], "surf.h5: a loss-surface file"),
    "dir-file of a 1D plot for 2D": (["--dir-file", "{T}/line_dirs.h5"], "a 2D surface needs two"),
    "dir-file of other shapes": (["--dir-file", "{T}/other_dirs.h5"], "'xdirection/0' has shape (3, 3)"),
    "dir-file of states as weights": (["--dir-file", "{T}/states_dirs.h5"],
                                      "with --dir-type weights the model has 6 tensors, with --dir-type states 9"),
    "out is a direction file": (["--out", "{T}/line_dirs.h5"], "line_dirs.h5: a direction file"),
    "out is not a surface file": (["--out", "{T}/factories.py"], "factories.py: cannot read it as an HDF5"),
    "a loader with batch size": (["--model", "{T}/factories.py:loader", "--batch-size", "8"],
                                 "--batch-size: the model factory"),
    "a one-shot iterator": (["--model", "{T}/factories.py:one_shot"], "one-shot iterator"),
    "a loader with a bad batch": (["--model", "{T}/factories.py:bad_batches"], "reading its data raised"),
    "a checkpoint that does not fit": (["--model-file", "{T}/wrong.pt"], "--model-file: checkpoint"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_values_are_refused_in_one_line_before_anything_is_computed(tmp_path, fac, capsys, monkeypatch, case):
    args, words = BAD[case]
    (tmp_path / "one").mkdir()
    torch.save({"w": torch.zeros(2)}, tmp_path / "one" / "model_1.t7")
    torch.save({"w": torch.zeros(2)}, tmp_path / "wrong.pt")
    _surface_file(tmp_path)
    _direction_file(tmp_path, "line_dirs.h5", NET_SHAPES, one_d=True)
    _direction_file(tmp_path, "other_dirs.h5", [(3, 3)] + NET_SHAPES[1:])
    _direction_file(tmp_path, "states_dirs.h5", NET_SHAPES[:4] + [(4,), (4,), (), (2, 4), (2,)])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    monkeypatch.setattr(sj.ls, "evaluate_points", lambda *a, **k: pytest.fail("computed before refusing"))
    monkeypatch.setattr(sj, "train_mlp", lambda *a, **k: pytest.fail("trained before refusing"))
    argv = ["--model", fac("tensors"), "--out", tmp_path / "s.h5", *args]
    rc = run([str(a).replace("{T}", str(tmp_path)) for a in argv])
    assert rc == 2
    assert words.replace("{T}", str(tmp_path)) in one_line(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_the_lab_trains_and_draws_a_loader_factory_on_its_whole_training_set(fac):
    """The lab's child-process jobs (user_train_run, user_surface_job) join a loader's batches: the first
    training loss is the loss over all 40 points, not over the first batch of 16."""
    from models.nets import TrainSnapshot

    p = sj.from_factory(fac("loader"))
    x, y = sj.whole_data(p, "loader")
    xa, ya = sj.from_factory(fac("tensors")).data
    assert torch.equal(x, xa) and torch.equal(y, ya)
    first = next(s for s in sj.user_train_run(fac("loader"), "sgd", 0.1, 3) if isinstance(s, TrainSnapshot))
    model = sj.from_factory(fac("tensors")).model  # (in training mode, as the lab trains it)
    with torch.no_grad():
        whole = float(torch.nn.functional.cross_entropy(model(xa), ya))
        head = float(torch.nn.functional.cross_entropy(model(xa[:16]), ya[:16]))
    assert first.loss == pytest.approx(whole, rel=1e-5) and abs(whole - head) > 1e-3
