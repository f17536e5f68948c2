"""Toy networks and two-dimensional toy data sets for the loss-surface lab (THEORY.md section 6).

MLPs of any depth and width with relu/tanh/gelu, in the standard (PyTorch default) or the NTK
parameterization (weights N(0, 1), each layer's output scaled by 1/sqrt(fan_in)), optionally with residual
connections between hidden layers of equal width. Data: two spirals, moons, circles, XOR and Gaussian blobs,
generated here from a seed (no downloads).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .limits import MEMORY_CAP_BYTES, check_memory
from .train import check_step_size

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "gelu": nn.functional.gelu}
DATASETS = ("spirals", "moons", "circles", "xor", "blobs", "digits")


@dataclass(frozen=True)
class MLPSpec:
    """in_dim -> hidden widths -> out_dim; ``parameterization`` 'standard' or 'ntk'."""

    in_dim: int = 2
    hidden: tuple[int, ...] = (64, 64)
    out_dim: int = 1
    activation: str = "tanh"
    parameterization: str = "standard"
    residual: bool = False

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{self.activation}'; choose one of {', '.join(ACTIVATIONS)}")
        if self.parameterization not in ("standard", "ntk"):
            raise ValueError("parameterization must be 'standard' or 'ntk'")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError("an MLP needs at least one hidden layer of positive width")

    @property
    def widths(self) -> list[int]:
        return [self.in_dim, *self.hidden, self.out_dim]


class MLP(nn.Module):
    """A plain MLP whose layers are nn.Linear (so filter normalization sees one row per output unit)."""

    def __init__(self, spec: MLPSpec, seed: int = 0) -> None:
        # the weights (float32) and one layer's initialization temporaries, refused before anything is allocated
        w = spec.widths
        need = 4 * mlp_param_count(w) + 8 * max(_layer_sizes(w))
        if need > MEMORY_CAP_BYTES:
            most = _largest(lambda v: 4 * mlp_param_count([w[0], *[v] * (len(w) - 2), w[-1]]) + 8 * v * v, 1, max(w))
            check_memory(need, f"an MLP {'x'.join(map(str, w))}", f"at most {most} units a hidden layer")
        super().__init__()
        self.spec = spec
        g = torch.Generator().manual_seed(int(seed))
        w = spec.widths
        self.layers = nn.ModuleList(nn.Linear(w[k], w[k + 1]) for k in range(len(w) - 1))
        with torch.no_grad():
            for lin in self.layers:
                fan_in = lin.in_features
                if spec.parameterization == "ntk":
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=g))
                    lin.bias.copy_(torch.randn(lin.bias.shape, generator=g))
                else:  # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases
                    bound = 1 / math.sqrt(fan_in)
                    lin.weight.copy_(torch.rand(lin.weight.shape, generator=g) * 2 * bound - bound)
                    lin.bias.copy_(torch.rand(lin.bias.shape, generator=g) * 2 * bound - bound)

    def layer_scale(self, k: int) -> float:
        return 1.0 / math.sqrt(self.layers[k].in_features) if self.spec.parameterization == "ntk" else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.spec.activation]
        h = x
        last = len(self.layers) - 1
        for k, lin in enumerate(self.layers):
            z = lin(h) * self.layer_scale(k) if self.spec.parameterization == "ntk" else lin(h)
            if k < last:
                z = act(z)
                if self.spec.residual and k > 0 and z.shape == h.shape:
                    z = z + h
            h = z
        return h


def load_digits(n: int = 1797, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (shipped inside the package, no download): x (n, 64) in [0, 1], y (n,) long."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    perm = np.random.default_rng(seed).permutation(len(d.target))[: min(n, len(d.target))]
    return (torch.as_tensor(d.data[perm] / 16.0, dtype=torch.float32),
            torch.as_tensor(d.target[perm], dtype=torch.long))


def make_data(name: str, n: int = 2000, noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Toy sets: (x (n, 2) float32, y (n,) float32 labels in {0, 1}). 'digits': (x (n, 64), y (n,) long)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set '{name}'; choose one of {', '.join(DATASETS)}")
    if n < 2:
        raise ValueError("a data set needs at least two points")
    if name == "digits":
        return load_digits(n, seed)
    check_memory(_DATA_GEN_BYTES * n, f"a data set of {n} points",
                 f"at most {int(MEMORY_CAP_BYTES // _DATA_GEN_BYTES)} points")  # before any array is made
    g = np.random.default_rng(seed)
    half = n // 2
    if name == "spirals":
        t = np.sqrt(g.uniform(0, 1, half)) * 3 * np.pi
        a = np.column_stack([t * np.cos(t), t * np.sin(t)]) / (3 * np.pi)
        x = np.concatenate([a, -a[: n - half]])
        y = np.concatenate([np.zeros(half), np.ones(n - half)])
    elif name == "moons":
        t = g.uniform(0, np.pi, n)
        upper = np.arange(n) < half
        x = np.where(upper[:, None], np.column_stack([np.cos(t), np.sin(t)]),
                     np.column_stack([1 - np.cos(t), 0.5 - np.sin(t)]))
        y = (~upper).astype(float)
    elif name == "circles":
        t = g.uniform(0, 2 * np.pi, n)
        r = np.where(np.arange(n) < half, 1.0, 0.45)
        x = np.column_stack([r * np.cos(t), r * np.sin(t)])
        y = (np.arange(n) >= half).astype(float)
    elif name == "xor":
        x = g.uniform(-1, 1, (n, 2))
        y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(float)
    else:  # blobs
        centers = np.array([[-0.6, -0.4], [0.6, 0.5]])
        lab = (np.arange(n) >= half).astype(int)
        x = centers[lab] + 0.35 * g.normal(size=(n, 2))
        y = lab.astype(float)
    x = x + noise * g.normal(size=x.shape)
    perm = g.permutation(n)
    return torch.as_tensor(x[perm], dtype=torch.float32), torch.as_tensor(y[perm], dtype=torch.float32)


# --- memory estimates, checked before anything is allocated (the CLI and the surface lab share them) ---------

#: the numpy float64 temporaries make_data builds for a two-dimensional toy set, per point (about five (n, 2)
#: arrays alive at once, and the float32 tensors)
_DATA_GEN_BYTES = 5 * 2 * 8 + 3 * 4
#: the SmallCNN's channels (its default) and the digits' 8x8 inputs
_CNN_CHANNELS = (8, 16)
DIGITS_POINTS = 1797  # scikit-learn's digits: make_data("digits", n) gives at most this many


def _layer_sizes(widths) -> list[int]:
    return [int(widths[k]) * int(widths[k + 1]) + int(widths[k + 1]) for k in range(len(widths) - 1)]


def mlp_param_count(widths) -> int:
    """Parameters of an MLP with these widths (inputs, hidden..., outputs): weights and biases."""
    return sum(_layer_sizes(widths))


def _largest(fits_bytes, lo: int, hi: int) -> int:
    """The largest integer v in [lo, hi] with fits_bytes(v) <= MEMORY_CAP_BYTES (fits_bytes grows with v), or
    lo - 1 if even lo does not fit."""
    if fits_bytes(lo) > MEMORY_CAP_BYTES:
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits_bytes(mid) <= MEMORY_CAP_BYTES:
            lo = mid
        else:
            hi = mid - 1
    return lo


def estimate_bytes(n_points: int, in_dim: int = 2, hidden=(64, 64), out_dim: int = 1, *, network: str = "mlp",
                   grid: int = 0, checkpoints: int = 0, pca: bool = False, workers: int | None = None,
                   itemsize: int = 4) -> float:
    """About how many bytes a surface job needs at its peak: make the data, train the network (full-batch
    Adam), keep ``checkpoints`` flat float64 copies of its parameters (the training path; ``pca`` adds the
    SVD's workspace), make two directions and evaluate a ``grid`` x ``grid`` surface on ``workers`` threads.

    With P parameters (P = sum over layers of fan_in * fan_out + fan_out), L the largest layer's parameters,
    A the sum of all widths (inputs, hidden, outputs), W the widest layer, n points, s = itemsize (4, float32):

        data        n * (5 * 2 * 8 + 3 * 4 + (in_dim + 1) * s)
        parameters  P * s * 7  (weights, gradients, Adam's two moments, the centre, two directions)
                    + L * 8 * 2  (a direction's float64 draw, one layer at a time)
        path        P * 8 * checkpoints * (3 if pca else 1)
        training    n * A * s * 3  (activations kept for the backward pass, and their gradients)
        grid        workers * (4 * L * s + 4 * n * W * s)  (each thread: one layer's weights and activations,
                    with the temporaries that form them and what the threads' allocators keep)
                    + P * s * 3  (the centre and the two directions stacked, layer by layer, for the CPU grid)
                    + grid^2 * 8 * 8  (the surface's arrays and their copies when written)

    ``network='cnn'``: the SmallCNN (8x8 inputs, ``out_dim`` classes) in place of the MLP; ``hidden`` is ignored.
    """
    n = max(0, int(n_points))
    s = int(itemsize)
    workers = int(workers or max(1, min(os.cpu_count() or 1, 8)))
    if network == "cnn":
        c1, c2 = _CNN_CHANNELS
        layers = [c1 * 9 + c1, c2 * c1 * 9 + c2, c2 * 16 * out_dim + out_dim]
        per_point = 64 + 2 * c1 * 64 + 2 * c2 * 16 + out_dim  # activation values per image
        p_count, big = sum(layers), max(layers)
        train_act = n * per_point * s * 3
        grid_eval = 16 * (n * per_point * s + p_count * s * 3)  # grid_cnn_points: 16 points a chunk
    else:
        widths = [int(in_dim), *(int(w) for w in hidden), int(out_dim)]
        layers = _layer_sizes(widths)
        p_count, big = sum(layers), max(layers)
        train_act = n * sum(widths) * s * 3
        grid_eval = workers * (4 * big * s + 4 * n * max(widths) * s) + p_count * s * 3
    data = n * (_DATA_GEN_BYTES + (int(in_dim) + 1) * s)
    params = p_count * s * 7 + big * 8 * 2
    path = p_count * 8 * max(0, int(checkpoints)) * (3 if pca else 1)
    surface = int(grid) ** 2 * 8 * 8
    return float(data + params + path + train_act + grid_eval + surface + 8192 * len(layers))


def check_request(n_points: int, in_dim: int = 2, hidden=(64, 64), out_dim: int = 1, *, network: str = "mlp",
                  grid: int = 0, checkpoints: int = 0, pca: bool = False, workers: int | None = None,
                  what: str = "") -> float:
    """``estimate_bytes`` checked against models.limits.MEMORY_CAP_BYTES before anything is allocated: returns
    the estimate, or raises LimitError naming the largest number of points that fits with this network and the
    largest hidden width (as many layers, all that wide) that fits with these points."""
    hidden = tuple(int(w) for w in hidden)
    kw = dict(network=network, grid=grid, checkpoints=checkpoints, pca=pca, workers=workers)
    need = estimate_bytes(n_points, in_dim, hidden, out_dim, **kw)
    if need <= MEMORY_CAP_BYTES:
        return need
    n = max(0, int(n_points))
    fits = []
    most_points = _largest(lambda v: estimate_bytes(v, in_dim, hidden, out_dim, **kw), 2, max(2, n))
    if most_points >= 2:
        fits.append(f"at most {most_points} data points with this network")
    if network != "cnn" and hidden:
        depth = len(hidden)
        most_width = _largest(lambda v: estimate_bytes(n, in_dim, (v,) * depth, out_dim, **kw), 1,
                              max(1, max(hidden)))
        if most_width >= 1:
            fits.append(f"hidden layers of at most {most_width} units with {n} points")
    desc = what or (f"{n} points with the small CNN" if network == "cnn" else
                    f"{n} points with an MLP {'x'.join(str(w) for w in (in_dim, *hidden, out_dim))}")
    check_memory(need, desc, " or ".join(fits))
    return need


class SmallCNN(nn.Module):
    """A small CNN for 8x8 images: conv 3x3 (1 -> c1) -> act -> conv 3x3 stride 2 (c1 -> c2) -> act -> linear.
    Takes flat (n, 64) inputs."""

    def __init__(self, channels: tuple[int, int] = (8, 16), activation: str = "relu", classes: int = 10,
                 seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.activation = activation
        self.conv1 = nn.Conv2d(1, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, stride=2, padding=1)
        self.fc = nn.Linear(channels[1] * 16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation]
        h = act(self.conv1(x.reshape(-1, 1, 8, 8)))
        h = act(self.conv2(h))
        return self.fc(h.flatten(1))


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (..., n, classes) against integer labels (n,): one value per leading index."""
    lead = logits.shape[:-2]
    flat = logits.reshape(-1, logits.shape[-2], logits.shape[-1])
    out = torch.stack([nn.functional.cross_entropy(f, y) for f in flat]) if flat.shape[0] > 1 else \
        nn.functional.cross_entropy(flat[0], y).reshape(1)
    return out.reshape(lead) if lead else out[0]


def loss_for(y: torch.Tensor):
    """Binary cross-entropy for float 0/1 labels, cross-entropy for integer class labels."""
    return ce_loss if y.dtype == torch.long else bce_loss


def bce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy on logits of shape (..., n) or (..., n, 1): one value per leading index."""
    if logits.shape[-1] == 1 and logits.dim() > y.dim():
        logits = logits.squeeze(-1)
    return nn.functional.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean(-1)


@dataclass
class TrainSnapshot:
    step: int
    loss: float
    accuracy: float
    params: np.ndarray | None  # flat parameters at checkpoints, None in between


def build_net(network: str, hidden: tuple, activation: str, parameterization: str, residual: bool,
              x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    """The lab's network for these data: an MLP sized to the inputs and classes, or the SmallCNN (digits)."""
    classes = int(y.max()) + 1 if y.dtype == torch.long else 1
    if network == "cnn":
        if x.shape[1] != 64:
            raise ValueError("the small CNN takes 8x8 images: choose the digits data set")
        return SmallCNN(activation=activation if activation != "gelu" else "relu", classes=classes, seed=seed)
    spec = MLPSpec(in_dim=x.shape[1], hidden=tuple(hidden), out_dim=classes, activation=activation,
                   parameterization=parameterization, residual=residual)
    return MLP(spec, seed=seed)


def train_run(hidden: tuple, activation: str, parameterization: str, residual: bool, data: str, n: int,
              noise: float, optimizer: str, lr: float, steps: int, seed: int, every: int = 10, device: str = "cpu",
              network: str = "mlp"):
    """Train the lab's network with full-batch cross-entropy, yielding a snapshot per step (parameters every
    ``every`` steps and at the end); runs in the lab's child process. Diverging training stops with a message.
    A learning rate that is not a positive finite number is refused by the call itself (ValueError)."""
    check_step_size(lr)
    # the lab keeps every checkpoint (steps / every + 1 flat float64 copies) and may compute a PCA plane of them:
    # refused here, before anything is allocated, with the largest size that fits (LimitError)
    in_dim, out_dim = (64, 10) if data == "digits" else (2, 1)
    net_name = "the small CNN" if network == "cnn" else "an MLP " + "-".join(str(w) for w in (in_dim, *hidden, out_dim))
    check_request(n, in_dim, tuple(hidden), out_dim, network=network, checkpoints=steps // max(1, every) + 2,
                  pca=True, what=f"training {n} points with {net_name} and keeping its checkpoints")
    return _train_run(hidden, activation, parameterization, residual, data, n, noise, optimizer, lr, steps, seed,
                      every, device, network)


def _train_run(hidden, activation, parameterization, residual, data, n, noise, optimizer, lr, steps, seed, every,
               device, network):
    torch.manual_seed(seed)
    x, y = make_data(data, n, noise, seed)
    dev = torch.device(device if device.startswith("cuda") and torch.cuda.is_available() else "cpu")
    net = build_net(network, hidden, activation, parameterization, residual, x, y, seed).to(dev)
    lossf = loss_for(y)
    x, y = x.to(dev), y.to(dev)
    msg = yield from train_snapshots(net, lambda: net(x), lambda out: lossf(out, y), optimizer, lr, steps, every,
                                     accuracy=lambda out: _accuracy(out, y))
    return msg


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    if y.dtype == torch.long:
        return float((out.argmax(-1) == y).float().mean())
    return float(((out.squeeze(-1) > 0).float() == y).float().mean())


def train_snapshots(net: nn.Module, forward, loss_of, optimizer: str, lr: float, steps: int, every: int,
                    accuracy=None):
    """Full-batch training of any module, yielding a TrainSnapshot per step (flat parameters every ``every``
    steps, at the end and on divergence); returns a one-line summary. Shared by the lab's networks and users'.

    The learning rate and ``every`` are checked by the call itself, before any step (ValueError)."""
    lr = check_step_size(lr)
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"parameters are kept every `every` steps: it must be a positive integer, got {every!r}")
    return _train_snapshots(net, forward, loss_of, optimizer, lr, steps, int(every), accuracy)


def _train_snapshots(net, forward, loss_of, optimizer, lr, steps, every, accuracy):
    if optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9 if optimizer == "momentum" else 0.0)
    lv, acc = float("nan"), float("nan")
    for k in range(steps + 1):
        out = forward()
        loss = loss_of(out)
        lv = float(loss.detach())
        acc = accuracy(out) if accuracy is not None else float("nan")
        flat = None
        if k % every == 0 or k == steps or not math.isfinite(lv):
            flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).double().cpu().numpy()
        yield TrainSnapshot(k, lv, acc, flat)
        if not math.isfinite(lv):
            return f"training diverged at step {k} (loss {lv}): lower the learning rate"
        if k == steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return f"trained {steps} steps: loss {lv:.4g}" + ("" if math.isnan(acc) else f", accuracy {acc:.3f}")

