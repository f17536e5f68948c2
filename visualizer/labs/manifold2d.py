"""Lab "manifold2d": the solution manifold of two-parameter models (THEORY.md section 1).

Left, the parameter plane with the loss as a colour map, its contours and the zero-loss set; right, the
same loss as an OpenGL surface. Click the plane to start gradient descent there; drag a data point and the
manifold moves. For the linear model the orthogonal projection of each start onto the solution line is
marked: gradient descent lands exactly there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QLabel, QWidget

from visualizer.labs.descent_lab import DescentLab, data_setting, expression_check
from visualizer.labs.schema import setting
from visualizer.runs import DescentRun
from visualizer.views.common import caption, dark_plot, lab_layout, splitter
from visualizer.views.data_panel import DATA_COLORS
from visualizer.views.plane import PlaneView
from visualizer.views.scene3d import Scene3D
from visualizer.workers import LatestJobWorker

MODEL_CHOICES = (
    ("tanh", "w₂ · tanh(w₁ x)"),
    ("linear", "w₁ x + w₂"),
    ("factor", "w₁ · w₂ · x  (scalar factorization)"),
    ("custom", "custom expression…"),
)
OPTIMIZER_CHOICES = (("gd", "gradient descent"), ("sgd", "SGD (mini-batch)"), ("momentum", "momentum"),
                     ("adam", "Adam"))
MAX_GRID = 1601  # grid points per side: a finer grid needs gigabytes and minutes per update
MAX_SURFACE = 401  # the 3D mesh is subsampled past this; the 2D map keeps every point
MODEL, DESCENT, VIEW, KERNEL = "Model f(x; w₁, w₂)", "Gradient descent", "View", "Tangent kernel and PL*"


@dataclass
class Manifold2DState:
    """Everything the lab's controls set; saved between sessions."""

    model: str = setting("tanh", "model", group=MODEL, choices=MODEL_CHOICES, reacts="problem",
                         tooltip="The two-parameter model whose solution set is drawn")
    expression: str = setting(
        "w2*sin(w1*x) + 0.2*w1", "expression", group=MODEL, commit="enter", reacts="problem",
        check=expression_check(), enabled_if=lambda s: s.model == "custom",
        tooltip="f(x; w) for the custom model: w1, w2 and x with + - * / ** and tanh, sin, cos, exp, log, relu, "
                "sigmoid. Press Enter to apply.")
    xs: list = data_setting([1.0], "x", "ys", 2)
    ys: list = data_setting([0.8], "y", "xs", 2)
    optimizer: str = setting("gd", "optimizer", group=DESCENT, choices=OPTIMIZER_CHOICES, reacts="runs",
                             tooltip="Changing it re-runs the descents on screen from their starting points")
    lr: float = setting(0.1, "learning rate η", group=DESCENT, range=(1e-5, 100.0), step=0.01, decimals=5,
                        reacts="runs", tooltip="Step size η (re-runs the descents on screen). Too large and the "
                                               "descent diverges: try 5 with w₁·w₂·x to see it.")
    momentum: float = setting(0.9, "momentum", group=DESCENT, range=(0.0, 0.999), step=0.05, decimals=3,
                              reacts="runs", enabled_if=lambda s: s.optimizer == "momentum",
                              tooltip="Momentum coefficient (the momentum optimizer only)")
    batch_size: int = setting(1, "batch size", group=DESCENT, range=lambda s: (1, len(s.xs)), depends=("xs",),
                              reacts="runs", enabled_if=lambda s: s.optimizer == "sgd",
                              tooltip="Mini-batch size for SGD (points per step)")
    steps: int = setting(2000, "steps", group=DESCENT, range=(1, 1_000_000), step=500, reacts="runs",
                         tooltip="Steps of each descent (re-runs the descents on screen)")
    n_random: int = setting(8, "N", group=DESCENT, range=(1, 200),
                            tooltip="How many descents 'Random starts' starts at once")
    extent: float = setting(3.0, "extent a", group=VIEW, range=(0.1, 1000.0), commit="finish", reacts="grid",
                            tooltip="Half-width of the box: w₁, w₂ ∈ [−a, a]")
    resolution: int = setting(201, "resolution", group=VIEW, range=(21, MAX_GRID), commit="finish",
                              reacts="grid", tooltip=f"Grid points per side (at most {MAX_GRID})")
    log_scale: bool = setting(True, "log scale (log₁₀ L)", group=VIEW, reacts="grid")
    contours: bool = setting(True, "contour lines", group=VIEW, reacts="grid")
    wireframe: bool = setting(False, "wireframe", group=VIEW, reacts="redraw")
    curvature: bool = setting(False, "shade negative curvature (λ_min(∇²L) < 0)", group=VIEW, reacts="grid",
                              tooltip="Red: the loss Hessian has a negative eigenvalue. For non-linear models "
                                      "this region touches the solution set: the loss is non-convex next to it.")
    color_by: str = setting("loss", "2D map", group=KERNEL, reacts="grid",
                            choices=(("loss", "loss L(w)"), ("kernel", "λ_min of the tangent kernel K(w) = DF DFᵀ")),
                            tooltip="What the 2D map shows. Uniform conditioning λ_min(K) ≥ μ implies PL*: "
                                    "½‖∇L‖² ≥ μ L (sum loss).")
    mu: float = setting(0.05, "μ", group=KERNEL, range=(1e-4, 1e4), decimals=4, commit="finish", reacts="grid",
                        tooltip="Outline the set where λ_min(K) < μ: outside it the loss is μ-PL*")
    pl_ball: bool = setting(False, "PL* ball B(w₀, R) for new descents", group=KERNEL,
                            tooltip="R = 2√(2βL(w₀))/μ with μ (min λ_min(K)) and β (max Hessian eigenvalue) "
                                    "sampled in the ball. With η ≤ 1/β the descent stays inside and "
                                    "L(w_t) ≤ (1 − ημ)ᵗ L(w₀) (dashed, in the loss plot).")
    seed: int = setting(0, "seed", widget="hidden", range=(0, 2**31))


