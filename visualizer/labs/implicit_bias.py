"""Lab "implicit-bias": gradient descent on separable data finds the max-margin separator, slowly, and the
optimizer's geometry decides which one (THEORY.md section 5).

Two classes of points edited by hand (left click +1, right click −1, drag to move, middle click or Delete to
remove), a linear model through the origin (optionally with a constant bias feature) trained on the sum loss by
gradient descent and its steepest-descent relatives for up to 10⁷ steps in a child process
(``models.implicit_bias:lab_run``, a numba loop streaming log-spaced checkpoints). Drawn live on log-time axes:
each run's decision boundary against the exact SVM's (and the l1 / l∞ max-margin ones), the angle to its own
max-margin direction against the 1/log t rate and the ŵ log t + w̃ prediction, ‖w(t)‖, the smallest normalized
margin, loss × t, and in the 3D view the loss surface with every trajectory running off along its ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
from OpenGL import GL
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

from models import implicit_bias as ib
from visualizer import errorlog
from visualizer.labs.base import Action, SingleRunLab
from visualizer.labs.schema import SettingError, setting
from visualizer.views.common import caption, dark_plot, lab_layout, splitter
from visualizer.views.points import NEG_COLOR, POS_COLOR, PointEditor
from visualizer.views.scene3d import Scene3D

DATA, RUNS, VIEW = "Data", "Runs", "Views"
LIMIT = 10.0  # points live in [-LIMIT, LIMIT]^2
MAX_POINTS = 200
OPTS = ("gd", "ngd", "coordinate", "ncoordinate", "sign", "nsign")
OPT_NAMES = {"gd": "GD", "ngd": "normalized GD", "coordinate": "coordinate (l1)",
             "ncoordinate": "normalized coordinate (l1)", "sign": "sign (l∞)", "nsign": "normalized sign (l∞)"}
OPT_COLORS = {"gd": "#ff9f1c", "ngd": "#ffd166", "coordinate": "#06d6a0", "ncoordinate": "#9ef0c8",
              "sign": "#c77dff", "nsign": "#e7c6ff"}
NORM_COLORS = {"l2": "#ffffff", "l1": "#06d6a0", "linf": "#c77dff"}
NORM_NAMES = {"l2": "l2 (SVM)", "l1": "l1", "linf": "l∞"}
PRESET_CHOICES = (("clean", "clean: two support vectors, the rest far (gap 2)"),
                  ("far", "far: the non-support points 3× farther out"),
                  ("nearly", "nearly non-separable (a thin margin)"),
                  ("nonsep", "not separable through the origin"),
                  ("single", "one tight point: l2, l1, l∞ differ"))
MODE_CHOICES = (("2d", "2D: points in the plane, edited by hand"),
                ("cube", "3D cube: 40 points in [−1, 1]³ split by a plane"),
                ("tilted", "3D tilted: 9 points, l2, l1, l∞ 18–41° apart"))
LOCKED = ("3D data are a preset (points in a cube): editing by hand is 2D only — choose 'data mode: 2D' to "
          "edit points")
CUBE_PAD = 1.15  # the 3D view's box is the data's cube times this
RAY_LEN = 1.6  # the max-margin rays' length in the 3D view, in cube half-sides
PLANE_ALPHA = 0.2
SURFACE_N = 81
PREDICT_FROM = 100  # the asymptotic predictions are drawn from this step on
ANGLE_FLOOR = 1e-8  # degrees: smaller angles are drawn here
DEPTH = 8.0  # decades of loss below the start the 3D view shows
_CLEAN = ib.make_preset("clean")


def _same_count(v, s) -> str | None:
    n = {len(s.xs), len(s.ys), len(s.labels)}
    if len(n) != 1:
        return (f"xs, ys and labels need one value per point each (got {len(s.xs)}, {len(s.ys)}, "
                f"{len(s.labels)})")
    if len(s.zs) not in (0, len(s.xs)):
        return f"zs is empty (2D data) or has one value per point ({len(s.xs)}), not {len(s.zs)}"
    return None


def _labels_check(v, s) -> str | None:
    if any(a not in (-1.0, 1.0) for a in v):
        return "every label is +1 or -1"
    return _same_count(v, s)


def _one_runs(v, s) -> str | None:
    return None if any(getattr(s, f"run_{o}") for o in OPTS) else "at least one optimizer runs"


def _run_flag(opt: str, default: bool):
    return setting(default, f"{OPT_NAMES[opt]}", group=RUNS, reacts="runs", check=_one_runs,
                   depends=tuple(f"run_{o}" for o in OPTS if o != opt),
                   tooltip={"gd": "w ← w − η∇L: converges in direction to the hard-margin SVM (l2), at rate 1/log t",
                            "ngd": "w ← w − (η/L(w))∇L: the same SVM direction, much faster",
                            "coordinate": "greedy coordinate descent, steepest descent in l1: the l1 max-margin "
                                          "direction",
                            "ncoordinate": "coordinate descent with the step η/L(w)",
                            "sign": "w ← w − η‖∇L‖₁ sign(∇L), steepest descent in l∞: the l∞ max-margin direction",
                            "nsign": "sign descent with the step η/L(w)"}[opt])


@dataclass
class ImplicitBiasState:
    """The data (three lists, saved, set by scenes), the runs, the views."""

    xs: list = setting(_CLEAN.x[:, 0].tolist(), "x", group=DATA, widget="hidden", reacts="data",
                       length=(1, MAX_POINTS), range=(-LIMIT, LIMIT), check=_same_count, depends=("ys", "zs", "labels"),
                       tooltip="The points' first coordinates")
    ys: list = setting(_CLEAN.x[:, 1].tolist(), "y", group=DATA, widget="hidden", reacts="data",
                       length=(1, MAX_POINTS), range=(-LIMIT, LIMIT), check=_same_count, depends=("xs", "zs", "labels"),
                       tooltip="The points' second coordinates")
    zs: list = setting([], "z", group=DATA, widget="hidden", reacts="data", length=(0, MAX_POINTS),
                       range=(-LIMIT, LIMIT), check=_same_count, depends=("xs", "ys", "labels"),
                       tooltip="The points' third coordinates in a 3D data mode (empty: 2D data)")
    labels: list = setting(_CLEAN.y.tolist(), "labels", group=DATA, widget="hidden", reacts="data",
                           length=(1, MAX_POINTS), range=(-1.0, 1.0), check=_labels_check, depends=("xs", "ys", "zs"),
                           tooltip="The points' classes, +1 or -1")
    mode: str = setting("2d", "data mode", group=DATA, reacts="mode", choices=MODE_CHOICES,
                        tooltip="2D: points in the plane, edited by hand in the data plot (the preset below). 3D: "
                                "a preset of points in a cube with labels, drawn in the 3D view with the separating "
                                "planes through the origin, where the l2, l1 and l∞ directions differ "
                                "generically. Editing by hand is 2D only (the data plot shows the 3D points' "
                                "(x, y) projection)")
    preset: str = setting("clean", "preset", group=DATA, reacts="preset", choices=PRESET_CHOICES,
                          enabled_if=lambda s: s.mode == "2d",
                          tooltip="Load a 2D data set (your edits are replaced; 'Load the preset again' reloads "
                                  "it); the 3D data modes have their own points")
    bias: float = setting(0.0, "bias feature b", group=DATA, range=(0.0, 10.0), decimals=2, reacts="data",
                          commit="finish",
                          tooltip="0: none, the boundary passes through the origin. Otherwise every point gets a "
                                  "constant extra coordinate b and the model is w·(x, y, b) (3D data: "
                                  "w·(x, y, z, b)): the SVM and the max-margin directions are computed in that "
                                  "augmented space")
    loss: str = setting("logistic", "loss", group=RUNS, reacts="runs",
                        choices=(("logistic", "logistic log(1 + e⁻ᵐ)"), ("exponential", "exponential e⁻ᵐ"),
                                 ("square", "square ½(1 − m)² (no implicit bias)")),
                        tooltip="The sum loss L(w) = Σ l(y_n w·x_n); the square loss regresses onto the labels and "
                                "converges to a finite point, the contrast")
    run_gd: bool = _run_flag("gd", True)
    run_ngd: bool = _run_flag("ngd", True)
    run_coordinate: bool = _run_flag("coordinate", False)
    run_ncoordinate: bool = _run_flag("ncoordinate", False)
    run_sign: bool = _run_flag("sign", False)
    run_nsign: bool = _run_flag("nsign", False)
    eta_fraction: float = setting(0.5, "η / stability limit", group=RUNS, range=(0.001, 4.0), decimals=3, log=True,
                                  reacts="runs", commit="finish",
                                  tooltip="Each run's step η is this fraction of its own stability limit (2 over "
                                          "the curvature in the optimizer's norm; logistic GD: 8/σ_max(Z)²; the "
                                          "exponential loss and the normalized steps: the local limit at w = 0)")
    steps: int = setting(10**6, "steps", group=RUNS, range=(10, 10**7), reacts="runs", commit="finish",
                         tooltip="Steps of every run (float64; a million take well under a second per run)")
    per_decade: int = setting(10, "stream points per decade", group=RUNS, range=(1, 200), reacts="runs",
                              commit="finish",
                              tooltip="The run reports this many times per decade of steps (a recording advances "
                                      "one report per step of its clock: more means a slower sweep of log t)")
    log_radius: bool = setting(True, "log radius in the 3D view", group=VIEW, reacts="surface",
                               tooltip="Draw w at radius log(1 + ‖w‖), so the far part of the paths stays in view "
                                       "(3D data: each path at that radius, scaled to the rays; off: the "
                                       "normalized w(t)/‖w(t)‖ on a sphere through the rays' tips)")


def _boundary(w: np.ndarray, bias: float, offset: float = 0.0, r: float = 3 * LIMIT) -> tuple:
    """The line {p : w₁p₁ + w₂p₂ + w₃b = offset} as two far points (the decision boundary when offset = 0)."""
    w = np.asarray(w, float)
    a, b = float(w[0]), float(w[1])
    c = float(w[2]) * bias if len(w) > 2 else 0.0
    nn = a * a + b * b
    if not (nn > 0 and math.isfinite(nn)):
        return [], []
    p0 = np.array([a, b]) * (offset - c) / nn
    d = np.array([-b, a]) / math.sqrt(nn)
    return [p0[0] - r * d[0], p0[0] + r * d[0]], [p0[1] - r * d[1], p0[1] + r * d[1]]


def _plane_in_box(normal: np.ndarray, offset: float, a: float) -> np.ndarray:
    """The polygon {p : normal·p = offset} ∩ [−a, a]³, its corners in order around it ((0, 3) if they miss)."""
    n = np.asarray(normal, float)
    corners = np.array([[x, y, z] for x in (-a, a) for y in (-a, a) for z in (-a, a)])
    edges = [(i, j) for i in range(8) for j in range(i + 1, 8) if np.sum(corners[i] != corners[j]) == 1]
    pts = []
    for i, j in edges:
        f0, f1 = corners[i] @ n - offset, corners[j] @ n - offset
        if f0 == 0:
            pts.append(corners[i])
        if f0 * f1 < 0:
            pts.append(corners[i] + (corners[j] - corners[i]) * f0 / (f0 - f1))
    if len(pts) < 3 or not np.linalg.norm(n) > 0:
        return np.zeros((0, 3))
    pts = np.unique(np.round(np.array(pts), 12), axis=0)
    c = pts.mean(axis=0)
    u = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 * np.linalg.norm(n) else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(n / np.linalg.norm(n), u)
    order = np.argsort(np.arctan2((pts - c) @ v, (pts - c) @ u))
    return pts[order]


class _Plane(gl.GLMeshItem):
    """A translucent plane drawn without writing depth; the depth mask is restored after it (the next frame's
    clear of the depth buffer needs it)."""

    def paint(self):
        try:
            super().paint()
        finally:
            GL.glDepthMask(GL.GL_TRUE)


class ImplicitBiasLab(SingleRunLab):
    key = "implicit-bias"
    state_cls = ImplicitBiasState
    title = "Implicit bias: gradient descent finds the max-margin separator"
    actions = (Action("restart", "Run again from w = 0 (Space)", "restart", group=RUNS,
                      tooltip="Start every run again from w = 0 with the settings above",
                      scene="start every run again from w = 0"),
               Action("load_preset", "Load the preset again", "load_preset", group=DATA,
                      tooltip="Replace the points with the chosen preset (a 3D data mode: its points in the cube)",
                      scene="load the chosen preset's points"),
               Action("reset", "Reset (R)", "reset", button=False, scene="stop every run and clear the plots"))
    hint = "Left click adds a point of class +1, right click one of −1; drag a point and every run starts again"
    help = ("<h3>Implicit bias: the max-margin separator</h3>"
            "<p>A linear model through the origin, w ∈ ℝ² (ℝ³ with the bias feature), trained on the <b>sum "
            "loss</b> L(w) = Σ<sub>n</sub> l(y<sub>n</sub> w·x<sub>n</sub>) from w = 0. On data separable "
            "through the origin the logistic and exponential losses have no minimizer: ‖w(t)‖ grows like "
            "‖ŵ‖ log t, and the direction of w converges to the hard-margin SVM ŵ (Soudry et al. 2018), at "
            "the slow rate 1/log t: w(t) = ŵ log t + w̃ + o(1), with η exp(−z<sub>n</sub>·w̃) = α<sub>n</sub> on "
            "the support vectors (α the SVM's dual variables), and L(w(t)) t → Σα<sub>n</sub>/η.</p>"
            "<p>The geometry of the optimizer decides which separator: steepest descent in l1 (greedy "
            "coordinate descent) goes to the l1 max-margin direction, in l∞ (sign descent) to the l∞ one "
            "(Gunasekar et al. 2018). In 2D with two tight points the three coincide; with one tight point (the "
            "'single' preset) or the bias feature they differ. Normalized steps η/L(w) reach the same "
            "directions much faster. The square loss converges to a finite point: no implicit bias.</p>"
            "<p>How fast the prediction settles depends on the gap to the next margin (shown above the views): "
            "hand-drawn data with a point just off the margin settle slowly.</p>"
            "<p>Left click adds a point of class +1, right click one of −1, drag moves a point, middle click "
            "or Delete removes the nearest; every edit starts every run again from w = 0.</p>"
            "<p>The 3D data modes (<i>data mode</i>: cube, tilted) put the points in a cube, where the three "
            "directions differ generically: the 3D view then shows the points (support vectors ringed), the "
            "separating planes through the origin (white: the SVM's; the l1 and l∞ ones when those optimizers "
            "run), the max-margin rays and each run's path; the data plot shows their (x, y) projection. Editing "
            "by hand is 2D only.</p>")

    def __init__(self, device: str = "cpu", parent=None, restore: bool = True, start: bool = True,
                 runner_factory=None) -> None:
        super().__init__(device, parent, restore, start, runner_factory)
        self.trace: ib.Trace | None = None
        self.geo: ib.Geometry | None = None
        self.z: np.ndarray | None = None
        self.run_specs: list[tuple] = []
        self.limits: list[float] = []
        self.finished = True
        self.reason = ""
        self._dragging = False
        self._diverged_told: set[int] = set()
        self._surface_key = None
        self._build_views()
        self.make_form()
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setTextFormat(Qt.TextFormat.RichText)
        self.form.add_row(RUNS, self.info)
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.timeout.connect(self.draw)
        self._drag_restart = QTimer(self)
        self._drag_restart.setSingleShot(True)
        self._drag_restart.setInterval(150)
        self._drag_restart.timeout.connect(self.restart)
        self._apply_mode()
        self._show_data()
        if start:
            self.start()

    # ----------------------------------------------------------------------------- building
    def _build_views(self) -> None:
        self.caption = caption()
        self.data_note = caption()
        self.editor = PointEditor(LIMIT, MAX_POINTS)
        self.editor.setToolTip("Left click: a point of class +1 (red); right click: class −1 (blue); drag a point "
                               "to move it; middle click or Delete: remove the nearest. White: the SVM boundary "
                               "and its margin; each run's current boundary in its colour; ringed: support vectors")
        self.editor.edited.connect(self._on_edited)
        self.editor.refused.connect(lambda text: self.message.emit(text, True))
        self.editor.setXRange(-4, 4, padding=0)
        self.editor.setYRange(-4, 5, padding=0)  # (room at the top for the legend)
        self.editor.setTitle("the data and the boundaries", color="#c9d1d9", size="10pt")
        p = self.editor
        self.margin_lines = p.plot([], [], pen=pg.mkPen("#ffffff70", width=1, style=Qt.PenStyle.DashLine),
                                   connect="finite")
        self.svm_line = p.plot([], [], pen=pg.mkPen("#ffffff", width=3))
        self.mm_lines = {n: p.plot([], [], pen=pg.mkPen(NORM_COLORS[n], width=2, style=Qt.PenStyle.DashLine))
                         for n in ("l1", "linf")}
        self.rings = pg.ScatterPlotItem(size=22, symbol="o", brush=None, pen=pg.mkPen("#ffffff", width=2))
        self.rings.setZValue(29)
        p.addItem(self.rings)
        self.run_lines: list = []
        for item in (self.margin_lines, self.svm_line, *self.mm_lines.values()):
            item.setZValue(10)
        self.data_legend = p.addLegend(offset=(6, 6), labelTextSize="8pt", brush=(20, 22, 28, 200))

        def plot(title, y, log_y, tip):
            pl = dark_plot(None, x="step t", y=y, tooltip=tip)
            pl.setTitle(title, color="#c9d1d9", size="10pt")
            pl.setLogMode(x=True, y=log_y)
            for side in ("left", "bottom"):
                pl.getAxis(side).enableAutoSIPrefix(False)
            return pl

        self.angle_plot = plot("angle to its max-margin direction", "degrees", True,
                               "The angle between w(t) and the max-margin direction of the run's own norm (GD: the "
                               "SVM). White dashed: the angle of ŵ log t + w̃ (for the first GD run, from t = 100); "
                               "dotted: the bare 1/log t rate")
        self.angle_legend = self.angle_plot.addLegend(offset=(8, -8), labelTextSize="8pt", brush=(20, 22, 28, 200))
        self.pred_angle = self.angle_plot.plot([], [], pen=pg.mkPen("#ffffff", width=1.6, style=Qt.PenStyle.DashLine),
                                               name="ŵ log t + w̃")
        self.inv_log = self.angle_plot.plot([], [], pen=pg.mkPen("#ffffffa0", width=1.2, style=Qt.PenStyle.DotLine),
                                            name="∝ 1/log t")
        self.norm_plot = plot("‖w(t)‖", "‖w‖", False,
                              "The norm grows like ‖ŵ‖ log t: a straight line on the log-t axis, ‖ŵ‖ ln 10 per "
                              "decade (white dashed: ‖ŵ log t + w̃‖ for the first GD run). Non-separable data: it "
                              "stays bounded")
        self.pred_norm = self.norm_plot.plot([], [], pen=pg.mkPen("#ffffff", width=1.6, style=Qt.PenStyle.DashLine))
        self.margin_plot = plot("smallest normalized margin", "min z·w/‖w‖", False,
                                "min_n y_n x_n·w/‖w‖ in each run's own norm, against that norm's max margin "
                                "(dashed)")
        self.margin_refs = {n: self.margin_plot.plot([], [], pen=pg.mkPen(NORM_COLORS[n], width=1.4,
                                                                          style=Qt.PenStyle.DashLine))
                            for n in ib.NORMS}
        self.losst_plot = plot("loss × t", "L(w(t)) t", True,
                               "The sum loss times the step count; for GD it tends to Σα_n/η (dashed)")
        self.losst_ref = self.losst_plot.plot([], [], pen=pg.mkPen("#ffffff", width=1.4, style=Qt.PenStyle.DashLine))
        self.curves: dict[str, list] = {"angle": [], "norm": [], "margin": [], "losst": []}
        # the loss surface with the paths and the rays
        self.scene = Scene3D(pg.colormap.get("viridis"), labels=("w₁", "w₂", "log₁₀ L"))
        self.scene.frame_drawn.connect(self.frame_drawn)
        self.scene.container.setToolTip("The loss surface log₁₀ L over (w₁, w₂) (with the bias feature: at w₃ = 0), "
                                        "each run's path on it, and the max-margin rays (white: the SVM's)")
        self.rays = {n: gl.GLLinePlotItem(color=pg.mkColor(NORM_COLORS[n]).getRgbF(), width=4.0, antialias=True,
                                          glOptions="translucent") for n in ib.NORMS}
        for item in self.rays.values():
            self.scene.addItem(item)
        self.paths: list = []
        plots = QWidget()
        grid = QGridLayout(plots)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(4)
        for i, pl in enumerate((self.angle_plot, self.norm_plot, self.margin_plot, self.losst_plot)):
            grid.addWidget(pl, i // 2, i % 2)
        left = self.left_split = splitter("v", self.editor, self.scene.container, stretch=(1, 1))
        body = splitter("h", left, plots, stretch=(2, 3))
        body.setSizes([500, 750])
        lab_layout(self, self.caption, self.data_note, body=body)
        self._build_cube_items()

    def _build_cube_items(self) -> None:
        """The 3D data mode's items in the GL view: the box, the points, the support vectors' rings, the planes."""
        self.box = gl.GLLinePlotItem(mode="lines", color=(1, 1, 1, 0.3), width=1.0, antialias=True,
                                     glOptions="translucent")
        self.halo = gl.GLScatterPlotItem(size=22.0, pxMode=True, color=(1, 1, 1, 0.85), glOptions="additive")
        self.points3d = gl.GLScatterPlotItem(size=11.0, pxMode=True, glOptions="opaque")
        # translucent planes drawn last, without writing depth: the points behind them still show through
        opts = {GL.GL_DEPTH_TEST: True, GL.GL_BLEND: True, GL.GL_CULL_FACE: False,
                "glBlendFunc": (GL.GL_SRC_ALPHA, GL.GL_ONE_MINUS_SRC_ALPHA), "glDepthMask": (GL.GL_FALSE,)}
        self.planes: dict = {}
        self.plane_edges: dict = {}
        for i, n in enumerate(ib.NORMS):
            mesh = _Plane(vertexes=np.zeros((3, 3)), faces=np.array([[0, 1, 2]]), smooth=False,
                                 color=(*pg.mkColor(NORM_COLORS[n]).getRgbF()[:3], PLANE_ALPHA), glOptions=opts)
            mesh.setDepthValue(10 + i)
            edge = gl.GLLinePlotItem(mode="line_strip", color=pg.mkColor(NORM_COLORS[n]).getRgbF(), width=2.0,
                                     antialias=True, glOptions="translucent")
            self.planes[n], self.plane_edges[n] = mesh, edge
        for item in (self.box, self.halo, self.points3d, *self.plane_edges.values(), *self.planes.values()):
            item.setVisible(False)
            self.scene.addItem(item)
        self._cube_home = None

    def views(self) -> dict:
        return {"3d": self.scene, "2d": self.editor}

    def active_view(self):
        return self.scene

    def has_drawn(self) -> bool:
        return self.trace is not None

    # ----------------------------------------------------------------------------- data
    @property
    def is3d(self) -> bool:
        """The data are one of the 3D presets (points in a cube), with their third coordinates."""
        return self.state.mode != "2d" and len(self.state.zs) == len(self.state.xs)

    def points(self) -> np.ndarray:
        """(n, 2) or, in a 3D data mode, (n, 3) the points as drawn (no bias feature)."""
        s = self.state
        cols = [s.xs, s.ys, s.zs] if self.is3d else [s.xs, s.ys]
        return np.column_stack(cols).astype(float)

    def _on_edited(self, xs: list, ys: list, labels: list, final: bool) -> None:
        """An edit in the data plot: written into the settings (refused in words if they do not take it)."""
        if self.state.mode != "2d":  # (the editor is locked then: nothing reaches here)
            self.editor.set_points(self.state.xs, self.state.ys, self.state.labels)
            return
        self._dragging = not final
        try:
            self.settings.update({"xs": xs, "ys": ys, "zs": [], "labels": labels}, "user")
        except SettingError as exc:
            self.message.emit(str(exc), True)
            self.editor.set_points(self.state.xs, self.state.ys, self.state.labels)
        finally:
            self._dragging = False

    def move_point(self, i: int, x: float, y: float, final: bool = True) -> None:
        """Move point i, as a drag does."""
        self.editor.move_point(i, x, y, final)

    def load_preset(self) -> None:
        """The chosen 2D preset's points, or in a 3D data mode that mode's points in the cube."""
        three = self.state.mode != "2d"
        d = ib.make_preset(self.state.mode if three else self.state.preset)
        self.settings.update({"xs": d.x[:, 0].tolist(), "ys": d.x[:, 1].tolist(),
                              "zs": d.x[:, 2].tolist() if three else [], "labels": d.y.tolist()}, "lab")

    def react_preset(self, changed: dict) -> None:
        if self.state.mode == "2d":  # (a 3D mode keeps its own points)
            self.load_preset()

    def react_mode(self, changed: dict) -> None:
        self._apply_mode()
        self.load_preset()

    def _apply_mode(self) -> None:
        """The data plot and the GL view for 2D data (editable, the loss surface) or 3D data (a projection,
        the cube with the points and planes)."""
        three = self.state.mode != "2d"
        self.editor.set_locked(LOCKED if three else "")
        if three:
            self.editor.setTitle("3D data, (x, y) projection (editing: 2D only)", color="#c9d1d9", size="10pt")
            self.editor.getViewBox().setRange(xRange=(-1.3, 1.3), yRange=(-1.3, 1.5), padding=0)
        else:
            self.editor.setTitle("the data and the boundaries", color="#c9d1d9", size="10pt")
            self.editor.getViewBox().setRange(xRange=(-4, 4), yRange=(-4, 5), padding=0)
        total = sum(self.left_split.sizes()) or 1000
        # (3D data: the GL view holds the picture, the projection is an aside)
        self.left_split.setSizes([int(total * (0.36 if three else 0.5)), int(total * (0.64 if three else 0.5))])
        sc = self.scene
        for item in (sc.surface, sc.contour_lines, sc.floor):
            item.setVisible(not three)
        for item in (self.box, self.halo, self.points3d):
            item.setVisible(three)
        if not three:
            for item in (*self.planes.values(), *self.plane_edges.values()):
                item.setVisible(False)
        for label, text in zip(sc.labels, ("x", "y", "z") if three else ("w₁", "w₂", "log₁₀ L")):
            label.setData(text=text)
        sc.container.setToolTip(
            "3D data: the points (red +1, blue −1, ringed: support vectors) in their cube, the separating planes "
            "through the origin (white: the SVM's; green l1, violet l∞ when those optimizers run), the "
            "max-margin rays, and each run's path (log radius, or w/‖w‖ on a sphere)" if three else
            "The loss surface log₁₀ L over (w₁, w₂) (with the bias feature: at w₃ = 0), each run's path on it, "
            "and the max-margin rays (white: the SVM's)")
        self._surface_key = None
        self._cube_home = None

    def react_data(self, changed: dict) -> None:
        self._show_data()
        if self._dragging:  # a drag moving: one restart when it pauses (a run per mouse move would be wasted)
            if not self._drag_restart.isActive():
                self._drag_restart.start()
        else:
            self._drag_restart.stop()
            self.restart()

    def react_runs(self, changed: dict) -> None:
        self.restart()

    def react_surface(self, changed: dict) -> None:
        self._surface_key = None
        self.draw()

    def features(self) -> np.ndarray:
        s = self.state
        x = self.points()
        return ib.with_bias(x, s.bias) if s.bias else x

    def _show_data(self) -> None:
        """The points, the exact geometry (separability LP, SVM, l1 / l∞ LPs) and its summary, at once."""
        s = self.state
        self.editor.set_points(s.xs, s.ys, s.labels)
        self._surface_key = None
        try:
            self.z = ib.signed_rows(self.features(), np.array(s.labels, float))
            self.geo = ib.geometry(self.z)
        except Exception as exc:  # (ValueError, an LP failure): in words; nothing else drawn
            self.z, self.geo = None, None
            self.data_note.setText(f"<span style='color:#ff6b6b'>the geometry could not be computed: {exc}</span>")
            self._draw_geometry()
            return
        self.data_note.setText(self._geometry_text())
        self._draw_geometry()

    def _geometry_text(self) -> str:
        g, s = self.geo, self.state
        xyz = "x, y, z" if self.is3d else "x, y"
        space = ("through the origin" if not s.bias else f"in ({xyz}, b = {s.bias:g})") + \
            (f" (3D data: {s.mode})" if self.is3d else "")
        n = len(s.xs)
        if not g.separable:
            return (f"<b style='color:#ff6b6b'>not separable {space}</b> ({n} points, exact LP): no max-margin "
                    "direction; every trajectory converges to a finite minimizer (‖w‖ stays bounded)")
        svm = g.svm
        gap = "∞ (every point is a support vector)" if not math.isfinite(svm.gap) else f"{svm.gap:.3g}"
        parts = [f"<b style='color:#8ce99a'>separable {space}</b> ({n} points, exact LP)",
                 f"SVM margin γ = {svm.margin:.4g}, ‖ŵ‖ = {1 / svm.margin:.4g}, {len(svm.support)} support "
                 f"vector{'s' if len(svm.support) != 1 else ''}",
                 f"gap to the next margin {gap} (settle exponent {svm.settle_exponent:.2g})"]
        parts.append(self._directions_text())
        return " · ".join(parts)

    def _directions_text(self) -> str:
        """Whether the l2, l1 and l∞ max-margin directions coincide, and their angles (the engine's geometry)."""
        g = self.geo
        if g is None or not g.separable:
            return "not separable: no max-margin directions"
        if g.coincide:
            return "the l2, l1 and l∞ directions coincide"
        a = g.angles_deg

        def one(k: str, name: str) -> str:
            return f"{name} 0° (coincide)" if a[k] < ib.COINCIDE_TOL_DEG else f"{name} {a[k]:.3g}°"

        return (f"the directions differ: {one('l2-l1', 'l2–l1')}, {one('l2-linf', 'l2–l∞')}, "
                f"{one('l1-linf', 'l1–l∞')}")

    def _norms_in_use(self) -> set:
        return {ib.OPTIMIZER_NORM[o] for o in OPTS if getattr(self.state, f"run_{o}")}

    def _data_legend(self) -> None:
        """The legend of the data plot: the exact boundaries shown, and the runs' (in their colours)."""
        leg, g = self.data_legend, self.geo
        leg.clear()
        if self.is3d:
            if g is not None and g.separable:
                leg.addItem(self.rings, "support vectors (the planes: in the 3D view)")
            return
        if g is not None and g.separable:
            leg.addItem(self.svm_line, "SVM boundary (dashed: its margin)")
            for n, item in self.mm_lines.items():
                if item.getData()[0] is not None and len(item.getData()[0]):
                    leg.addItem(item, f"{NORM_NAMES[n]} max margin")
        if self.run_lines:
            leg.addItem(self.run_lines[0], "each run's boundary now")

    def _draw_geometry(self) -> None:
        self._draw_geometry_items()
        self._data_legend()

    def _draw_geometry_items(self) -> None:
        g, b = self.geo, self.state.bias
        self._draw_cube_geometry()
        if self.is3d:  # (a plane's projection is no line: the boundaries are drawn in the 3D view)
            for item in (self.svm_line, self.margin_lines, *self.mm_lines.values()):
                item.setData([], [])
            sup = g.svm.support if g is not None and g.separable else []
            self.rings.setData(np.array(self.state.xs)[sup], np.array(self.state.ys)[sup])
            return
        if g is None or not g.separable:
            for item in (self.svm_line, self.margin_lines, *self.mm_lines.values()):
                item.setData([], [])
            self.rings.setData([], [])
            return
        w = g.svm.w_hat
        self.svm_line.setData(*_boundary(w, b))
        up, dn = _boundary(w, b, 1.0), _boundary(w, b, -1.0)
        self.margin_lines.setData(up[0] + [np.nan] + dn[0], up[1] + [np.nan] + dn[1], connect="finite")
        used = self._norms_in_use()
        for n, item in self.mm_lines.items():
            item.setData(*(_boundary(g.max_margin[n].w, b) if n in used and not g.coincide else ([], [])))
        sup = g.svm.support
        self.rings.setData(np.array(self.state.xs)[sup], np.array(self.state.ys)[sup])

    # ----------------------------------------------------------------------------- running
    def start(self) -> None:
        self.restart()

    def run_live(self) -> bool:
        return not self.finished and super().run_live()

    def restart(self) -> bool:
        """Every chosen optimizer again from w = 0 on the current data; False (and a message) if none can run."""
        self._drag_restart.stop()
        s = self.state
        if self.z is None:
            self.message.emit("the data are not usable: nothing runs", True)
            return False
        specs, limits = [], []
        try:
            for o in OPTS:
                if getattr(s, f"run_{o}"):
                    lim = ib.stability_limit(self.z, s.loss, o)
                    limits.append(lim)
                    specs.append((s.loss, o, s.eta_fraction * lim))
        except Exception as exc:
            self.message.emit(f"no step size: {exc}", True)
            return False
        self.stop_run()
        self._clear()
        self.run_specs, self.limits = specs, limits
        self._build_run_items()
        self._show_caption()
        self.finished = False
        points = self.points().tolist()
        self.start_run("models.implicit_bias:lab_run",
                       dict(points=points, labels=[float(v) for v in s.labels], bias=float(s.bias),
                            runs=[list(r) for r in specs], steps=int(s.steps), per_decade=int(s.per_decade)),
                       {"batch": "_on_batch", "done": "_on_done", "failed": "_on_failed"}, start_paused=self.paused)
        return True

    def _show_caption(self) -> None:
        s = self.state
        runs = ", ".join(f"<span style='color:{OPT_COLORS[o]}'>{OPT_NAMES[o]}</span> η = {eta:.3g}"
                         for _, o, eta in self.run_specs)
        xyz = "x, y, z" if self.is3d else "x, y"
        model = (f"linear model w·({xyz}) through the origin" if not s.bias else
                 f"linear model w·({xyz}, b), b = {s.bias:g} (through the origin of ({xyz}, b))")
        self.caption.setText(f"<b>{model}</b> · sum loss L(w) = Σ l(y<sub>n</sub> "
                             f"w·x<sub>n</sub>), {s.loss} · {runs} · {s.steps:,} steps, float64")

    def _clear(self) -> None:
        self.trace = None
        self.reason = ""
        self._diverged_told = set()
        self._redraw.stop()

    def _build_run_items(self) -> None:
        for item in self.run_lines:
            self.editor.removeItem(item)
        for key, plot in (("angle", self.angle_plot), ("norm", self.norm_plot), ("margin", self.margin_plot),
                          ("losst", self.losst_plot)):
            for item in self.curves[key]:
                plot.removeItem(item)
            self.curves[key] = []
        for item in self.paths:
            self.scene.removeItem(item)
        self.run_lines, self.paths = [], []
        self.angle_legend.clear()
        self.angle_legend.addItem(self.pred_angle, "ŵ log t + w̃")
        self.angle_legend.addItem(self.inv_log, "∝ 1/log t")
        for _, o, _eta in self.run_specs:
            col = OPT_COLORS[o]
            line = self.editor.plot([], [], pen=pg.mkPen(col, width=2.2))
            line.setZValue(12)
            self.run_lines.append(line)
            for key, plot in (("angle", self.angle_plot), ("norm", self.norm_plot), ("margin", self.margin_plot),
                              ("losst", self.losst_plot)):
                # (data items, not bare curves: only they follow the plots' log axes)
                self.curves[key].append(plot.plot([], [], pen=pg.mkPen(col, width=2.0)))
            self.angle_legend.addItem(self.curves["angle"][-1], OPT_NAMES[o])
            path = gl.GLLinePlotItem(color=pg.mkColor(col).getRgbF(), width=3.0, antialias=True,
                                     glOptions="translucent")
            self.scene.addItem(path)
            self.paths.append(path)
        for item in (self.pred_angle, self.inv_log, self.pred_norm, self.losst_ref, *self.margin_refs.values()):
            item.setData([], [])
        self.info.setText("")
        self._draw_geometry()  # (the l1 / l-infinity lines follow the optimizers chosen; the legend the runs)

    def _on_batch(self, items: list) -> None:
        self.trace = items[-1]
        for r, t in enumerate(self.trace.stopped_at):
            if t >= 0 and r not in self._diverged_told:
                self._diverged_told.add(r)
                loss, o, eta = self.run_specs[r]
                self.message.emit(f"{OPT_NAMES[o]} diverged at step {int(t)}: η = {eta:.3g} is "
                                  f"{self.state.eta_fraction:g}× its stability limit {self.limits[r]:.3g}", True)
        if not self._redraw.isActive():
            self._redraw.start(40)

    def _on_done(self, result) -> None:
        self.finished = True
        self.reason = "completed" if self.trace is not None and self.trace.done else "aborted"
        self.flush()
        self.status.emit({"running": False})

    def _on_failed(self, text: str) -> None:
        self.finished = True
        self.reason = "failed"
        self.report_failure(errorlog.report("Implicit-bias run failed", text))
        self.flush()
        self.status.emit({"running": False})

    # ----------------------------------------------------------------------------- drawing
    def first_gd(self) -> int | None:
        """The first plain GD run (the one the ŵ log t + w̃ prediction is for), if its loss has a tail."""
        for r, (loss, o, _eta) in enumerate(self.run_specs):
            if o == "gd" and loss != "square":
                return r
        return None

    def angles(self) -> np.ndarray:
        """(R, k) the angle (degrees) of each run's w at its checkpoints to its own max-margin direction."""
        tr, g = self.trace, self.geo
        out = np.full(tr.w.shape[:2], np.nan)
        if g is None or not g.separable:
            return out
        for r, (_, o, _eta) in enumerate(self.run_specs):
            out[r] = ib.angle_deg(tr.w[r], g.direction(o))
        return out

    def draw(self) -> None:
        self._redraw.stop()
        tr = self.trace
        if tr is None or self.z is None or tr.w.shape[-1] != self.z.shape[1]:
            return
        g, z, b = self.geo, self.z, self.state.bias
        t = tr.steps.astype(float)
        pos = t > 0
        sep = g is not None and g.separable
        for r, line in enumerate(self.run_lines):
            line.setData(*(([], []) if self.is3d else _boundary(tr.w_now[r], b)))
        ang = self.angles()
        norms = tr.norms()
        for r, (_loss, o, _eta) in enumerate(self.run_specs):
            ok = pos & np.isfinite(ang[r])
            # (an exact arrival, 1e-14 degrees, would squeeze every other curve: drawn at the floor)
            self.curves["angle"][r].setData(t[ok], np.maximum(ang[r][ok], ANGLE_FLOOR))
            ok = pos & np.isfinite(norms[r])
            self.curves["norm"][r].setData(t[ok], norms[r][ok])
            with np.errstate(invalid="ignore", divide="ignore"):
                mg = ib.min_normalized_margin(z, tr.w[r], ib.OPTIMIZER_NORM[o])
                lt = np.exp(tr.log_loss[r] + np.log(np.where(pos, t, 1.0)))
            ok = pos & np.isfinite(mg)
            self.curves["margin"][r].setData(t[ok], mg[ok])
            ok = pos & np.isfinite(lt) & (lt > 0)
            self.curves["losst"][r].setData(t[ok], lt[ok])
        # the normalized runs race off (‖w‖ linear in t, L exponentially small): the ranges follow the fixed steps
        fixed = [r for r, (_, o, _e) in enumerate(self.run_specs) if not o.startswith("n")]
        self._fit_range(self.norm_plot, [norms[r][pos] for r in fixed], log=False)
        with np.errstate(invalid="ignore", divide="ignore"):
            self._fit_range(self.losst_plot, [np.exp(tr.log_loss[r][pos] + np.log(t[pos])) for r in fixed], log=True)
        t_end = max(float(t[-1]), 2.0)
        self.angle_plot.setTitle("angle to its max-margin direction" if sep else
                                 "angle to its max-margin direction (not separable: none)", color="#c9d1d9",
                                 size="10pt")
        notes = [f"3D data ({self.state.mode}): {self._directions_text()}"] if self.is3d else []
        gd = self.first_gd()
        for item in (self.pred_angle, self.inv_log, self.pred_norm, self.losst_ref):
            item.setData([], [])
        for n, item in self.margin_refs.items():
            used = n in {ib.OPTIMIZER_NORM[o] for _, o, _ in self.run_specs}
            item.setData(*(([1.0, t_end], [g.max_margin[n].margin] * 2) if sep and used else ([], [])))
        if sep and gd is not None and not g.svm.spans:
            notes.append(f"GD: angle to ŵ now {ang[gd][-1]:.3g}°; the support vectors do not span the space, so "
                         "they do not fix w̃: no ŵ log t + w̃ prediction (the offset settles slowly)")
        elif sep and gd is not None:
            svm, eta = g.svm, self.run_specs[gd][2]
            wt = ib.w_tilde(svm, z, eta)
            tt = t[t >= PREDICT_FROM]  # (an asymptotic form: meaningless while log t is small)
            pa = ib.predicted_angle_deg(svm, wt, tt)
            ok = np.isfinite(pa) & (pa > 0)
            self.pred_angle.setData(tt[ok], pa[ok])
            u = svm.w_hat / np.linalg.norm(svm.w_hat)
            perp = float(np.linalg.norm(wt - (wt @ u) * u))
            c = math.degrees(perp / float(np.linalg.norm(svm.w_hat)))
            if c > 0:
                self.inv_log.setData(tt, c / np.log(tt))
            self.pred_norm.setData(tt, np.linalg.norm(ib.predicted_w(svm, wt, tt), axis=-1))
            self.losst_ref.setData([1.0, t_end], [svm.alpha_sum / eta] * 2)
            a_now = ang[gd][-1]
            notes.append(f"GD: angle to ŵ now {a_now:.3g}° (prediction {float(pa[-1]) if len(pa) else float('nan'):.3g}°)"
                         f"; ‖w‖ gains ‖ŵ‖ ln 10 = {math.log(10) / svm.margin:.3g} per decade; L·t → Σα/η = "
                         f"{svm.alpha_sum / eta:.4g}")
        if sep and self.run_specs and self.run_specs[0][0] == "square":
            notes.append("square loss: every run converges to a finite point, not to a max-margin direction (now " +
                         ", ".join(f"{OPT_NAMES[o]} {ang[r][-1]:.3g}° off it, ‖w‖ = {norms[r][-1]:.3g}"
                                   for r, (_, o, _e) in enumerate(self.run_specs)) + ")")
        if not sep:
            notes.append("not separable: the trajectories converge to a finite minimizer; ‖w‖ now " +
                         ", ".join(f"{norms[r][-1]:.3g}" for r in range(len(self.run_specs))))
        lim = ", ".join(f"{OPT_NAMES[o]}: η = {eta:.3g} (limit {li:.3g}"
                        + (", local at w = 0)" if loss == "exponential" or o.startswith("n") else ")")
                        for (loss, o, eta), li in zip(self.run_specs, self.limits))
        notes.append(f"step sizes against their stability limits — {lim}")
        notes.append(f"step {tr.t:,} of {tr.total:,}" + ("" if not tr.done else " (done)"))
        self.info.setText("<br>".join(notes))
        self._draw_surface()
        self.status.emit({"step": int(tr.t), "loss": float(math.exp(tr.log_loss[0][-1]))
                          if np.isfinite(tr.log_loss[0][-1]) else float("nan")})

    @staticmethod
    def _fit_range(plot, series: list, log: bool) -> None:
        vals = [v[np.isfinite(v) & ((v > 0) if log else True)] for v in series]
        vals = np.concatenate(vals) if vals else np.zeros(0)
        if not len(vals):
            plot.enableAutoRange(axis="y")
            return
        if log:
            lo, hi = math.log10(vals.min()), math.log10(vals.max())
            plot.setYRange(lo - 0.3, hi + 0.3, padding=0)
        else:
            plot.setYRange(0.0, 1.08 * float(vals.max()) + 1e-9, padding=0)

    # --- the GL view -------------------------------------------------------------------------------------
    def _to_display(self, w2: np.ndarray) -> np.ndarray:
        """(k, 2) w to the view's plane: at radius log(1 + ‖w‖) with the log-radius option."""
        if not self.state.log_radius:
            return w2
        r = np.linalg.norm(w2, axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(r > 0, w2 * np.log1p(r) / r, 0.0)

    def _from_display(self, u: np.ndarray) -> np.ndarray:
        if not self.state.log_radius:
            return u
        r = np.linalg.norm(u, axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(r > 0, u * np.expm1(r) / r, 0.0)

    def log10_loss(self, w2: np.ndarray) -> np.ndarray:
        """log₁₀ L at (k, 2) points (w₃ = 0 with the bias feature), without overflow."""
        m = np.asarray(w2, float) @ self.z[:, :2].T
        loss = self.state.loss
        if loss == "logistic":
            with np.errstate(divide="ignore"):
                v = np.log(np.logaddexp(0.0, -m).sum(axis=1))
            # where every margin is large, log Σ log(1 + e^-m) ≈ logsumexp(-m)
            big = m.min(axis=1) > 30
            if big.any():
                mm = -m[big]
                top = mm.max(axis=1, keepdims=True)
                v[big] = (top[:, 0] + np.log(np.exp(mm - top).sum(axis=1)))
        elif loss == "exponential":
            mm = -m
            top = mm.max(axis=1, keepdims=True)
            v = top[:, 0] + np.log(np.exp(mm - top).sum(axis=1))
        else:
            v = np.log(np.maximum(0.5 * ((1 - m) ** 2).sum(axis=1), 1e-300))
        return v / math.log(10)

    def _draw_surface(self) -> None:
        if self.is3d:
            self._draw_cube_paths()
            return
        tr = self.trace
        w_all = tr.w[..., :2].reshape(-1, 2)
        w_all = w_all[np.all(np.isfinite(w_all), axis=1)]
        u_all = self._to_display(w_all) if len(w_all) else np.zeros((1, 2))
        reach = float(np.abs(u_all).max()) if len(u_all) else 1.0
        reach = max(reach * 1.15, float(self._to_display(np.array([[3.0, 0.0]]))[0, 0]))
        key = (self.state.log_radius, self.state.loss)
        old = self._surface_key
        if old is None or old[0] != key or reach > old[1] * 1.2 or reach < old[1] / 2:
            u = np.linspace(-reach, reach, SURFACE_N)
            uu = np.stack(np.meshgrid(u, u, indexing="ij"), axis=-1).reshape(-1, 2)
            vals = self.log10_loss(self._from_display(uu)).reshape(SURFACE_N, SURFACE_N)
            # down to DEPTH decades below the start's loss
            top = float(self.log10_loss(np.zeros((1, 2)))[0])
            lo = max(float(np.nanmin(vals)), top - DEPTH)
            hi = float(np.nanmax(vals))
            self.scene.set_surface(u, u, vals, (lo, hi if hi > lo else lo + 1), False, lo)
            self._surface_key = (key, reach)
            self._aim_camera(reach)
            self.scene.labels[2].setData(pos=(0.0, 0.0, 1.12 * self.scene.zheight))
        lift = 0.012
        for r, path in enumerate(self.paths):
            w = tr.w[r, :, :2]
            w = w[np.all(np.isfinite(w), axis=1)]
            if len(w) < 2:
                path.setData(pos=np.zeros((0, 3)))
                continue
            uv = self._to_display(w)
            h = self.scene.height_of(self.log10_loss(w), lift=lift)
            path.setData(pos=np.column_stack([uv, h]).astype(np.float32))
        g = self.geo
        used = {ib.OPTIMIZER_NORM[o] for _, o, _ in self.run_specs}
        far = float(np.abs(self._from_display(np.array([[self._surface_key[1], 0.0]]))).max())
        for n, ray in self.rays.items():
            if g is None or not g.separable or n not in used or np.linalg.norm(g.direction(n)[:2]) == 0:
                ray.setData(pos=np.zeros((0, 3)))
                continue
            d = g.direction(n)[:2]
            d = d / np.linalg.norm(d)
            s = np.linspace(0, far * 1.5, 200)[:, None]
            w = s * d
            uv = self._to_display(w)
            keep = np.all(np.abs(uv) <= self._surface_key[1], axis=1)
            h = self.scene.height_of(self.log10_loss(w[keep]), lift=2 * lift + 0.004 * list(ib.NORMS).index(n))
            ray.setData(pos=np.column_stack([uv[keep], h]).astype(np.float32))
        self.scene.update()

    # --- the GL view in a 3D data mode ---------------------------------------------------------------------
    def _cube_half(self) -> float:
        """Half the side of the 3D view's box: the data's cube, padded."""
        x = self.points()
        return CUBE_PAD * max(1.0, float(np.abs(x).max()) if x.size else 1.0)

    def _draw_cube_geometry(self) -> None:
        """The points, the support vectors' rings, the separating planes and the max-margin rays (3D data)."""
        if not self.is3d:
            for item in (*self.planes.values(), *self.plane_edges.values()):
                item.setVisible(False)
            return
        s, g = self.state, self.geo
        x = self.points()
        lab = np.array(s.labels, float)
        a = self._cube_half()
        corners = np.array([[i, j, k] for i in (-a, a) for j in (-a, a) for k in (-a, a)])
        seg = [corners[[i, j]] for i in range(8) for j in range(i + 1, 8)
               if np.sum(corners[i] != corners[j]) == 1]
        self.box.setData(pos=np.concatenate(seg).astype(np.float32))
        cols = np.array([pg.mkColor(POS_COLOR if v > 0 else NEG_COLOR).getRgbF() for v in lab], np.float32)
        self.points3d.setData(pos=x.astype(np.float32), color=cols, size=11.0)
        sep = g is not None and g.separable
        sup = g.svm.support if sep else []
        self.halo.setData(pos=x[sup].astype(np.float32) if len(sup) else np.zeros((0, 3), np.float32))
        used = self._norms_in_use()
        for n in ib.NORMS:
            mesh, edge = self.planes[n], self.plane_edges[n]
            shown = sep and (n == "l2" or (n in used and not g.coincide))
            poly = np.zeros((0, 3))
            if shown:
                w = g.max_margin[n].w
                # {p : w₁x + w₂y + w₃z + w₄b = 0}: through the origin, or offset by the bias feature
                poly = _plane_in_box(w[:3], -float(w[3]) * s.bias if len(w) > 3 else 0.0, a)
            if len(poly) < 3:
                mesh.setVisible(False)
                edge.setVisible(False)
                continue
            faces = np.array([[0, i, i + 1] for i in range(1, len(poly) - 1)])
            mesh.setMeshData(vertexes=poly.astype(np.float32), faces=faces,
                             color=(*pg.mkColor(NORM_COLORS[n]).getRgbF()[:3], PLANE_ALPHA), smooth=False)
            edge.setData(pos=np.vstack([poly, poly[:1]]).astype(np.float32))
            mesh.setVisible(True)
            edge.setVisible(True)
        sc = self.scene
        sc.labels[0].setData(pos=(1.12 * a, 0.0, 0.0))
        sc.labels[1].setData(pos=(0.0, 1.12 * a, 0.0))
        sc.labels[2].setData(pos=(0.0, 0.0, 1.12 * a))
        self._draw_rays3d(RAY_LEN * a)
        if self._cube_home != a:
            self._cube_home = a
            d = g.direction("l2")[:3] if sep else np.array([1.0, 0.0, 0.0])
            az = math.degrees(math.atan2(d[1], d[0])) + 65.0
            sc.set_home((0.0, 0.0, 0.0), 4.0 * a, elevation=24, azimuth=az)
        sc.update()

    def _draw_rays3d(self, length: float) -> None:
        g = self.geo
        used = {ib.OPTIMIZER_NORM[o] for _, o, _ in self.run_specs} | {"l2"}
        for n, ray in self.rays.items():
            d = g.direction(n)[:3] if g is not None and g.separable and n in used else np.zeros(3)
            if not np.linalg.norm(d) > 0:
                ray.setData(pos=np.zeros((0, 3)))
                continue
            d = d / np.linalg.norm(d)
            ray.setData(pos=np.array([np.zeros(3), length * d], np.float32))

    def _draw_cube_paths(self) -> None:
        """Each run's path w(t) (its first three coordinates): at radius log(1 + ‖w‖) scaled so the fixed-step
        runs end at the rays' tips (the normalized runs race on, clipped there), or with the log-radius option
        off w(t)/‖w(t)‖ on the sphere through the tips."""
        tr = self.trace
        a = self._cube_half()
        reach = RAY_LEN * a
        ok = [np.all(np.isfinite(tr.w[r]), axis=1) for r in range(len(self.paths))]
        ws = [tr.w[r][ok[r]][:, :3] for r in range(len(self.paths))]
        radii = [np.log1p(np.linalg.norm(tr.w[r][ok[r]], axis=1)) for r in range(len(self.paths))]
        fixed = [r for r, (_, o, _e) in enumerate(self.run_specs) if not o.startswith("n")] or \
            list(range(len(self.paths)))
        top = max([float(radii[r].max()) for r in fixed if len(radii[r])] or [1.0])
        scale = reach / top if top > 0 else 1.0
        far = reach
        for r, path in enumerate(self.paths):
            w = ws[r]
            nn = np.linalg.norm(w, axis=1)
            keep = nn > 0
            if keep.sum() < 2:
                path.setData(pos=np.zeros((0, 3)))
                continue
            u = w[keep] / nn[keep, None]
            if self.state.log_radius:
                rad = np.minimum(radii[r][keep] * scale, 1.1 * reach)
                pos = np.vstack([np.zeros(3), u * rad[:, None]])
                far = max(far, float(rad.max()))
            else:
                pos = u * reach
            path.setData(pos=pos.astype(np.float32))
        self._draw_rays3d(max(far, reach))
        self.scene.update()

    def _aim_camera(self, reach: float) -> None:
        """Look across the valley the paths run down (towards the SVM ray), from above its far side."""
        g = self.geo
        d = g.direction("l2")[:2] if g is not None and g.separable else np.array([1.0, 0.0])
        az = math.degrees(math.atan2(d[1], d[0])) + 55.0
        self.scene.set_home((0.0, 0.0, 0.2 * self.scene.zheight), 3.0 * reach, elevation=50, azimuth=az)

    # ----------------------------------------------------------------------------- Lab API
    def reset(self) -> None:
        self.stop_run()
        self.finished = True
        self._clear()
        self._build_run_items()
        self.status.emit({"running": False})

    def flush(self) -> None:
        if self.trace is not None:
            self.draw()

    def shutdown(self) -> None:
        self._redraw.stop()
        self._drag_restart.stop()
        super().shutdown()
