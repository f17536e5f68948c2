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

Model SPEC: ``mlp:64x64:tanh`` (widths, activation[, ntk][, res]), ``cnn`` (a small CNN, with --data digits)
or ``package.module:factory`` / a file path
``path/to/file.py:factory`` whose factory returns (torch module, loss function, (x, y) tensors).
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
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import directions as dr
from . import landscape as ls
from .limits import MEMORY_CAP_BYTES, LimitError, check_memory
from .nets import DATASETS, DIGITS_POINTS, MLP, MLPSpec, SmallCNN, check_request, loss_for, make_data
from .surface_io import (
    Surface,
    SurfaceFileError,
    read_directions,
    read_surface,
    write_directions,
    write_surface,
)
from .train import check_step_size

#: the arguments that make a job (they are recorded in its file; a resume must repeat them)
JOB_KEYS = ("model", "data", "grid", "range", "directions", "seed", "train_steps")
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
    x: torch.Tensor
    y: torch.Tensor
    is_mlp: bool
    trajectory: np.ndarray | None = None  # flat checkpoints (T, P) when trained here


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


def from_factory(spec: str) -> Problem:
    fn = load_factory(spec)
    try:
        out = fn()
    except Exception as exc:
        raise JobError(f"the model factory '{spec}' raised {_one_line(exc)}") from None
    if not (isinstance(out, tuple) and len(out) == 3):
        raise JobError(f"the model factory '{spec}' must return (module, loss_fn, (x, y)); it returned "
                       f"{type(out).__name__}")
    model, loss_fn, data = out
    if not isinstance(model, nn.Module):
        raise JobError(f"the model factory '{spec}': its first value must be a torch.nn.Module, not "
                       f"{type(model).__name__}")
    if not callable(loss_fn):
        raise JobError(f"the model factory '{spec}': its second value must be a loss function loss(outputs, "
                       f"targets), not {type(loss_fn).__name__}")
    if not (isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        raise JobError(f"the model factory '{spec}': its third value must be a pair of tensors (x, y)")
    return Problem(model, loss_fn, data[0], data[1], isinstance(model, MLP))


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


def accuracy_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y.dtype == torch.long:
        return (out.argmax(-1) == y).to(out.dtype).mean(-1)
    if out.shape[-1] == 1 and out.dim() > y.dim():
        out = out.squeeze(-1)
    return ((out > 0).to(y.dtype) == y).to(out.dtype).mean(-1)


def make_directions(problem: Problem, kind: str, seed: int) -> tuple[list, list]:
    center = dr.params_of(problem.model)
    if kind == "filter":
        return dr.random_direction(problem.model, seed), dr.random_direction(problem.model, seed + 1)
    if kind == "pca":
        if problem.trajectory is None or len(problem.trajectory) < 3:
            raise JobError("--directions pca needs a training path: use an mlp:... or cnn model (trained here) "
                           "with at least 2 --train-steps")
        d1, d2, _ = dr.pca_directions(problem.trajectory, problem.trajectory[-1])
        return (dr.unflatten(torch.as_tensor(d1), center), dr.unflatten(torch.as_tensor(d2), center))
    raise JobError(f"--directions must be 'filter' or 'pca', not '{kind}'")


def fingerprint(tensors) -> str:
    """sha256 of the tensors' shapes and float64 bytes, in order (one tensor at a time: no large copy)."""
    h = hashlib.sha256()
    for t in tensors:
        a = np.ascontiguousarray(torch.as_tensor(t).detach().to("cpu", torch.float64).numpy())
        h.update(f"{tuple(a.shape)};".encode())
        h.update(a.data)
    return h.hexdigest()


def check_job_args(args: argparse.Namespace) -> None:
    """The scalar arguments, each refused with one line (JobError) before anything is read or trained."""
    def integer(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not integer(args.grid) or not 2 <= args.grid <= MAX_GRID:
        raise JobError(f"--grid must be between 2 and {MAX_GRID} points a side, not {args.grid}")
    r = args.range
    if isinstance(r, bool) or not isinstance(r, (int, float, np.floating, np.integer)) or not math.isfinite(r) \
            or not 0 < r <= MAX_RANGE:
        raise JobError(f"--range must be a number above 0 and at most {MAX_RANGE:g}, not {r}")
    if not integer(args.seed) or not 0 <= args.seed <= MAX_SEED:
        raise JobError(f"--seed must be an integer from 0 to {MAX_SEED}, not {args.seed}")
    if not integer(args.train_steps) or not 0 <= args.train_steps <= MAX_TRAIN_STEPS:
        raise JobError(f"--train-steps must be an integer from 0 to {MAX_TRAIN_STEPS}, not {args.train_steps}")
    if args.directions not in ("filter", "pca"):
        raise JobError(f"--directions must be 'filter' or 'pca', not '{args.directions}'")
    if not isinstance(args.model, str) or not args.model:
        raise JobError("--model must name a network (mlp:64x64:tanh, cnn) or a factory (path/file.py:build)")


def resume_command(args: argparse.Namespace) -> str:
    """The command line that runs (or resumes) this job: every argument of its identity, spelled out."""
    parts = ["losslab", "surface", "--model", args.model, "--data", args.data, "--grid", str(args.grid),
             "--range", repr(float(args.range)), "--directions", args.directions, "--seed", str(args.seed),
             "--train-steps", str(args.train_steps), "--out", args.out]
    return " ".join(shlex.quote(str(p)) for p in parts)


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
        return [torch.as_tensor(t).detach().cpu().numpy() for t in d]

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
    bar: bool = False  # a progress bar is on the current line


def compute(args: argparse.Namespace, progress=True) -> tuple[Surface, int]:
    """Run (or resume) the job; returns the surface and how many points this run computed.

    JobError (or SurfaceFileError) for a job that cannot run, raised before any training where the reason can
    be known then; JobInterrupted on Ctrl+C, saying what was saved and how to resume."""
    state = _Progress(out=args.out)
    try:
        return _compute(args, progress, state)
    except BaseException as exc:
        if state.bar:  # the message that follows starts a line of its own
            sys.stderr.write("\n")
            state.bar = False
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


def _compute(args: argparse.Namespace, progress: bool, state: _Progress) -> tuple[Surface, int]:
    check_job_args(args)
    out = args.out
    folder, base = check_out(out)
    t = np.linspace(-args.range, args.range, args.grid)
    job = json.dumps({k: getattr(args, k) for k in JOB_KEYS}, sort_keys=True)
    if len(job.encode()) > MAX_ATTR_BYTES:
        raise JobError(f"--model and --data are too long to be recorded in the file (the job's arguments may take "
                       f"at most {MAX_ATTR_BYTES} bytes)")
    n_total = len(t) * len(t)
    state.total = n_total

    # an existing file: this job's (arguments and grid), read before anything is trained
    old, old_attrs = None, {}
    if os.path.lexists(out):
        old = read_surface(out)
        read = getattr(old, "attrs", None)  # the reader's own (bounded) reading of the file's texts
        old_attrs = {k: v for k, v in read.items() if k in _JOB_ATTRS} if isinstance(read, dict) else _read_attrs(out)
        if old_attrs.get("losslab_job", "") != job:
            raise JobError(f"{out} holds another job's surface; choose another --out or delete it")
        tl = old.values.get("train_loss")
        if tl is None or tl.shape != (len(t), len(t)) or old.x.shape != t.shape or old.y.shape != t.shape or \
                not (np.allclose(old.x, t) and np.allclose(old.y, t)):
            raise JobError(f"{out} records this job's arguments but not its grid; choose another --out or delete it")
    # the direction file: named after the surface file in full; a file of an earlier version keeps its own
    dir_name = base + DIR_SUFFIX
    if old is not None and _plain_name(old.dir_file) and old.dir_file != base:
        dir_name = old.dir_file
    dir_path = os.path.join(folder, dir_name)
    for name in clean_stale_temps(folder, [base, dir_name]):
        print(f"losslab surface: removed {name}, a temporary file left by an interrupted run", file=sys.stderr)
    _probe_writable(out, folder, [os.path.join(folder, base), dir_path])
    dir_attrs = None
    if os.path.lexists(dir_path):
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
    surf = Surface(t, t, {"train_loss": np.full((len(t), len(t)), np.nan),
                          "train_acc": np.full((len(t), len(t)), np.nan)}, dir_name)
    if old is not None:
        surf.values.update({k: v for k, v in old.values.items() if k in surf.values and v.shape == (len(t), len(t))})
    missing = np.isnan(surf.values["train_loss"])
    total = int(missing.sum())
    state.exists = old is not None
    state.saved = n_total - total
    if old is not None:
        print(f"losslab surface: resuming {out}: {n_total - total} of {n_total} points are there, {total} remain")
        if total == 0 and dir_attrs is not None:
            return surf, 0

    # the model: a network trained here (its memory estimated first) or a user's factory (tried once)
    user = not is_builtin(args.model)
    if user:
        problem = from_factory(args.model)
        check_user_problem(problem, args.model)
    else:
        name, n, _ = parse_data_spec(args.data)
        cnn = args.model.split(":", 1)[0] == "cnn"
        if cnn and name != "digits":
            raise JobError("--model cnn needs 8x8 images: use --data digits")
        hidden = () if cnn else parse_mlp(args.model).hidden
        digits = name == "digits"
        try:
            check_request(min(n, DIGITS_POINTS) if digits else n, 64 if digits else 2, hidden, 10 if digits else 1,
                          network="cnn" if cnn else "mlp", grid=args.grid,
                          checkpoints=CHECKPOINTS + 1 if args.directions == "pca" else 0,
                          pca=args.directions == "pca", what=f"--data {args.data} with --model {args.model}")
        except LimitError as exc:
            raise JobError(str(exc)) from None
        if args.directions == "pca" and args.train_steps < 2:
            raise JobError("--directions pca needs a training path: use at least 2 --train-steps")
        x, y = parse_data(args.data)
        problem = train_mlp(args.model, x, y, steps=args.train_steps, seed=args.seed,
                            checkpoints=CHECKPOINTS if args.directions == "pca" else 0)
    center = dr.params_of(problem.model)
    try:
        d1, d2 = make_directions(problem, args.directions, args.seed + 100)
    except JobError:
        raise
    except Exception as exc:
        if not user:
            raise
        raise JobError(f"the model factory '{args.model}': cannot make directions for its parameters: "
                       f"{_one_line(exc)}") from None

    # the job's identity beyond its arguments: the weights, directions and data this run would use
    prints = {"losslab_center_sha256": fingerprint(center), "losslab_directions_sha256": fingerprint([*d1, *d2]),
              "losslab_data_sha256": fingerprint([problem.x, problem.y])}
    if old is not None:
        differ = [what for key, what in FINGERPRINTS if key in old_attrs and old_attrs[key] != prints[key]]
        if differ:
            raise JobError(f"{out} was computed with other {' and '.join(differ)} than this run's (same arguments, "
                           f"different fingerprints: did the model factory, its file or the data change?); "
                           f"choose another --out or delete it")
        if not any(key in old_attrs for key, _ in FINGERPRINTS) and dir_attrs is None:
            print(f"losslab surface: note: {out} was written before fingerprints were recorded and its direction "
                  f"file is missing: its points cannot be checked against this run's model", file=sys.stderr)
    write_dirs = True
    if dir_attrs is not None:
        stored = dir_attrs.get("losslab_directions_sha256")
        if stored is None:  # an earlier version's file: compare what it holds
            try:
                rx, ry = read_directions(dir_path, shapes=[tuple(p.shape) for p in center])
                stored = fingerprint([*rx, *ry])
            except SurfaceFileError:
                stored = ""
        if stored == prints["losslab_directions_sha256"]:
            write_dirs = False
        elif old is not None:
            raise JobError(f"{dir_path} holds other directions than this run's (did the model change?); "
                           f"choose another --out or delete {out} and {dir_name}")
    attrs = {"losslab_job": job, **prints}
    dir_attrs_new = {"losslab_job": job, "losslab_surface": base,
                     "losslab_directions_sha256": prints["losslab_directions_sha256"]}

    done = 0
    t0 = time.perf_counter()
    rows = [i for i in range(len(t)) if missing[i].any()]
    model = problem.model
    model.eval()
    kill_rows, kill_in_write = _test_kill_spec()
    for n_row, i in enumerate(rows, 1):
        js = np.nonzero(missing[i])[0]
        a = np.full(len(js), t[i])
        b = t[js]
        try:
            loss_v = ls.grid_model(model, problem.x, problem.y, problem.loss_fn, center, d1, d2, a[:1], b)[0]
            if problem.is_mlp or isinstance(model, SmallCNN):
                acc_v = ls.grid_model(model, problem.x, problem.y, accuracy_fn, center, d1, d2, a[:1], b)[0]
            else:
                acc_v = np.full(len(js), np.nan)
        except Exception as exc:
            if not user:
                raise
            kept = f"; {out} keeps the {state.saved} points computed before" if state.exists else ""
            raise JobError(f"the model factory '{args.model}' failed when evaluated at grid row {i + 1} of "
                           f"{len(t)}: {_one_line(exc)}{kept}") from None
        # NaN losses (the model blew up there) stay gaps, marked apart from 'not computed' with +inf
        surf.values["train_loss"][i, js] = np.where(np.isfinite(loss_v), loss_v, np.inf)
        surf.values["train_acc"][i, js] = acc_v
        done += len(js)
        if write_dirs:  # with the first points saved, never before: a failed run leaves no direction file
            write_job_directions(dir_path, d1, d2, dir_attrs_new)
            write_dirs = False
        dying = kill_rows and n_row >= kill_rows
        write_job_surface(out, surf, attrs, before_rename=_die if dying and kill_in_write else None)
        state.exists, state.saved = True, state.saved + len(js)
        if dying:
            _die()
        if progress:
            frac = done / max(total, 1)
            bar = "#" * int(30 * frac)
            sys.stderr.write(f"\r[{bar:<30}] {100 * frac:5.1f}%  {done}/{total} points  "
                             f"{time.perf_counter() - t0:6.1f} s")
            sys.stderr.flush()
            state.bar = True
    if write_dirs and state.exists:  # a finished surface whose direction file was removed: written again
        write_job_directions(dir_path, d1, d2, dir_attrs_new)
    if progress and state.bar:
        sys.stderr.write("\n")
        state.bar = False
    bad = np.isinf(surf.values["train_loss"])
    if bad.any():
        print(f"losslab surface: the loss is not finite at {int(bad.sum())} grid points (left as gaps)",
              file=sys.stderr)
    return surf, done


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not the usage block
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="losslab surface", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mlp:64x64:tanh")
    p.add_argument("--data", default="spirals:2000:0.1")
    p.add_argument("--grid", type=int, default=41)
    p.add_argument("--range", type=float, default=1.0)
    p.add_argument("--directions", default="filter", choices=["filter", "pca"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
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
    print(f"computed {done} points; {args.out} holds a {len(surf.x)}x{len(surf.y)} surface")
    return 0


def user_train_run(spec: str, optimizer: str, lr: float, steps: int, every: int = 10):
    """Train a user's model (from its factory) in the lab's child process, yielding TrainSnapshots.

    The learning rate is checked by the call itself, before the factory is loaded (ValueError)."""
    check_step_size(lr)
    return _user_train_run(spec, optimizer, lr, steps, every)


def _user_train_run(spec: str, optimizer: str, lr: float, steps: int, every: int):
    from .nets import train_snapshots

    p = from_factory(spec)
    msg = yield from train_snapshots(p.model, lambda: p.model(p.x), lambda out: p.loss_fn(out, p.y), optimizer, lr,
                                     steps, every)
    return msg.replace("trained", "trained the user's model", 1)


def user_surface_job(spec: str, **kw):
    """The surface lab's job for a user's model (the factory is called again in the worker)."""
    p = from_factory(spec)
    return ls.surface_core(p.model, p.x, p.y, p.loss_fn, **kw)
