"""Two-parameter models f(x; w1, w2), their loss over the parameter plane, and their solution sets.

Loss convention for this lab (THEORY.md section 1): the *sum* square loss
    L(w) = 1/2 * sum_i (f(x_i; w) - y_i)^2,
so grad L = J^T r and the tangent kernel is K = J J^T with J the n x 2 Jacobian of the outputs.
Everything is vectorized over any number of parameter points at once (a whole grid, or N trajectories).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .expr import CompiledExpression, parse_expression

LOSS_FORMULA = "L(w) = ½ Σᵢ (f(xᵢ; w) − yᵢ)²  (sum over the data points)"

BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    # key: (expression, description)
    "linear": ("w1*x + w2", "linear in w: the solutions form a straight line"),
    "tanh": ("w2*tanh(w1*x)", "a curved solution set, w2 = y / tanh(w1 x)"),
    "factor": ("w1*w2*x", "scalar factorization: a hyperbola with a saddle at the origin"),
}

MAX_GRID = 1601  # per side; 1601^2 points x a few data points stays well under 1 GB in float64


class GridTooLargeError(ValueError):
    """A grid request that would not fit in memory; the message says the limit."""


@dataclass(frozen=True)
class ToyModel:
    """f(x; w1, w2) compiled from an expression; ``key`` is a builtin name or 'custom'."""

    key: str
    expression: CompiledExpression

    @property
    def text(self) -> str:
        return self.expression.text

    def forward(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Outputs for parameters ``w`` of shape (..., 2) at inputs ``x`` of shape (n,): shape (..., n)."""
        w1 = w[..., 0:1]
        w2 = w[..., 1:2]
        out = self.expression(w1=w1, w2=w2, x=x)
        return out.expand(*w.shape[:-1], x.shape[0])


def make_model(key: str, expression: str | None = None) -> ToyModel:
    """A builtin model by key ('linear', 'tanh', 'factor') or a custom one from ``expression``."""
    if key in BUILTIN_MODELS:
        return ToyModel(key, parse_expression(BUILTIN_MODELS[key][0]))
    if key != "custom":
        raise ValueError(f"unknown model '{key}'; choose one of {', '.join(BUILTIN_MODELS)} or custom")
    if expression is None:
        raise ValueError("a custom model needs an expression in w1, w2 and x")
    return ToyModel("custom", parse_expression(expression))


@dataclass
class Data:
    """The data points (x_i, y_i) as float64 numpy arrays."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, dtype=np.float64).reshape(-1)
        self.y = np.asarray(self.y, dtype=np.float64).reshape(-1)
        if self.x.shape != self.y.shape or self.x.size == 0:
            raise ValueError("data needs the same, non-zero number of x and y values")
        if not (np.all(np.isfinite(self.x)) and np.all(np.isfinite(self.y))):
            raise ValueError("data values must be finite numbers")

    @property
    def n(self) -> int:
        return int(self.x.size)

    def tensors(self, device="cpu", dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.as_tensor(self.x, dtype=dtype, device=device),
                torch.as_tensor(self.y, dtype=dtype, device=device))


def loss(model: ToyModel, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum square loss 1/2 sum_i (f(x_i; w) - y_i)^2 for each parameter point: shape w.shape[:-1]."""
    r = model.forward(w, x) - y
    return 0.5 * (r * r).sum(-1)


