"""Three-parameter models f(x; w1, w2, w3) and their solution sets, which you can see whole.

One data point: the zero-loss set is a surface, extracted with marching cubes from the residual's zero level
(the residual changes sign across it, so its zero level is sharp; the loss's is not) and its vertices pulled
exactly onto it. Two points: a curve, traced by numerical continuation along the Jacobian's null space and
corrected back onto both equations. Three points: isolated solutions. Loss: the sum square loss
L(w) = 1/2 sum_i (f(x_i; w) - y_i)^2, as in the two-parameter lab.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .expr import CompiledExpression, parse_expression
from .toy2d import Data, GridTooLargeError

VARIABLES = ("w1", "w2", "w3", "x")
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    "quadratic": ("w1*x + w2*x**2 + w3", "linear in w: the solutions form a plane, a line or a point"),
    "tanh": ("w3*tanh(w1*x + w2)", "a curved solution surface"),
    "product": ("w1*w2*w3*x", "three-factor product: a surface with three sheets meeting at the axes"),
}
MAX_GRID_BYTES = 1.5e9


@dataclass(frozen=True)
class Model3:
    key: str
    expression: CompiledExpression

    @property
    def text(self) -> str:
        return self.expression.text

    def forward(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Outputs for parameters (..., 3) at inputs (n,): shape (..., n)."""
        out = self.expression(w1=w[..., 0:1], w2=w[..., 1:2], w3=w[..., 2:3], x=x)
        return out.expand(*w.shape[:-1], x.shape[0])


def make_model(key: str, expression: str | None = None) -> Model3:
    if key in BUILTIN_MODELS:
        return Model3(key, parse_expression(BUILTIN_MODELS[key][0], VARIABLES))
    if key != "custom":
        raise ValueError(f"unknown model '{key}'; choose one of {', '.join(BUILTIN_MODELS)} or custom")
    if not expression:
        raise ValueError("a custom model needs an expression in w1, w2, w3 and x")
    return Model3("custom", parse_expression(expression, VARIABLES))


SCALINGS = {
    "lazy": "α·(f(w) − f(w₀)) with the loss divided by α² (THEORY.md section 3)",
    "plain": "f(w) itself: descends onto the drawn solution set F(w) = y (no output scale)",
}


def loss(model: Model3, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, alpha: float = 1.0,
         f0: torch.Tensor | None = None) -> torch.Tensor:
    """Sum square loss per parameter point.

    With ``f0`` (the outputs at each descent's start w0) this is the lazy-training loss of THEORY.md section 3
    for every alpha, alpha = 1 included: the model is alpha (f(w) - f(w0)) and the loss is
    (1 / 2 alpha^2) sum (alpha (f - f0) - y)^2. Without ``f0`` it is the plain loss 1/2 sum (f - y)^2, which has
    no output scale (alpha must then be 1).
    """
    f = model.forward(w, x)
    if f0 is None:
        if alpha != 1.0:
            raise ValueError(f"the output scale alpha = {alpha:g} needs f(w0) (lazy scaling); the plain loss has none")
        r = f - y
        return 0.5 * (r * r).sum(-1)
    r = alpha * (f - f0) - y
    return 0.5 * (r * r).sum(-1) / (alpha * alpha)


