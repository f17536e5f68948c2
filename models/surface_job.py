"""Headless loss-surface computation: ``losslab surface --model SPEC --data SPEC --grid N --out FILE.h5``.

The model is trained (seeded, deterministic) or given by a user factory; directions are filter-normalized
random or PCA of the training path; the grid is evaluated in row chunks, and after each chunk the surface
file is rewritten atomically, so an interrupted run leaves a valid partial file. Run again with the same
arguments, it reads that file and computes only the missing points (the file records its arguments and
refuses to resume a different job).

Model SPEC: ``mlp:64x64:tanh`` (widths, activation[, ntk][, res]), ``cnn`` (a small CNN, with --data digits)
or ``package.module:factory`` / a file path
``path/to/file.py:factory`` whose factory returns (torch module, loss function, (x, y) tensors).
Data SPEC: ``spirals[:n[:noise]]``, also moons, circles, xor, blobs, and digits (scikit-learn's 8x8 digits,
10 classes, cross-entropy); ignored for a user factory.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import directions as dr
from . import landscape as ls
from .nets import MLP, MLPSpec, SmallCNN, loss_for, make_data
from .surface_io import Surface, SurfaceFileError, read_surface, write_directions, write_surface
from .train import check_step_size


class JobError(ValueError):
    """A job that cannot run as asked: the message says why."""


@dataclass
class Problem:
    model: nn.Module
    loss_fn: object
    x: torch.Tensor
    y: torch.Tensor
    is_mlp: bool
    trajectory: np.ndarray | None = None  # flat checkpoints (T, P) when trained here


def parse_data(spec: str) -> tuple[torch.Tensor, torch.Tensor]:
    parts = spec.split(":")
    try:
        n = int(parts[1]) if len(parts) > 1 else 2000
        noise = float(parts[2]) if len(parts) > 2 else 0.1
    except ValueError:
        raise JobError(f"--data '{spec}': expected NAME[:N[:NOISE]], e.g. spirals:2000:0.1") from None
    try:
        return make_data(parts[0], n, noise)
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
        raise JobError(f"--model '{spec}': cannot import {mod_name}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise JobError(f"--model '{spec}': {mod_name} has no callable '{fn_name}'")
    return fn


def from_factory(spec: str) -> Problem:
    fn = load_factory(spec)
    try:
        out = fn()
    except Exception as exc:
        raise JobError(f"the model factory '{spec}' raised {type(exc).__name__}: {exc}") from None
    if not (isinstance(out, tuple) and len(out) == 3):
        raise JobError(f"the model factory '{spec}' must return (module, loss_fn, (x, y)); it returned "
                       f"{type(out).__name__}")
    model, loss_fn, data = out
    if not isinstance(model, nn.Module):
        raise JobError(f"the factory's first value must be a torch.nn.Module, not {type(model).__name__}")
    if not callable(loss_fn):
        raise JobError("the factory's second value must be a loss function loss(outputs, targets)")
    if not (isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        raise JobError("the factory's third value must be a pair of tensors (x, y)")
    return Problem(model, loss_fn, data[0], data[1], isinstance(model, MLP))


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
    """Full-batch Adam on the data's cross-entropy, seeded; keeps flat checkpoints for PCA directions.
    ``spec`` is an MLPSpec or a model spec string (mlp:... or cnn)."""
    lr = check_step_size(lr)
    torch.manual_seed(seed)
    net = MLP(spec, seed=seed) if isinstance(spec, MLPSpec) else build_model(spec, x, y, seed)
    bce_loss = loss_for(y)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    every = max(1, steps // checkpoints)
    traj = []
    for k in range(steps + 1):
        if k % every == 0 or k == steps:
            traj.append(dr.flatten(dr.params_of(net)).double().numpy())
        if k == steps:
            break
        opt.zero_grad()
        loss = bce_loss(net(x), y)
        loss.backward()
        opt.step()
    return Problem(net, bce_loss, x, y, isinstance(net, MLP), np.array(traj))


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
            raise JobError("--directions pca needs a training path: use an mlp:... or cnn model (trained here)")
        d1, d2, _ = dr.pca_directions(problem.trajectory, problem.trajectory[-1])
        return (dr.unflatten(torch.as_tensor(d1), center), dr.unflatten(torch.as_tensor(d2), center))
    raise JobError(f"--directions must be 'filter' or 'pca', not '{kind}'")


def compute(args: argparse.Namespace, progress=True) -> tuple[Surface, int]:
    """Run (or resume) the job; returns the surface and how many points this run computed."""
    if args.grid < 2 or args.grid > 1001:
        raise JobError("--grid must be between 2 and 1001 points a side")
    if args.model.startswith(("mlp", "cnn")):
        x, y = parse_data(args.data)
        problem = train_mlp(args.model, x, y, steps=args.train_steps, seed=args.seed)
    else:
        problem = from_factory(args.model)
    center = dr.params_of(problem.model)
    d1, d2 = make_directions(problem, args.directions, args.seed + 100)
    t = np.linspace(-args.range, args.range, args.grid)
    job = json.dumps({k: getattr(args, k) for k in ("model", "data", "grid", "range", "directions", "seed",
                                                     "train_steps")}, sort_keys=True)
    dir_file = os.path.splitext(args.out)[0] + ".dirs.h5"
    surf = Surface(t, t, {"train_loss": np.full((len(t), len(t)), np.nan),
                          "train_acc": np.full((len(t), len(t)), np.nan)}, os.path.basename(dir_file))
    if os.path.exists(args.out):
        old = read_surface(args.out)
        meta = _read_job(args.out)
        if meta != job:
            raise JobError(f"{args.out} holds another job's surface; choose another --out or delete it")
        surf.values.update({k: v for k, v in old.values.items() if k in surf.values})
    else:
        write_directions(dir_file, [d.numpy() for d in d1], [d.numpy() for d in d2])
    missing = np.isnan(surf.values["train_loss"])
    total = int(missing.sum())
    done = 0
    t0 = time.perf_counter()
    rows = [i for i in range(len(t)) if missing[i].any()]
    model = problem.model
    model.eval()
    # for the tests only: die (SIGKILL, as a user's kill or the OOM killer would) after that many rows written
    die_after = int(os.environ.get("LOSSLAB_TEST_KILL_AFTER_ROWS", "0") or 0)
    for n_row, i in enumerate(rows, 1):
        js = np.nonzero(missing[i])[0]
        a = np.full(len(js), t[i])
        b = t[js]
        loss_v = ls.grid_model(model, problem.x, problem.y, problem.loss_fn, center, d1, d2, a[:1], b)[0]
        if problem.is_mlp or isinstance(model, SmallCNN):
            acc_v = ls.grid_model(model, problem.x, problem.y, accuracy_fn, center, d1, d2, a[:1], b)[0]
        else:
            acc_v = np.full(len(js), np.nan)
        # NaN losses (the model blew up there) stay gaps, marked apart from 'not computed' with +inf
        surf.values["train_loss"][i, js] = np.where(np.isfinite(loss_v), loss_v, np.inf)
        surf.values["train_acc"][i, js] = acc_v
        done += len(js)
        _write(args.out, surf, job)
        if die_after and n_row >= die_after:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        if progress:
            frac = done / max(total, 1)
            bar = "#" * int(30 * frac)
            sys.stderr.write(f"\r[{bar:<30}] {100 * frac:5.1f}%  {done}/{total} points  "
                             f"{time.perf_counter() - t0:6.1f} s")
            sys.stderr.flush()
    if progress:
        sys.stderr.write("\n")
    bad = np.isinf(surf.values["train_loss"])
    if bad.any():
        print(f"losslab surface: the loss is not finite at {int(bad.sum())} grid points (left as gaps)",
              file=sys.stderr)
    return surf, done


def _write(path: str, surf: Surface, job: str) -> None:
    write_surface(path, surf, attrs={"losslab_job": job})  # the job's arguments travel with the file


def _read_job(path: str) -> str:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get("losslab_job", ""))
    except OSError as exc:
        raise SurfaceFileError(f"{path}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="losslab surface", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mlp:64x64:tanh")
    p.add_argument("--data", default="spirals:2000:0.1")
    p.add_argument("--grid", type=int, default=41)
    p.add_argument("--range", type=float, default=1.0)
    p.add_argument("--directions", default="filter", choices=["filter", "pca"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        surf, done = compute(args)
    except (JobError, SurfaceFileError, OSError) as exc:
        print(f"losslab surface: {exc}", file=sys.stderr)
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