def jacobian(model: ToyModel, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Jacobian of the outputs, shape (..., n, 2), for any batch of points (each row independent)."""
    w = w.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        f = model.forward(w, x)
        rows = []
        for i in range(x.shape[0]):
            (g,) = torch.autograd.grad(f[..., i].sum(), w, retain_graph=i + 1 < x.shape[0], allow_unused=True)
            rows.append(torch.zeros_like(w) if g is None else g)
    return torch.stack(rows, dim=-2).detach()


def tangent_kernel(model: ToyModel, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """K(w) = DF(w) DF(w)^T, shape (..., n, n) (THEORY.md section 2)."""
    j = jacobian(model, w, x)
    return j @ j.transpose(-1, -2)


def loss_grad_hessian(model: ToyModel, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    """Loss, gradient (..., 2) and Hessian (..., 2, 2) at every point of a batch, by autograd."""
    w = w.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        value = loss(model, w, x, y)
        (g,) = torch.autograd.grad(value.sum(), w, create_graph=True)
        h_rows = []
        for k in range(2):
            (hk,) = torch.autograd.grad(g[..., k].sum(), w, retain_graph=k == 0, allow_unused=True)
            h_rows.append(torch.zeros_like(w) if hk is None else hk)
    return value.detach(), g.detach(), torch.stack(h_rows, dim=-2).detach()


def min_eig_2x2(h: torch.Tensor) -> torch.Tensor:
    """Smallest eigenvalue of symmetric 2x2 matrices, closed form."""
    a, b, c = h[..., 0, 0], 0.5 * (h[..., 0, 1] + h[..., 1, 0]), h[..., 1, 1]
    return 0.5 * (a + c) - torch.sqrt((0.5 * (a - c)) ** 2 + b * b)


@dataclass(frozen=True)
class GridSpec:
    """A square grid over the parameter plane: w1 in [cx - extent, cx + extent], likewise w2."""

    extent: float = 3.0
    resolution: int = 201
    center: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if not np.isfinite(self.extent) or self.extent <= 0:
            raise ValueError("the grid extent must be a positive number")
        if self.resolution < 3:
            raise ValueError("the grid needs at least 3 points a side")
        if self.resolution > MAX_GRID:
            raise GridTooLargeError(
                f"a {self.resolution}x{self.resolution} grid is too large: at most {MAX_GRID}x{MAX_GRID}"
            )

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        w1 = np.linspace(self.center[0] - self.extent, self.center[0] + self.extent, self.resolution)
        w2 = np.linspace(self.center[1] - self.extent, self.center[1] + self.extent, self.resolution)
        return w1, w2


def grid_points(spec: GridSpec, device="cpu", dtype=torch.float64) -> torch.Tensor:
    """Grid points of shape (R, R, 2), indexed [i over w1, j over w2]."""
    w1, w2 = spec.axes()
    a = torch.as_tensor(w1, dtype=dtype, device=device)
    b = torch.as_tensor(w2, dtype=dtype, device=device)
    g1, g2 = torch.meshgrid(a, b, indexing="ij")
    return torch.stack([g1, g2], dim=-1)


@dataclass
class GridResult:
    """Everything the views draw for one (model, data, grid): arrays indexed [i over w1, j over w2]."""

    spec: GridSpec
    w1: np.ndarray
    w2: np.ndarray
    loss: np.ndarray
    residuals: np.ndarray  # (n, R, R)
    min_hessian_eig: np.ndarray | None = None
    extras: dict = field(default_factory=dict)


def evaluate_grid(model: ToyModel, data: Data, spec: GridSpec, *, curvature: bool = False,
                  device="cpu", dtype=torch.float64) -> GridResult:
    """Loss and residuals over the whole grid in one vectorized pass (no per-point loop)."""
    x, y = data.tensors(device, dtype)
    w = grid_points(spec, device, dtype)
    with torch.no_grad():
        r = model.forward(w, x) - y  # (R, R, n)
        value = 0.5 * (r * r).sum(-1)
    w1, w2 = spec.axes()
    res = GridResult(spec, w1, w2, value.cpu().numpy(), np.moveaxis(r.cpu().numpy(), -1, 0))
    if curvature:
        _, _, h = loss_grad_hessian(model, w, x, y)
        res.min_hessian_eig = min_eig_2x2(h).cpu().numpy()
    return res


def grid_by_loop(model: ToyModel, data: Data, spec: GridSpec) -> np.ndarray:
    """The same loss grid point by point: the slow reference the benchmark compares against."""
    x, y = data.tensors()
    w1, w2 = spec.axes()
    out = np.empty((spec.resolution, spec.resolution))
    with torch.no_grad():
        for i, a in enumerate(w1):
            for j, b in enumerate(w2):
                out[i, j] = float(loss(model, torch.tensor([a, b], dtype=torch.float64), x, y))
    return out


# ----------------------------------------------------------------------------------------------
# Solution sets
# ----------------------------------------------------------------------------------------------

@dataclass
class SolutionSet:
    """The zero-loss set in view: curves (polylines, (k, 2)) and isolated points (m, 2).

    ``residual_curves[i]`` are the zero levels of the i-th residual alone (drawn faintly when n >= 2,
    where the solution set is their intersection). ``exact`` says whether a closed form was used.
    """

    curves: list[np.ndarray]
    points: np.ndarray
    residual_curves: list[list[np.ndarray]]
    exact: bool
    note: str = ""

    @property
    def empty(self) -> bool:
        return not self.curves and len(self.points) == 0


def _clip_polyline(w1: np.ndarray, w2: np.ndarray, spec: GridSpec) -> list[np.ndarray]:
    """Split a sampled curve into the runs that lie inside the grid box (with a small margin)."""
    lo1, lo2 = spec.center[0] - spec.extent, spec.center[1] - spec.extent
    hi1, hi2 = spec.center[0] + spec.extent, spec.center[1] + spec.extent
    m = 0.02 * spec.extent
    inside = (np.isfinite(w2) & (w1 >= lo1 - m) & (w1 <= hi1 + m) & (w2 >= lo2 - m) & (w2 <= hi2 + m))
    runs, start = [], None
    for k, ok in enumerate(np.append(inside, False)):
        if ok and start is None:
            start = k
        elif not ok and start is not None:
            if k - start >= 2:
                runs.append(np.column_stack([w1[start:k], w2[start:k]]))
            start = None
    return runs


def _exact_single_point(model: ToyModel, xi: float, yi: float, spec: GridSpec) -> list[np.ndarray] | None:
    """Closed-form solution curves for one data point, for the builtin models; None if unknown."""
    lo, hi = spec.center[0] - spec.extent, spec.center[0] + spec.extent
    t = np.linspace(lo, hi, 8001)
    with np.errstate(divide="ignore", invalid="ignore"):
        if model.key == "linear":
            return _clip_polyline(t, yi - t * xi, spec)
        if model.key == "tanh":
            if xi == 0.0:
                return None
            curves = []
            for branch in (t[t < 0], t[t > 0]):
                curves += _clip_polyline(branch, yi / np.tanh(branch * xi), spec)
            return curves
        if model.key == "factor":
            if xi == 0.0 or yi == 0.0:
                return None
            curves = []
            for branch in (t[t < 0], t[t > 0]):
                curves += _clip_polyline(branch, yi / (xi * branch), spec)
            return curves
    return None


def _contours(field_2d: np.ndarray, spec: GridSpec, level: float = 0.0) -> list[np.ndarray]:
    """Zero-level polylines of a grid field in parameter coordinates (marching squares)."""
    from skimage.measure import find_contours

    w1, w2 = spec.axes()
    f = np.where(np.isfinite(field_2d), field_2d, np.nan)
    if np.all(np.isnan(f)) or np.nanmin(f) > level or np.nanmax(f) < level:
        return []
    out = []
    step1, step2 = w1[1] - w1[0], w2[1] - w2[0]
    for c in find_contours(f, level):
        out.append(np.column_stack([w1[0] + c[:, 0] * step1, w2[0] + c[:, 1] * step2]))
    return out


def refine_onto_solutions(model: ToyModel, data: Data, points: np.ndarray, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Newton (minimum-norm) steps w <- w - J^+ r that pull points onto F(w) = y.

    Returns the refined points and their final loss; used to make traced curves exact to float64.
    """
    if len(points) == 0:
        return points.reshape(0, 2), np.zeros(0)
    x, y = data.tensors()
    w = torch.as_tensor(points, dtype=torch.float64).clone()
    for _ in range(iters):
        r = model.forward(w, x) - y
        if torch.all(r.abs() < 1e-15):
            break
        j = jacobian(model, w, x)
        step = (torch.linalg.pinv(j) @ r.unsqueeze(-1)).squeeze(-1)
        step = torch.nan_to_num(step, nan=0.0, posinf=0.0, neginf=0.0)
        w = w - step
    with torch.no_grad():
        final = loss(model, w, x, y)
    return w.numpy(), final.numpy()


def solution_set(model: ToyModel, data: Data, grid: GridResult, tol: float = 1e-10) -> SolutionSet:
    """The zero-loss set of ``model`` on ``data`` inside the grid's box.

    One data point: the closed form where one is known, else the residual's zero level traced on the grid
    and pulled exactly onto the solution set by Gauss-Newton. Several points: each residual's zero curve,
    and the solutions where they meet (refined); for the linear model, solved exactly.
    """
    spec = grid.spec
    residual_curves = [_contours(grid.residuals[i], spec) for i in range(data.n)]
    lo = np.array([spec.center[0] - spec.extent, spec.center[1] - spec.extent])
    hi = np.array([spec.center[0] + spec.extent, spec.center[1] + spec.extent])

    def keep_good(poly: np.ndarray) -> list[np.ndarray]:
        ref, lv = refine_onto_solutions(model, data, poly)
        ok = (lv < tol) & np.all(np.abs(ref - poly) < 4 * (hi - lo) / spec.resolution, axis=1)
        pieces, cur = [], []
        for p, good in zip(ref, ok):
            if good:
                cur.append(p)
            elif cur:
                pieces.append(np.array(cur))
                cur = []
        if cur:
            pieces.append(np.array(cur))
        return [p for p in pieces if len(p) >= 2]

    if data.n == 1:
        exact = _exact_single_point(model, float(data.x[0]), float(data.y[0]), spec)
        if exact is not None:
            return SolutionSet(exact, np.zeros((0, 2)), residual_curves, exact=True)
        curves = [p for c in residual_curves[0] for p in keep_good(c)]
        return SolutionSet(curves, np.zeros((0, 2)), residual_curves, exact=False)

    if model.key == "linear":
        a = np.column_stack([data.x, np.ones(data.n)])
        rank = np.linalg.matrix_rank(a)
        consistent = np.linalg.matrix_rank(np.column_stack([a, data.y])) == rank
        if not consistent:
            return SolutionSet([], np.zeros((0, 2)), residual_curves, exact=True,
                               note="no solution: the points share an x but differ in y")
        if rank == 2:
            sol = np.linalg.lstsq(a, data.y, rcond=None)[0]
            pts = sol[None, :] if np.all((sol >= lo) & (sol <= hi)) else np.zeros((0, 2))
            return SolutionSet([], pts, residual_curves, exact=True)
        t = np.linspace(lo[0], hi[0], 2001)
        return SolutionSet(_clip_polyline(t, data.y[0] - t * data.x[0], spec), np.zeros((0, 2)),
                           residual_curves, exact=True)

    # Several points, general model: the solutions lie where all residual curves meet. Candidates are the
    # places along the first residual's zero curve where every other residual changes sign.
    candidates = []
    for c in residual_curves[0]:
        w = torch.as_tensor(c, dtype=torch.float64)
        x, y = data.tensors()
        with torch.no_grad():
            r = (model.forward(w, x) - y).numpy()[:, 1:]
        small = np.all(np.abs(r) < 1e-9, axis=1)
        if np.all(small):  # the residual curves coincide: a whole curve of solutions
            candidates.append(("curve", c))
            continue
        flips = np.all(np.sign(r[:-1]) != np.sign(r[1:]), axis=1) | small[:-1]
        for k in np.nonzero(flips)[0]:
            candidates.append(("point", 0.5 * (c[k] + c[k + 1])))
    curves = [p for kind, c in candidates if kind == "curve" for p in keep_good(c)]
    pts = np.array([c for kind, c in candidates if kind == "point"]).reshape(-1, 2)
    if len(pts):
        ref, lv = refine_onto_solutions(model, data, pts)
        ref = ref[(lv < tol) & np.all((ref >= lo) & (ref <= hi), axis=1)]
        # merge duplicates
        uniq: list[np.ndarray] = []
        for p in ref:
            if all(np.linalg.norm(p - q) > 1e-6 for q in uniq):
                uniq.append(p)
        pts = np.array(uniq).reshape(-1, 2)
    return SolutionSet(curves, pts, residual_curves, exact=False)


def projection_onto_linear_solutions(data: Data, w0: np.ndarray) -> np.ndarray:
    """Orthogonal projection of w0 onto {w : X w = y} for the linear model f = w1 x + w2.

    X has rows (x_i, 1). Gradient descent on the square loss from w0 converges exactly here
    (THEORY.md section 1): w* = w0 - X^+ (X w0 - y).
    """
    a = np.column_stack([data.x, np.ones(data.n)])
    w0 = np.asarray(w0, dtype=np.float64)
    return w0 - np.linalg.pinv(a) @ (a @ w0 - data.y)


def contour_levels(values: np.ndarray, count: int = 12) -> np.ndarray:
    """Evenly spaced levels strictly inside the finite range of ``values``."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(0)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(0)
    return np.linspace(lo, hi, count + 2)[1:-1]


def contour_lines(values: np.ndarray, spec: GridSpec, levels: np.ndarray) -> list[tuple[float, list[np.ndarray]]]:
    """Polylines of each level of a grid field, in parameter coordinates."""
    return [(float(lv), _contours(values, spec, float(lv))) for lv in levels]


def descent(model_key: str, expression: str, xs, ys, starts, optimizer: str, lr: float, momentum: float,
            batch_size: int, steps: int, device: str, seed: int):
    """The trainer generator for N descents at once on this lab's sum square loss (any device)."""
    from .train import OptimizerConfig, resolve_device, train

    model = make_model(model_key, expression)
    data = Data(list(xs), list(ys))
    dev = resolve_device(device)
    x, y = data.tensors(dev)
    cfg = OptimizerConfig(optimizer, lr, momentum=momentum,
                          batch_size=batch_size if optimizer == "sgd" else None)

    def loss_fn(w: torch.Tensor, idx):
        if idx is None:
            return loss(model, w, x, y)
        return loss(model, w, x[idx], y[idx])

    return train(loss_fn, np.asarray(starts, dtype=np.float64), data.n, cfg, steps, device=dev, seed=seed)
