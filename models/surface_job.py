"""Headless loss-surface computation: ``losslab surface --model SPEC --data SPEC --grid N --out FILE.h5``.

The model is trained (seeded, deterministic) or given by a user factory; directions are filter-normalized
random or PCA of the training path; the grid is evaluated in row chunks, and after each chunk the surface
file is rewritten atomically, so an interrupted run leaves a valid partial file. Run again with the same
arguments, it reads that file and computes only the missing points. The file records the job's arguments
and fingerprints (sha256) of the centre weights, the directions and the data: a resume whose arguments or
fingerprints differ (another job, a changed model factory) is refused, saying why.

Every check that can fail (the arguments, the output folder and name, an existing file's job, the memory a
request needs, against models.limits.MEMORY_CAP_BYTES) runs before any training. The directions are written
next to the surface file, named after it in full (``FILE.h5.dirs.h5``; a file from an earlier version keeps
the direction file its ``dir_file`` names), and never over another job's file.

The reference tool's options (tomgoldstein/loss-landscape, ``plot_surface.py``): ``--x MIN:MAX:N`` and
``--y MIN:MAX:N`` give each axis as ``np.linspace(MIN, MAX, N)`` (``--x`` alone: a 1D plot; ``--grid N
--range R`` is the square shorthand ``--x -R:R:N --y -R:R:N``); ``--dir-file F`` reuses a direction file
(the reference's or ours); ``--dir-type states`` makes directions over the state_dict (batch-norm buffers
included); ``--xnorm/--ynorm`` and ``--xignore/--yignore`` choose the reference's normalization of a random direction
(``models.directions.make_direction``; the defaults, filter and biasbn, give the directions of earlier
versions, so that their files resume); ``--model-file`` loads the centre's weights into
the factory's module, ``--model-file2/3`` make the x / y direction point to those checkpoints, and
``--model-folder DIR`` with ``--directions pca`` takes PCA directions of the epoch checkpoints in DIR;
``--batch-size N`` evaluates each point over the whole data set N rows at a time. A surface file that the
reference tool started (no losslab job recorded, -1 for the points not computed yet) is resumed on its own
coordinates with its own direction file (its ``dir_file``, found beside it, or ``--dir-file``): only the
missing points are computed, every other value is kept as it was.

Model SPEC: ``mlp:64x64:tanh`` (widths, activation[, ntk][, res]), ``cnn`` (a small CNN, with --data digits)
or ``package.module:factory`` / a file path ``path/to/file.py:factory`` whose factory returns
``(module, loss_fn, train)`` or ``(module, loss_fn, train, test)``: train and test are (x, y) tensors or a
re-iterable of (x, y) batches (a torch DataLoader, a list); a test set adds ``test_loss`` / ``test_acc``.
Data SPEC: ``spirals[:n[:noise]]``, also moons, circles, xor, blobs, and digits (scikit-learn's 8x8 digits,
10 classes, cross-entropy); ignored for a user factory.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import importlib
import importlib.util
import json
import math
import os
import re
import shlex
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import directions as dr
from . import landscape as ls
from .limits import MEMORY_CAP_BYTES, LimitError, check_memory, shown_text
from .nets import DATASETS, DIGITS_POINTS, MLP, MLPSpec, SmallCNN, check_request, loss_for, make_data
from .surface_io import (
    ACC_UNITS_ATTR,
    Surface,
    SurfaceFileError,
    check_shapes,
    read_directions,
    read_surface,
    write_directions,
    write_surface,
)
from .train import check_step_size

#: the options that came with the reference tool's (issue 17) and their defaults: a job records one only when
#: it differs from its default, so that the file of an earlier version (which recorded none) still resumes
OPTION_DEFAULTS = {"x": None, "y": None, "dir_file": None, "dir_type": "weights", "xnorm": "filter",
                   "ynorm": "filter", "xignore": "biasbn", "yignore": "biasbn", "model_file": None, "model_file2": None, "model_file3": None,
                   "model_folder": None, "batch_size": None}
#: the arguments that make a job (they are recorded in its file; a resume must repeat them)
JOB_KEYS = ("model", "data", "grid", "range", "directions", "seed", "train_steps", *OPTION_DEFAULTS)
#: --grid and --range when neither they nor --x are given
DEFAULT_GRID, DEFAULT_RANGE = 41, 1.0
NORMS = ("filter", "layer", "weight", "dfilter", "dlayer", "none")
IGNORES = ("biasbn", "none")
DIR_TYPES = ("weights", "states")
MAX_BATCH_SIZE = 10**9
MAX_TASK_THREADS = 256
#: the files of --model-folder taken as checkpoints (the reference saves model_EPOCH.t7)
CHECKPOINT_SUFFIXES = (".t7", ".pt", ".pth", ".ckpt", ".tar")
MAX_GRID = 1001
MAX_RANGE = 1000.0
MAX_SEED = 2**31 - 1
MAX_TRAIN_STEPS = 1_000_000
MAX_NOISE = 10.0
#: flat checkpoints of the training path kept for PCA directions (plus the last)
CHECKPOINTS = 30
#: the direction file of FILE is FILE + this
DIR_SUFFIX = ".dirs.h5"
#: fingerprints recorded in the surface file (attribute, what it covers)
FINGERPRINTS = (("losslab_center_sha256", "centre weights"), ("losslab_directions_sha256", "directions"),
                ("losslab_data_sha256", "data"))


class JobError(ValueError):
    """A job that cannot run as asked: the message says why."""


class JobInterrupted(Exception):
    """Ctrl+C: the message says what was saved and the command that resumes."""


@dataclass
class Problem:
    model: nn.Module
    loss_fn: object
    x: torch.Tensor  # the data (a loader's first batch: what the checks run on)
    y: torch.Tensor
    is_mlp: bool
    trajectory: np.ndarray | None = None  # flat checkpoints (T, P) when trained here
    data: object = None  # the training data as given: (x, y) tensors or a re-iterable of batches; None: (x, y)
    test: object = None  # the test set, likewise, or None

    def __post_init__(self) -> None:
        if self.data is None:
            self.data = (self.x, self.y)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line of text (a user's exception may hold newlines), cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def parse_data_spec(spec: str) -> tuple[str, int, float]:
    """``NAME[:N[:NOISE]]`` -> (name, n, noise), checked; nothing is generated."""
    parts = spec.split(":")
    try:
        if len(parts) > 3:
            raise ValueError
        n = int(parts[1]) if len(parts) > 1 else 2000
        noise = float(parts[2]) if len(parts) > 2 else 0.1
    except ValueError:
        raise JobError(f"--data '{spec}': expected NAME[:N[:NOISE]], e.g. spirals:2000:0.1") from None
    if parts[0] not in DATASETS:
        raise JobError(f"--data '{spec}': unknown data set '{parts[0]}'; choose one of {', '.join(DATASETS)}")
    if n < 2:
        raise JobError(f"--data '{spec}': a data set needs at least two points")
    if not (math.isfinite(noise) and 0 <= noise <= MAX_NOISE):
        raise JobError(f"--data '{spec}': the noise must be a number from 0 to {MAX_NOISE:g}")
    return parts[0], n, noise


def parse_data(spec: str) -> tuple[torch.Tensor, torch.Tensor]:
    name, n, noise = parse_data_spec(spec)
    try:
        return make_data(name, n, noise)
    except ValueError as exc:
        raise JobError(f"--data '{spec}': {exc}") from None


def parse_mlp(spec: str) -> MLPSpec:
    parts = spec.split(":")
    try:
        widths = tuple(int(w) for w in parts[1].split("x")) if len(parts) > 1 else (64, 64)
    except ValueError:
        raise JobError(f"--model '{spec}': expected mlp:WIDTHxWIDTH:ACTIVATION, e.g. mlp:64x64:tanh") from None
    act = parts[2] if len(parts) > 2 else "tanh"
    flags = set(parts[3:])
    try:
        return MLPSpec(hidden=widths, activation=act, parameterization="ntk" if "ntk" in flags else "standard",
                       residual="res" in flags)
    except ValueError as exc:
        raise JobError(f"--model '{spec}': {exc}") from None


def is_builtin(spec: str) -> bool:
    """``mlp[:...]`` or ``cnn[:...]``: a network trained here (anything else names a user's factory)."""
    return spec.split(":", 1)[0] in ("mlp", "cnn")


def load_factory(spec: str):
    """``package.module:factory`` or ``path/file.py:factory`` -> the factory callable."""
    if ":" not in spec:
        raise JobError(f"--model '{spec}': expected package.module:factory or path/to/file.py:factory")
    mod_name, fn_name = spec.rsplit(":", 1)
    try:
        if mod_name.endswith(".py") or os.sep in mod_name:
            loader_spec = importlib.util.spec_from_file_location("losslab_user_model", mod_name)
            if loader_spec is None or loader_spec.loader is None:
                raise ImportError(f"no Python file at {mod_name}")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except Exception as exc:  # a user's module can fail in any way: report it, never crash
        raise JobError(f"--model '{spec}': cannot import {mod_name}: {_one_line(exc)}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise JobError(f"--model '{spec}': {mod_name} has no callable '{fn_name}'")
    return fn


def _is_pair(data) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)


def first_batch(data, name: str, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (x, y) tensors of ``data`` (a pair of tensors), or the first batch of a re-iterable of (x, y)
    batches; anything else (a one-shot iterator, an empty loader, batches that are not pairs) is refused
    (JobError naming ``name``, the factory, and ``which`` of its values)."""
    if _is_pair(data):
        return data[0], data[1]
    what = (f"{name}: its {which} value must be (x, y) tensors or a re-iterable of (x, y) batches (a torch "
            f"DataLoader, a list)")
    try:
        it = iter(data)
    except TypeError:
        raise JobError(f"{what}, not {type(data).__name__}") from None
    if it is data:
        raise JobError(f"{what}; it is a one-shot iterator ({type(data).__name__}), which the grid's points "
                       "cannot each read again: pass a list or a DataLoader")
    try:
        batch = next(it, None)
    except Exception as exc:
        raise JobError(f"{name}: reading the first batch of its {which} value raised {_one_line(exc)}") from None
    if batch is None:
        raise JobError(f"{what}; it holds no batches")
    if not _is_pair(batch):
        raise JobError(f"{what}; its first batch is a {type(batch).__name__}, not a pair of tensors (x, y)")
    return batch[0], batch[1]


def from_factory(spec: str) -> Problem:
    """The user's factory called: ``(module, loss_fn, train)`` or ``(module, loss_fn, train, test)``, checked
    (see the module's notes)."""
    fn = load_factory(spec)
    try:
        out = fn()
    except Exception as exc:
        raise JobError(f"the model factory '{spec}' raised {_one_line(exc)}") from None
    if not (isinstance(out, tuple) and len(out) in (3, 4)):
        raise JobError(f"the model factory '{spec}' must return (module, loss_fn, train) or (module, loss_fn, "
                       f"train, test), train and test (x, y) tensors or a DataLoader; it returned "
                       f"{type(out).__name__}")
    model, loss_fn, train, *rest = out
    if not isinstance(model, nn.Module):
        raise JobError(f"the model factory '{spec}': its first value must be a torch.nn.Module, not "
                       f"{type(model).__name__}")
    if not callable(loss_fn):
        raise JobError(f"the model factory '{spec}': its second value must be a loss function loss(outputs, "
                       f"targets), not {type(loss_fn).__name__}")
    name = f"the model factory '{spec}'"
    x, y = first_batch(train, name, "third")
    test = rest[0] if rest else None
    if test is not None:
        first_batch(test, name, "fourth")
    return Problem(model, loss_fn, x, y, isinstance(model, MLP), data=train, test=test)


def _loss_value(value, name: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise JobError(f"{name}: its loss function must return a scalar (one value), but it returned a tensor of "
                       f"shape {tuple(value.shape)}")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise JobError(f"{name}: its loss function must return a number or a one-element tensor, not "
                       f"{type(value).__name__} ({_one_line(exc)})") from None


def check_user_problem(problem: Problem, spec: str) -> None:
    """A user's model evaluated once at its own weights, before any direction is made or any file written:
    a module or loss that fails (dtype, shape, device), a non-scalar loss or a model too large for the
    grid's memory is refused (JobError) naming the factory and what was wrong."""
    name = f"the model factory '{spec}'"
    named = list(problem.model.named_parameters())
    if not named:
        raise JobError(f"{name}: its module has no parameters, so there is no loss surface to draw")
    bad = [(n, p.dtype) for n, p in named if not p.is_floating_point()]
    if bad:
        raise JobError(f"{name}: parameter '{bad[0][0]}' is {bad[0][1]}; directions need floating-point parameters")
    count = sum(p.numel() for _, p in named)
    itemsize = max(p.element_size() for _, p in named)
    # the centre, two directions and the point's parameters (grid_loop), with the fingerprint's float64 copy
    try:
        check_memory(count * itemsize * 5 + 8 * max(p.numel() for _, p in named),
                     f"{name}: a surface of its {count} parameters",
                     f"at most {int(MEMORY_CAP_BYTES // (itemsize * 5 + 8))} parameters")
    except LimitError as exc:
        raise JobError(str(exc)) from None
    p0 = named[0][1]
    x, y = problem.x, problem.y
    where = (f"x: {tuple(x.shape)} {x.dtype} on {x.device}, y: {tuple(y.shape)} {y.dtype} on {y.device}, "
             f"parameters: {p0.dtype} on {p0.device}")
    was_training = problem.model.training
    problem.model.eval()
    try:
        with torch.no_grad():
            try:
                out = problem.model(x)
            except Exception as exc:
                raise JobError(f"{name}: its module fails on its data ({where}): {_one_line(exc)}") from None
            try:
                loss = problem.loss_fn(out, y)
            except Exception as exc:
                raise JobError(f"{name}: its loss function fails on (module(x), y) ({where}): "
                               f"{_one_line(exc)}") from None
    finally:
        problem.model.train(was_training)
    _loss_value(loss, name)


def build_model(spec: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    """``mlp:...`` (input and output sizes follow the data) or ``cnn`` (8x8 digits only)."""
    classes = int(y.max()) + 1 if y.dtype == torch.long else 1
    if spec.startswith("cnn"):
        if x.shape[1] != 64:
            raise JobError("--model cnn needs 8x8 images: use --data digits")
        return SmallCNN(classes=classes, seed=seed)
    mlp = parse_mlp(spec)
    mlp = MLPSpec(in_dim=x.shape[1], hidden=mlp.hidden, out_dim=classes, activation=mlp.activation,
                  parameterization=mlp.parameterization, residual=mlp.residual)
    return MLP(mlp, seed=seed)


def train_mlp(spec, x: torch.Tensor, y: torch.Tensor, steps: int = 300, lr: float = 0.01,
              seed: int = 0, checkpoints: int = 30) -> Problem:
    """Full-batch Adam on the data's cross-entropy, seeded; keeps flat checkpoints for PCA directions
    (``checkpoints=0``: none, trajectory None). ``spec`` is an MLPSpec or a model spec string (mlp:... or cnn)."""
    lr = check_step_size(lr)
    torch.manual_seed(seed)
    net = MLP(spec, seed=seed) if isinstance(spec, MLPSpec) else build_model(spec, x, y, seed)
    bce_loss = loss_for(y)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    keep = checkpoints > 0
    every = max(1, steps // checkpoints) if keep else 0
    traj = []
    for k in range(steps + 1):
        if keep and (k % every == 0 or k == steps):
            traj.append(dr.flatten(dr.params_of(net)).double().numpy())
        if k == steps:
            break
        opt.zero_grad()
        loss = bce_loss(net(x), y)
        loss.backward()
        opt.step()
    return Problem(net, bce_loss, x, y, isinstance(net, MLP), np.array(traj) if keep else None)


def entries(model: nn.Module, dir_type: str) -> list[torch.Tensor]:
    """Copies of the tensors the directions move: the parameters, or (``states``) the state_dict's entries."""
    if dir_type == "states":
        return [t.detach().clone() for _, t in dr.entries_of(model, "states")]
    return dr.params_of(model)


def _checkpoint(model: nn.Module, path: str, option: str) -> dict:
    try:
        return dr.load_checkpoint(path, model)
    except ValueError as exc:  # CheckpointError: names the file and what is wrong
        raise JobError(f"{option}: {exc}") from None


def checkpoint_files(folder: str) -> list[str]:
    """The checkpoints of ``--model-folder``: its files named *.t7, *.pt, ... in natural order (model_2 before
    model_10), at least two."""
    try:
        names = [n for n in os.listdir(folder) if n.lower().endswith(CHECKPOINT_SUFFIXES) and
                 os.path.isfile(os.path.join(folder, n))]
    except OSError as exc:
        raise JobError(f"--model-folder '{folder}': cannot list it: {exc.strerror or exc}") from None
    if len(names) < 2:
        raise JobError(f"--model-folder '{folder}' holds {len(names)} checkpoint file{'s' if len(names) != 1 else ''}"
                       f" ({', '.join(CHECKPOINT_SUFFIXES)}): PCA directions need at least two")
    names.sort(key=lambda n: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)])
    return [os.path.join(folder, n) for n in names]


def make_directions(problem: Problem, args: argparse.Namespace, seed: int, one_d: bool,
                    stored: tuple | None = None) -> tuple[list, list | None]:
    """The job's directions (the y one None for a 1D plot): ``stored`` (a direction file's, read and checked),
    PCA (of the training path, or of --model-folder's checkpoints), or per axis the direction to
    --model-file2/3 or a random one (``models.directions.make_direction``, normalized as --xnorm/--xignore and
    --ynorm/--yignore say)."""
    model, dir_type = problem.model, args.dir_type
    center = entries(model, dir_type)

    def like(d):
        return [torch.as_tensor(np.asarray(t)).to(dtype=c.dtype, device=c.device) for t, c in zip(d, center)]

    if stored is not None:
        return like(stored[0]), (None if one_d else like(stored[1]))
    if args.directions == "pca":
        if args.model_folder is not None:
            try:
                d1, d2, _ = dr.pca_from_checkpoints(model, checkpoint_files(args.model_folder), dir_type)
            except ValueError as exc:  # a checkpoint that does not fit (CheckpointError), or no plane
                raise JobError(f"--model-folder '{args.model_folder}': {exc}") from None
            return d1, (None if one_d else d2)
        if problem.trajectory is None or len(problem.trajectory) < 3:
            raise JobError("--directions pca needs a training path: use an mlp:... or cnn model (trained here) "
                           "with at least 2 --train-steps, or --model-folder with a user factory")
        d1, d2, _ = dr.pca_directions(problem.trajectory, problem.trajectory[-1])
        return (dr.unflatten(torch.as_tensor(d1), center),
                None if one_d else dr.unflatten(torch.as_tensor(d2), center))

    def axis(target: str | None, option: str, norm: str | None, ignore: str | None, s: int):
        if target is not None:
            return dr.target_direction(model, _checkpoint(model, target, option), dir_type)
        return dr.make_direction(model, s, dir_type=dir_type, norm=norm or OPTION_DEFAULTS["xnorm"],
                                 ignore=ignore or OPTION_DEFAULTS["xignore"])

    d1 = axis(args.model_file2, "--model-file2", args.xnorm, args.xignore, seed)
    d2 = None if one_d else axis(args.model_file3, "--model-file3", args.ynorm, args.yignore, seed + 1)
    return d1, d2


def fingerprint(tensors) -> str:
    """sha256 of the tensors' shapes and float64 bytes, in order (one tensor at a time: no large copy)."""
    h = hashlib.sha256()
    for t in tensors:
        a = np.ascontiguousarray(torch.as_tensor(t).detach().to("cpu", torch.float64).numpy())
        h.update(f"{tuple(a.shape)};".encode())
        h.update(a.data)
    return h.hexdigest()


def _loader_summary(data) -> torch.Tensor:
    """An order-independent summary of a loader's data, in one pass: rows, and the sums and sums of squares of
    x and y to 12 significant digits (a shuffling loader sums in another order every run)."""
    n, sums = 0, np.zeros(4)
    with torch.no_grad():
        for x, y in data:
            n += len(x)
            x, y = x.detach().double(), y.detach().double()
            sums += [float(x.sum()), float((x * x).sum()), float(y.sum()), float((y * y).sum())]
    return torch.tensor([n, *(float(f"{v:.12g}") for v in sums)], dtype=torch.float64)


def data_fingerprint(problem: Problem) -> str:
    """The fingerprint of the job's data: tensors by their bytes (as earlier versions did), a loader by its
    summary (_loader_summary), the test set after the training data."""
    parts: list = []
    for d in (problem.data, problem.test):
        if d is not None:
            parts += list(d) if _is_pair(d) else [_loader_summary(d)]
    return fingerprint(parts)


def parse_axis(option: str, spec) -> tuple[float, float, int]:
    """``MIN:MAX:N`` -> (min, max, n), checked: finite, |MIN|, |MAX| at most MAX_RANGE, MIN != MAX (MIN > MAX
    is a descending axis, as the reference allows), N from 2 to MAX_GRID."""
    parts = str(spec).split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise JobError(f"{option} '{spec}': expected MIN:MAX:N, e.g. -1:1:51") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and abs(lo) <= MAX_RANGE and abs(hi) <= MAX_RANGE):
        raise JobError(f"{option} '{spec}': MIN and MAX must be numbers from {-MAX_RANGE:g} to {MAX_RANGE:g}")
    if lo == hi:
        raise JobError(f"{option} '{spec}': MIN and MAX must differ")
    if not 2 <= n <= MAX_GRID:
        raise JobError(f"{option} '{spec}': N must be between 2 and {MAX_GRID} points")
    return lo, hi, n


def axes_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, k) is not None for k in ("x", "y", "grid", "range"))


def job_axes(args: argparse.Namespace) -> tuple[tuple, tuple | None]:
    """The job's axes as (min, max, n) each, the y one None for a 1D plot: --x/--y, or the square shorthand
    --grid/--range (with their defaults when nothing is given)."""
    if args.x is None:
        if args.y is not None:
            raise JobError("--y needs --x (--x alone gives a 1D plot)")
        r = DEFAULT_RANGE if args.range is None else float(args.range)
        n = DEFAULT_GRID if args.grid is None else args.grid
        return (-r, r, n), (-r, r, n)
    if args.grid is not None or args.range is not None:
        raise JobError("--x/--y and --grid/--range both give the grid: use one or the other")
    return parse_axis("--x", args.x), (parse_axis("--y", args.y) if args.y is not None else None)


def job_record(args: argparse.Namespace, xs: tuple, ys: tuple | None) -> dict:
    """The job's identity as recorded in its file: the square shorthand as grid and range (as earlier versions
    recorded every job), other axes as x and y, and the other options where they are not at their defaults."""
    rec = {k: getattr(args, k) for k in JOB_KEYS if k not in OPTION_DEFAULTS and k not in ("grid", "range")}
    if ys == xs and xs[0] == -xs[1] and xs[1] > 0:
        rec.update(grid=xs[2], range=float(xs[1]))
    else:
        rec.update(grid=None, range=None, x=list(xs), y=None if ys is None else list(ys))
    rec.update(_options(args))
    return rec


def _options(args: argparse.Namespace) -> dict:
    """The options of OPTION_DEFAULTS but the axes that differ from their defaults (None: not given)."""
    return {k: getattr(args, k) for k, v in OPTION_DEFAULTS.items()
            if k not in ("x", "y") and getattr(args, k) not in (None, v)}


def check_job_args(args: argparse.Namespace) -> None:
    """The scalar arguments, each refused with one line (JobError) before anything is read or trained."""
    def integer(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if args.grid is not None and (not integer(args.grid) or not 2 <= args.grid <= MAX_GRID):
        raise JobError(f"--grid must be between 2 and {MAX_GRID} points a side, not {args.grid}")
    r = args.range
    if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float, np.floating, np.integer)) or
                          not math.isfinite(r) or not 0 < r <= MAX_RANGE):
        raise JobError(f"--range must be a number above 0 and at most {MAX_RANGE:g}, not {r}")
    if not integer(args.seed) or not 0 <= args.seed <= MAX_SEED:
        raise JobError(f"--seed must be an integer from 0 to {MAX_SEED}, not {args.seed}")
    if not integer(args.train_steps) or not 0 <= args.train_steps <= MAX_TRAIN_STEPS:
        raise JobError(f"--train-steps must be an integer from 0 to {MAX_TRAIN_STEPS}, not {args.train_steps}")
    if args.directions not in ("filter", "pca"):
        raise JobError(f"--directions must be 'filter' or 'pca', not '{args.directions}'")
    if not isinstance(args.model, str) or not args.model:
        raise JobError("--model must name a network (mlp:64x64:tanh, cnn) or a factory (path/file.py:build)")
    for name, default in (("ray", None), ("task_threads", 1)):  # (how the job runs, not what it computes)
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.ray is not None:
        from .distributed import ray_missing

        if not isinstance(args.ray, str):
            raise JobError("--ray takes a cluster's address (HOST:PORT or auto), or nothing for a local Ray")
        why = ray_missing()
        if why is not None:
            raise JobError(f"--ray: {why}")
    if not integer(args.task_threads) or not 1 <= args.task_threads <= MAX_TASK_THREADS:
        raise JobError(f"--task-threads must be an integer from 1 to {MAX_TASK_THREADS}, not {args.task_threads}")
    if args.batch_size is not None and (not integer(args.batch_size) or not 1 <= args.batch_size <= MAX_BATCH_SIZE):
        raise JobError(f"--batch-size must be an integer from 1 to {MAX_BATCH_SIZE}, not {args.batch_size}")
    for option, value, choices in (("--dir-type", args.dir_type, DIR_TYPES), ("--xnorm", args.xnorm, NORMS),
                                   ("--ynorm", args.ynorm, NORMS), ("--xignore", args.xignore, IGNORES),
                                   ("--yignore", args.yignore, IGNORES)):
        if value is not None and value not in choices:
            raise JobError(f"{option} must be one of {', '.join(choices)}, not '{value}'")


