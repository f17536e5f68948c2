"""Directions in parameter space for loss-surface plots (THEORY.md section 6, Li et al. 2018).

A direction is a list of tensors shaped like the model's parameters, in ``model.parameters()`` order, or (the
reference tool's ``dir_type = states``) like its ``state_dict()``, batch-norm running statistics included.
Filter normalization: Gaussian entries, then each filter (for a linear layer, each output unit's row of weights;
for a convolution, each output channel) rescaled to the norm of the same filter of the trained weights.
Biases and other one-dimensional parameters (batch-norm) get a zero direction unless asked for; when
included, each is rescaled as a whole to its parameter's norm (never normalized twice).

``make_direction``, ``target_direction``, ``load_checkpoint`` and ``pca_from_checkpoints`` follow the reference
loss-landscape tool (tomgoldstein/loss-landscape: ``net_plotter.py``, ``projection.py``) so that its users get
the same planes for real networks: its normalizations, its treatment of one-dimensional entries, its checkpoint
files and its PCA of a folder of epoch checkpoints.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .limits import LimitError, check_memory

Direction = list[torch.Tensor]

DIR_TYPES = ("weights", "states")
#: the reference's normalizations: per filter or per layer to the weights' norm, entrywise by the weights, unit
#: norm per filter or per layer of the direction itself, or none
NORMS = ("filter", "layer", "weight", "dfilter", "dlayer", "none")
#: "biasbn": one-dimensional entries (biases, batch norm) get a zero direction; "none": a copy of the weights
IGNORES = ("biasbn", "none")
_EPS = 1e-10  # the reference's guard against a zero filter norm


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used for the model: the message names the file and what is wrong."""


def params_of(model: nn.Module) -> Direction:
    return [p.detach().clone() for p in model.parameters()]


def flatten(d: Direction) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in d])


def unflatten(v: torch.Tensor, like: Direction) -> Direction:
    out, k = [], 0
    for t in like:
        n = t.numel()
        out.append(v[k:k + n].reshape(t.shape).to(dtype=t.dtype, device=t.device))
        k += n
    return out


def _choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")


def _filter_norms(t: torch.Tensor) -> torch.Tensor:
    """The norm of each filter (slice along the first dimension), shaped to broadcast against ``t``."""
    return t.reshape(t.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (t.dim() - 1)))


def _normalized(d: torch.Tensor, w: torch.Tensor, norm: str) -> torch.Tensor:
    """The direction ``d`` of the weights ``w`` rescaled as the reference's ``normalize_direction`` does."""
    if norm == "filter":
        return d * (_filter_norms(w) / (_filter_norms(d) + _EPS))
    if norm == "layer":
        return d * (w.norm() / d.norm())
    if norm == "weight":
        return d * w
    if norm == "dfilter":
        return d / (_filter_norms(d) + _EPS)
    if norm == "dlayer":
        return d / d.norm()
    return d


