"""The trainer: a generator that yields one snapshot per optimization step.

Any number of trajectories run side by side in one tensor of parameters (N, p); each trajectory's loss
depends only on its own row, so summing the per-trajectory losses gives every row its own gradient.
Being a generator, a run can be paused, single-stepped and cancelled between yields by whoever drives it.

On a GPU a host synchronization per step costs more than the step of a small model (measured on an H200: 1006
steps/s on cuda against 3831 on the CPU for one trajectory). There the trainer runs ``sync_every`` steps on the
device between two synchronizations: divergence and convergence are checked on the device with masks (no
branch reads a device value), each step's snapshot is kept on the device, and the k snapshots are copied to the
host in one transfer (``_to_host``, the only place the deferred path reads the device) and yielded one by one.
The snapshots are the same as those of the per-step path.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
import torch

from .trajectory import Snapshot, SnapshotBatch  # noqa: F401 (SnapshotBatch: the trainer's batches, for callers)

OPTIMIZERS = {
    "gd": "gradient descent (full batch)",
    "sgd": "SGD (mini-batches)",
    "momentum": "heavy-ball momentum",
    "adam": "Adam",
}


def check_step_size(value, what: str = "learning rate") -> float:
    """``value`` as a float if it is a positive finite number, else a ValueError that names ``what`` and the value.

    Every trainer in models/ calls this before it starts: a NaN, infinite, zero or negative step would otherwise
    surface later as 'diverged at step 1', a frozen run or an SVD that does not converge.
    """
    bad = ValueError(f"{what} must be a positive finite number, got {value!r}")
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise bad
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise bad from None
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{what} must be a positive finite number, got {v:g}")
    return v


@dataclass(frozen=True)
class OptimizerConfig:
    """Which optimizer, with its hyper-parameters. ``batch_size`` None means the full data."""

    name: str = "gd"
    lr: float = 0.05
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer '{self.name}'; choose one of {', '.join(OPTIMIZERS)}")
        check_step_size(self.lr)
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("the batch size must be at least 1")

    def build(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        if self.name in ("gd", "sgd"):
            return torch.optim.SGD(params, lr=self.lr)
        if self.name == "momentum":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)
        return torch.optim.Adam(params, lr=self.lr, betas=self.betas)


@dataclass
class RunResult:
    """How a run ended: 'completed' (step budget used), 'converged', 'diverged' or 'cancelled'."""

    reason: str
    steps: int
    message: str
    diverged: np.ndarray


LossFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]

#: torch.optim.Adam's default
ADAM_EPS = 1e-8
#: steps between two host synchronizations on a CUDA device (the CPU syncs every step: it costs nothing there)
CUDA_SYNC_EVERY = 64


def resolve_device(name: str | None) -> torch.device:
    """'auto' or None picks cuda:0 when available, else the CPU; a named device is checked."""
    if name in (None, "auto"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name} is not available on this machine (no CUDA)")
    return dev


def available_devices() -> list[str]:
    """The compute devices this process can use, best first."""
    devs = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return devs + ["cpu"]


def train(loss_fn: LossFn, w0, n_data: int, config: OptimizerConfig, steps: int, *,
          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64, seed: int = 0,
          grad_tol: float = 1e-13, metrics: Callable[[torch.Tensor], dict] | None = None,
          sync_every: int | None = None) -> Generator[Snapshot, None, RunResult]:
    """Run ``steps`` optimizer steps from ``w0`` (N, p), yielding a Snapshot after each (and one at step 0).

    ``loss_fn(w, idx)`` returns the loss of each row of ``w`` on the data points ``idx`` (None: all of them);
    with mini-batches it is rescaled by n/b so that it estimates the full loss. A trajectory whose loss or
    parameters stop being finite is frozen at its last finite point and flagged as diverged; one whose
    gradient norm falls under ``grad_tol`` has converged and is frozen too.

    ``sync_every``: steps run on the device between two host synchronizations (None: CUDA_SYNC_EVERY on a CUDA
    device, else 1); ``metrics`` (a host-side callback per snapshot) needs 1.
    """
    dev = torch.device(device)
    k = int(sync_every) if sync_every is not None else (CUDA_SYNC_EVERY if dev.type == "cuda" else 1)
    if k < 1:
        raise ValueError(f"sync_every must be at least 1, got {k}")
    if k > 1 and metrics is None:
        return (yield from _train_deferred(loss_fn, w0, n_data, config, steps, dev, dtype, seed, grad_tol, k))
    w, gen, opt, use_batches = _setup(w0, config, n_data, dev, dtype, seed)
    n_traj = w.shape[0]
    active = torch.ones(n_traj, dtype=torch.bool, device=dev)
    diverged = torch.zeros(n_traj, dtype=torch.bool, device=dev)
    last_good = w.detach().clone()

    def measure() -> tuple[torch.Tensor, torch.Tensor]:
        full = loss_fn(w, None)
        (g,) = torch.autograd.grad(full.sum(), w)
        return full.detach(), g

    def snapshot(step: int, full: torch.Tensor, gnorm: torch.Tensor) -> Snapshot:
        extra = metrics(w.detach()) if metrics else {}
        # one device-to-host copy per step: parameters, loss and gradient norm side by side
        packed = torch.cat([w.detach(), full.unsqueeze(-1), gnorm.unsqueeze(-1)], dim=-1).cpu().numpy()
        return Snapshot(step, packed[:, :-2].copy(), packed[:, -2].copy(), packed[:, -1].copy(),
                        active.cpu().numpy().copy(), diverged.cpu().numpy().copy(), extra)  # (a CPU tensor's
        # numpy() is a view of it: without the copies every snapshot would show the run's latest masks)

    plain_gd = config.name == "gd" or (config.name == "sgd" and not use_batches)
    full, g = measure()
    step = 0
    reason = "completed"
    all_active = True
    while True:
        gnorm = g.norm(dim=-1)
        # fast path: one scalar check for NaN/Inf anywhere (they propagate through the sum)
        probe = full.sum() + gnorm.sum() + w.detach().sum()
        if not bool(torch.isfinite(probe)):
            bad = ~(torch.isfinite(full) & torch.isfinite(w.detach()).all(-1) & torch.isfinite(gnorm))
            newly = bad & active
            if newly.any():
                diverged |= newly
                active &= ~newly
                all_active = False
                with torch.no_grad():
                    w[newly] = last_good[newly]
                    full = torch.where(newly, loss_fn(w, None).detach(), full)
                    g = torch.where(newly.unsqueeze(-1), torch.zeros_like(g), g)
                    gnorm = g.norm(dim=-1)
        converged = active & (gnorm <= grad_tol)
        if bool(converged.any()):
            active &= ~converged
            all_active = False
        if all_active:
            last_good = w.detach().clone()
        else:
            last_good = torch.where(active.unsqueeze(-1), w.detach(), last_good)
        yield snapshot(step, full, gnorm)
        if not all_active and not bool(active.any()):
            reason = "diverged" if bool(diverged.all()) else "converged"
            break
        if step >= steps:
            break
        # one optimizer step on the active rows
        if plain_gd:
            with torch.no_grad():
                if all_active:
                    w -= config.lr * g
                else:
                    w -= config.lr * g * active.unsqueeze(-1)
        else:
            opt.zero_grad(set_to_none=True)
            if use_batches:
                idx = torch.randperm(n_data, generator=gen)[: config.batch_size].to(dev)
                batch_loss = loss_fn(w, idx) * (n_data / config.batch_size)
                batch_loss.sum().backward()
            else:
                w.grad = g.clone()
            frozen = None
            if not all_active:
                with torch.no_grad():
                    w.grad[~active] = 0
                frozen = w.detach().clone()
            opt.step()
            if frozen is not None:
                with torch.no_grad():
                    w[~active] = frozen[~active]
        step += 1
        full, g = measure()

    return _result(reason, step, diverged.cpu().numpy(), n_traj, config.lr, grad_tol)


def _result(reason: str, step: int, div: np.ndarray, n_traj: int, lr: float, grad_tol: float) -> RunResult:
    if reason == "diverged" or div.any():
        k = int(div.sum())
        message = (f"{k} of {n_traj} descents diverged (the loss or the parameters became NaN/Inf): "
                   f"the step size {lr:g} is too large here; the path is kept up to its last finite point")
        if reason != "diverged":
            message = f"Stopped at step {step}. " + message
    elif reason == "converged":
        message = f"Converged after {step} steps (gradient norm under {grad_tol:g})"
    else:
        message = f"Completed {step} steps"
    return RunResult(reason, step, message, div)


def _to_host(t: torch.Tensor) -> np.ndarray:
    """The deferred trainer's one device-to-host copy per ``sync_every`` steps (the tests count its calls)."""
    return t.cpu().numpy()