def check_direction_options(args: argparse.Namespace, one_d: bool) -> None:
    """Options that contradict each other or the model, and files that are not there: refused (JobError)
    before anything is read or trained."""
    def given(*keys):
        return [f"--{k.replace('_', '-')}" for k in keys if getattr(args, k) is not None]

    if one_d and given("ynorm", "yignore", "model_file3"):
        raise JobError(f"{given('ynorm', 'yignore', 'model_file3')[0]}: a 1D plot (--x without --y) has no y "
                       "direction")
    if is_builtin(args.model) and given("model_file", "model_file2", "model_file3", "model_folder"):
        raise JobError(f"{given('model_file', 'model_file2', 'model_file3', 'model_folder')[0]} needs a user "
                       f"factory (--model path/to/file.py:build) whose module the checkpoints fit; "
                       f"--model {args.model} is trained here")
    random_options = given("xnorm", "ynorm", "xignore", "yignore")
    if args.dir_file is not None:
        clash = given("model_file2", "model_file3", "model_folder") + random_options + \
            (["--directions pca"] if args.directions == "pca" else [])
        if clash:
            raise JobError(f"--dir-file gives the directions: {clash[0]} cannot be used with it")
    if args.directions == "pca":
        clash = given("model_file2", "model_file3") + random_options
        if clash:
            raise JobError(f"{clash[0]} makes a random or target direction: it cannot be used with "
                           "--directions pca")
        if is_builtin(args.model) and args.dir_type == "states":
            raise JobError("--dir-type states with --directions pca needs --model-folder and a user factory (the "
                           "training path of a network trained here holds its parameters only)")
    elif args.model_folder is not None:
        raise JobError("--model-folder gives checkpoints for PCA directions: add --directions pca")
    for option, norm, ignore, target in (("--model-file2", "xnorm", "xignore", args.model_file2),
                                         ("--model-file3", "ynorm", "yignore", args.model_file3)):
        if target is not None and given(norm, ignore):
            raise JobError(f"{given(norm, ignore)[0]} normalizes a random direction: the direction to {option} "
                           "is not one")
    for option in ("dir_file", "model_file", "model_file2", "model_file3"):
        path = getattr(args, option)
        if path is not None and not os.path.isfile(path):
            why = "a folder, not a file" if os.path.isdir(path) else \
                "not a regular file (a device, a pipe or a socket)" if os.path.exists(path) else "no such file"
            raise JobError(f"--{option.replace('_', '-')} '{path}': {why}")
    if args.model_folder is not None and not os.path.isdir(args.model_folder):
        raise JobError(f"--model-folder '{args.model_folder}': no such folder")