def jacobian(model: Model3, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """DF(w), shape (..., n, 3), every row of the batch independent."""
    w = w.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        f = model.forward(w, x)
        rows = []
        for i in range(x.shape[0]):
            (g,) = torch.autograd.grad(f[..., i].sum(), w, retain_graph=i + 1 < x.shape[0], allow_unused=True)
            rows.append(torch.zeros_like(w) if g is None else g)
    return torch.stack(rows, dim=-2).detach()


@dataclass(frozen=True)
class GridSpec3:
    """A cube w_k in [c_k - extent, c_k + extent] sampled at ``resolution`` points a side."""

    extent: float = 2.5
    resolution: int = 64
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if not np.isfinite(self.extent) or self.extent <= 0:
            raise ValueError("the grid extent must be a positive number")
        if self.resolution < 4:
            raise ValueError("the grid needs at least 4 points a side")

    def check_memory(self, n_fields: int) -> None:
        need = float(self.resolution) ** 3 * 8 * (n_fields + 4)
        if need > MAX_GRID_BYTES:
            limit = int((MAX_GRID_BYTES / (8 * (n_fields + 4))) ** (1 / 3))
            raise GridTooLargeError(
                f"a {self.resolution}^3 grid needs about {need / 1e9:.1f} GB: at most {limit}^3 here")

    def axes(self) -> list[np.ndarray]:
        return [np.linspace(c - self.extent, c + self.extent, self.resolution) for c in self.center]

    @property
    def spacing(self) -> float:
        return 2 * self.extent / (self.resolution - 1)

    @property
    def lo(self) -> np.ndarray:
        return np.array(self.center) - self.extent

    @property
    def hi(self) -> np.ndarray:
        return np.array(self.center) + self.extent


def residual_grid(model: Model3, data: Data, spec: GridSpec3, device="cpu", dtype=torch.float64) -> np.ndarray:
    """Residuals f(x_i; w) - y_i on the whole cube in one vectorized pass: shape (n, R, R, R)."""
    spec.check_memory(data.n)
    a = [torch.as_tensor(ax, dtype=dtype, device=device) for ax in spec.axes()]
    g = torch.stack(torch.meshgrid(*a, indexing="ij"), dim=-1)
    x, y = data.tensors(device, dtype)
    with torch.no_grad():
        r = model.forward(g, x) - y
    return np.moveaxis(r.cpu().numpy(), -1, 0)


# ------------------------------------------------------------------------------------------------
# Pulling points onto the solution set
# ------------------------------------------------------------------------------------------------

def correct(model: Model3, data: Data, points: np.ndarray, rows: list[int] | None = None, iters: int = 25,
            tol: float = 1e-14) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-norm Gauss-Newton w <- w - J^+ r on the equations ``rows`` (default: all data points).

    Returns the corrected points and the max |residual| of each over those equations.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(pts) == 0:
        return pts, np.zeros(0)
    x, y = data.tensors()
    if rows is not None:
        x, y = x[rows], y[rows]
    w = torch.as_tensor(pts).clone()
    for _ in range(iters):
        with torch.no_grad():
            r = model.forward(w, x) - y
        if float(r.abs().max()) < tol:
            break
        j = jacobian(model, w, x)
        step = torch.nan_to_num((torch.linalg.pinv(j) @ r.unsqueeze(-1)).squeeze(-1), nan=0.0, posinf=0.0,
                                neginf=0.0)
        w = w - step
    with torch.no_grad():
        res = (model.forward(w, x) - y).abs().amax(-1)
    return w.numpy(), res.numpy()


# ------------------------------------------------------------------------------------------------
# One point: a surface
# ------------------------------------------------------------------------------------------------

@dataclass
class Mesh:
    vertices: np.ndarray  # (V, 3) parameter coordinates
    faces: np.ndarray  # (F, 3) int
    residual: np.ndarray  # |residual| at each vertex
    normals: np.ndarray | None = None  # (V, 3) unit normals (from the field's gradient)

    @property
    def empty(self) -> bool:
        return len(self.faces) == 0


def zero_mesh(field3: np.ndarray, spec: GridSpec3, refine: tuple[Model3, Data, int] | None = None) -> Mesh:
    """Marching cubes of a residual's zero level in parameter coordinates, optionally refined onto it.

    ``refine=(model, data, i)`` pulls each vertex onto f(x_i; w) = y_i exactly (Gauss-Newton along the
    gradient), which removes the grid's interpolation error.
    """
    from skimage.measure import marching_cubes

    f = np.nan_to_num(field3, nan=1e300, posinf=1e300, neginf=-1e300)
    if f.min() > 0 or f.max() < 0:
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), np.zeros(0))
    verts, faces, normals, _ = marching_cubes(f, level=0.0, spacing=(spec.spacing,) * 3, allow_degenerate=False)
    verts = verts + spec.lo
    res = np.zeros(len(verts))
    if refine is not None:
        model, data, i = refine
        moved, res = correct(model, data, verts, rows=[i], iters=8)
        # keep the refinement only where it stayed local (near a pole the residual can jump sign)
        ok = np.linalg.norm(moved - verts, axis=1) < 2 * spec.spacing
        verts = np.where(ok[:, None], moved, verts)
        x, y = data.tensors()
        with torch.no_grad():
            res = (model.forward(torch.as_tensor(verts), x[[i]]) - y[[i]]).abs()[:, 0].numpy()
    return Mesh(verts, faces.astype(np.int64), res, normals)


