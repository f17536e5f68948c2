"""Loss L(theta* + a d1 + b d2) over a grid of (a, b), on the full data set, in eval mode.

``grid_loop`` is the plain reference: one functional call per grid point under no_grad. ``grid_mlp`` is the
fast path for the MLPs of models.nets. On the CPU the points run on one worker thread per core, each point's
parameters formed by one matrix-vector product, each layer one ``addmm`` with its bias, tanh through numpy
(torch's CPU tanh was two thirds of a small MLP's time): what is left is the layers' matrix products. On a GPU
a chunk of points is formed at once and each layer is one batched product (``baddbmm``). ``progressive`` yields
coarse-to-fine results for a live view. ``evaluate_points`` is the general path for real networks and data
that come in batches (a DataLoader): any module, weight or state (batch-norm statistics) directions, every point
over the whole data set.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable

import numpy as np
import torch
from torch import nn

from .directions import Direction
from .limits import check_memory
from .nets import ACTIVATIONS, MLP

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def grid_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, center: Direction,
              d1: Direction, d2: Direction, alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """Reference: values[i, j] = loss at center + alphas[i] d1 + betas[j] d2, one point at a time."""
    names = [n for n, _ in model.named_parameters()]
    out = np.empty((len(alphas), len(betas)))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i, a in enumerate(alphas):
            for j, b in enumerate(betas):
                params = {n: c + float(a) * u + float(b) * v for n, c, u, v in zip(names, center, d1, d2)}
                out[i, j] = float(loss_fn(torch.func.functional_call(model, params, (x,)), y))
    model.train(was_training)
    return out


def accuracy_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y.dtype == torch.long:
        return (out.argmax(-1) == y).to(out.dtype).mean(-1)
    if out.shape[-1] == 1 and out.dim() > y.dim():
        out = out.squeeze(-1)
    return ((out > 0).to(y.dtype) == y).to(out.dtype).mean(-1)


Data = tuple[torch.Tensor, torch.Tensor] | Iterable


def _batches(data: Data, batch_size: int | None, device: torch.device) -> Iterable:
    """The data set as a re-iterable of (x, y) batches: a tensor pair moved to ``device`` once and cut into
    ``batch_size`` rows (whole when None), or the caller's re-iterable as it is (its own batches)."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a whole number of at least 1, not {batch_size!r}")
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(f"the data's inputs and targets must have the same number of rows; got shapes "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        x, y = x.to(device), y.to(device)
        step = batch_size or max(1, x.shape[0])
        return list(zip(x.split(step), y.split(step)))
    try:
        it = iter(data)
    except TypeError:
        raise ValueError(f"the data must be an (x, y) pair of tensors or a re-iterable of (x, y) batches, not "
                         f"{type(data).__name__}") from None
    if it is data:
        raise ValueError(f"the data is a one-shot iterator ({type(data).__name__}) that every grid point would "
                         f"have to read again: pass a list of (x, y) batches or a DataLoader")
    return data


def _batch(batch, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor)
                                                                          for t in batch)):
        raise ValueError(f"batch {k + 1} of the data is not an (x, y) pair of tensors but a {type(batch).__name__}")
    return batch[0].to(device), batch[1].to(device)


def _over_data(model: nn.Module, batches: Iterable, loss_fn: LossFn, accuracy: bool,
               device: torch.device) -> tuple[float, float]:
    """Loss and accuracy of the model over every batch, each batch's mean weighted by its rows."""
    rows = 0
    loss_sum = acc_sum = 0.0
    for k, batch in enumerate(batches):
        x, y = _batch(batch, k, device)
        out = model(x)
        loss = loss_fn(out, y)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("the loss function must return the batch's mean loss, one value")
        n = x.shape[0]
        loss_sum += float(loss) * n
        if accuracy:
            acc_sum += float(accuracy_fn(out, y)) * n
        rows += n
    if rows == 0:
        raise ValueError("the data set is empty: it gave no batches with rows")
    return loss_sum / rows, acc_sum / rows