def resume_command(args: argparse.Namespace) -> str:
    """The command line that runs (or resumes) this job: every argument of its identity, spelled out."""
    parts = ["losslab", "surface", "--model", args.model, "--data", args.data]
    if args.x is not None:
        parts += [f"--x={args.x}"] + ([f"--y={args.y}"] if args.y is not None else [])
    else:
        parts += ["--grid", str(DEFAULT_GRID if args.grid is None else args.grid),
                  "--range", repr(DEFAULT_RANGE if args.range is None else float(args.range))]
    parts += ["--directions", args.directions, "--seed", str(args.seed), "--train-steps", str(args.train_steps)]
    for k, v in _options(args).items():
        parts += [f"--{k.replace('_', '-')}", str(v)]
    return " ".join(shlex.quote(str(p)) for p in parts + ["--out", args.out])


# --- files: names, temporary files, atomic writes ------------------------------------------------------------


def _tmp_name(path: str) -> str:
    """The temporary file a write of ``path`` goes through (its process id: the next run can tell a dead
    run's leftover from a live run's file)."""
    return f"{path}.{os.getpid()}.tmp"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a leftover of an earlier process with our id: this one has not begun writing
    if os.name == "nt":
        return False  # (os.kill would end it) a live writer's open file cannot be removed there anyway
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