def _setup(w0, config: OptimizerConfig, n_data: int, dev: torch.device, dtype: torch.dtype, seed: int):
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    torch.manual_seed(int(seed))
    w = torch.as_tensor(np.asarray(w0, dtype=np.float64), dtype=dtype, device=dev).clone()
    if w.ndim == 1:
        w = w.unsqueeze(0)
    w.requires_grad_(True)
    use_batches = config.name == "sgd" and config.batch_size is not None and config.batch_size < n_data
    return w, gen, config.build([w]), use_batches


class _DeviceOptimizer:
    """torch.optim's SGD (with heavy-ball momentum) and Adam updates, operation for operation as their
    single-tensor CPU implementations, with the step count kept on the host: torch.optim.Adam reads its step
    tensor back every step (``.item()``), which on a device would be the synchronization this path avoids."""

    def __init__(self, config: OptimizerConfig, w: torch.Tensor) -> None:
        self.c, self.t, self.buf = config, 0, None
        if config.name == "adam":
            self.m, self.v = torch.zeros_like(w), torch.zeros_like(w)

    def step(self, w: torch.Tensor, grad: torch.Tensor) -> None:
        c = self.c
        with torch.no_grad():
            if c.name == "momentum":
                if self.buf is None:
                    self.buf = grad.detach().clone()
                else:
                    self.buf.mul_(c.momentum).add_(grad)
                w.add_(self.buf, alpha=-c.lr)
            elif c.name == "adam":
                self.t += 1
                b1, b2 = c.betas
                self.m.lerp_(grad, 1 - b1)
                self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
                denom = (self.v.sqrt() / bc2 ** 0.5).add_(ADAM_EPS)
                w.addcdiv_(self.m, denom, value=-(c.lr / bc1))
            else:
                w.add_(grad, alpha=-c.lr)


