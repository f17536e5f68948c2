"""Lab "manifold3d": solution sets of three-parameter models, seen whole (THEORY.md sections 1 and 3).

Right, the parameter cube in OpenGL: one data point's solutions as a lit translucent surface, two points'
as a curve where their surfaces meet, three points' as isolated stars. Left, a movable slice w3 = c with
the loss on it: click it to start gradient descent from (w1, w2, c). Descents train the model itself
(plain), or, in lazy training, alpha * (f(w) - f(w0)) with the loss divided by alpha^2 for every alpha: as
alpha grows the descent lands ever closer to its start.
"""

from __future__ import annotations

import dataclasses
import html
import math
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
from pyqtgraph.opengl.MeshData import MeshData
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from visualizer.labs.descent_lab import DESCENT_ACTIONS, DescentLab, data_setting, expression_check
from visualizer.labs.schema import setting
from visualizer.runs import DescentRun
from visualizer.views.common import caption, lab_layout, lit_colors, splitter
from visualizer.views.data_panel import DATA_COLORS
from visualizer.views.plane import PlaneView, polylines_to_nan_separated
from visualizer.views.scene3d import Scene3D, polylines_to_segments
from visualizer.workers import LatestJobWorker

MODEL_CHOICES = (
    ("tanh", "w₃ · tanh(w₁ x + w₂)"),
    ("quadratic", "w₁ x + w₂ x² + w₃  (linear in w)"),
    ("product", "w₁ · w₂ · w₃ · x"),
    ("custom", "custom expression…"),
)
OPTIMIZERS = (("gd", "gradient descent"), ("momentum", "momentum"), ("adam", "Adam"))
SCALING_CHOICES = (("plain", "f(w): lands on the drawn solutions"),
                   ("lazy", "lazy: α·(f(w) − f(w₀)), loss / α²"))
SLICE_COLORS = (("loss", "loss L(w)"), ("kernel", "λ_min of the tangent kernel K(w)"))
MAX_RES = 160  # a finer cube takes minutes and gigabytes
MODEL, DESCENT, VIEW = "Model f(x; w₁, w₂, w₃)", "Gradient descent", "View"


VARIABLES = ("w1", "w2", "w3", "x")  # models.toy3d.VARIABLES (that module imports torch: not before the first frame)
_parses = expression_check(VARIABLES)