def clean_stale_temps(folder: str, names: list[str]) -> list[str]:
    """Remove the temporary files ``NAME.PID.tmp`` of these file names that a killed run left behind (their
    process is gone); returns the names removed."""
    pats = [re.compile(re.escape(n) + r"\.(\d{1,12})\.tmp") for n in names]
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        for pat in pats:
            m = pat.fullmatch(entry)
            if m and not _pid_alive(int(m.group(1))):
                try:
                    os.unlink(os.path.join(folder, entry))
                    removed.append(entry)
                except OSError:
                    pass
                break
    return removed




def write_job_surface(path: str, surf: Surface, attrs: dict, before_rename=None) -> None:
    """The surface in the reference layout with the job's attributes, through the job's own temporary file
    (named after this process: a dead run's is found and removed by the next)."""
    write_surface(path, surf, attrs, tmp=_tmp_name(path), before_rename=before_rename)


def write_job_directions(path: str, d1, d2, attrs: dict) -> None:
    """The directions in the reference layout, with the job's attributes (its arguments, its surface file's
    name, the directions' fingerprint)."""
    def arrays(d):
        return None if d is None else [torch.as_tensor(t).detach().cpu().numpy() for t in d]

    write_directions(path, arrays(d1), arrays(d2), attrs, tmp=_tmp_name(path))


