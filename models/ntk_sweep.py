"""The ntk lab's engine: several widths of one network family trained at once, with everything lazy training
predicts measured along the way (THEORY.md sections 2 and 3). No Qt; torch is imported inside the functions
(building the lab imports none).

Sum loss throughout: L(w) = 1/2 ||F(w) - y||^2 / alpha^2 with F = g(w) (plain) or F = alpha (g(w) - g(w0))
(scaled, lazy versus rich). In both, function space moves as F_{t+1} - F_t ~ -eta K (F_t - y) with K the tangent
kernel of g, so the linearized model at w0 after t steps has the training residual (I - eta K0)^t (F0 - y) and
predicts elsewhere by kernel regression (``models.ntk.kernel_prediction``): that is GD on the linearization
f_lin(w) = F(w0) + DF(w0)(w - w0), exactly, not an approximation of it.

``sweep_run`` is the trainer generator: one ``SweepStep`` per GD step (every width advanced once), with a
``SweepMetrics`` every ``metric_every`` steps (and at the first and the last step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .limits import MEMORY_CAP_BYTES, LimitError, human_bytes

#: widths the lab offers: powers of two on a log scale
WIDTH_CHOICES = tuple(2**k for k in range(4, 14))  # 16 .. 8192
MIN_POINTS, MAX_POINTS = 10, 64
N_TEST = 128  # the held-out test grid (and the domain the functions are drawn on)
DRAW_SLOTS = 64  # a hand-drawn curve: heights at this many evenly spaced x in the 1D domain
DOMAIN_1D = (-2.0, 2.0)
#: the Monte-Carlo stand-in for the infinite-width kernel of activations without a closed form
MC_WIDTH, MC_SEEDS = 2048, 8
#: a width whose loss exceeds this times its first loss (or is not finite) has diverged. A catapult (a step above
#: 2/lambda_max that the kernel then shrinks under) peaks near 1e3 times; past 1e4 relu nets were seen to blow up
#: or die (every unit off: the constant predictor), so they count as diverged
DIVERGED_FACTOR = 1e4
#: steps between two host synchronizations of the width sweep on a CUDA device (models.train's reasons)
CUDA_SYNC_EVERY = 64

CIRCLE_TARGETS = {
    "sin1": ("sin θ", lambda t: np.sin(t)),
    "sin2": ("sin 2θ", lambda t: np.sin(2 * t)),
    "mix": ("sin θ + ½ cos 3θ + ¼ sin 6θ", lambda t: np.sin(t) + 0.5 * np.cos(3 * t) + 0.25 * np.sin(6 * t)),
    "bump": ("exp(cos θ) − 1.27", lambda t: np.exp(np.cos(t)) - 1.2661),
}
LINE_TARGETS = {
    "sin": ("sin(1.5 x)", lambda x: np.sin(1.5 * x)),
    "cubic": ("x³/4 − x/2", lambda x: x**3 / 4 - x / 2),
    "abs": ("|x| − 1", lambda x: np.abs(x) - 1),
    "tanh": ("tanh(3x)", lambda x: np.tanh(3 * x)),
}


def default_drawn() -> list[float]:
    """The hand-drawn curve a new lab starts with: a smooth wave, ready to be redrawn."""
    xs = np.linspace(*DOMAIN_1D, DRAW_SLOTS)
    return [round(float(v), 3) for v in 0.8 * np.sin(1.7 * xs) + 0.3 * np.cos(4.1 * xs)]


@dataclass(frozen=True)
class SweepData:
    """Training inputs x (n, d) and targets y (n,), the test grid, and the 1D coordinate each is drawn at."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    axis: np.ndarray  # (n,) the angle θ or the coordinate x of each training point
    axis_test: np.ndarray
    axis_label: str
    target_label: str

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def in_dim(self) -> int:
        return self.x.shape[1]