@dataclass
class Manifold3DState:
    model: str = setting("tanh", "model", choices=MODEL_CHOICES, group=MODEL, reacts="problem")
    expression: str = setting("w3*sin(w1*x) + w2", "f =", group=MODEL, reacts="problem", commit="enter",
                              check=_parses, enabled_if=lambda s: s.model == "custom",
                              tooltip="An expression in w1, w2, w3 and x (Enter applies)")
    xs: list = data_setting([1.0], "x", "ys", 3)
    ys: list = data_setting([0.5], "y", "xs", 3)
    optimizer: str = setting("gd", "optimizer", choices=OPTIMIZERS, group=DESCENT, reacts="runs")
    lr: float = setting(0.1, "learning rate η", range=(1e-5, 50.0), step=0.01, decimals=5, group=DESCENT,
                        reacts="runs")
    steps: int = setting(3000, "steps", range=(1, 1_000_000), group=DESCENT, reacts="runs")
    scaling: str = setting("plain", "training", choices=SCALING_CHOICES, group=DESCENT, reacts="runs",
                           tooltip="What the descents train. Plain: the model f(w) itself, so they land on the "
                                   "solution set drawn here. Lazy: α·(f(w) − f(w₀)) with the loss divided by α², "
                                   "one formula for every α (THEORY.md section 3); its solutions are f(w) = f(w₀) "
                                   "+ y/α, a copy of the drawn set shifted by each start's own output, which the "
                                   "descent reaches ever closer to its start as α grows.")
    alpha: float = setting(1.0, "output scale α", range=(0.1, 100.0), log=True, widget="slider", group=DESCENT,
                           reacts="runs", enabled_if=lambda s: s.scaling == "lazy",
                           tooltip="Output scale α: trains α·(f(w) − f(w₀)) with the loss divided by α². "
                                   "Large α = lazy training: the descent barely moves from its start.")
    start: list = setting([1.5, -1.0, 0.8], "start w₀", length=(3, 3), range=(-1e6, 1e6), commit="enter",
                          group=DESCENT, tooltip="A starting point w₀ = (w₁, w₂, w₃); Enter starts a descent "
                                                 "from it (and Space does when none runs)")
    n_random: int = setting(6, "N", range=(1, 100), group=DESCENT, tooltip="How many random starts at once")
    slice_w3: float = setting(0.8, "slice c", range=lambda s: (-s.extent, s.extent), depends=("extent",),
                              widget="slider", decimals=2, group=VIEW, reacts="grid",
                              tooltip="Where the 2D slice w₃ = c cuts the cube")
    extent: float = setting(2.5, "extent a", range=(0.1, 100.0), commit="finish", group=VIEW, reacts="grid",
                            tooltip="The cube shown is [−a, a]³")
    resolution: int = setting(64, "resolution", range=(16, MAX_RES), commit="finish", group=VIEW, reacts="grid",
                              tooltip=f"Grid points per side of the cube (at most {MAX_RES})")
    shells: bool = setting(False, "loss shells L(w) = level", group=VIEW, reacts="grid")
    shell_level: float = setting(0.05, "shell level", range=(1e-3, 1.0), log=True, widget="slider", group=VIEW,
                                 reacts="grid", enabled_if=lambda s: s.shells)
    slice_color: str = setting("loss", "slice shows", choices=SLICE_COLORS, group=VIEW, reacts="grid",
                               tooltip="Colour of the slice; with the kernel, the dashed line is λ_min(K) = μ: "
                                       "PL* holds (with constant μ) outside it")
    mu: float = setting(0.05, "μ", range=(1e-4, 1e4), log=True, decimals=4, commit="finish", group=VIEW,
                        reacts="grid", enabled_if=lambda s: s.slice_color == "kernel")
    seed: int = setting(0, "seed", range=(0, 10**6), widget="hidden")


@dataclass(frozen=True)
class Request3:
    model: str
    expression: str
    xs: tuple
    ys: tuple
    extent: float
    resolution: int
    slice_w3: float
    shells: bool
    shell_level: float
    slice_color: str = "loss"
    mu: float = 0.05


def compute_landscape3d(req: Request3) -> dict:
    """Residual grid, solution set, slice and shells for one request (worker thread)."""
    from models import toy2d, toy3d

    model = toy3d.make_model(req.model, req.expression)
    data = toy2d.Data(list(req.xs), list(req.ys))
    spec = toy3d.GridSpec3(req.extent, req.resolution)
    res = toy3d.residual_grid(model, data, spec)
    sol = toy3d.solution_set(model, data, spec, res)
    shell = toy3d.level_mesh(toy3d.loss_grid(res), spec, req.shell_level) if req.shells else None
    # the slice w3 = c at the 2D view's own resolution
    import torch

    n2 = 161
    w1 = np.linspace(-req.extent, req.extent, n2)
    w2 = np.linspace(-req.extent, req.extent, n2)
    g1, g2 = np.meshgrid(w1, w2, indexing="ij")
    pts = torch.as_tensor(np.stack([g1, g2, np.full_like(g1, req.slice_w3)], axis=-1))
    x, y = data.tensors()
    with torch.no_grad():
        r2 = (model.forward(pts, x) - y).numpy()
    lv = 0.5 * (r2 * r2).sum(-1)
    top = math.log10(max(float(np.nanmax(lv)), 1e-300))
    floor = top - 6
    values = np.log10(np.maximum(np.nan_to_num(lv, nan=10**top), 10**floor))
    spec2 = toy2d.GridSpec(req.extent, n2)
    slice_curves = [toy2d._contours(r2[..., i], spec2) for i in range(data.n)]
    out = {"request": req, "solution": sol, "shell": shell, "w1": w1, "w2": w2, "values": values,
           "range": (floor, top if top > floor else floor + 1), "slice_curves": slice_curves,
           "label": "log₁₀ L on the slice", "mu_outline": []}
    if req.slice_color == "kernel":
        j = toy3d.jacobian(model, pts, x)
        lam = torch.linalg.eigvalsh(j @ j.transpose(-1, -2))[..., 0].numpy()
        top = math.log10(max(float(lam.max()), 1e-300))
        out["values"] = np.log10(np.maximum(lam, 10 ** (top - 6)))
        out["range"] = (top - 6, top)
        out["label"] = "log₁₀ λ_min(K) on the slice"
        out["mu_outline"] = toy2d._contours(lam, spec2, req.mu)
        out["kernel"] = lam
    return out


