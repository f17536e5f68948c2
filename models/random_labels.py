"""The random-labels lab's engine: networks that fit noise (Zhang, Bengio, Hardt, Recht, Vinyals 2017; THEORY.md
section 4). torch float32, CPU by default; no Qt. torch is imported inside the functions (importing this module
is cheap).

Data: a Gaussian classification task (x ~ N(0, I_d), d = 20, labels argmax of a fixed random linear teacher over
``classes`` classes, a large clean test set) or scikit-learn's 8x8 digits (standardized, split by a seed). A
corruption fraction f replaces round(f n) TRAINING labels, chosen by a seeded permutation, by uniformly random
classes, drawn ONCE (``corrupt_labels``) and kept for the whole run: the paper's setting. Test labels stay clean.

Training: several MLPs (one per fraction, the same initialization) advance together, their weights stacked as
(K, fan_out, fan_in) tensors, the forward a chain of torch.baddbmm, the backward autograd on the stacked tensors
(the loss is the sum of the K runs' mean cross-entropies, so each run's gradient is its own), and the Adam (or
GD) update on the stacked tensors in place: one set of kernel calls advances every run. ``fit_run`` yields a
``RLStep`` per step; ``fit_toy`` fits a small MLP to labelled points in the plane and returns its decision
function on a grid; ``bench_figures`` measures the batched against the separate runs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

KINDS = ("gaussian", "digits")
OPTIMIZERS = ("adam", "gd")
GAUSS_D = 20
N_TEST_GAUSS = 2000
MAX_RUNS = 8
MAX_WIDTH = 2048
MAX_TRAIN = 1500
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


# ---------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Data:
    x: np.ndarray  # (n, d) float32
    y: np.ndarray  # (n,) int64, the true labels
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    name: str

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def chance(self) -> float:
        """Chance accuracy, 1 / classes: what a predictor independent of the inputs' labels scores."""
        return 1.0 / self.classes


def make_data(kind: str = "gaussian", n: int = 200, classes: int = 2, n_test: int = N_TEST_GAUSS,
              data_seed: int = 0, d: int = GAUSS_D) -> Data:
    """The training set (n points) and a clean test set. ValueError in words for what cannot be made."""
    if kind not in KINDS:
        raise ValueError(f"data is one of {', '.join(KINDS)}")
    if not 4 <= n <= MAX_TRAIN:
        raise ValueError(f"training points n from 4 to {MAX_TRAIN}")
    rng = np.random.default_rng(data_seed)
    if kind == "gaussian":
        if not 2 <= classes <= 10:
            raise ValueError("classes from 2 to 10")
        teacher = rng.standard_normal((d, classes))
        x = rng.standard_normal((n + n_test, d)).astype(np.float32)
        y = np.argmax(x @ teacher, axis=1).astype(np.int64)
        return Data(x[:n], y[:n], x[n:], y[n:], classes, f"Gaussian, d = {d}, {classes} classes")
    from sklearn.datasets import load_digits

    digits = load_digits()
    xs = digits.data.astype(np.float64)
    ys = digits.target.astype(np.int64)
    if n > len(ys) - 200:
        raise ValueError(f"the digits have {len(ys)} images: at most {len(ys) - 200} training points "
                         "(200 or more stay for the test)")
    order = rng.permutation(len(ys))
    tr, te = order[:n], order[n:]
    mu, sd = xs[tr].mean(0), xs[tr].std(0) + 1e-3  # standardized on the training set
    xs = ((xs - mu) / sd).astype(np.float32)
    return Data(xs[tr], ys[tr], xs[te], ys[te], 10, "8×8 digits, 10 classes")