def make_data(kind: str, target: str, n: int, seed: int = 0, noise: float = 0.0,
              drawn: list | tuple | None = None) -> SweepData:
    """The regression set: 'circle' (n points on the unit circle, a target of the angle), 'line' (n points in
    the 1D domain, a target function) or 'drawn' (n points on a hand-drawn curve). Training points are evenly
    spaced with a small seeded jitter; the test grid is ``N_TEST`` evenly spaced points of the same domain."""
    n = int(n)
    if not MIN_POINTS <= n <= MAX_POINTS:
        raise ValueError(f"the lab fits {MIN_POINTS} to {MAX_POINTS} points, not {n}")
    rng = np.random.default_rng(int(seed))
    if kind == "circle":
        if target not in CIRCLE_TARGETS:
            raise ValueError(f"unknown circle target '{target}'; choose one of {', '.join(CIRCLE_TARGETS)}")
        label, fn = CIRCLE_TARGETS[target]
        t = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * math.pi / n
        tt = (np.arange(N_TEST) + 0.5) * 2 * math.pi / N_TEST
        x, xt = np.stack([np.cos(t), np.sin(t)], 1), np.stack([np.cos(tt), np.sin(tt)], 1)
        y, yt = fn(t), fn(tt)
        axis_label = "θ (angle on the circle)"
    elif kind in ("line", "drawn"):
        lo, hi = DOMAIN_1D
        step = (hi - lo) / (n - 1)
        t = np.clip(np.linspace(lo, hi, n) + rng.uniform(-0.25, 0.25, n) * step, lo, hi)
        tt = np.linspace(lo, hi, N_TEST)
        if kind == "line":
            if target not in LINE_TARGETS:
                raise ValueError(f"unknown 1D target '{target}'; choose one of {', '.join(LINE_TARGETS)}")
            label, fn = LINE_TARGETS[target]
        else:
            heights = np.asarray(drawn if drawn is not None else default_drawn(), dtype=np.float64)
            if heights.shape != (DRAW_SLOTS,) or not np.all(np.isfinite(heights)):
                raise ValueError(f"a drawn curve is {DRAW_SLOTS} finite heights")
            slots = np.linspace(lo, hi, DRAW_SLOTS)
            label = "the curve drawn by hand"

            def fn(z):
                return np.interp(z, slots, heights)
        x, xt = t[:, None], tt[:, None]
        y, yt = fn(t), fn(tt)
        axis_label = "x"
    else:
        raise ValueError(f"unknown data '{kind}': circle, line or drawn")
    if noise:
        y = y + float(noise) * rng.standard_normal(n)
    return SweepData(x, np.asarray(y, float), xt, np.asarray(yt, float), t, tt, axis_label, label)


def param_count(in_dim: int, width: int, depth: int) -> int:
    w = [in_dim, *[width] * depth, 1]
    return sum(w[k] * w[k + 1] + w[k + 1] for k in range(len(w) - 1))


def sweep_bytes(widths, depth: int, in_dim: int, n: int, dtype_bytes: int = 4) -> int:
    """Memory the sweep needs, estimated before anything is allocated: per width the weights, their start and
    their gradient, the activations of the training and test points, and its kernels."""
    pts = n + N_TEST
    total = 0
    for m in widths:
        total += 3 * dtype_bytes * param_count(in_dim, m, depth)
        total += 4 * dtype_bytes * pts * m * depth + 16 * pts * pts
    return total


def check_sweep(widths, depth: int, in_dim: int, n: int) -> None:
    """LimitError (in words) when the sweep would not fit under the app's memory cap."""
    need = sweep_bytes(widths, depth, in_dim, n)
    if need > MEMORY_CAP_BYTES:
        big = max(widths)
        raise LimitError(f"the width sweep needs about {human_bytes(need)} (width {big} at depth {depth} alone "
                         f"{human_bytes(sweep_bytes([big], depth, in_dim, n))}), more than the "
                         f"{human_bytes(MEMORY_CAP_BYTES)} allowed: drop the widest widths or lower the depth")