def level_mesh(field3: np.ndarray, spec: GridSpec3, level: float) -> Mesh:
    """Marching cubes of any field at ``level`` (the loss shells): no refinement."""
    from skimage.measure import marching_cubes

    f = np.nan_to_num(field3, nan=1e300, posinf=1e300, neginf=-1e300)
    if f.min() > level or f.max() < level:
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), np.zeros(0))
    verts, faces, normals, _ = marching_cubes(f, level=level, spacing=(spec.spacing,) * 3, allow_degenerate=False)
    return Mesh(verts + spec.lo, faces.astype(np.int64), np.zeros(len(verts)), normals)


# ------------------------------------------------------------------------------------------------
# Two points: a curve, by continuation
# ------------------------------------------------------------------------------------------------

def _null_direction(j: np.ndarray) -> np.ndarray:
    """The unit null vector of a 2x3 Jacobian (the cross product of its rows)."""
    t = np.cross(j[0], j[1])
    n = np.linalg.norm(t)
    return t / n if n > 0 else t


def trace_curve(model: Model3, data: Data, seed: np.ndarray, spec: GridSpec3, step: float | None = None,
                max_points: int = 4000) -> np.ndarray:
    """Follow the curve F(w) = y (two equations, three unknowns) through ``seed`` in both directions.

    Predictor: a step along the null space of DF; corrector: Gauss-Newton back onto both equations.
    Stops at the box's faces, when the curve closes on itself, or when the Jacobian loses rank.
    """
    h = step or 0.5 * spec.spacing
    x, _ = data.tensors()
    lo, hi = spec.lo - 1e-9, spec.hi + 1e-9

    def jac(w):
        return jacobian(model, torch.as_tensor(w[None, :]), x)[0].numpy()

    branches = []
    for sign in (1.0, -1.0):
        pts = [seed]
        w = seed.copy()
        t_prev = sign * _null_direction(jac(w))
        for _ in range(max_points // 2):
            t = _null_direction(jac(w))
            if not np.any(t):
                break
            if t @ t_prev < 0:
                t = -t
            w_new, res = correct(model, data, w + h * t, iters=12)
            w_new = w_new[0]
            if res[0] > 1e-9 or np.linalg.norm(w_new - w) > 3 * h:
                break
            if np.any(w_new < lo) or np.any(w_new > hi):
                break
            pts.append(w_new)
            t_prev, w = t, w_new
            if len(pts) > 10 and np.linalg.norm(w_new - seed) < 0.75 * h and sign > 0:
                pts.append(seed)  # closed loop
                return np.array(pts)
        branches.append(np.array(pts))
    return np.vstack([branches[1][::-1], branches[0][1:]])


@dataclass
class SolutionSet3:
    """Solutions inside the cube: surfaces (one data point), curves (two), points (three)."""

    meshes: list[Mesh] = field(default_factory=list)  # for one point: the manifold; for more: each point's
    curves: list[np.ndarray] = field(default_factory=list)
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    note: str = ""

    @property
    def empty(self) -> bool:
        if self.curves or len(self.points):
            return False
        return not self.meshes or all(m.empty for m in self.meshes) or len(self.meshes) > 1


def solution_set(model: Model3, data: Data, spec: GridSpec3, residuals: np.ndarray | None = None) -> SolutionSet3:
    if residuals is None:
        residuals = residual_grid(model, data, spec)
    meshes = [zero_mesh(residuals[i], spec, refine=(model, data, i)) for i in range(data.n)]
    out = SolutionSet3(meshes=meshes)
    if data.n == 1:
        if meshes[0].empty:
            out.note = "no solutions in view: f(x; w) = y has no solution inside this box"
        return out
    # seeds: grid points where every residual is small compared with its local variation
    scale = [np.nanmax(np.abs(np.gradient(r, spec.spacing)[0])) * spec.spacing + 1e-300 for r in residuals]
    near = np.ones(residuals.shape[1:], dtype=bool)
    for r, sc in zip(residuals, scale):
        near &= np.abs(r) < 1.5 * sc
    idx = np.argwhere(near)
    if len(idx) > 4000:
        idx = idx[np.random.default_rng(0).choice(len(idx), 4000, replace=False)]
    seeds = spec.lo + idx * spec.spacing
    seeds, res = correct(model, data, seeds)
    inside = np.all((seeds >= spec.lo - 1e-9) & (seeds <= spec.hi + 1e-9), axis=1)
    seeds = seeds[(res < 1e-10) & inside]
    if data.n == 2:
        covered = np.zeros(len(seeds), dtype=bool)
        for k in range(len(seeds)):
            if covered[k]:
                continue
            curve = trace_curve(model, data, seeds[k], spec)
            if len(curve) >= 3:
                out.curves.append(curve)
            # seeds near this curve belong to it
            d = np.min(np.linalg.norm(seeds[:, None, :] - curve[None, ::4, :], axis=-1), axis=1)
            covered |= d < 2 * spec.spacing
            if len(out.curves) > 12:
                break
    else:
        uniq: list[np.ndarray] = []
        for p in seeds:
            if all(np.linalg.norm(p - q) > 1e-6 for q in uniq):
                uniq.append(p)
        out.points = np.array(uniq).reshape(-1, 3)
    if out.empty:
        out.note = "no solutions in view: F(w) = y has no solution inside this box"
    return out


def loss_grid(residuals: np.ndarray) -> np.ndarray:
    """The sum square loss on the grid from its residuals."""
    return 0.5 * np.sum(residuals * residuals, axis=0)


def projection_onto_linear_solutions(data: Data, w0: np.ndarray, alpha: float | None = None) -> np.ndarray:
    """Where gradient descent from w0 lands for the model w1 x + w2 x^2 + w3 (linear in w, rows (x, x^2, 1)).

    ``alpha`` None (the plain scaling): the projection of w0 onto {X w = y}, w0 - X^+ (X w0 - y).
    ``alpha`` given (the lazy scaling, alpha X (w - w0) = y): the projection of w0 onto {X w = X w0 + y / alpha},
    w0 + X^+ y / alpha.
    """
    a = np.column_stack([data.x, data.x**2, np.ones(data.n)])
    w0 = np.asarray(w0, dtype=np.float64)
    if alpha is not None:
        return w0 + np.linalg.pinv(a) @ data.y / alpha
    return w0 - np.linalg.pinv(a) @ (a @ w0 - data.y)


def descent(model_key: str, expression: str, xs, ys, starts, optimizer: str, lr: float, momentum: float,
            batch_size: int, steps: int, device: str, seed: int, alpha: float = 1.0, scaling: str = "lazy"):
    """Trainer generator for N descents at once in the three-parameter lab (runs in a child process).

    ``scaling='lazy'`` (the default): each descent trains alpha * (f(w) - f(w0)) with the loss scaled by
    1/alpha^2, one formula for every alpha > 0 (alpha = 1 included), so the distance travelled is continuous in
    alpha and shrinks like 1/alpha. Its zero-loss set is {f(w) = f(w0) + y / alpha}, not the drawn F(w) = y.
    ``scaling='plain'``: trains f(w) itself onto F(w) = y; alpha must be 1 there.
    """
    from .train import OptimizerConfig, resolve_device, train

    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling '{scaling}'; choose one of {', '.join(SCALINGS)}")
    alpha = float(alpha)
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"the output scale alpha must be a positive finite number, got {alpha}")
    if scaling == "plain" and alpha != 1.0:
        raise ValueError(f"the plain scaling trains f(w) itself and takes no output scale: alpha must be 1, "
                         f"got {alpha:g} (use scaling='lazy')")
    model = make_model(model_key, expression)
    data = Data(list(xs), list(ys))
    dev = resolve_device(device)
    x, y = data.tensors(dev)
    w0 = torch.as_tensor(np.asarray(starts, dtype=np.float64).reshape(-1, 3), device=dev)
    f0 = None
    if scaling == "lazy":
        with torch.no_grad():
            f0 = model.forward(w0, x)
    cfg = OptimizerConfig(optimizer, lr, momentum=momentum, batch_size=batch_size if optimizer == "sgd" else None)

    def loss_fn(w, idx):
        if idx is None:
            return loss(model, w, x, y, alpha, f0)
        return loss(model, w, x[idx], y[idx], alpha, None if f0 is None else f0[:, idx])

    return train(loss_fn, w0.cpu().numpy(), data.n, cfg, steps, device=dev, seed=seed)