def _to_device(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """The deferred trainer's one host-to-device copy per ``sync_every`` steps (mini-batch indices)."""
    return t.to(dev)


def _train_deferred(loss_fn: LossFn, w0, n_data: int, config: OptimizerConfig, steps: int, dev: torch.device,
                    dtype: torch.dtype, seed: int, grad_tol: float, k: int) -> Generator[Snapshot, None, RunResult]:
    """``train`` with one host synchronization per ``k`` steps (see the module's notes): every check is a mask
    on the device, every row always takes the masked step (a frozen row's step is zero), and the packed
    snapshots of k steps come to the host in one copy."""
    w, gen, _, use_batches = _setup(w0, config, n_data, dev, dtype, seed)
    n_traj, p = w.shape
    plain_gd = config.name == "gd" or (config.name == "sgd" and not use_batches)
    active = torch.ones(n_traj, dtype=torch.bool, device=dev)
    diverged = torch.zeros(n_traj, dtype=torch.bool, device=dev)

    def measure() -> tuple[torch.Tensor, torch.Tensor]:
        full = loss_fn(w, None)
        (g,) = torch.autograd.grad(full.sum(), w)
        return full.detach(), g

    dopt = _DeviceOptimizer(config, w)
    batches: list[torch.Tensor] = []  # the mini-batch indices of the chunk's steps, drawn as the per-step path does

    def advance(keep: torch.Tensor) -> None:  # one optimizer step; rows where ``keep`` is False stay put
        if plain_gd:
            with torch.no_grad():
                w.sub_(config.lr * g * keep)
            return
        if use_batches:
            if not batches:
                drawn = torch.stack([torch.randperm(n_data, generator=gen)[: config.batch_size] for _ in range(k)])
                batches.extend(_to_device(drawn, dev).unbind(0))
            idx = batches.pop(0)
            (grad,) = torch.autograd.grad((loss_fn(w, idx) * (n_data / config.batch_size)).sum(), w)
        else:
            grad = g
        grad = grad * keep
        with torch.no_grad():
            frozen = w.detach().clone()
        dopt.step(w, grad)
        with torch.no_grad():
            w.copy_(torch.where(keep, w, frozen))

    full, g = measure()
    last_w, last_full = w.detach().clone(), full.clone()
    step = 0
    while True:
        first, packed = step, []
        while True:
            gnorm = g.norm(dim=-1)
            newly = active & ~(torch.isfinite(full) & torch.isfinite(w.detach()).all(-1) & torch.isfinite(gnorm))
            diverged |= newly
            active &= ~newly
            with torch.no_grad():
                w.copy_(torch.where(newly.unsqueeze(-1), last_w, w))
            full = torch.where(newly, last_full, full)
            g = torch.where(newly.unsqueeze(-1), torch.zeros_like(g), g)
            gnorm = torch.where(newly, torch.zeros_like(gnorm), gnorm)
            active &= ~(gnorm <= grad_tol)  # converged: frozen
            last_w = torch.where(active.unsqueeze(-1), w.detach(), last_w)
            last_full = torch.where(active, full, last_full)
            packed.append(torch.cat([w.detach(), full.unsqueeze(-1), gnorm.unsqueeze(-1),
                                     active.unsqueeze(-1).to(dtype), diverged.unsqueeze(-1).to(dtype)], dim=-1))
            if step >= steps or len(packed) == k:
                break
            advance(active.unsqueeze(-1))
            step += 1
            full, g = measure()
        host = _to_host(torch.stack(packed))
        for j, row in enumerate(host):
            act, div = row[:, p + 2] > 0.5, row[:, p + 3] > 0.5
            yield Snapshot(first + j, row[:, :p].copy(), row[:, p].copy(), row[:, p + 1].copy(), act, div)
            if not act.any():
                return _result("diverged" if div.all() else "converged", first + j, div, n_traj, config.lr,
                               grad_tol)
        if step >= steps:
            return _result("completed", step, div, n_traj, config.lr, grad_tol)
        advance(active.unsqueeze(-1))
        step += 1
        full, g = measure()


def max_stable_lr(hessian_top_eig: float) -> float:
    """Gradient descent on a quadratic with top curvature lambda is stable for lr < 2 / lambda."""
    return 2.0 / hessian_top_eig if hessian_top_eig > 0 else float("inf")


def run_to_end(gen: Generator) -> tuple[list, object]:
    """Drain a trainer (or any) generator: every yielded item, and its return value."""
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            return items, stop.value