def evaluate_points(model: nn.Module, data: Data, loss_fn: LossFn, center: Direction, d1: Direction,
                    d2: Direction | None, a: np.ndarray, b: np.ndarray | None, dir_type: str = "weights",
                    batch_size: int | None = None, accuracy: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Loss (and accuracy, a fraction) at the points center + a[k] d1 + b[k] d2, each over the whole data set.

    ``center``, ``d1``, ``d2`` hold one tensor per entry of ``entries_of(model, dir_type)`` (``states``: batch
    norm's running statistics move too); ``d2`` None is a 1D line and ``b`` is ignored. ``data`` is an (x, y)
    pair of tensors, cut into ``batch_size`` rows when given, or a re-iterable of (x, y) batches (a DataLoader,
    a list), used with its own batches; a one-shot iterator is refused. ``loss_fn`` returns a batch's mean: the
    batches are combined weighted by their rows. The model runs in eval mode (batch norm uses its running
    statistics) under no_grad, and its entries and mode are restored afterwards.
    """
    from . import directions as dr

    entries = dr.entries_of(model, dir_type)
    for what, d in (("center", center), ("d1", d1), ("d2", d2)):
        if d is not None and len(d) != len(entries):
            raise ValueError(f"{what} has {len(d)} tensors for the model's {len(entries)} {dir_type} entries")
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.zeros_like(a) if d2 is None else np.asarray(b, dtype=np.float64).reshape(-1)
    if len(b) != len(a):
        raise ValueError(f"{len(a)} a coordinates but {len(b)} b coordinates")
    device = entries[0][1].device if entries else torch.device("cpu")  # where the batches go
    batches = _batches(data, batch_size, device)

    def beside(d: Direction) -> Direction:  # each tensor on its entry's device, moved once
        return [u.to(t.device) for u, (_, t) in zip(d, entries)]

    center, d1 = beside(center), beside(d1)
    second = beside(d2) if d2 is not None else [None] * len(entries)
    saved = [t.clone() for _, t in entries]
    was_training = model.training
    losses = np.empty(len(a))
    accs = np.empty(len(a)) if accuracy else None
    model.eval()
    try:
        with torch.no_grad():
            for k in range(len(a)):
                point = []
                for c, u, v in zip(center, d1, second):
                    if c.is_floating_point():
                        c = torch.add(c, u, alpha=float(a[k]))
                        if v is not None:
                            c = c.add_(v, alpha=float(b[k]))
                    point.append(c)
                dr.apply_entries(model, entries, point)
                losses[k], acc = _over_data(model, batches, loss_fn, accuracy, device)
                if accs is not None:
                    accs[k] = acc
    finally:
        dr.apply_entries(model, entries, saved)
        model.train(was_training)
    return losses, accs


def _chunk_size(n_data: int, width: int, itemsize: int, budget_bytes: float = 2.5e8, layer_numel: int = 0) -> int:
    """Grid points a batched chunk may hold: each needs its activations (about 3 n x width values) and its own
    copy of the largest layer's weights with the temporaries that form it (about 3 x layer_numel values)."""
    per_point = 3 * n_data * width * itemsize + 3 * layer_numel * itemsize
    return int(max(1, min(4096, budget_bytes // max(1, per_point))))


def _stacked(center: Direction, d1: Direction, d2: Direction) -> list[torch.Tensor]:
    """Per layer (3, out * in + out): its weight and bias in the centre, d1 and d2, flattened, one row each, so
    that one matrix-vector product with [1, a, b] forms the layer's parameters at a grid point (one dispatch
    instead of two adds a tensor: on a small MLP the dispatches cost as much as the arithmetic)."""
    return [torch.stack([torch.cat([d[k].reshape(-1), d[k + 1].reshape(-1)]) for d in (center, d1, d2)])
            for k in range(0, len(center), 2)]


def _activation_inplace(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The hidden activation, computed in place on a CPU tensor the caller owns.

    tanh goes through numpy: torch's CPU tanh here (2.13, AVX512) costs about 2 ns an element, 13x numpy's
    vectorized tanh, and it was two thirds of a small MLP's grid time and a third of a big one's. numpy's is as
    accurate (6e-8 from float64 against torch's 3e-8) and releases the GIL like torch does.
    """
    if name == "tanh":
        def tanh_(z: torch.Tensor) -> torch.Tensor:
            if z.dtype not in (torch.float32, torch.float64):  # numpy has no bfloat16
                return z.tanh_()
            zn = z.numpy()
            np.tanh(zn, out=zn)
            return z
        return tanh_
    if name == "relu":
        return torch.Tensor.relu_
    return ACTIVATIONS[name]


def _points_serial(mlp: MLP, x, y, loss_fn: LossFn, stacked: list[torch.Tensor], a: np.ndarray,
                   b: np.ndarray) -> np.ndarray:
    """One CPU point after another: each layer's parameters formed by one product into a buffer reused by every
    layer and point (see _stacked), each layer one addmm with its bias fused, the activation in place (see
    _activation_inplace). No module dispatch and no allocation beyond each layer's output."""
    spec = mlp.spec
    act_ = _activation_inplace(spec.activation)
    n_layers = len(mlp.layers)
    scales = [mlp.layer_scale(k) for k in range(n_layers)]
    flat = torch.empty(max(t.shape[1] for t in stacked), dtype=stacked[0].dtype)
    parts, weights, biases = [], [], []
    for lin, rows in zip(mlp.layers, stacked):
        part = flat[:rows.shape[1]]
        parts.append(part)
        weights.append(part[:lin.weight.numel()].view(lin.weight.shape).T)  # (in, out), as addmm takes it
        biases.append(part[lin.weight.numel():])
    coefs = torch.as_tensor(np.stack([np.ones_like(a), a, b], axis=1), dtype=flat.dtype)
    columns = [rows.T for rows in stacked]  # (numel, 3): mv against [1, a, b] reads the contiguous (3, numel)
    out = np.empty(len(a))
    with torch.no_grad():
        for g in range(len(a)):
            coef = coefs[g]
            h = x
            for k in range(n_layers):
                torch.mv(columns[k], coef, out=parts[k])
                z = torch.addmm(biases[k], h, weights[k], beta=scales[k], alpha=scales[k])
                if k < n_layers - 1:
                    z = act_(z)
                    if spec.residual and k > 0 and z.shape == h.shape:
                        z = z.add_(h)
                h = z
            out[g] = float(loss_fn(h, y))
    return out


def _points_cpu(mlp: MLP, x, y, loss_fn: LossFn, center, d1, d2, a: np.ndarray, b: np.ndarray,
                workers: int | None = None) -> np.ndarray:
    """Grid points spread over as many Python threads as torch may use (its thread count: the cores this process
    is given, one in a Ray task of one CPU), each running torch single-threaded.

    On this machine's two cores, two points side by side are at least as fast as one point at a time on two
    intra-op threads when the machine is quiet, and next to another busy process they keep going where the
    intra-op threads stall (medians of 3.6 against 15.6 ms a point, 2-256-256-256-1, 2000 points). The points
    go out in runs of consecutive points, several per worker, taken as workers come free: on a shared machine
    one worker slowed by another process does not leave the other idle at the end. torch's thread count is
    process-wide: it is set to 1 for the duration and restored afterwards. The memory it needs is checked first.
    """
    from concurrent.futures import ThreadPoolExecutor

    workers = workers or max(1, min(torch.get_num_threads(), 8))
    # the stacked centre and directions, and each worker's layer buffer and activations (x, h, z)
    widths, sizes = mlp.spec.widths, [lin.weight.numel() + lin.bias.numel() for lin in mlp.layers]
    need = x.element_size() * (3 * sum(sizes) + workers * (max(sizes) + 3 * x.shape[0] * max(widths)))
    check_memory(need, f"the loss grid of an MLP {'x'.join(map(str, widths))} on {x.shape[0]} points")
    stacked = _stacked(center, d1, d2)
    if workers == 1 or len(a) < 2 * workers:
        return _points_serial(mlp, x, y, loss_fn, stacked, a, b)
    step = max(1, len(a) // (8 * workers))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    ex = ThreadPoolExecutor(workers)
    try:
        parts = list(ex.map(lambda s: _points_serial(mlp, x, y, loss_fn, stacked, a[s:s + step],
                                                     b[s:s + step]), range(0, len(a), step)))
    finally:
        # even when Ctrl+C or SIGTERM (a KeyboardInterrupt in this thread) cuts the grid short: the runs not
        # begun are dropped and the running ones end before torch's threads change or the process exits (a
        # worker still inside torch at exit aborts the process: "terminate called without an active exception")
        while True:
            try:
                ex.shutdown(wait=True, cancel_futures=True)
                break
            except KeyboardInterrupt:  # a second signal while waiting: the first is still on its way out
                continue
        torch.set_num_threads(before)
    return np.concatenate(parts)


def grid_mlp_points(mlp: MLP, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, center: Direction,
                    d1: Direction, d2: Direction, a: torch.Tensor, b: torch.Tensor,
                    chunk: int | None = None) -> torch.Tensor:
    """Loss at the points center + a[g] d1 + b[g] d2 (g = 0..G-1).

    On the CPU: points in parallel threads (see _points_cpu). On a GPU: chunks of points, each layer one
    batched product (baddbmm), so a chunk costs a few kernel launches instead of a few per point.
    """
    if x.device.type == "cpu" and chunk is None:
        vals = _points_cpu(mlp, x, y, loss_fn, center, d1, d2, a.cpu().numpy(), b.cpu().numpy())
        return torch.as_tensor(vals, dtype=center[0].dtype)
    spec = mlp.spec
    act = ACTIVATIONS[spec.activation]
    n_layers = len(mlp.layers)
    dtype = center[0].dtype
    a = a.to(dtype)
    b = b.to(dtype)
    width = max(spec.widths)
    chunk = chunk or _chunk_size(x.shape[0], width, x.element_size(),
                                 layer_numel=max(lin.weight.numel() for lin in mlp.layers))
    out = torch.empty(a.shape[0], dtype=dtype, device=x.device)
    scales = [mlp.layer_scale(k) for k in range(n_layers)]
    with torch.no_grad():
        for s in range(0, a.shape[0], chunk):
            ac, bc = a[s:s + chunk], b[s:s + chunk]
            g = ac.shape[0]
            h = x.unsqueeze(0).expand(g, *x.shape)
            for k in range(n_layers):
                wc, bc_, wu, bu, wv, bv = (center[2 * k], center[2 * k + 1], d1[2 * k], d1[2 * k + 1],
                                           d2[2 * k], d2[2 * k + 1])
                w = wc + ac.view(g, 1, 1) * wu + bc.view(g, 1, 1) * wv  # (g, out, in)
                bias = bc_ + ac.view(g, 1) * bu + bc.view(g, 1) * bv  # (g, out)
                if scales[k] != 1.0:
                    z = torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2), alpha=scales[k], beta=scales[k])
                else:
                    z = torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2))
                if k < n_layers - 1:
                    z = act(z)
                    if spec.residual and k > 0 and z.shape == h.shape:
                        z = z + h
                h = z
            out[s:s + g] = loss_fn(h, y)
    return out


def grid_cnn_points(cnn, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, center: Direction, d1: Direction,
                    d2: Direction, a: torch.Tensor, b: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """The SmallCNN at many grid points at once: G points become G groups of one grouped convolution (each
    group with its own filters), and the last layer one batched product."""
    act = ACTIVATIONS[cnn.activation]
    n = x.shape[0]
    img = x.reshape(n, 1, 8, 8)
    dtype = center[0].dtype
    a, b = a.to(dtype), b.to(dtype)
    out = torch.empty(a.shape[0], dtype=dtype, device=x.device)

    def at(k, ac, bc):
        shape = (-1,) + (1,) * center[k].dim()
        return center[k] + ac.view(shape) * d1[k] + bc.view(shape) * d2[k]  # (g, *param shape)

    with torch.no_grad():
        for s in range(0, a.shape[0], chunk):
            ac, bc = a[s:s + chunk], b[s:s + chunk]
            g = ac.shape[0]
            w1, b1, w2, b2, w3, b3 = (at(k, ac, bc) for k in range(6))
            h = torch.nn.functional.conv2d(img.repeat(1, g, 1, 1), w1.reshape(-1, *w1.shape[2:]), b1.reshape(-1),
                                           padding=1, groups=g)
            h = act(h)
            h = torch.nn.functional.conv2d(h, w2.reshape(-1, *w2.shape[2:]), b2.reshape(-1), stride=2, padding=1,
                                           groups=g)
            h = act(h).reshape(n, g, -1).transpose(0, 1)  # (g, n, c2 * 16), flattened like the module
            logits = torch.baddbmm(b3.unsqueeze(1), h, w3.transpose(1, 2))  # (g, n, classes)
            out[s:s + g] = loss_fn(logits, y)
    return out


def grid_model(model, x, y, loss_fn: LossFn, center, d1, d2, alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """The fastest grid evaluation for the model's type: batched for MLPs and the SmallCNN, else the loop."""
    from .nets import SmallCNN

    if isinstance(model, MLP):
        return grid_mlp(model, x, y, loss_fn, center, d1, d2, alphas, betas)
    if isinstance(model, SmallCNN):
        aa, bb = np.meshgrid(alphas, betas, indexing="ij")
        v = grid_cnn_points(model, x, y, loss_fn, center, d1, d2, torch.as_tensor(aa.ravel(), device=x.device),
                            torch.as_tensor(bb.ravel(), device=x.device))
        return v.cpu().numpy().reshape(aa.shape).astype(np.float64)
    return grid_loop(model, x, y, loss_fn, center, d1, d2, alphas, betas)


def grid_mlp(mlp: MLP, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, center: Direction, d1: Direction,
             d2: Direction, alphas: np.ndarray, betas: np.ndarray, chunk: int | None = None) -> np.ndarray:
    """values[i, j] = loss at center + alphas[i] d1 + betas[j] d2 (batched)."""
    aa, bb = np.meshgrid(alphas, betas, indexing="ij")
    dev = x.device
    vals = grid_mlp_points(mlp, x, y, loss_fn, center, d1, d2, torch.as_tensor(aa.ravel(), device=dev),
                           torch.as_tensor(bb.ravel(), device=dev), chunk)
    return vals.cpu().numpy().reshape(aa.shape).astype(np.float64)


def progressive(mlp: MLP, x, y, loss_fn: LossFn, center, d1, d2, alphas: np.ndarray, betas: np.ndarray,
                strides=(8, 4, 2, 1)) -> Generator[tuple[int, np.ndarray], None, np.ndarray]:
    """Coarse to fine: yields (stride, values) with NaN where not computed yet; each point computed once."""
    values = np.full((len(alphas), len(betas)), np.nan)
    done = np.zeros(values.shape, dtype=bool)
    for st in strides:
        mask = np.zeros_like(done)
        mask[::st, ::st] = True
        todo = mask & ~done
        ii, jj = np.nonzero(todo)
        if len(ii):
            dev = x.device
            from .nets import SmallCNN

            points = grid_cnn_points if isinstance(mlp, SmallCNN) else grid_mlp_points
            vals = points(mlp, x, y, loss_fn, center, d1, d2, torch.as_tensor(alphas[ii], device=dev),
                          torch.as_tensor(betas[jj], device=dev))
            values[ii, jj] = vals.cpu().numpy()
            done |= todo
        yield st, values.copy()
    return values


def surface_job(hidden: tuple, activation: str, parameterization: str, residual: bool, data: str, n: int,
                noise: float, seed: int, final: np.ndarray, initial: np.ndarray, checkpoints: np.ndarray,
                kind: str, dir_seed: int, orthogonal: bool, include_bias: bool, grid: int, extent: float,
                device: str = "cpu", align_to: tuple | None = None, network: str = "mlp"):
    """Everything the surface lab draws, progressively: yields ('plane', info) once, then ('grid', stride,
    values) from coarse to fine, then ('line', t, losses) for the initialization -> final segment."""
    from .nets import build_net, loss_for, make_data

    dev = torch.device(device if device.startswith("cuda") and torch.cuda.is_available() else "cpu")
    x, y = make_data(data, n, noise, seed)
    net = build_net(network, hidden, activation, parameterization, residual, x, y, seed).to(dev)
    x, y = x.to(dev), y.to(dev)
    return (yield from surface_core(net, x, y, loss_for(y), final, initial, checkpoints, kind, dir_seed, orthogonal,
                                    include_bias, grid, extent, align_to))


def surface_core(net, x, y, bce_loss, final, initial, checkpoints, kind, dir_seed, orthogonal, include_bias, grid,
                 extent, align_to=None):
    """surface_job's body for any model, data and loss already on their device."""
    from . import directions as dr

    dev = x.device
    center = dr.unflatten(torch.as_tensor(final, dtype=torch.float32, device=dev), dr.params_of(net))
    with torch.no_grad():
        for p, c in zip(net.parameters(), center):
            p.copy_(c)
    cosine = None
    explained = None
    if kind == "pca":
        u, v, explained = dr.pca_directions(checkpoints, final)
        if align_to is not None and align_to[0].shape == u.shape:
            u, v = dr.align_pair(u, v, *align_to)
        d1 = dr.unflatten(torch.as_tensor(u, device=dev), center)
        d2 = dr.unflatten(torch.as_tensor(v, device=dev), center)
    elif kind == "three":
        mid = checkpoints[len(checkpoints) // 2]
        d1 = dr.unflatten(torch.as_tensor(initial - final, device=dev), center)
        d2 = dr.unflatten(torch.as_tensor(mid - final, device=dev), center)
    else:
        d1 = dr.random_direction(net, dir_seed, include_bias=include_bias)
        d2 = dr.random_direction(net, dir_seed + 1, include_bias=include_bias)
        if orthogonal:
            d2 = dr.orthogonalize(d1, d2)
    cosine = dr.cosine(d1, d2)
    u = dr.flatten(d1).double().cpu().numpy()
    v = dr.flatten(d2).double().cpu().numpy()
    coords = dr.project(checkpoints, final, u, v)
    dist = dr.distance_to_plane(checkpoints, final, u, v)
    yield ("plane", {"cosine": cosine, "explained": explained, "coords": coords, "distance": dist, "kind": kind,
                     "u": u, "v": v})
    t = np.linspace(-extent, extent, grid)
    if kind != "filter":  # the plane's own scale: make sure the path fits
        span = float(np.abs(coords).max()) * 1.25 if len(coords) else extent
        t = np.linspace(-max(span, 1e-3), max(span, 1e-3), grid)
    from .nets import MLP, SmallCNN

    if isinstance(net, (MLP, SmallCNN)):
        for stride, values in progressive(net, x, y, bce_loss, center, d1, d2, t, t):
            yield ("grid", stride, t, values)
    else:  # any other module: row by row with the reference loop (still progressive, coarse rows first)
        values = np.full((len(t), len(t)), np.nan)
        for st in (4, 2, 1):
            for i in range(0, len(t), st):
                todo = np.nonzero(np.isnan(values[i, ::st]))[0] * st
                if len(todo):
                    values[i, todo] = grid_loop(net, x, y, bce_loss, center, d1, d2, t[i:i + 1], t[todo])[0]
            yield ("grid", st, t, values.copy())
    s = np.linspace(-0.25, 1.25, 61)
    w = initial[None, :] * s[:, None] + final[None, :] * (1 - s[:, None])  # s = 0 final, 1 initial
    line = []
    with torch.no_grad():
        for row in w:
            params = dr.unflatten(torch.as_tensor(row, dtype=torch.float32, device=dev), center)
            for p, c in zip(net.parameters(), params):
                p.copy_(c)
            line.append(float(bce_loss(net(x), y)))
    yield ("line", 1 - s, np.array(line))