def _gaussian(w: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Standard normal entries shaped like ``w``, drawn in float64 on the CPU (the same numbers on any device)."""
    return torch.randn(w.shape, generator=g, dtype=torch.float64).to(device=w.device)


def random_direction(model: nn.Module, seed: int, normalize: str | None = "filter",
                     include_bias: bool = False) -> Direction:
    """A Gaussian direction, filter-normalized (``normalize='filter'``) or raw (``None``)."""
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for p in model.parameters():
        w = p.detach()
        d = _gaussian(w, g).to(w.dtype)
        if w.dim() <= 1 and not include_bias:
            d = torch.zeros_like(w)
        elif normalize == "filter":
            d = _normalized(d, w, "layer" if w.dim() <= 1 else "filter")
        out.append(d)
    return out


def entries_of(model: nn.Module, dir_type: str = "weights") -> list[tuple[str, torch.Tensor]]:
    """The tensors a direction moves, by name and in the reference's order: ``named_parameters()`` for
    ``weights``, ``state_dict()`` (batch-norm running_mean, running_var and num_batches_tracked included) for
    ``states``. The tensors share storage with the model's."""
    _choice("dir_type", dir_type, DIR_TYPES)
    if dir_type == "weights":
        return [(n, p.detach()) for n, p in model.named_parameters()]
    return list(model.state_dict().items())


def make_direction(model: nn.Module, seed: int, dir_type: str = "weights", norm: str = "filter",
                   ignore: str = "biasbn") -> Direction:
    """The reference's ``create_random_direction``: a Gaussian entry per weight (or state) entry, normalized
    by ``norm`` against the model's current values (see NORMS); entries of dimension <= 1 are zero with
    ``ignore='biasbn'``, else a copy of the weights, as the reference does; integer entries (a batch norm's
    num_batches_tracked) are always zero. Every entry draws its numbers, so a weight's direction does not
    depend on ``norm`` or ``ignore``; ``make_direction(m, s)`` equals ``random_direction(m, s)``."""
    _choice("norm", norm, NORMS)
    _choice("ignore", ignore, IGNORES)
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for _, w in entries_of(model, dir_type):
        d = _gaussian(w, g)
        if not w.is_floating_point():
            out.append(torch.zeros_like(w))
        elif w.dim() <= 1:
            out.append(torch.zeros_like(w) if ignore == "biasbn" else w.clone())
        else:
            out.append(_normalized(d.to(w.dtype), w, norm))
    return out


def target_direction(model: nn.Module, state: Mapping[str, torch.Tensor], dir_type: str = "weights") -> Direction:
    """The direction from the model to another state of it (the reference's ``create_target_direction``):
    ``state[name] - entry`` for each of the model's entries; integer entries zero. ``state`` is a state dict
    such as ``load_checkpoint`` returns."""
    out = []
    for name, t in entries_of(model, dir_type):
        if name not in state:
            raise ValueError(f"the target state has no entry '{name}' of the model")
        s = state[name]
        if tuple(s.shape) != tuple(t.shape):
            raise ValueError(f"the target state's entry '{name}' has shape {tuple(s.shape)}, the model's "
                             f"{tuple(t.shape)}")
        out.append(s.to(dtype=t.dtype, device=t.device) - t if t.is_floating_point() else torch.zeros_like(t))
    return out


def apply_entries(model: nn.Module, entries_list: Sequence[tuple[str, torch.Tensor]],
                  values: Sequence[torch.Tensor]) -> None:
    """Copy ``values`` into the model's parameters and buffers named by ``entries_list`` (from ``entries_of``),
    in place. Every name and shape is checked before anything is copied, so a mismatch changes nothing."""
    if len(values) != len(entries_list):
        raise ValueError(f"{len(values)} values for {len(entries_list)} entries of the model")
    own = model.state_dict()
    for (name, _), v in zip(entries_list, values):
        if name not in own:
            raise ValueError(f"the model has no entry '{name}'")
        if tuple(v.shape) != tuple(own[name].shape):
            raise ValueError(f"entry '{name}': a value of shape {tuple(v.shape)} for the model's "
                             f"{tuple(own[name].shape)}")
    with torch.no_grad():
        for (name, _), v in zip(entries_list, values):
            own[name].copy_(v)


def _names(names: list[str], shown: int = 3) -> str:
    """'a', 'b', 'c' and 4 more: a few names for a one-line message."""
    head = ", ".join(f"'{n}'" for n in names[:shown])
    return head + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _torch_load(path: Path, where: str):
    """torch.load of tensors and plain containers only (weights_only: no code runs), its refusals in words."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on the pickle protocol of old files
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise CheckpointError(f"{where}: holds a Python object ({found.group(1)}), for example a whole pickled "
                                  f"model, which is not loaded for safety (only tensors are); save "
                                  f"model.state_dict() instead") from None
        raise CheckpointError(f"{where}: not a checkpoint that can be read safely (corrupt, not written by "
                              f"torch.save, or holding Python objects; only tensors are loaded)") from None
    except Exception as exc:  # torch.load reports a damaged file with many exception types
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{where}: corrupt or not a torch.save file ({first})") from None


def load_checkpoint(path: str | Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a torch.save checkpoint for ``model``, read safely: the file's size checked before it
    is read, ``torch.load(weights_only=True)`` on the CPU, the state dict itself or one under 'state_dict'
    (the reference's checkpoints) or 'model_state_dict' (with DataParallel's 'module.' prefixes removed);
    every key and shape checked against the model, values finite. A checkpoint written before batch norm
    counted its batches (no num_batches_tracked) gets the model's own counts. The tensors come back in the
    model's ``state_dict()`` order and dtypes, on the CPU. Refusals are ``CheckpointError`` naming the file."""
    p = Path(path)
    where = f"checkpoint {path}"
    if not p.exists():
        raise CheckpointError(f"{where}: no such file")
    if not p.is_file():
        raise CheckpointError(f"{where}: not a file")
    try:
        check_memory(p.stat().st_size, f"{where}: loading it")
    except LimitError as exc:
        raise CheckpointError(str(exc)) from None
    obj = _torch_load(p, where)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}: holds a {type(obj).__name__}, not a state dict")
    for key in ("state_dict", "model_state_dict"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    own = model.state_dict()
    keys = list(obj)
    if keys and all(isinstance(k, str) and k.startswith("module.") for k in keys) and not any(
            k.startswith("module.") for k in own):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where}: the entries {_names(bad)} are not tensors, so this is not a state dict "
                              f"(one is also looked for under 'state_dict' or 'model_state_dict')")
    missing = [k for k in own if k not in obj and not k.endswith("num_batches_tracked")]
    unexpected = [str(k) for k in obj if k not in own]
    if missing or unexpected:
        parts = ([f"lacks the model's {_names(missing)}"] if missing else []) + (
            [f"has {_names(unexpected)} that the model does not"] if unexpected else [])
        raise CheckpointError(f"{where}: does not fit the model: it {' and '.join(parts)}")
    out = {}
    for k, t in own.items():
        v = obj.get(k, t)
        if tuple(v.shape) != tuple(t.shape):
            raise CheckpointError(f"{where}: entry '{k}' has shape {tuple(v.shape)}, the model's {tuple(t.shape)}")
        v = v.detach().to(device="cpu", dtype=t.dtype).clone()
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{where}: entry '{k}' holds NaN or infinite values")
        out[k] = v
    return out