# ------------------------------------------------------------------------------------------------
# Work done off the GUI thread
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GridRequest:
    model: str
    expression: str
    xs: tuple
    ys: tuple
    extent: float
    resolution: int
    log_scale: bool
    curvature: bool
    contours: bool
    device: str = "cpu"
    color_by: str = "loss"
    mu: float = 0.05


def compute_ball(req: tuple):
    """The PL* ball of one descent's start (worker thread)."""
    from models import plstar, toy2d

    model_key, expression, xs, ys, w0, color, lr = req
    return plstar.ball(toy2d.make_model(model_key, expression), toy2d.Data(list(xs), list(ys)), np.array(w0))


def compute_landscape(req: GridRequest) -> dict:
    """Loss grid, display values, contours, solution set and curvature for one request (worker thread)."""
    import torch

    from models import toy2d

    model = toy2d.make_model(req.model, req.expression)
    data = toy2d.Data(list(req.xs), list(req.ys))
    spec = toy2d.GridSpec(req.extent, req.resolution)
    dev = req.device if req.device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    grid = toy2d.evaluate_grid(model, data, spec, curvature=req.curvature, device=dev)
    lv = grid.loss
    finite = lv[np.isfinite(lv)]
    lmax = float(finite.max()) if finite.size else 1.0
    if req.log_scale:
        top = math.log10(lmax) if lmax > 0 else 0.0
        floor = top - 6.0
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.log10(np.maximum(np.where(np.isfinite(lv), lv, lmax), 10.0**floor))
        vrange = (floor, top if top > floor else floor + 1)
        label = "log₁₀ L(w)"
    else:
        floor = -12.0
        values = np.where(np.isfinite(lv), lv, lmax)
        vrange = (0.0, lmax if lmax > 0 else 1.0)
        label = "L(w)"
    sol = toy2d.solution_set(model, data, grid)
    out = {
        "request": req, "w1": grid.w1, "w2": grid.w2, "loss": lv, "values": values, "range": vrange,
        "floor": floor, "label": label, "solution": sol, "contours": [], "neg_mask": None, "neg_outline": [],
        "exact": sol.exact,
    }
    if req.contours:
        levels = toy2d.contour_levels(values, 12)
        out["contours"] = toy2d.contour_lines(values, spec, levels)
    out["plane_values"], out["plane_range"], out["plane_label"], out["mu_outline"] = values, vrange, label, []
    if req.color_by == "kernel":
        from models import plstar

        lam = plstar.kernel_min_eig_grid(model, data, spec)
        top = math.log10(max(float(np.nanmax(lam)), 1e-300))
        lo = top - 6
        out["plane_values"] = np.log10(np.maximum(lam, 10**lo))
        out["plane_range"] = (lo, top if top > lo else lo + 1)
        out["plane_label"] = "log₁₀ λ_min(K(w))"
        out["mu_outline"] = toy2d._contours(lam, spec, req.mu)
        out["kernel"] = lam
    if req.curvature and grid.min_hessian_eig is not None:
        e = grid.min_hessian_eig
        scale = max(1e-300, float(np.nanmax(np.abs(e))) if np.isfinite(e).any() else 1.0)
        out["neg_mask"] = e < -1e-9 * scale
        out["neg_outline"] = toy2d._contours(e, spec, 0.0)
    # the surface mesh is subsampled for very fine grids (the 2D map keeps full resolution)
    step = max(1, math.ceil(req.resolution / MAX_SURFACE))
    out["surface_step"] = step
    return out