#: the job's attributes are short texts: at most this many bytes of one are read (as models.surface_io reads
#: a file's texts), and a job whose arguments would not fit is refused
MAX_ATTR_BYTES = 4096
_JOB_ATTRS = ("losslab_job", "losslab_surface", *(k for k, _ in FINGERPRINTS))


def _read_text_attr(aid) -> str | None:
    """A one-element text attribute, at most MAX_ATTR_BYTES bytes of it (HDF5 converts it to a fixed-length
    string of that size: a longer text is cut by the library, never read whole); None if it is not text."""
    from h5py import h5t

    tid = aid.get_type()
    if tid.get_class() != h5t.STRING or int(np.prod(aid.shape or (1,))) != 1:
        return None
    if not tid.is_variable_str() and tid.get_size() > MAX_ATTR_BYTES:
        return None
    buf = np.zeros(aid.shape, dtype=f"S{MAX_ATTR_BYTES}")
    mtype = h5t.py_create(buf.dtype)
    if tid.get_cset() == h5t.CSET_UTF8:
        mtype.set_cset(h5t.CSET_UTF8)
    aid.read(buf, mtype=mtype)
    return buf.ravel()[0].decode("utf-8", "replace")


def _read_attrs(path: str) -> dict[str, str]:
    """The job's attributes of a file (those it writes, nothing else), as text."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            out = {}
            for key in _JOB_ATTRS:
                if key in f.attrs:
                    text = _read_text_attr(f.attrs.get_id(key))
                    if text is not None:
                        out[key] = text
            return out
    except Exception as exc:  # whatever h5py raises on a file that is not HDF5 or is damaged
        raise SurfaceFileError(f"{path}: cannot read it as an HDF5 file ({_one_line(exc)})") from None


def _read_job(path: str) -> str:
    return _read_attrs(path).get("losslab_job", "")


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "\0" not in name and os.path.basename(name) == name and \
        not (os.altsep and os.altsep in name)


def check_out(out: str) -> tuple[str, str]:
    """``--out`` as (absolute folder, file name): a file name in an existing folder, not a folder itself."""
    if not isinstance(out, str) or not out.strip():
        raise JobError("--out must name a file, e.g. --out surface.h5")
    if "\0" in out:
        raise JobError("--out must not contain a NUL character")
    base = os.path.basename(out)
    if out.endswith((os.sep, os.altsep or os.sep)) or base in ("", ".", "..") or os.path.isdir(out):
        raise JobError(f"--out '{out}' names a folder: give a file name, e.g. --out "
                       f"{os.path.join(out, 'surface.h5')}")
    if os.path.lexists(out) and not os.path.isfile(out):
        raise JobError(f"--out '{out}' exists and is not a regular file")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise JobError(f"--out '{out}': {folder} is not a folder" if os.path.exists(folder) else
                       f"--out '{out}': the folder {folder} does not exist")
    return folder, base


def _probe_writable(out: str, folder: str, paths: list[str]) -> None:
    """Create and remove the temporary files the job will write: the folder is writable and the names fit."""
    for path in paths:
        tmp = _tmp_name(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise JobError(f"--out '{out}': the name is too long (the job also writes "
                               f"{os.path.basename(path)})") from None
            raise JobError(f"cannot write to the folder {folder}: {exc.strerror or exc}") from None
        os.close(fd)
        os.unlink(tmp)


# --- the job -------------------------------------------------------------------------------------------------


@dataclass
class _Progress:
    """What is saved so far, for the message of an interrupted run."""

    out: str
    total: int = 0
    saved: int = 0  # points in the file on disk
    exists: bool = False
    bar: object = None  # the tqdm bar on stderr while it is shown
    cluster: object = None  # with --ray: the Ray cluster joined (models.distributed.Cluster)


def compute(args: argparse.Namespace, progress=True) -> tuple[Surface, int]:
    """Run (or resume) the job; returns the surface and how many points this run computed.

    JobError (or SurfaceFileError) for a job that cannot run, raised before any training where the reason can
    be known then; JobInterrupted on Ctrl+C, saying what was saved and how to resume."""
    state = _Progress(out=args.out)
    try:
        try:
            return _compute(args, progress, state)
        finally:
            if state.cluster is not None:  # a local Ray stops; its processes and folder go
                from . import distributed

                distributed.disconnect()
    except BaseException as exc:
        if state.bar is not None:  # the message that follows starts a line of its own
            state.bar.close()
            state.bar = None
        if not isinstance(exc, KeyboardInterrupt):
            raise
        cmd = resume_command(args)
        if state.exists:
            msg = f"interrupted: {args.out} holds {state.saved} of {state.total} points; to resume, run: {cmd}"
        else:
            msg = f"interrupted before any point was saved (nothing written); to start again, run: {cmd}"
        raise JobInterrupted(msg) from None


def _test_kill_spec() -> tuple[int, bool]:
    """For the tests only: LOSSLAB_TEST_KILL_AFTER_ROWS=N dies (SIGKILL, as a user's kill or the OOM killer
    would) after N rows are written, ``N:write`` while the N-th row's temporary file is complete but not yet
    renamed."""
    raw = os.environ.get("LOSSLAB_TEST_KILL_AFTER_ROWS", "") or "0"
    n, _, where = raw.partition(":")
    return int(n or 0), where == "write"


def _die() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def beside(out: str, dir_file: str) -> str:
    """The direction file a surface file names, found beside it: its ``dir_file`` as a path from the surface
    file's folder (or an absolute one), else its file name in that folder (the reference records the path
    it was run with, and names the surface file after it, in the same folder)."""
    if not dir_file:
        raise JobError(f"{out} names no direction file (its dir_file is empty): give one with --dir-file")
    folder = os.path.dirname(os.path.abspath(out))
    if "\0" not in dir_file:
        for path in (os.path.join(folder, dir_file), os.path.join(folder, os.path.basename(dir_file))):
            if os.path.isfile(path):
                return path
    raise JobError(f"{out} records no losslab job (another tool started it) and its direction file "
                   f"'{shown_text(dir_file)}' is not beside it: give the direction file with --dir-file")


def _same_axes(s: Surface, x: np.ndarray, y: np.ndarray) -> bool:
    return s.x.shape == x.shape and s.y.shape == y.shape and np.allclose(s.x, x, rtol=1e-9, atol=1e-12) and \
        np.allclose(s.y, y, rtol=1e-9, atol=1e-12)


def _axes_words(s: Surface) -> str:
    def axis(c):
        return f"{c[0]:g}:{c[-1]:g}:{len(c)}"

    return f"--x {axis(s.x)}" + ("" if s.one_d else f" --y {axis(s.y)}")


def _check_dir_shapes(path: str, stored: tuple, model: nn.Module, dir_type: str) -> None:
    """The directions of a direction file against the model's tensors for ``dir_type`` (JobError saying
    which tensor differs, and how many the other --dir-type would give)."""
    shapes = [tuple(t.shape) for t in entries(model, dir_type)]
    try:
        for name, d in zip(("xdirection", "ydirection"), stored):
            if d is not None:
                check_shapes(path, name, d, shapes)
    except SurfaceFileError as exc:
        other = "states" if dir_type == "weights" else "weights"
        raise JobError(f"--dir-file {exc} (with --dir-type {dir_type} the model has {len(shapes)} tensors, with "
                       f"--dir-type {other} {len(entries(model, other))})") from None


def _compute(args: argparse.Namespace, progress: bool, state: _Progress) -> tuple[Surface, int]:
    check_job_args(args)
    xs, ys = job_axes(args)
    out = args.out
    folder, base = check_out(out)
    job = json.dumps(job_record(args, xs, ys), sort_keys=True)
    if len(job.encode()) > MAX_ATTR_BYTES:
        raise JobError(f"the job's arguments (--model, --data and the file names) are too long to be recorded in "
                       f"the file (at most {MAX_ATTR_BYTES} bytes)")
    xt = np.linspace(*xs)
    yt = np.zeros(1) if ys is None else np.linspace(*ys)

    # an existing file: this job's (arguments and grid), or one that another tool started (resumed on its own
    # coordinates), read before anything is trained
    old, old_attrs, foreign = None, {}, False
    if os.path.lexists(out):
        old = read_surface(out)
        read = getattr(old, "attrs", None)  # the reader's own (bounded) reading of the file's texts
        old_attrs = {k: v for k, v in read.items() if k in _JOB_ATTRS} if isinstance(read, dict) else _read_attrs(out)
        foreign = "losslab_job" not in old_attrs
        if foreign:
            if "train_loss" not in old.values:
                raise JobError(f"{out} holds no train_loss to complete; choose another --out")
            if axes_given(args) and not _same_axes(old, xt, yt):
                raise JobError(f"{out} is a surface on other coordinates ({_axes_words(old)}); leave out --x, --y, "
                               f"--grid and --range to complete it on its own")
            xt, yt = old.x, old.y
        elif old_attrs["losslab_job"] != job:
            raise JobError(f"{out} holds another job's surface; choose another --out or delete it")
        else:
            tl = old.values.get("train_loss")
            if tl is None or tl.shape != (len(xt), len(yt)) or not _same_axes(old, xt, yt):
                raise JobError(f"{out} records this job's arguments but not its grid; choose another --out or "
                               f"delete it")
    one_d = len(yt) == 1
    check_direction_options(args, one_d)

    # the directions: a given direction file (--dir-file, or the one a foreign file names), read and checked
    # now, and only read; or the job's own, named after the surface file in full (a file of an earlier
    # version keeps its own)
    dir_attrs, stored = None, None
    dir_path = args.dir_file if args.dir_file is not None or not foreign else beside(out, old.dir_file)
    if dir_path is not None:
        stored = read_directions(dir_path)
        if stored[1] is None and not one_d:
            raise JobError(f"{dir_path}: a 1D plot's direction file (only 'xdirection'): a 2D surface needs two "
                           f"(leave out --y for a 1D plot)")
        dir_name = old.dir_file if foreign and old.dir_file else os.path.relpath(os.path.abspath(dir_path), folder)
        written = [base]
    else:
        dir_name = base + DIR_SUFFIX
        if old is not None and _plain_name(old.dir_file) and old.dir_file != base:
            dir_name = old.dir_file
        dir_path = os.path.join(folder, dir_name)
        written = [base, dir_name]
    for name in clean_stale_temps(folder, written):
        print(f"losslab surface: removed {name}, a temporary file left by an interrupted run", file=sys.stderr)
    _probe_writable(out, folder, [os.path.join(folder, n) for n in written])
    if stored is None and os.path.lexists(dir_path):
        if not os.path.isfile(dir_path):
            raise JobError(f"{dir_path} (this job's direction file) exists and is not a regular file")
        try:
            dir_attrs = _read_attrs(dir_path)
        except SurfaceFileError:
            dir_attrs = None
        legacy_ours = old is not None and dir_attrs is not None and "losslab_job" not in dir_attrs
        # this job's: its arguments, and (for a new surface) its surface file's name; a resumed surface may
        # share the direction file its dir_file names (a copy of the file), it is only read then
        ours = dir_attrs is not None and dir_attrs.get("losslab_job") == job and \
            (old is not None or dir_attrs.get("losslab_surface", base) == base)
        if not (ours or legacy_ours):
            raise JobError(f"{dir_path} exists and is not this job's direction file; move it away or choose "
                           f"another --out (it is never overwritten)")
    shape = (len(xt), len(yt))
    n_total = shape[0] * shape[1]
    state.total = n_total
    # a foreign file keeps the arrays it has; a job's own file has the training set's (and the test set's)
    names = list(old.values) if foreign else ["train_loss", "train_acc"]
    surf = Surface(xt, yt, {k: np.full(shape, np.nan) for k in names}, dir_name)
    if old is not None:
        surf.values.update({k: v for k, v in old.values.items() if k in surf.values and v.shape == shape})
        surf.stored = old.stored  # accuracies already there keep the file's exact numbers
    missing = np.isnan(surf.values["train_loss"])
    total = int(missing.sum())
    state.exists = old is not None
    state.saved = n_total - total
    if old is not None:
        print(f"losslab surface: resuming {out}: {n_total - total} of {n_total} points are there, {total} remain")
        if total == 0 and (dir_attrs is not None or stored is not None):
            return surf, 0

    if args.ray is not None:  # joined before anything is trained: a wrong address is known at once
        state.cluster = _connect_ray(args.ray)

    # the model: a network trained here (its memory estimated first) or a user's factory (tried once)
    user = not is_builtin(args.model)
    if user:
        problem = from_factory(args.model)
        if args.model_file is not None:
            problem.model.load_state_dict(_checkpoint(problem.model, args.model_file, "--model-file"))
        if args.batch_size is not None and not _is_pair(problem.data):
            raise JobError(f"--batch-size: the model factory '{args.model}' gives a data loader, which has its "
                           f"own batch size")
        check_user_problem(problem, args.model)
        if stored is not None:
            _check_dir_shapes(dir_path, stored, problem.model, args.dir_type)
    else:
        name, n, _ = parse_data_spec(args.data)
        cnn = args.model.split(":", 1)[0] == "cnn"
        if cnn and name != "digits":
            raise JobError("--model cnn needs 8x8 images: use --data digits")
        hidden = () if cnn else parse_mlp(args.model).hidden
        digits = name == "digits"
        try:
            check_request(min(n, DIGITS_POINTS) if digits else n, 64 if digits else 2, hidden, 10 if digits else 1,
                          network="cnn" if cnn else "mlp", grid=max(shape),
                          checkpoints=CHECKPOINTS + 1 if args.directions == "pca" else 0,
                          pca=args.directions == "pca", what=f"--data {args.data} with --model {args.model}")
        except LimitError as exc:
            raise JobError(str(exc)) from None
        if args.directions == "pca" and args.train_steps < 2:
            raise JobError("--directions pca needs a training path: use at least 2 --train-steps")
        x, y = parse_data(args.data)
        if stored is not None:
            _check_dir_shapes(dir_path, stored, build_model(args.model, x, y, args.seed), args.dir_type)
        problem = train_mlp(args.model, x, y, steps=args.train_steps, seed=args.seed,
                            checkpoints=CHECKPOINTS if args.directions == "pca" else 0)
    has_test = [k for k in ("test_loss", "test_acc") if k in surf.values]
    if foreign and has_test and problem.test is None:
        raise JobError(f"{out} holds {has_test[0]}, but the model factory '{args.model}' gives no test set to "
                       "complete it")
    if not foreign and problem.test is not None:
        for k in ("test_loss", "test_acc"):
            surf.values[k] = old.values[k] if old is not None and k in old.values else np.full(shape, np.nan)
    center = entries(problem.model, args.dir_type)
    try:
        d1, d2 = make_directions(problem, args, args.seed + 100, one_d, stored)
    except JobError:
        raise
    except Exception as exc:
        if not user:
            raise
        raise JobError(f"the model factory '{args.model}': cannot make directions for its parameters: "
                       f"{_one_line(exc)}") from None

    # the job's identity beyond its arguments: the weights, directions and data this run would use
    try:
        data_print = data_fingerprint(problem)
    except Exception as exc:  # a user's loader can fail in any way (a batch that is not a pair, a bad file)
        if not user:
            raise
        raise JobError(f"the model factory '{args.model}': reading its data raised {_one_line(exc)}") from None
    prints = {"losslab_center_sha256": fingerprint(center),
              "losslab_directions_sha256": fingerprint([*d1, *(d2 or [])]), "losslab_data_sha256": data_print}
    if old is not None:
        differ = [what for key, what in FINGERPRINTS if key in old_attrs and old_attrs[key] != prints[key]]
        if differ:
            raise JobError(f"{out} was computed with other {' and '.join(differ)} than this run's (same arguments, "
                           f"different fingerprints: did the model factory, its file or the data change?); "
                           f"choose another --out or delete it")
        if not any(key in old_attrs for key, _ in FINGERPRINTS) and dir_attrs is None:
            print(f"losslab surface: note: {out} records no fingerprints (an earlier version's file, or another "
                  f"tool's) and there is no direction file of this job: its points cannot be checked against this "
                  f"run's model", file=sys.stderr)
    write_dirs = stored is None
    if dir_attrs is not None:
        recorded = dir_attrs.get("losslab_directions_sha256")
        if recorded is None:  # an earlier version's file: compare what it holds
            try:
                rx, ry = read_directions(dir_path, shapes=[tuple(p.shape) for p in center])
                recorded = fingerprint([*rx, *(ry or [])])
            except SurfaceFileError:
                recorded = ""
        if recorded == prints["losslab_directions_sha256"]:
            write_dirs = False
        elif old is not None:
            raise JobError(f"{dir_path} holds other directions than this run's (did the model change?); "
                           f"choose another --out or delete {out} and {dir_name}")
    # a foreign file keeps its own attributes (and from now on fingerprints, checked by the next resume)
    attrs = {**{k: v for k, v in old.attrs.items() if k != ACC_UNITS_ATTR}, **prints} if foreign else \
        {"losslab_job": job, **prints}
    dir_attrs_new = {"losslab_job": job, "losslab_surface": base,
                     "losslab_directions_sha256": prints["losslab_directions_sha256"]}
    return _evaluate(args, problem, user, surf, missing, (center, d1, d2), attrs, dir_path, dir_attrs_new,
                     write_dirs, progress, state)


class _RowEvaluator:
    """The values of one grid row's missing points: a network trained here on its tensors by the batched grid
    evaluation, anything else point by point, each over the whole data set in batches
    (models.landscape.evaluate_points). The same object runs in the local job and in a Ray task, so both give
    the same numbers."""

    def __init__(self, problem: Problem, user: bool, dir_type: str, batch_size: int | None, plane: tuple,
                 with_test: bool) -> None:
        self.problem, self.dir_type, self.batch_size = problem, dir_type, batch_size
        self.center, self.d1, self.d2 = plane
        self.fast = not user and dir_type == "weights" and batch_size is None
        self.flat_d2 = [torch.zeros_like(c) for c in self.center] if self.d2 is None else self.d2
        self.classify = not user or problem.y.dtype == torch.long
        self.sets = [("train", problem.data)] + ([("test", problem.test)] if with_test else [])
        problem.model.eval()

    def _one(self, data, a, b):
        p = self.problem
        if self.fast:
            x, y = data
            return tuple(ls.grid_model(p.model, x, y, fn, self.center, self.d1, self.flat_d2, a[:1], b)[0]
                         for fn in (p.loss_fn, ls.accuracy_fn))
        return ls.evaluate_points(p.model, data, p.loss_fn, self.center, self.d1, self.d2, a, b,
                                  dir_type=self.dir_type, batch_size=self.batch_size, accuracy=self.classify)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> dict:
        """name ('train', 'test') -> (losses, accuracies or None) at the points (a[k], b[k])."""
        return {name: self._one(data, a, b) for name, data in self.sets}


#: in a Ray worker: the evaluator of the job it works for (built once per worker process and job)
_WORKER_EVALUATOR: dict = {}


def _ray_row(shared: dict, payload: tuple) -> dict:
    """A Ray task: one grid row's missing points. ``shared`` (put in Ray's object store once) holds what rebuilds
    the job's model in the worker: a network of this project from its spec, its data and the centre's weights,
    or the user's factory (its file must be on every node at the same path); the directions come with it."""
    key = shared["key"]
    if key not in _WORKER_EVALUATOR:
        if shared["user"]:
            problem = from_factory(shared["model"])
        else:
            x, y = shared["data"]
            problem = Problem(build_model(shared["model"], x, y, shared["seed"]), loss_for(y), x, y, True)
        dr.apply_entries(problem.model, dr.entries_of(problem.model, shared["dir_type"]), shared["plane"][0])
        _WORKER_EVALUATOR.clear()
        _WORKER_EVALUATOR[key] = _RowEvaluator(problem, shared["user"], shared["dir_type"], shared["batch_size"],
                                               shared["plane"], shared["with_test"])
    return _WORKER_EVALUATOR[key](*payload)