def pca_from_checkpoints(model: nn.Module, paths: Sequence[str | Path],
                         dir_type: str = "weights") -> tuple[Direction, Direction, np.ndarray]:
    """The reference's PCA directions for a folder of epoch checkpoints: the first two principal directions
    (``pca_directions``, unit vectors) of the checkpoints' offsets from the model's current entries, as
    directions of ``dir_type``, and the explained variance ratio of each. Integer entries do not move (a
    batch-norm batch count would otherwise dominate the offsets)."""
    paths = list(paths)
    if len(paths) < 2:
        raise ValueError(f"PCA directions need at least two checkpoints; got {len(paths)}")
    entries = entries_of(model, dir_type)
    n = sum(t.numel() for _, t in entries)
    check_memory(8 * n * (2 * len(paths) + 3), f"the PCA of {len(paths)} checkpoints of {n} values",
                 "use fewer checkpoints")
    center = [t.detach().clone() for _, t in entries]
    final = flatten([t.double().cpu() for t in center]).numpy()
    rows = np.empty((len(paths), n))
    for i, path in enumerate(paths):
        state = load_checkpoint(path, model)
        rows[i] = flatten([(state[name] if t.is_floating_point() else t).double().cpu()
                           for (name, _), t in zip(entries, center)]).numpy()
    if not np.any(rows != final[None, :]):
        raise ValueError("the checkpoints do not differ from the model's weights, so they span no plane")
    u, v, explained = pca_directions(rows, final)

    def direction(vec: np.ndarray) -> Direction:
        return [d if c.is_floating_point() else torch.zeros_like(c)
                for d, c in zip(unflatten(torch.as_tensor(vec), center), center)]

    return direction(u), direction(v), explained


def cosine(d1: Direction, d2: Direction) -> float:
    a, b = flatten(d1).double().cpu(), flatten(d2).double().cpu()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))


def orthogonalize(d1: Direction, d2: Direction) -> Direction:
    """d2 minus its component along d1 (after normalization, so the plane keeps its meaning)."""
    a, b = flatten(d1).double(), flatten(d2).double()
    return unflatten((b - (b @ a) / (a @ a).clamp_min(1e-300) * a), d2)


def pca_directions(checkpoints: np.ndarray, final: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First two principal directions of the offsets theta_i - theta_final (rows of ``checkpoints``), as unit
    vectors, and the explained variance ratio of each."""
    offsets = np.asarray(checkpoints, dtype=np.float64) - np.asarray(final, dtype=np.float64)[None, :]
    _, s, vt = np.linalg.svd(offsets, full_matrices=False)
    var = s**2 / max(float(np.sum(s**2)), 1e-300)
    d1 = vt[0]
    d2 = vt[1] if len(vt) > 1 else np.zeros_like(d1)
    return d1, d2, var[:2]


def align(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Flip ``new`` if it points against ``old``, so that a live-updated PCA plane does not mirror."""
    return -new if float(new @ old) < 0 else new


def align_pair(u: np.ndarray, v: np.ndarray, u_old: np.ndarray, v_old: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order and signs of a new PCA pair matched to the previous one, so a live plane neither swaps its axes
    nor mirrors between updates."""
    if abs(u @ v_old) > abs(u @ u_old) and abs(v @ u_old) > abs(v @ v_old):
        u, v = v, u
    return align(u, u_old), align(v, v_old)


def project(path: np.ndarray, origin: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """Plane coordinates (a, b) of each point: the least-squares solution of origin + a d1 + b d2 ≈ w."""
    basis = np.column_stack([d1, d2])
    coef, *_ = np.linalg.lstsq(basis, (np.asarray(path) - origin).T, rcond=None)
    return coef.T


def lift(coords: np.ndarray, origin: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    return origin[None, :] + coords[:, :1] * d1[None, :] + coords[:, 1:2] * d2[None, :]


def distance_to_plane(path: np.ndarray, origin: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """How far each point lies from the plane: the part of the path the picture cannot show."""
    path = np.asarray(path)
    return np.linalg.norm(path - lift(project(path, origin, d1, d2), origin, d1, d2), axis=1)


def plane_through(w0: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plane through three models: origin w0, directions w1 - w0 and w2 - w0 (so they sit at (1,0), (0,1))."""
    return np.asarray(w0), np.asarray(w1) - w0, np.asarray(w2) - w0