def _actions() -> tuple:
    """The shared descent actions; the scene's "descent" (from the default start) is also a button beside w₀."""
    typed = {"descent": dict(label="Descend", button=True, group=DESCENT, beside="start",
                             tooltip="Start a descent from the typed w₀")}
    return tuple(dataclasses.replace(a, **typed.get(a.name, {})) for a in DESCENT_ACTIONS)


class Manifold3DLab(DescentLab):
    key = "manifold3d"
    state_cls = Manifold3DState
    title = "Solution manifolds (3 parameters)"
    actions = _actions()
    hint = "Click the slice (left) to start a descent from (w₁, w₂, c); drag the 3D view to turn the cube"
    help = ("<h3>Solution manifolds of three-parameter models</h3>"
            "<p>The solutions of F(w) = y form a (p − n)-dimensional set: with p = 3, one data point gives a "
            "surface, two a curve (where the two points' surfaces meet), three isolated points.</p>"
            "<p>Loss <b>L(w) = ½ Σ (f(xᵢ; w) − yᵢ)²</b>. For the model linear in w the descent lands on the "
            "orthogonal projection of its start (white ring). <b>Lazy training</b> trains α(f(w) − f(w₀)) with "
            "loss / α², one formula for every α: as α grows the distance travelled shrinks like 1/α (the "
            "landing set is f(w) = f(w₀) + y/α, which approaches the start). <b>Plain</b> trains f(w) onto the "
            "drawn solution set.</p>"
            "<p>Click the slice (left) to start a descent from (w₁, w₂, c).</p>")

    def __init__(self, device: str = "cpu", parent=None, restore: bool = True, start: bool = True,
                 runner_factory=None) -> None:
        super().__init__(device, parent, restore, start, runner_factory)
        self.landscape: dict | None = None
        self.last_distance = float("nan")
        self._mesh_items: list = []
        self.cmap = pg.colormap.get("viridis")
        self._build_views()
        self.make_form(custom=self.make_data_panel(3, "One point: a surface of solutions (p − n = 2). "
                                                      "Two: a curve. Three: isolated solutions."))
        self.widget("start").returnPressed.connect(self._descend_if_taken)  # after the form's own commit
        self.worker = LatestJobWorker(compute_landscape3d, self)
        self.worker.result.connect(self._on_landscape)
        self.worker.failed.connect(lambda req, text: self.show_error(f"Cannot compute the solution set: {text}",
                                                                            failure=True))
        self._workers = [self.worker]
        self.update_caption()
        if start:
            self.start()

    # ----------------------------------------------------------------------------- views
    def _build_views(self) -> None:
        self.plane = PlaneView(self.cmap)
        self.plane.plot.setTitle("slice w₃ = c (click to start a descent here)", color="#c9d1d9", size="10pt")
        self.plane.setToolTip("The loss on the slice w₃ = c. Click to start gradient descent from (w₁, w₂, c).")
        self.plane.clicked.connect(lambda a, b: self.start_descent([a, b, self.state.slice_w3]))
        self.mu_curve = pg.PlotCurveItem(pen=pg.mkPen("#ff4df0", width=2, style=Qt.PenStyle.DashLine),
                                         connect="finite")
        self.mu_curve.setZValue(9)
        self.plane.plot.addItem(self.mu_curve)
        self.scene = Scene3D(self.cmap, labels=("w₁", "w₂", "w₃"))
        self.scene.surface.setVisible(False)
        self.scene.frame_drawn.connect(self.frame_drawn)
        self.scene.container.setToolTip("Left-drag rotates, middle-drag (or Ctrl+drag) pans, wheel zooms.")
        self.box = gl.GLBoxItem(color=(255, 255, 255, 60))
        self.scene.addItem(self.box)
        self.curve_item = gl.GLLinePlotItem(mode="lines", color=(1, 1, 1, 1), width=4, antialias=True)
        self.scene.addItem(self.curve_item)
        self.points_item = gl.GLScatterPlotItem(size=16, color=(1, 1, 1, 1), pxMode=True)
        self.scene.addItem(self.points_item)
        quad = MeshData(vertexes=np.zeros((4, 3)), faces=np.array([[0, 1, 2], [0, 2, 3]]))
        self.slice_item = gl.GLMeshItem(meshdata=quad, color=(0.55, 0.75, 1.0, 0.12), glOptions="translucent",
                                        smooth=False, computeNormals=False)
        self.scene.addItem(self.slice_item)
        self.caption = caption()
        lab_layout(self, self.banner, self.caption,
                   body=splitter("h", self.plane, self.scene.container, stretch=(2, 3)))

    def views(self) -> dict[str, QWidget]:
        return {"3d": self.scene, "2d": self.plane}

    def active_view(self) -> QWidget:
        return self.scene

    def has_drawn(self) -> bool:
        return self.landscape is not None

    # ----------------------------------------------------------------------------- state
    def train_alpha(self) -> float:
        """The output scale the descents train with: α in the lazy scaling, 1 (none) in the plain one."""
        return self.state.alpha if self.state.scaling == "lazy" else 1.0

    def update_caption(self) -> None:
        s = self.state
        n = len(s.xs)
        what = {1: "a surface", 2: "a curve", 3: "isolated points"}[n]
        f = html.escape(s.expression) if s.model == "custom" else dict(MODEL_CHOICES)[s.model]
        self.caption.setText(f"<b>f = {f}</b> &nbsp; n = {n}, p = 3 → {what} of solutions (dimension {3 - n}) · "
                             f"slice w₃ = {s.slice_w3:.2f} · "
                             + (f"lazy training, α = {s.alpha:.3g}" if s.scaling == "lazy" else "plain training"))

    def react_runs(self, changed: dict) -> None:
        self.update_caption()  # it names the training (plain, or lazy with its α)
        super().react_runs(changed)

    def start(self) -> None:
        self.request_landscape()

    def request_landscape(self) -> None:
        s = self.state
        self.worker.submit(Request3(s.model, s.expression, tuple(s.xs), tuple(s.ys), s.extent, s.resolution,
                                    s.slice_w3, s.shells, s.shell_level, s.slice_color, s.mu))

    # ----------------------------------------------------------------------------- drawing
    def _on_landscape(self, req: Request3, out: dict) -> None:
        self.landscape = out
        e = req.extent
        self.plane.set_field(out["w1"], out["w2"], out["values"], out["range"], out["label"])
        mx, my = polylines_to_nan_separated(out["mu_outline"])
        self.mu_curve.setData(mx, my, connect="finite")
        sol = out["solution"]
        n = len(req.xs)
        if n == 1:
            self.plane.set_zero_set(out["slice_curves"][0], np.zeros((0, 2)))
            self.plane.set_residual_curves([], [])
        else:
            self.plane.set_zero_set([], np.zeros((0, 2)))
            self.plane.set_residual_curves(out["slice_curves"], DATA_COLORS)
        for item in self._mesh_items:
            self.scene.removeItem(item)
        self._mesh_items = []
        for i, mesh in enumerate(sol.meshes):
            if mesh.empty:
                continue
            main = n == 1
            rgba = (0.35, 0.75, 1.0, 0.62) if main else (*pg.mkColor(DATA_COLORS[i]).getRgbF()[:3], 0.16)
            md = MeshData(vertexes=mesh.vertices, faces=mesh.faces,
                          vertexColors=lit_colors(mesh.normals, rgba, len(mesh.vertices)))
            item = gl.GLMeshItem(meshdata=md, smooth=True, computeNormals=False, glOptions="translucent")
            self.scene.addItem(item)
            self._mesh_items.append(item)
        if out["shell"] is not None and not out["shell"].empty:
            sh = out["shell"]
            md = MeshData(vertexes=sh.vertices, faces=sh.faces,
                          vertexColors=lit_colors(sh.normals, (1.0, 0.85, 0.3, 0.12), len(sh.vertices)))
            item = gl.GLMeshItem(meshdata=md, smooth=True, computeNormals=False, glOptions="additive")
            self.scene.addItem(item)
            self._mesh_items.append(item)
        seg = polylines_to_segments(sol.curves)
        self.curve_item.setData(pos=seg if len(seg) else np.zeros((0, 3)))
        self.points_item.setData(pos=sol.points if len(sol.points) else np.zeros((0, 3)))
        c = req.slice_w3
        self.slice_item.setMeshData(vertexes=np.array([[-e, -e, c], [e, -e, c], [e, e, c], [-e, e, c]]),
                                    faces=np.array([[0, 1, 2], [0, 2, 3]]))
        self.box.resetTransform()
        self.box.setSize(2 * e, 2 * e, 2 * e)
        self.box.translate(-e, -e, -e)
        if self.scene.extent != (-e, e, -e, e):
            self.scene.extent = (-e, e, -e, e)
            self.scene.set_home((0.0, 0.0, 0.0), 4.2 * e, elevation=24, azimuth=-55)
            self.scene.floor.resetTransform()
            self.scene.floor.setSize(2 * e, 2 * e)
            self.scene.floor.setSpacing(e / 5, e / 5)
            self.scene.floor.translate(0, 0, -e)
            for item, pos in zip(self.scene.labels, ([1.15 * e, 0, -e], [0, 1.15 * e, -e], [-e, -e, 1.1 * e])):
                item.setData(pos=pos)
        if sol.note:
            self.message.emit(sol.note, False)

    # ----------------------------------------------------------------------------- descents
    def start_descent(self, starts) -> DescentRun:
        starts = np.asarray(starts, dtype=np.float64).reshape(-1, 3)
        s = self.state
        params = dict(model_key=s.model, expression=s.expression, xs=tuple(s.xs), ys=tuple(s.ys),
                      optimizer=s.optimizer, lr=s.lr, momentum=0.9, batch_size=1, steps=s.steps,
                      device=self.device, seed=s.seed, alpha=self.train_alpha(), scaling=s.scaling)
        proj = None
        if s.model == "quadratic":  # linear in w: the descent lands on a projection of its start
            from models.toy2d import Data
            from models.toy3d import projection_onto_linear_solutions

            data = Data(list(s.xs), list(s.ys))
            lazy = s.alpha if s.scaling == "lazy" else None
            proj = np.array([projection_onto_linear_solutions(data, w, lazy) for w in starts])
        run = DescentRun(self, "models.toy3d:descent", params, starts, self.next_colors(len(starts)),
                         to2d=lambda p: p[:, :2], to3d=lambda p, loss, lift: p, projections=proj)
        if proj is not None:
            run.proj3d = gl.GLScatterPlotItem(pos=proj, size=18, color=(1, 1, 1, 0.9), pxMode=True)
            self.scene.addItem(run.proj3d)
        self.runs.append(run)
        if self.paused:
            self.set_paused(False)
        run.start()
        self.status.emit({"running": True})
        return run

    def _descend_if_taken(self) -> None:
        """Enter in the w₀ field: a descent from it, once the form took what was typed."""
        if self.form.error_label("start").isHidden():
            self._start_default()

    def random_starts(self) -> DescentRun:
        s = self.state
        rng = np.random.default_rng(s.seed + self._palette_i)
        return self.start_descent(rng.uniform(-s.extent, s.extent, size=(s.n_random, 3)))

    def done_message(self, run: DescentRun, result) -> str:
        """The shared report, and how far the descent travelled (kept as ``last_distance``) in which training."""
        self.last_distance = float(np.mean([np.linalg.norm(tr.last_params - st)
                                            for tr, st in zip(run.trajs, run.starts)]))
        how = f"lazy, α = {run.params['alpha']:.3g}" if run.params["scaling"] == "lazy" else "plain"
        return (f"{super().done_message(run, result)} · distance travelled ‖w_T − w₀‖ = {self.last_distance:.4f}"
                f" ({how})")

    def clear_runs(self) -> None:
        for r in self.runs:
            if getattr(r, "proj3d", None) is not None:
                self.scene.removeItem(r.proj3d)
            r.remove()
        self.runs = []

    def default_start(self) -> np.ndarray:
        return np.array(self.state.start, dtype=np.float64)