def _abs_spec(spec: str) -> str:
    """A factory given by file path, made absolute: a Ray worker's working folder is not the driver's."""
    mod, _, fn = spec.rpartition(":")
    return f"{os.path.abspath(mod)}:{fn}" if mod.endswith(".py") or os.sep in mod else spec


def _evaluate(args, problem: Problem, user: bool, surf: Surface, missing: np.ndarray, plane: tuple, attrs: dict,
              dir_path: str, dir_attrs: dict, write_dirs: bool, progress: bool, state: _Progress
              ) -> tuple[Surface, int]:
    """The missing points, a row of the grid at a time, each row saved atomically as it is done: here, or with
    ``--ray`` as Ray tasks whose rows this process (the only writer) saves as they arrive."""
    from tqdm import tqdm

    out, (_, d1, d2) = args.out, plane
    with_test = "test_loss" in surf.values
    xt, yt = surf.x, surf.y
    total = int(missing.sum())
    rows = {n: (i, np.nonzero(missing[i])[0]) for n, i in enumerate(i for i in range(len(xt)) if missing[i].any())}
    state.bar = tqdm(total=total, unit="point", desc="losslab surface", file=sys.stderr, dynamic_ncols=True,
                     disable=not (progress and getattr(sys.stderr, "isatty", lambda: False)()))
    kill_rows, kill_in_write = _test_kill_spec()
    done, saved_rows, need_dirs = 0, 0, [write_dirs]

    def save(n: int, got: dict) -> None:  # a finished row into the file (atomically), in any order
        nonlocal done, saved_rows
        i, js = rows[n]
        for name, (loss_v, acc_v) in got.items():
            # NaN losses (the model blew up there) stay gaps, marked apart from 'not computed' with +inf
            surf.values[f"{name}_loss"][i, js] = np.where(np.isfinite(loss_v), loss_v, np.inf)
            if f"{name}_acc" in surf.values:
                surf.values[f"{name}_acc"][i, js] = np.nan if acc_v is None else acc_v
        done += len(js)
        saved_rows += 1
        if need_dirs[0]:  # with the first points saved, never before: a failed run leaves no direction file
            write_job_directions(dir_path, d1, d2, dir_attrs)
            need_dirs[0] = False
        dying = kill_rows and saved_rows >= kill_rows
        write_job_surface(out, surf, attrs, before_rename=_die if dying and kill_in_write else None)
        state.exists, state.saved = True, state.saved + len(js)
        if dying:
            _die()
        state.bar.update(len(js))

    def failed(exc: BaseException, where: str):
        kept = f"; {out} keeps the {state.saved} points computed before" if state.exists else ""
        return JobError(f"the model factory '{args.model}' failed when evaluated at {where}: "
                        f"{_one_line(exc)}{kept}")

    if args.ray is None:
        evaluate = _RowEvaluator(problem, user, args.dir_type, args.batch_size, plane, with_test)
        for n, (i, js) in rows.items():
            try:
                got = evaluate(np.full(len(js), xt[i]), yt[js])
            except Exception as exc:
                if not user:
                    raise
                raise failed(exc, f"grid row {i + 1} of {len(xt)}") from None
            save(n, got)
    else:
        _evaluate_on_ray(args, problem, user, plane, with_test, rows, xt, yt, save, failed, state)
    state.bar.close()
    state.bar = None
    if need_dirs[0] and state.exists:  # a finished surface whose direction file was removed: written again
        write_job_directions(dir_path, d1, d2, dir_attrs)
    bad = np.isinf(surf.values["train_loss"])
    if bad.any():
        print(f"losslab surface: the loss is not finite at {int(bad.sum())} grid points (left as gaps)",
              file=sys.stderr)
    return surf, done