# ------------------------------------------------------------------------------------------------
# The lab
# ------------------------------------------------------------------------------------------------

class Manifold2DLab(DescentLab):
    key = "manifold2d"
    title = "Solution manifolds (2 parameters)"
    state_cls = Manifold2DState
    hint = "Click the parameter plane to start gradient descent there"
    help = (
        "<h3>Solution manifolds of two-parameter models</h3>"
        "<p>With more parameters than data points (p &gt; n) the equations F(w) = y are under-determined: "
        "the solutions form a (p − n)-dimensional manifold M = {w : F(w) = y}. One point and two "
        "parameters give a curve (white).</p>"
        "<p>Loss: <b>L(w) = ½ Σ<sub>i</sub> (f(x<sub>i</sub>; w) − y<sub>i</sub>)²</b> (sum). For the linear "
        "model f = w₁x + w₂ gradient descent from w₀ lands on the orthogonal projection of w₀ onto M "
        "(white ring): w* = w₀ − X⁺(Xw₀ − y). For non-linear models M is curved and the loss is non-convex "
        "arbitrarily close to it (toggle the negative-curvature shading).</p>"
        "<p><b>Click</b> the plane to start a descent. <b>Space</b> start/pause, <b>S</b> single step, "
        "<b>R</b> reset, <b>Ctrl+S</b> screenshot.</p>"
    )

    def __init__(self, device: str = "cpu", parent=None, restore: bool = True, start: bool = True,
                 runner_factory=None) -> None:
        super().__init__(device, parent, restore, start, runner_factory)
        self.landscape: dict | None = None
        self.last_ball = None
        self._last_view = "3d"
        self._reset_view_pending = True
        self.cmap = pg.colormap.get("viridis")
        self._build_views()
        self._build_controls()
        self.ball_worker = LatestJobWorker(compute_ball, self)
        self.ball_worker.result.connect(self._on_ball)
        self.ball_worker.failed.connect(self._on_ball_failed)
        self.grid_worker = LatestJobWorker(compute_landscape, self)
        self.grid_worker.result.connect(self._on_landscape)
        self.grid_worker.failed.connect(self._on_landscape_failed)
        self._workers = [self.grid_worker, self.ball_worker]
        if start:
            self.start()

    def start(self) -> None:
        """Begin computing (the main window calls this once its first frame is on screen)."""
        self.request_landscape(reset_view=True)

    # ----------------------------------------------------------------------------- layout
    def _build_views(self) -> None:
        self.plane = PlaneView(self.cmap)
        self.plane.setToolTip("Click anywhere to start gradient descent from that point. "
                              "Drag to pan, wheel to zoom.")
        self.plane.clicked.connect(self._on_plane_click)
        self.scene = Scene3D(self.cmap)
        self.scene.container.setToolTip("Left-drag rotates, middle-drag (or Ctrl+drag) pans, wheel zooms.")
        self.scene.frame_drawn.connect(self.frame_drawn)
        self.scene.surface.set_wireframe(self.state.wireframe)
        self.zero3d = gl.GLLinePlotItem(mode="lines", color=(1, 1, 1, 1), width=3.5, antialias=True)
        self.scene.addItem(self.zero3d)
        self.sol3d = gl.GLScatterPlotItem(size=14, color=(1, 1, 1, 1), pxMode=True)
        self.scene.addItem(self.sol3d)
        # legend samples (never drawn in the plot: only their symbols show in the legend)
        self._legend_land = pg.ScatterPlotItem(symbol="star", size=14, brush=pg.mkBrush("#ff9f1c"),
                                               pen=pg.mkPen("#000"))
        self._legend_proj = pg.ScatterPlotItem(symbol="o", size=14, brush=pg.mkBrush(0, 0, 0, 0),
                                               pen=pg.mkPen("#ffffff", width=2))
        self._legend_neg = pg.PlotDataItem(pen=pg.mkPen("#ff5a5a", width=6))
        self.mu_curve = pg.PlotCurveItem(pen=pg.mkPen("#ff4df0", width=2, style=Qt.PenStyle.DashLine),
                                         connect="finite")
        self.mu_curve.setZValue(9)
        self.plane.plot.addItem(self.mu_curve)
        self.ball_items: list = []
        self.bound_curve = None
        self.caption = caption()
        lab_layout(self, self.banner, self.caption,
                   body=splitter("h", self.plane, self.scene.container, stretch=(1, 1), min_width=220))
        self.plane.installEventFilter(self)
        self.scene.installEventFilter(self)

    def _build_controls(self) -> None:
        custom = self.make_data_panel(2, "One point: the solutions form a curve (p − n = 1). "
                                         "Two points: isolated solutions.")
        form = self.make_form(custom=custom)
        self.widget("expression").setPlaceholderText("e.g. w2*sin(w1*x) + 0.2*w1")
        self.ball_label = QLabel()
        self.ball_label.setWordWrap(True)
        form.add_row(KERNEL, self.ball_label)
        self.loss_plot = dark_plot(x="step", y="L", log_y=True)
        self.loss_plot.setMinimumHeight(120)
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen("#ff9f1c", width=1.5))
        form.add_row("Loss of the latest descent", self.loss_plot)
        self.update_caption()

    def eventFilter(self, obj, ev):
        if ev.type() in (QEvent.Type.MouseButtonPress, QEvent.Type.FocusIn):
            self._last_view = "2d" if obj is self.plane else "3d"
        return False

    def active_view(self) -> QWidget:
        return self.plane if self._last_view == "2d" else self.scene

    def views(self) -> dict[str, QWidget]:
        return {"3d": self.scene, "2d": self.plane}

    def has_drawn(self) -> bool:
        return self.landscape is not None

    @property
    def targets(self) -> list:
        return self.data_panel.targets

    @property
    def fit_curve(self):
        return self.data_panel.fit_curve

    # ----------------------------------------------------------------------------- reactions
    def update_caption(self) -> None:
        s = self.state
        name = s.expression if s.model == "custom" else dict(MODEL_CHOICES)[s.model].split("  ")[0]
        n = len(s.xs)
        dim = 2 - n
        what = "a curve of solutions" if dim == 1 else "isolated solutions"
        self.caption.setText(
            f"<b>f(x; w) = {name}</b> &nbsp; n = {n} point{'s' if n > 1 else ''}, p = 2 → {what} "
            f"(dimension p − n = {dim}) &nbsp;·&nbsp; L(w) = ½ Σ (f(xᵢ; w) − yᵢ)² "
            f"&nbsp;·&nbsp; <i>click the plane to start gradient descent</i>")

    def react_grid(self, changed: dict) -> None:
        """A view setting: the grid again; a new box or resolution also resets the view onto it."""
        self._reset_view_pending |= bool({"extent", "resolution"} & changed.keys())
        super().react_grid(changed)

    def react_redraw(self, changed: dict) -> None:
        self.scene.surface.set_wireframe(self.state.wireframe)

    def request_landscape(self, reset_view: bool = False) -> None:
        s = self.state
        self._reset_view_pending |= reset_view
        self.grid_worker.submit(GridRequest(s.model, s.expression, tuple(s.xs), tuple(s.ys), s.extent,
                                            s.resolution, s.log_scale, s.curvature, s.contours, self.device,
                                            s.color_by, s.mu))

    def _on_landscape_failed(self, req, text: str) -> None:
        self.show_error(f"Cannot evaluate the loss: {text}", failure=True)

    def _on_landscape(self, req: GridRequest, out: dict) -> None:
        self.landscape = out
        reset = self._reset_view_pending
        self._reset_view_pending = False
        w1, w2, values = out["w1"], out["w2"], out["values"]
        self.plane.set_field(w1, w2, out["plane_values"], out["plane_range"], out["plane_label"], reset_view=reset)
        from visualizer.views.plane import polylines_to_nan_separated

        mx, my = polylines_to_nan_separated(out["mu_outline"])
        self.mu_curve.setData(mx, my, connect="finite")
        self.plane.set_legend_entry("mu", self.mu_curve, f"λ_min(K) = μ = {req.mu:g} (PL* fails inside)",
                                    req.color_by == "kernel")
        st = out["surface_step"]
        colors = None
        sub = values[::st, ::st]
        if out["neg_mask"] is not None:
            colors = self.scene.surface.colors_for(sub, out["range"]).copy()
            m = out["neg_mask"][::st, ::st]
            colors[m, :3] = 0.55 * colors[m, :3] + 0.45 * np.array([1.0, 0.2, 0.2], dtype=np.float32)
        self.scene.set_surface(w1[::st], w2[::st], sub, out["range"], req.log_scale, out["floor"],
                               colors=colors, reset_camera=reset)
        self.plane.set_overlay(out["neg_mask"], out["neg_outline"])
        self.plane.set_legend_entry("neg", self._legend_neg, "Hessian has a negative eigenvalue",
                                    out["neg_mask"] is not None)
        self.plane.set_contours([p for _, polys in out["contours"] for p in polys])
        self.scene.set_contours(out["contours"])
        sol = out["solution"]
        self.plane.set_zero_set(sol.curves, sol.points)
        n = len(req.xs)
        self.plane.set_residual_curves(sol.residual_curves if n > 1 else [], DATA_COLORS)
        from visualizer.views.scene3d import polylines_to_segments

        lift = 0.01 * self.scene.zheight
        z0 = self.scene.height_of(np.zeros(1))[0] + lift
        seg = polylines_to_segments([np.column_stack([c, np.full(len(c), z0)]) for c in sol.curves])
        self.zero3d.setData(pos=seg if len(seg) else np.zeros((0, 3)))
        pts = sol.points
        self.sol3d.setData(pos=np.column_stack([pts, np.full(len(pts), z0)]) if len(pts) else np.zeros((0, 3)))
        if sol.empty:
            note = sol.note or "no solutions in view: F(w) = y has no solution inside this box"
            self.message.emit(note, False)
        for r in self.runs:
            r.dirty = True
        self._redraw_runs()

    # ----------------------------------------------------------------------------- descents
    def start_descent(self, starts) -> DescentRun:
        starts = np.asarray(starts, dtype=np.float64).reshape(-1, 2)
        s = self.state
        params = dict(model_key=s.model, expression=s.expression, xs=tuple(s.xs), ys=tuple(s.ys),
                      optimizer=s.optimizer, lr=s.lr, momentum=s.momentum, batch_size=s.batch_size,
                      steps=s.steps, device=self.device, seed=s.seed)
        projections = None
        if s.model == "linear":
            from models.toy2d import Data, projection_onto_linear_solutions

            data = Data(list(s.xs), list(s.ys))
            projections = np.array([projection_onto_linear_solutions(data, w) for w in starts])
        run = DescentRun(self, "models.toy2d:descent", params, starts, self.next_colors(len(starts)),
                         to2d=lambda p: p, to3d=self._to3d, projections=projections)
        if s.pl_ball and len(starts) == 1:
            self.ball_worker.submit((s.model, s.expression, tuple(s.xs), tuple(s.ys), tuple(starts[0]), run.colors[0],
                                     s.lr))
        self.plane.set_legend_entry("land", self._legend_land, "landing point of a descent", True)
        self.plane.set_legend_entry("proj", self._legend_proj, "projection of the start onto M",
                                    run.projections is not None)
        self.runs.append(run)
        run.start()
        self.status.emit({"running": True})
        return run

    def _to3d(self, path: np.ndarray, loss: np.ndarray, lift: float) -> np.ndarray:
        return np.column_stack([path, self.scene.height_of(loss, lift=lift)])

    def _on_plane_click(self, w1: float, w2: float) -> None:
        if self.paused:
            self.set_paused(False)
        self.start_descent([w1, w2])
        self.message.emit(f"Gradient descent from w₀ = ({w1:.3f}, {w2:.3f})", False)

    def random_starts(self) -> DescentRun:
        s = self.state
        rng = np.random.default_rng(s.seed + 1000 * len(self.runs) + self._palette_i)
        starts = rng.uniform(-s.extent, s.extent, size=(s.n_random, 2))
        if self.paused:
            self.set_paused(False)
        return self.start_descent(starts)

    def default_start(self) -> np.ndarray:
        e = self.state.extent
        return np.array([-0.6 * e, 0.75 * e])

    def _redraw_runs(self):
        latest = super()._redraw_runs()
        if latest is not None:
            tr = latest.trajs[0]
            lv = tr.loss.view()
            steps = tr.steps.view()
            stride = max(1, len(lv) // 2000)
            y = np.maximum(lv[::stride], 1e-300)
            self.loss_curve.setData(steps[::stride], y)
            self.loss_curve.setPen(pg.mkPen(latest.colors[0], width=1.5))
            self._draw_fit(tr.last_params, latest)
        return latest

    def _draw_fit(self, w: np.ndarray, run: DescentRun) -> None:
        try:
            import torch

            from models import toy2d

            if getattr(run, "_model", None) is None:
                run._model = toy2d.make_model(run.params["model_key"], run.params["expression"])
            model = run._model
            xs = np.linspace(-3, 3, 200)
            with torch.no_grad():
                f = model.forward(torch.as_tensor(w, dtype=torch.float64), torch.as_tensor(xs)).numpy()
            self.fit_curve.setData(xs, np.clip(f, -1e3, 1e3))
        except Exception:  # the fit preview is cosmetic; never let it break the lab
            self.fit_curve.setData([], [])

    def _on_ball(self, req: tuple, b) -> None:
        color, lr = req[5], req[6]
        for item in self.ball_items:
            self.plane.plot.removeItem(item)
        self.ball_items = []
        if b.radius > 0:
            t = np.linspace(0, 2 * np.pi, 200)
            circle = pg.PlotCurveItem(b.w0[0] + b.radius * np.cos(t), b.w0[1] + b.radius * np.sin(t),
                                      pen=pg.mkPen(color, width=1.6, style=Qt.PenStyle.DashLine))
            circle.setZValue(19)
            self.plane.plot.addItem(circle)
            self.ball_items.append(circle)
        ok = b.holds and lr <= 1.0 / b.beta
        cond = (f"η = {lr:g} ≤ 1/β = {1 / b.beta:.3g}: the descent must stay in the ball and under the bound"
                if ok else f"η = {lr:g} > 1/β = {1 / b.beta:.3g}: the theorem's step condition does not hold")
        self.ball_label.setText(f"{b.note}<br>{cond if b.holds else ''}<br><i>sum loss ½Σ(f−y)²</i>")
        self.last_ball = b
        if self.bound_curve is not None:
            self.loss_plot.removeItem(self.bound_curve)
            self.bound_curve = None
        if b.holds and b.mu > 0:
            steps = np.unique(np.geomspace(1, max(2, self.state.steps), 200).astype(int))
            steps = np.concatenate([[0], steps])
            bound = np.maximum(b.bound(lr, steps), 1e-300)
            self.bound_curve = self.loss_plot.plot(steps, bound, pen=pg.mkPen("#ffffff", width=1.2,
                                                                              style=Qt.PenStyle.DashLine))

    def _on_ball_failed(self, req, text: str) -> None:
        self.report_failure(f"PL* ball: {text}")

    def clear_runs(self) -> None:
        for r in self.runs:
            r.remove()
        self.runs = []
        for item in self.ball_items:
            self.plane.plot.removeItem(item)
        self.ball_items = []
        self.plane.set_legend_entry("land", None, "", False)
        self.plane.set_legend_entry("proj", None, "", False)
        self.loss_curve.setData([], [])
        self.fit_curve.setData([], [])