def loglog_slope(xs, ys) -> float | None:
    """Least-squares slope of log y against log x over the finite positive pairs (None with fewer than two)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    ok = np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0)
    if ok.sum() < 2 or np.ptp(np.log(xs[ok])) == 0:
        return None
    return float(np.polyfit(np.log(xs[ok]), np.log(ys[ok]), 1)[0])


@dataclass
class SweepInit:
    """What is fixed for a run, sent once with its first step: per width its kernel at w0 (train x train), that
    kernel's eigenvalues and eigenvectors, F at w0 on the training and test points, the step size, and the
    infinite-width kernel (None in the standard parameterization, which has no finite limit)."""

    widths: list
    etas: list
    K0: np.ndarray  # (W, n, n) float32
    eig: np.ndarray  # (W, n) descending
    vec: np.ndarray  # (W, n, n) columns are eigenvectors, descending order
    f0: np.ndarray  # (W, n)
    f0_test: np.ndarray  # (W, T)
    params: list  # p per width
    limits: list  # 2 / lambda_max(K0) per width
    K_inf: np.ndarray | None = None  # (n, n) float64
    eig_inf: np.ndarray | None = None
    inf_label: str = ""
    dist_inf: np.ndarray | None = None  # (W,) ||K0 - K_inf||_F / ||K_inf||_F
    #: c in the loss's own kernel c K (1 for the sum loss, 1/n for the mean): GD moves F by -eta c K (F - y), PL*
    #: holds with mu = c lambda_min(K), and the step is stable while eta < 2 / (c lambda_max(K)) (``limits``)
    kernel_scale: float = 1.0
    loss_norm: str = "sum"
    hessian_every: int = 0  # the sharpness and the model Hessian are measured every this many steps (0: never)


@dataclass
class SweepMetrics:
    """Measured every ``metric_every`` steps, per width (axis 0): the test loss, the relative weight and kernel
    changes, the network's gap to its linearization on the test grid (RMS of f - f_lin over RMS of the test
    targets), both functions on the test grid, the residual along K0's eigenvectors (descending), the kernel now,
    and the infinite-width kernel model's prediction at the same step."""

    test_loss: np.ndarray
    wchange: np.ndarray
    kchange: np.ndarray
    gap: np.ndarray
    f_test: np.ndarray  # (W, T) float32
    lin_test: np.ndarray  # (W, T) float32
    lin_train: np.ndarray  # (W, n) the linearization at the training inputs
    coef: np.ndarray  # (W, n)
    K: np.ndarray  # (W, n, n) float32
    inf_test: np.ndarray | None = None  # (T,)
    inf_train: np.ndarray | None = None  # (n,)
    # conditioning (THEORY.md section 2): the extreme eigenvalues of K(w_t), ||grad L(w_t)||^2 (from the gradient
    # GD takes at this step), the distance ||w_t - w_0||
    lam_min: np.ndarray | None = None
    lam_max: np.ndarray | None = None
    grad_sq: np.ndarray | None = None
    wdist: np.ndarray | None = None
    # every ``hessian_every`` steps (NaN between): the sharpness lambda_max of the loss's Hessian by warm-started
    # power iteration (and the products it took), and the norm of the network's own Hessian: the largest
    # |eigenvalue| of the Hessian of g(x) in w, over three training inputs (first, middle, last)
    sharpness: np.ndarray | None = None
    hess_iters: np.ndarray | None = None
    model_hess: np.ndarray | None = None
    loss: np.ndarray | None = None  # the training loss at this step (as in the step's snapshot)


@dataclass
class SweepStep:
    """One GD step of every width: its training loss (sum loss / alpha^2), its outputs F at the training inputs
    (the output-space paths), which widths have diverged (and at which step); ``metrics`` every
    ``metric_every`` steps, ``init`` once."""

    step: int
    loss: np.ndarray
    out: np.ndarray  # (W, n) float32
    diverged: np.ndarray  # (W,) bool
    metrics: SweepMetrics | None = None
    init: SweepInit | None = None
    diverged_at: dict = field(default_factory=dict)  # width index -> step it diverged at (new ones only)