def corrupt_labels(y: np.ndarray, fraction: float, classes: int, seed: int) -> np.ndarray:
    """The training labels with round(fraction n) of them, chosen by a seeded permutation, replaced by uniformly
    random classes (which may equal the true one, as in the paper). Drawn once: the same call gives the same
    labels, and the training loop never draws again."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("a corruption fraction is between 0 and 1")
    rng = np.random.default_rng([int(seed), 7919])
    n = len(y)
    k = int(round(fraction * n))
    idx = rng.permutation(n)[:k]
    out = np.array(y, dtype=np.int64, copy=True)
    out[idx] = rng.integers(0, classes, size=k)
    return out


# ---------------------------------------------------------------------------------------------------- batched MLP
def init_params(sizes: list[int], runs: int, seed: int, device: str = "cpu") -> list:
    """[W1, b1, W2, b2, ...]: W (K, fan_out, fan_in), b (K, fan_out, 1) as torch.nn.Linear draws them
    (U(±1/√fan_in)); every run gets the same initialization (seeded by ``seed``)."""
    import torch

    g = torch.Generator().manual_seed(int(seed))
    params = []
    for fi, fo in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / math.sqrt(fi)
        w = (torch.rand(fo, fi, generator=g) * 2 - 1) * bound
        b = (torch.rand(fo, generator=g) * 2 - 1) * bound
        params.append(w.unsqueeze(0).repeat(runs, 1, 1).to(device).requires_grad_(True))
        params.append(b.view(1, fo, 1).repeat(runs, 1, 1).to(device).requires_grad_(True))
    return params


def forward(params: list, x):
    """Logits (K, n, classes) of the K stacked networks (relu) at inputs x (n, d) shared or (K, n, d)."""
    import torch

    K = params[0].shape[0]
    h = x if x.dim() == 3 else x.unsqueeze(0).expand(K, *x.shape)
    last = len(params) // 2 - 1
    for i in range(0, len(params), 2):
        W, b = params[i], params[i + 1]
        h = torch.baddbmm(b.transpose(1, 2), h, W.transpose(1, 2))
        if i // 2 < last:
            h = torch.relu(h)
    return h


class BatchedOptimizer:
    """Adam (torch.optim.Adam's update and defaults, its fused kernel: one pass over each stacked tensor) or
    plain GD on the stacked tensors, in place."""

    def __init__(self, params: list, kind: str, lr: float) -> None:
        import torch

        if kind not in OPTIMIZERS:
            raise ValueError(f"optimizer is one of {', '.join(OPTIMIZERS)}")
        self.params, self.kind, self.lr = params, kind, float(lr)
        self._adam = torch.optim.Adam(params, lr=self.lr, betas=ADAM_BETAS, eps=ADAM_EPS, fused=True) \
            if kind == "adam" else None

    def step(self) -> None:
        import torch

        if self._adam is not None:
            self._adam.step()
            return
        with torch.no_grad():
            for p in self.params:
                p.add_(p.grad, alpha=-self.lr)


def separate_module(params: list, k: int):
    """Run k of the stacked networks as a torch.nn.Sequential of Linear layers (a copy of its weights)."""
    import torch

    layers = []
    for i in range(0, len(params), 2):
        W, b = params[i][k].detach(), params[i + 1][k].detach()
        lin = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            lin.weight.copy_(W)
            lin.bias.copy_(b[:, 0])
        layers += [lin, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


# ---------------------------------------------------------------------------------------------------- the runs
@dataclass
class RLInit:
    fractions: list
    n: int
    n_test: int
    classes: int
    chance: float
    corrupted: list  # per run: how many training labels differ from the true ones
    name: str
    labels: np.ndarray  # (K, n) the training labels of every run, drawn once


@dataclass
class RLStep:
    step: int
    train_acc: np.ndarray  # (K,)
    loss: np.ndarray  # (K,) mean cross-entropy on the (corrupted) training labels
    wnorm: np.ndarray  # (K,) ‖w‖ of all weights and biases
    test_acc: np.ndarray | None  # (K,) on the clean test labels (every eval_every steps)
    fit_step: np.ndarray  # (K,) the first step at 100% training accuracy (-1: not yet)
    init: RLInit | None = None


def check_run(fractions, widths, optimizer: str, lr: float, steps: int) -> None:
    if not 1 <= len(fractions) <= MAX_RUNS:
        raise ValueError(f"one to {MAX_RUNS} corruption fractions")
    if any(not 0.0 <= float(f) <= 1.0 for f in fractions):
        raise ValueError("corruption fractions are between 0 and 1")
    if not 1 <= len(widths) <= 4 or any(not 1 <= int(w) <= MAX_WIDTH for w in widths):
        raise ValueError(f"one to four hidden layers of 1 to {MAX_WIDTH} units")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer is one of {', '.join(OPTIMIZERS)}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError("the learning rate is a positive number")
    if steps < 1:
        raise ValueError("at least one step")


def fit_run(*, data: dict, fractions, widths=(512, 512), optimizer: str = "adam", lr: float = 1e-3,
            steps: int = 1000, eval_every: int = 10, seed: int = 0, device: str = "cpu", stop_at_fit: bool = False):
    """Train one MLP per corruption fraction, batched; yield an ``RLStep`` per step (step 0: at the
    initialization, with ``init``). ``stop_at_fit`` ends once every run fits (after measuring the test there).
    Returns a summary: steps to fit and the last test accuracies."""
    import torch

    fractions = [float(f) for f in fractions]
    widths = [int(w) for w in widths]
    check_run(fractions, widths, optimizer, lr, steps)
    eval_every = max(1, int(eval_every))
    d = make_data(**data)
    K = len(fractions)
    labels = np.stack([corrupt_labels(d.y, f, d.classes, seed + 1000 * k) if f > 0 else d.y
                       for k, f in enumerate(fractions)])
    x = torch.as_tensor(d.x, device=device)
    xt = torch.as_tensor(d.x_test, device=device)
    y = torch.as_tensor(labels, device=device)  # (K, n): fixed for the whole run
    yt = torch.as_tensor(d.y_test, device=device)
    params = init_params([d.x.shape[1], *widths, d.classes], K, seed, device)
    opt = BatchedOptimizer(params, optimizer, lr)
    fit = np.full(K, -1, dtype=np.int64)
    init = RLInit(fractions, d.n, len(d.y_test), d.classes, d.chance,
                  [int((labels[k] != d.y).sum()) for k in range(K)], d.name, labels)
    test_acc = None
    for t in range(steps + 1):
        logits = forward(params, x)
        ce = torch.nn.functional.cross_entropy(logits.reshape(K * d.n, d.classes), y.reshape(-1),
                                               reduction="none").view(K, d.n).mean(1)
        with torch.no_grad():
            acc = (logits.argmax(2) == y).float().mean(1).cpu().numpy()
            wn = torch.sqrt(sum((p.detach() ** 2).sum(dim=(1, 2)) for p in params)).cpu().numpy()
            newly = (fit < 0) & (acc >= 1.0)
            fit[newly] = t
            done = bool(np.all(fit >= 0))
            measure = t % eval_every == 0 or t == steps or newly.any() or (stop_at_fit and done)
            test_acc = None
            if measure:
                test_acc = (forward(params, xt).argmax(2) == yt).float().mean(1).cpu().numpy()
        yield RLStep(t, acc, ce.detach().cpu().numpy(), wn, test_acc, fit.copy(), init if t == 0 else None)
        if t == steps or (stop_at_fit and done):
            break
        for p in params:
            p.grad = None
        ce.sum().backward()
        opt.step()
    return {"fit_step": fit.tolist(), "test_acc": None if test_acc is None else test_acc.tolist()}


def train_to_fit(data: dict, fractions, **kw) -> RLStep:
    """Run ``fit_run`` with ``stop_at_fit`` to the end; the last step (its ``test_acc`` measured)."""
    from collections import deque

    return deque(fit_run(data=data, fractions=fractions, stop_at_fit=True, **kw), maxlen=1)[0]


# ---------------------------------------------------------------------------------------------------- the 2D toy
TOY_EXTENT = 2.0
#: the decision function is drawn over this larger square, so that a panel of any shape up to 2:1 is filled with
#: it around the points' square (the view shows the points' square and what its shape adds)
TOY_DRAWN_EXTENT = 2 * TOY_EXTENT
TOY_PRESETS = ("blobs", "moons", "xor", "ring")


def toy_preset(name: str, n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points (n, 2) in [-TOY_EXTENT, TOY_EXTENT]² and labels 0/1 of a preset."""
    rng = np.random.default_rng([seed, 11])
    if name == "blobs":
        y = np.arange(n) % 2
        x = rng.normal(0, 0.45, (n, 2)) + np.where(y[:, None] == 1, [0.8, 0.6], [-0.8, -0.6])
    elif name == "moons":
        y = np.arange(n) % 2
        t = rng.uniform(0, np.pi, n)
        x = np.where(y[:, None] == 0, np.c_[np.cos(t) - 0.5, np.sin(t) - 0.25],
                     np.c_[0.5 - np.cos(t), 0.25 - np.sin(t)]) * 1.1 + rng.normal(0, 0.08, (n, 2))
    elif name == "xor":
        x = rng.uniform(-1.6, 1.6, (n, 2))
        y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
    elif name == "ring":
        r = np.where(np.arange(n) % 2 == 0, rng.uniform(0.2, 0.7, n), rng.uniform(1.1, 1.6, n))
        t = rng.uniform(0, 2 * np.pi, n)
        x = np.c_[r * np.cos(t), r * np.sin(t)]
        y = (np.arange(n) % 2).astype(np.int64)
    else:
        raise ValueError(f"preset is one of {', '.join(TOY_PRESETS)}")
    return np.clip(x, -TOY_EXTENT * 0.95, TOY_EXTENT * 0.95).astype(np.float32), np.asarray(y, np.int64)


@dataclass
class ToyFit:
    xs: np.ndarray  # (G,) grid coordinates
    values: np.ndarray  # (G, G) the logit f(x, y), row i at ys[i], column j at xs[j]
    pred: np.ndarray  # (n,) predicted classes of the points
    steps: int
    fitted: bool
    loss: float


def fit_toy(points, labels, *, hidden: int = 64, seed: int = 0, lr: float = 0.01, max_steps: int = 3000,
            grid: int = 160) -> ToyFit:
    """Fit a 2-h-h-1 relu MLP by full-batch Adam on the logistic loss until every point is on its label's side
    (and 30 steps more), at most ``max_steps``; its logit on a grid over the drawn square (TOY_DRAWN_EXTENT)."""
    import torch

    x = torch.as_tensor(np.asarray(points, np.float32))
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    if x.ndim != 2 or x.shape[1] != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError("points are (n, 2) with one label each")
    torch.manual_seed(int(seed))
    net = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                              torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    extra, steps, fitted = None, 0, False
    for steps in range(1, max_steps + 1):
        f = net(x)[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(f, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if extra is None and bool(((f > 0).float() == y).all()):
            extra = steps + 30
        if extra is not None and steps >= extra:
            break
    with torch.no_grad():
        f = net(x)[:, 0]
        pred = (f > 0).long().numpy()
        xs = np.linspace(-TOY_DRAWN_EXTENT, TOY_DRAWN_EXTENT, grid, dtype=np.float32)
        gx, gy = np.meshgrid(xs, xs)
        vals = net(torch.as_tensor(np.c_[gx.ravel(), gy.ravel()]))[:, 0].numpy().reshape(grid, grid)
        fitted = bool((pred == np.asarray(labels)).all())
        final = float(torch.nn.functional.binary_cross_entropy_with_logits(f, y))
    return ToyFit(xs, vals, pred, steps, fitted, final)


# ---------------------------------------------------------------------------------------------------- bench
def _rate(step, seconds: float = 0.6, repeats: int = 5) -> float:
    for _ in range(3):
        step()
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            step()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= seconds / repeats and n >= 3:
                break
        rates.append(n / dt)
    return float(np.median(rates))


def step_flops(sizes: list[int], n: int) -> int:
    """Floating-point operations of the matrix products of one full-batch step of an MLP on n points: the
    forward product of every layer, its weight gradient, and the input gradient of every layer but the first
    (the data need none)."""
    prods = [fi * fo for fi, fo in zip(sizes[:-1], sizes[1:])]
    return 2 * n * (3 * sum(prods) - prods[0])


def _gemm_gflops(n: int, k: int, m: int, seconds: float) -> float:
    """This machine's float32 matrix-product rate at the step's largest product (n x k by k x m), GFLOP/s."""
    import torch

    a, b = torch.randn(n, k), torch.randn(k, m)
    return 2 * n * k * m * _rate(lambda: a @ b, seconds) / 1e9


def bench_figures(threads: int = 1, seconds: float = 3.0) -> dict:
    """Steps per second of the MLP 20-512-512-2 on 200 points, full batch, float32, CPU, Adam: one fraction;
    four fractions batched (a step advances all four); the same four as separate nn.Modules stepped one after
    another; and the bound on four: the rate at which this machine's matrix products alone would advance the four
    (their operations at its best float32 product rate, measured in the same run). Medians over five timings.
    One torch thread (a second one stalls next to any busy process)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    sizes = [20, 512, 512, 2]
    try:
        d = make_data("gaussian", n=200, classes=2, n_test=10, data_seed=0)
        x = torch.as_tensor(d.x)
        fr4 = [0.0, 0.25, 0.5, 1.0]
        ys = torch.as_tensor(np.stack([corrupt_labels(d.y, f, 2, k) for k, f in enumerate(fr4)]))

        def batched(K):
            params = init_params(sizes, K, 0)
            opt = BatchedOptimizer(params, "adam", 1e-3)
            y = ys[:K]

            def step():
                logits = forward(params, x)
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 2), y.reshape(-1),
                                                         reduction="none").view(K, -1).mean(1).sum()
                for p in params:
                    p.grad = None
                loss.backward()
                opt.step()
            return step

        params = init_params(sizes, 4, 0)
        mods = [separate_module(params, k) for k in range(4)]
        opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in mods]

        def separate():
            for k, (m, o) in enumerate(zip(mods, opts)):
                loss = torch.nn.functional.cross_entropy(m(x), ys[k])
                o.zero_grad()
                loss.backward()
                o.step()

        per = seconds / 4
        gflops = _gemm_gflops(len(x), sizes[1], sizes[2], per) * threads
        return {"random_labels_steps_per_s": _rate(batched(1), per),
                "random_labels_4fractions_steps_per_s": _rate(batched(4), per),
                "random_labels_4separate_steps_per_s": _rate(separate, per),
                "random_labels_4_bound_steps_per_s": gflops * 1e9 / (4 * step_flops(sizes, len(x)))}
    finally:
        torch.set_num_threads(before)