def _evaluate_on_ray(args, problem: Problem, user: bool, plane: tuple, with_test: bool, rows: dict, xt, yt,
                     save, failed, state: _Progress) -> None:
    """``--ray [ADDRESS]``: every unfinished row a Ray task (models.distributed), saved here as it arrives."""
    from . import distributed

    shared = {"key": fingerprint([*plane[0], *plane[1], *(plane[2] or [])]), "user": user,
              "model": _abs_spec(args.model) if user else args.model, "seed": args.seed,
              "data": None if user else (problem.x, problem.y), "dir_type": args.dir_type,
              "batch_size": args.batch_size, "plane": plane, "with_test": with_test}
    chunks = {n: (np.full(len(js), xt[i]), yt[js]) for n, (i, js) in rows.items()}
    c = state.cluster
    print(f"losslab surface: {len(chunks)} rows as Ray tasks on {c.nodes} node(s), {c.cpus:g} CPUs"
          + (f", {c.gpus:g} GPUs" if c.gpus else ""), file=sys.stderr)
    try:
        distributed.run_chunks(chunks, _ray_row, shared, save, torch_threads=args.task_threads)
    except distributed.DistributedError as exc:
        raise JobError(f"the Ray cluster went away ({exc}); {args.out} holds {state.saved} of {state.total} "
                       f"points: run the same command again, with or without --ray, to resume") from None
    except Exception as exc:
        if not user or isinstance(exc, (JobError, OSError)):
            raise
        raise failed(exc, "a grid row in a Ray task") from None