class LinearModel:
    """GD on the sum loss with the kernel K fixed, solved once in K's eigenbasis: ``at(t)`` gives the training
    outputs y + (I - eta K)^t (f0 - y) and the test outputs by kernel regression (``ntk.kernel_prediction``'s
    formula, its eigen-decomposition kept), O(n^2 + T n) per call."""

    def __init__(self, K, K_test_train, f0, f0_test, y, eta: float) -> None:
        K = np.asarray(K, np.float64)
        self.lam, self.U = np.linalg.eigh(0.5 * (K + K.T))
        self.y = np.asarray(y, np.float64)
        self.c = self.U.T @ (np.asarray(f0, np.float64) - self.y)
        self.KxU = np.asarray(K_test_train, np.float64) @ self.U
        self.f0_test = np.asarray(f0_test, np.float64)
        self.eta = float(eta)

    def at(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        return linear_models_at([self], t)[0]


def linear_models_at(models, t: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``LinearModel.at(t)`` of several models, their eigen-factors (1 - eta lam)^t and
    sum_{s<t} eta (1 - eta lam)^s computed in one elementwise pass (``ntk._eig_factors`` on eta lam with unit
    step: the same powers, and the geometric sum times eta), then one small product per model."""
    import torch

    from .ntk import _eig_factors

    lam = torch.as_tensor(np.concatenate([m.eta * m.lam for m in models]))
    pw, geo = _eig_factors(lam, 1.0, torch.tensor([float(t)], dtype=torch.float64))
    pw, geo = pw[0].numpy(), geo[0].numpy()
    out, i = [], 0
    for m in models:
        j = i + len(m.lam)
        out.append((m.y + m.U @ (pw[i:j] * m.c), m.f0_test - m.KxU @ (geo[i:j] * (m.eta * m.c))))
        i = j
    return out


_INPLACE_ACT = {"relu": "relu_", "tanh": "tanh_", "erf": "erf_"}


def _forward_nograd(net, a):
    """``net(a)`` under no_grad with the same operations in the same order (so the same numbers, bit for bit),
    done in place on one buffer a layer: the test grid's forward at wide widths without the temporaries."""
    import torch

    from .ntk import _act

    act = net.spec.activation
    last = len(net.weights) - 1
    with torch.no_grad():
        for k in range(last + 1):
            z = (a @ net.weights[k].T).mul_(net.scale(k)).add_(net.biases[k])
            if k < last:
                z = getattr(z, _INPLACE_ACT[act])() if act in _INPLACE_ACT else _act(act, z)
            a = z
    return a[..., 0]


def step_sizes(widths, eta: float, scaling: str) -> list[float]:
    """eta for every width ('fixed'), or eta * m_min / m ('width': the standard parameterization's 1/width)."""
    if scaling == "width":
        m0 = min(widths)
        return [float(eta) * m0 / m for m in widths]
    return [float(eta)] * len(widths)


def infinite_kernel(x_all: np.ndarray, depth: int, activation: str, parameterization: str, seed: int = 0):
    """(K_inf on x_all, label): the analytic relu NTK, a Monte-Carlo mean at ``MC_WIDTH`` for the other
    activations, (None, reason) in the standard parameterization."""
    import torch

    from . import ntk

    if parameterization != "ntk":
        return None, "no infinite-width limit in the standard parameterization: K grows like the width"
    if activation == "relu":
        _, theta = ntk.analytic_relu_ntk(torch.as_tensor(x_all), depth)
        return theta.numpy(), "analytic relu NTK (arc-cosine recursion)"
    spec = ntk.NTKSpec(x_all.shape[1], MC_WIDTH, depth, activation, "ntk", torch.float64)
    mean, _err = ntk.mc_ntk(spec, torch.as_tensor(x_all), [10_000 + seed * 100 + s for s in range(MC_SEEDS)])
    return mean.numpy(), f"Monte-Carlo mean of {MC_SEEDS} kernels at width {MC_WIDTH} (no closed form for {activation})"


def _deferred_steps(W, n, steps, k_sync, dev, x, y, c, a, nets, params, outputs, diverged, first_loss, last_loss,
                    due, sync_step, apply, init):
    """``sweep_run``'s steps with one host synchronization per ``k_sync`` steps, or per metric step (the CUDA
    path; the module's notes): between two of them every width's loss, outputs and divergence are kept on the
    device (divergence a mask there; a diverged width's steps are masked to zero), and their snapshots come to
    the host in one copy. The snapshots equal the per-step path's. ``diverged``, ``first_loss`` and
    ``last_loss`` are the host's arrays, brought up to date at every synchronization."""
    import torch

    f64 = torch.float64
    nan_row = torch.full((n,), float("nan"), dtype=f64, device=dev)
    first = [None] * W
    last, dead = [], []
    pending = []  # (step, losses (W,), outputs (W, n), dead (W,)) on the device

    def from_host() -> None:  # the device's copies of the host's state (after a step measured on the host)
        first[:] = [None if v is None else torch.tensor(v, dtype=f64, device=dev) for v in first_loss]
        last[:] = [torch.tensor(float(v), dtype=f64, device=dev) for v in last_loss]
        dead[:] = [torch.tensor(bool(v), device=dev) for v in diverged]

    def device_step(t: int) -> None:
        losses_t, outs_t, grads = [], [], {}
        for k in range(W):
            if diverged[k]:  # known on the host since the last synchronization: not evaluated any more
                losses_t.append(last[k])
                outs_t.append(nan_row)
                continue
            nets[k].zero_grad(set_to_none=True)
            f = outputs(k, x)
            lk = 0.5 * ((f - y) ** 2).sum() * (c / a**2)
            val = lk.detach().to(f64)
            if first[k] is None:
                first[k] = val.clamp_min(1e-12)
            was = dead[k]
            newly = ~was & (~torch.isfinite(val) | (val > DIVERGED_FACTOR * first[k].clamp_min(1.0)))
            losses_t.append(torch.where(was, last[k], val))
            outs_t.append(torch.where(was, nan_row, f.detach().to(f64)))
            last[k] = torch.where(was | newly, last[k], val)
            dead[k] = was | newly
            if t < steps:
                grads[k] = torch.autograd.grad(lk, params[k])
        pending.append((t, torch.stack(losses_t), torch.stack(outs_t), torch.stack(dead)))
        apply(grads, dead)

    def flush():
        if not pending:
            return
        have = [k for k in range(W) if first[k] is not None]
        packed = torch.cat([torch.cat([lo, o.reshape(-1), d.to(f64)]) for _, lo, o, d in pending] +
                           [torch.stack([first[k] for k in have] + last)])
        host = _to_host(packed)
        steps_done = [t for t, *_ in pending]
        pending.clear()
        row = W + W * n + W
        for j, t in enumerate(steps_done):
            r = host[j * row:(j + 1) * row]
            now = r[W + W * n:] > 0.5
            new_div = {k: t for k in range(W) if now[k] and not diverged[k]}
            diverged[:] = now
            snap = SweepStep(t, r[:W].copy(), r[W:W + W * n].reshape(W, n).astype(np.float32), now.copy(),
                             diverged_at=new_div)
            if t == 0:
                snap.init = init
            yield snap
        tail = host[len(steps_done) * row:]
        for i, k in enumerate(have):
            first_loss[k] = float(tail[i])
        last_loss[:] = tail[len(have):]

    from_host()
    t = 0
    while True:
        if due(t):
            yield from flush()
            snap, grads = sync_step(t)
            yield snap
            if t == steps:
                return
            apply(grads)
            from_host()
        else:
            device_step(t)
            if t == steps or len(pending) >= k_sync:
                yield from flush()
            if t == steps:
                return
        t += 1


def _to_host(t):
    """The deferred sweep's one device-to-host copy per synchronization (the tests count its calls)."""
    return t.cpu().numpy()


def sweep_run(*, data: dict, widths, depth: int = 1, activation: str = "relu", parameterization: str = "ntk",
              eta: float = 0.01, step_scaling: str = "fixed", output: str = "plain", alpha: float = 1.0,
              steps: int = 1000, metric_every: int = 10, seed: int = 0, metrics: bool = True, device: str = "cpu",
              loss_norm: str = "sum", run_etas=None, hessian_every: int = 0, hessian_iters: int = 20,
              sync_every: int | None = None):
    """Train every width by full-batch GD at once; yield a ``SweepStep`` per step (see the module's docstring).

    ``data`` holds ``make_data``'s arguments. ``metrics=False`` measures only the training loss and the path
    outputs (the bench's bare rate). ``loss_norm`` 'mean' divides the loss by n (the edge-of-stability paper's
    loss). ``run_etas`` gives every run its own step size (then widths may repeat: one width, several steps).
    ``hessian_every`` > 0 measures the sharpness and the model Hessian every that many steps, by power iteration
    warm-started from the last vector (at most ``hessian_iters`` products, 50 the first time). ``sync_every``:
    steps between two host synchronizations (None: CUDA_SYNC_EVERY on a CUDA device, else 1; a metric step is
    always measured on the host). Returns a summary: final losses, diverged widths."""
    import torch

    from . import ntk

    widths = [int(m) for m in widths]
    if run_etas is None:
        if not widths or len(set(widths)) != len(widths):
            raise ValueError("give one or more distinct widths")
    else:
        run_etas = [float(e) for e in run_etas]
        if len(run_etas) != len(widths) or not widths:
            raise ValueError("one step size per run")
        if not all(math.isfinite(e) and e > 0 for e in run_etas):
            raise ValueError("every step size must be a positive number")
    if loss_norm not in ("sum", "mean"):
        raise ValueError("loss_norm must be 'sum' or 'mean'")
    if hessian_every < 0 or hessian_iters < 1:
        raise ValueError("hessian_every must be 0 or more and hessian_iters at least 1")
    if steps < 1 or metric_every < 1:
        raise ValueError("steps and metric_every must be at least 1")
    if not (math.isfinite(eta) and eta > 0):
        raise ValueError("the step size must be a positive number")
    if output not in ("plain", "scaled"):
        raise ValueError("output must be 'plain' or 'scaled'")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError("alpha must be a positive number")
    d = make_data(**data)
    n, T = d.n, len(d.y_test)
    check_sweep(widths, depth, d.in_dim, n)
    dev = torch.device(device)
    dt = torch.float32
    x = torch.as_tensor(d.x, dtype=dt, device=dev)
    y = torch.as_tensor(d.y, dtype=dt, device=dev)
    xt = torch.as_tensor(d.x_test, dtype=dt, device=dev)
    x_all = torch.cat([x, xt])
    scaled = output == "scaled"
    a = float(alpha) if scaled else 1.0
    etas = step_sizes(widths, eta, step_scaling) if run_etas is None else run_etas
    c = 1.0 / n if loss_norm == "mean" else 1.0  # the loss's kernel is c K
    W = len(widths)
    nets, params, w0s, g0, g0t = [], [], [], [], []
    for m in widths:
        spec = ntk.NTKSpec(d.in_dim, m, depth, activation, parameterization, dt)
        net = ntk.NTKNet(spec, seed=seed).to(dev)
        nets.append(net)
        params.append(list(net.parameters()))
        w0s.append([p.detach().clone() for p in params[-1]])
        with torch.no_grad():  # the same calls as ``outputs`` makes, so that scaled outputs start at exactly 0
            g0.append(net(x))
            g0t.append(net(xt))

    def outputs(k, pts, test=False):
        g = nets[k](pts)
        if scaled:
            g = a * (g - (g0t[k] if test else g0[k]))
        return g

    # the kernels at w0, their eigen-decompositions and the linearized models' ingredients
    K0, eig, vec, Kx0, f0, f0t, limits = [], [], [], [], [], [], []
    for k in range(W):
        Kall = ntk.empirical_ntk(nets[k], x_all).double().cpu().numpy()
        Kk = 0.5 * (Kall[:n, :n] + Kall[:n, :n].T)
        lam, U = np.linalg.eigh(Kk)
        K0.append(Kk)
        eig.append(lam[::-1].copy())
        vec.append(U[:, ::-1].copy())
        Kx0.append(Kall[n:, :n])
        f0.append(np.zeros(n) if scaled else g0[k].double().cpu().numpy())
        f0t.append(np.zeros(T) if scaled else g0t[k].double().cpu().numpy())
        limits.append(2.0 / max(c * float(lam[-1]), 1e-300))
    K_inf, inf_label = infinite_kernel(np.concatenate([d.x, d.x_test]), depth, activation, parameterization, seed)
    init = SweepInit(widths, etas, np.asarray(K0, np.float32), np.asarray(eig), np.asarray(vec), np.asarray(f0),
                     np.asarray(f0t, np.float32), [param_count(d.in_dim, m, depth) for m in widths], limits,
                     inf_label=inf_label, kernel_scale=c, loss_norm=loss_norm, hessian_every=int(hessian_every))
    # (function space moves by eta c K: the kernel models take the step eta c)
    lins = [LinearModel(K0[k], Kx0[k], f0[k], f0t[k], d.y, etas[k] * c) for k in range(W)]
    inf_lin = None
    if K_inf is not None:
        inf_train = K_inf[:n, :n]
        inf_lin = LinearModel(inf_train, K_inf[n:, :n], np.zeros(n), np.zeros(T), d.y, float(etas[0]) * c)
        init.K_inf = inf_train
        init.eig_inf = np.linalg.eigvalsh(inf_train)[::-1].copy()
        nrm = np.linalg.norm(inf_train)
        init.dist_inf = np.array([np.linalg.norm(K0[k] - inf_train) / nrm for k in range(W)])
    y_np = d.y
    K0_norm = [np.linalg.norm(K) for K in K0]
    w0_norm = [math.sqrt(sum(float((p.double() ** 2).sum()) for p in w)) for w in w0s]
    yt_rms = max(float(np.sqrt(np.mean(d.y_test**2))), 1e-12)
    diverged = np.zeros(W, bool)
    first_loss = [None] * W
    last_loss = np.zeros(W)
    from . import hessian

    sharp_vec = [None] * W  # the last top eigenvectors: the next estimate starts there
    model_vec = [[None] * 3 for _ in range(W)]
    hess_points = sorted({0, n // 2, n - 1})

    def loss_of(k):
        return lambda: 0.5 * ((outputs(k, x) - y) ** 2).sum() * (c / a**2)

    def top_eig(fn, k, v, square=False):
        # (the same start for runs of the same width: two step sizes of one network start identically)
        cold = v is None
        if cold:
            v = hessian.random_vector(params[k], torch.Generator().manual_seed(seed * 100_003 + widths[k]))
        hvp = hessian.hvp_fn(fn, params[k])
        if square:  # the largest |eigenvalue| of an indefinite Hessian (+-lambda pairs): iterate on H^2
            lam2, v, used = hessian.power_iteration(lambda u: hvp(hvp(u)), v, 50 if cold else hessian_iters, 1e-3)
            return math.sqrt(max(lam2, 0.0)), v, 2 * used
        return hessian.power_iteration(hvp, v, 50 if cold else hessian_iters, 1e-3)

    def measure(t: int, f_now: dict, grad_sq: dict) -> SweepMetrics:
        # f_now: width index -> its outputs at the training inputs from this step's forward pass (at w_t)
        tl, wc, kc, gap = (np.full(W, np.nan) for _ in range(4))
        ft = np.full((W, T), np.nan, np.float32)
        lt = np.full((W, T), np.nan, np.float32)
        l3 = np.full((W, n), np.nan)
        coef = np.full((W, n), np.nan)
        Ks = np.full((W, n, n), np.nan, np.float32)
        lmin, lmax, gsq, wd, sharp, iters, mh = (np.full(W, np.nan) for _ in range(7))
        hess_due = hessian_every > 0 and t % hessian_every == 0
        lin_now = linear_models_at(lins + ([inf_lin] if inf_lin is not None else []), t)
        for k in range(W):
            f_lin, lin = lin_now[k]
            with np.errstate(over="ignore", invalid="ignore"):
                lt[k] = np.where(np.isfinite(lin), lin, np.nan)
            l3[k] = f_lin
            if diverged[k]:
                continue
            with torch.no_grad():
                f_tr = f_now[k].detach().double().cpu().numpy()
                g = _forward_nograd(nets[k], xt)
                f_te = (a * (g - g0t[k]) if scaled else g).double().cpu().numpy()
                # ||w_t - w_0||: the blocks' norms (float32), combined in float64
                blocks = torch._foreach_norm(torch._foreach_sub(params[k], w0s[k]))
                dw = float(torch.linalg.vector_norm(torch.stack(blocks).double()))
            Kt = ntk.empirical_ntk(nets[k], x).double().cpu().numpy()
            tl[k] = 0.5 * float(np.sum((f_te - d.y_test) ** 2)) * n / T * (c / a**2)
            wc[k] = dw / w0_norm[k]
            kc[k] = float(np.linalg.norm(Kt - K0[k])) / K0_norm[k]
            gap[k] = float(np.sqrt(np.mean((f_te - lin) ** 2))) / yt_rms
            ft[k] = f_te
            coef[k] = vec[k].T @ (f_tr - y_np)
            Ks[k] = Kt
            ev = np.linalg.eigvalsh(0.5 * (Kt + Kt.T))
            lmin[k], lmax[k] = ev[0], ev[-1]
            gsq[k], wd[k] = grad_sq[k], dw
            if hess_due:
                sharp[k], sharp_vec[k], iters[k] = top_eig(loss_of(k), k, sharp_vec[k])
                norms = []
                for j, i in enumerate(hess_points):
                    lam_j, model_vec[k][j], _ = top_eig(lambda i=i, k=k: nets[k](x[i:i + 1])[0], k, model_vec[k][j],
                                                        square=True)
                    norms.append(lam_j)
                mh[k] = max(norms)
        m = SweepMetrics(tl, wc, kc, gap, ft, lt, l3, coef, Ks, lam_min=lmin, lam_max=lmax, grad_sq=gsq, wdist=wd,
                         sharpness=sharp, hess_iters=iters, model_hess=mh)
        if inf_lin is not None:
            m.inf_train, m.inf_test = lin_now[W]
        return m

    def due(t: int) -> bool:  # a step whose snapshot carries metrics (measured on the host)
        return metrics and (t % metric_every == 0 or t == steps or bool(hessian_every and t % hessian_every == 0))

    def sync_step(t: int):
        """Step t's snapshot, its values read on the host, and its gradients (None: no step follows)."""
        loss = np.full(W, np.nan)
        out = np.full((W, n), np.nan, np.float32)
        new_div = {}
        losses = []
        for k in range(W):
            if diverged[k]:
                loss[k] = last_loss[k]
                continue
            net = nets[k]
            net.zero_grad(set_to_none=True)
            f = outputs(k, x)
            lk = 0.5 * ((f - y) ** 2).sum() * (c / a**2)
            losses.append((k, lk, f))
        for k, lk, f in losses:
            val = float(lk.detach())
            out[k] = f.detach().cpu().numpy()
            loss[k] = val
            if first_loss[k] is None:
                first_loss[k] = max(val, 1e-12)
            if not math.isfinite(val) or val > DIVERGED_FACTOR * max(first_loss[k], 1.0):
                diverged[k] = True
                new_div[k] = t
                continue
            last_loss[k] = val
        snap = SweepStep(t, loss, out, diverged.copy(), diverged_at=new_div)
        if t == 0:
            snap.init = init
        # this step's gradients, before the snapshot (the PL ratio reads their norm), taken after it
        grads = {k: torch.autograd.grad(lk, params[k]) for k, lk, _f in losses if not diverged[k] and t < steps}
        if due(t):
            gsq = {k: float(sum(float((g.double() ** 2).sum()) for g in gk)) for k, gk in grads.items()}
            if t == steps:  # (no step follows the last snapshot: its gradient only for the PL ratio)
                gsq = {k: float(sum(float((g.double() ** 2).sum()) for g in torch.autograd.grad(lk, params[k])))
                       for k, lk, _f in losses if not diverged[k]}
            snap.metrics = measure(t, {k: f for k, _lk, f in losses}, gsq)
            snap.metrics.loss = loss.copy()
        return snap, grads

    def apply(grads: dict, dead=None) -> None:
        with torch.no_grad():
            for k, grads_k in grads.items():
                for p, g in zip(params[k], grads_k):
                    p.sub_(g if dead is None else torch.where(dead[k], torch.zeros_like(g), g), alpha=etas[k])

    k_sync = int(sync_every) if sync_every is not None else (CUDA_SYNC_EVERY if dev.type == "cuda" else 1)
    if k_sync < 1:
        raise ValueError("sync_every must be at least 1")
    if k_sync == 1:
        for t in range(steps + 1):
            snap, grads = sync_step(t)
            yield snap
            if t == steps:
                break
            apply(grads)
    else:
        yield from _deferred_steps(W, n, steps, k_sync, dev, x, y, c, a, nets, params, outputs, diverged, first_loss,
                                   last_loss, due, sync_step, apply, init)
    return {"loss": last_loss.tolist(), "diverged": [widths[k] for k in range(W) if diverged[k]],
            "steps": steps}