def _connect_ray(address: str):
    """``--ray [ADDRESS]``: a local Ray (no address) or the cluster at ADDRESS, joined (JobError if not)."""
    from . import distributed

    try:
        return distributed.connect(address or None)
    except distributed.DistributedError as exc:
        raise JobError(f"--ray: {exc}") from None


def _glued_axes(argv: list[str]) -> list[str]:
    """``--x -1:1:51`` as ``--x=-1:1:51``: argparse takes a value that starts with '-' for an option."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        out.append(a)
        if a in ("--x", "--y"):
            value = next(it, None)
            if value is not None:
                out[-1] = f"{a}={value}"
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not the usage block
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="losslab surface", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mlp:64x64:tanh")
    p.add_argument("--data", default="spirals:2000:0.1")
    p.add_argument("--grid", type=int, help=f"points a side of a square grid (default {DEFAULT_GRID})")
    p.add_argument("--range", type=float, help=f"the square grid's axes run from -R to R (default {DEFAULT_RANGE:g})")
    p.add_argument("--x", metavar="MIN:MAX:N", help="the x axis, np.linspace(MIN, MAX, N); alone: a 1D plot")
    p.add_argument("--y", metavar="MIN:MAX:N", help="the y axis (with --x)")
    p.add_argument("--directions", default="filter", choices=["filter", "pca"])
    p.add_argument("--dir-file", metavar="F", help="reuse the directions of a direction file (the reference's or "
                   "losslab's)")
    p.add_argument("--dir-type", default="weights", help="weights: the parameters; states: the state_dict, "
                   "batch-norm buffers included")
    for axis in "xy":
        p.add_argument(f"--{axis}norm", help=f"the {axis} direction's normalization: {', '.join(NORMS)}")
        p.add_argument(f"--{axis}ignore", help=f"biasbn (default): a zero {axis} direction for biases and batch "
                       "norm; none: a copy of their values (the reference's)")
    p.add_argument("--model-file", metavar="F", help="the centre's weights, a checkpoint of the factory's module")
    p.add_argument("--model-file2", metavar="F", help="the x direction: to this checkpoint")
    p.add_argument("--model-file3", metavar="F", help="the y direction: to this checkpoint")
    p.add_argument("--model-folder", metavar="DIR", help="with --directions pca: PCA of the checkpoints in DIR")
    p.add_argument("--batch-size", type=int, metavar="N", help="evaluate each point N data rows at a time")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="evaluate the grid's rows as Ray tasks: "
                   "on a local Ray started here, or on the cluster at ADDRESS ('auto': the one this machine is "
                   "part of); needs the distributed extra (pip install 'losslab[distributed]')")
    p.add_argument("--task-threads", type=int, default=1, metavar="N", help="with --ray: torch threads (and CPUs "
                   "held) per task (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--out", required=True)
    args = p.parse_args(_glued_axes(list(sys.argv[1:] if argv is None else argv)))
    import signal

    got: list[int] = []

    def stop(signum, _frame):  # SIGTERM and SIGHUP end the job as Ctrl+C does: what is saved stays, one line
        got.append(signum)
        raise KeyboardInterrupt

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, stop)
    try:
        surf, done = compute(args)
    except JobInterrupted as exc:
        print(f"losslab surface: {exc}", file=sys.stderr)
        return 128 + (got[0] if got else signal.SIGINT)
    except (JobError, SurfaceFileError, LimitError) as exc:
        print(f"losslab surface: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"losslab surface: {_one_line(exc)}", file=sys.stderr)
        return 2
    shape = f"1D plot of {len(surf.x)} points" if surf.one_d else f"{len(surf.x)}x{len(surf.y)} surface"
    print(f"computed {done} points; {args.out} holds a {shape}")
    return 0


def user_train_run(spec: str, optimizer: str, lr: float, steps: int, every: int = 10):
    """Train a user's model (from its factory) in the lab's child process, yielding TrainSnapshots.

    The learning rate is checked by the call itself, before the factory is loaded (ValueError)."""
    check_step_size(lr)
    return _user_train_run(spec, optimizer, lr, steps, every)


def whole_data(p: Problem, spec: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The lab trains and draws on the whole training set at once: a loader's batches joined into two tensors,
    their size checked against the memory limit before any is joined (JobError beyond it: then
    ``losslab surface``, which evaluates batch by batch, is the tool)."""
    if _is_pair(p.data):
        return p.data[0], p.data[1]
    batches = list(p.data)
    if not batches or not all(_is_pair(b) for b in batches):
        raise JobError(f"the model factory '{spec}': its data loader must give (x, y) pairs of tensors")
    size = sum(b[0].numel() * b[0].element_size() + b[1].numel() * b[1].element_size() for b in batches)
    try:
        check_memory(2 * size, f"the model factory '{spec}': its whole training set in memory for the lab",
                     "use `losslab surface`, which evaluates it batch by batch")
    except LimitError as exc:
        raise JobError(str(exc)) from None
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def _user_train_run(spec: str, optimizer: str, lr: float, steps: int, every: int):
    from .nets import train_snapshots

    p = from_factory(spec)
    x, y = whole_data(p, spec)
    msg = yield from train_snapshots(p.model, lambda: p.model(x), lambda out: p.loss_fn(out, y), optimizer, lr,
                                     steps, every)
    return msg.replace("trained", "trained the user's model", 1)


def user_surface_job(spec: str, **kw):
    """The surface lab's job for a user's model (the factory is called again in the worker)."""
    p = from_factory(spec)
    return ls.surface_core(p.model, *whole_data(p, spec), p.loss_fn, **kw)
