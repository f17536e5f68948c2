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
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

from models import implicit_bias as ib
from visualizer import errorlog
from visualizer.labs.base import Action, SingleRunLab
from visualizer.labs.schema import SettingError, setting
from visualizer.views.common import caption, dark_plot, lab_layout, splitter
from visualizer.views.points import PointEditor
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
SURFACE_N = 81
PREDICT_FROM = 100  # the asymptotic predictions are drawn from this step on
ANGLE_FLOOR = 1e-8  # degrees: smaller angles are drawn here
DEPTH = 8.0  # decades of loss below the start the 3D view shows
_CLEAN = ib.make_preset("clean")


def _same_count(v, s) -> str | None:
    n = {len(s.xs), len(s.ys), len(s.labels)}
    return None if len(n) == 1 else (f"xs, ys and labels need one value per point each (got {len(s.xs)}, "
                                     f"{len(s.ys)}, {len(s.labels)})")


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
                       length=(1, MAX_POINTS), range=(-LIMIT, LIMIT), check=_same_count, depends=("ys", "labels"),
                       tooltip="The points' first coordinates")
    ys: list = setting(_CLEAN.x[:, 1].tolist(), "y", group=DATA, widget="hidden", reacts="data",
                       length=(1, MAX_POINTS), range=(-LIMIT, LIMIT), check=_same_count, depends=("xs", "labels"),
                       tooltip="The points' second coordinates")
    labels: list = setting(_CLEAN.y.tolist(), "labels", group=DATA, widget="hidden", reacts="data",
                           length=(1, MAX_POINTS), range=(-1.0, 1.0), check=_labels_check, depends=("xs", "ys"),
                           tooltip="The points' classes, +1 or -1")
    preset: str = setting("clean", "preset", group=DATA, reacts="preset", choices=PRESET_CHOICES,
                          tooltip="Load a data set (your edits are replaced; 'Load the preset again' reloads it)")
    bias: float = setting(0.0, "bias feature b", group=DATA, range=(0.0, 10.0), decimals=2, reacts="data",
                          commit="finish",
                          tooltip="0: none, the boundary passes through the origin. Otherwise every point gets a "
                                  "constant third coordinate b and the model is w·(x, y, b): the SVM and the "
                                  "max-margin directions are computed in that augmented space")
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
                               tooltip="Draw w at radius log(1 + ‖w‖), so the far part of the paths stays in view")


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


class ImplicitBiasLab(SingleRunLab):
    key = "implicit-bias"
    state_cls = ImplicitBiasState
    title = "Implicit bias: gradient descent finds the max-margin separator"
    actions = (Action("restart", "Run again from w = 0 (Space)", "restart", group=RUNS,
                      tooltip="Start every run again from w = 0 with the settings above",
                      scene="start every run again from w = 0"),
               Action("load_preset", "Load the preset again", "load_preset", group=DATA,
                      tooltip="Replace the points with the chosen preset", scene="load the chosen preset's points"),
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
            "or Delete removes the nearest; every edit starts every run again from w = 0.</p>")

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
        left = splitter("v", self.editor, self.scene.container, stretch=(1, 1))
        body = splitter("h", left, plots, stretch=(2, 3))
        body.setSizes([500, 750])
        lab_layout(self, self.caption, self.data_note, body=body)

    def views(self) -> dict:
        return {"3d": self.scene, "2d": self.editor}

    def active_view(self):
        return self.scene

    def has_drawn(self) -> bool:
        return self.trace is not None

    # ----------------------------------------------------------------------------- data
    def _on_edited(self, xs: list, ys: list, labels: list, final: bool) -> None:
        """An edit in the data plot: written into the settings (refused in words if they do not take it)."""
        self._dragging = not final
        try:
            self.settings.update({"xs": xs, "ys": ys, "labels": labels}, "user")
        except SettingError as exc:
            self.message.emit(str(exc), True)
            self.editor.set_points(self.state.xs, self.state.ys, self.state.labels)
        finally:
            self._dragging = False

    def move_point(self, i: int, x: float, y: float, final: bool = True) -> None:
        """Move point i, as a drag does."""
        self.editor.move_point(i, x, y, final)

    def load_preset(self) -> None:
        d = ib.make_preset(self.state.preset)
        self.settings.update({"xs": d.x[:, 0].tolist(), "ys": d.x[:, 1].tolist(), "labels": d.y.tolist()}, "lab")

    def react_preset(self, changed: dict) -> None:
        self.load_preset()

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
        x = np.column_stack([s.xs, s.ys]).astype(float)
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
        space = "through the origin" if not s.bias else f"in (x, y, b = {s.bias:g})"
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
        if g.coincide:
            parts.append("the l2, l1 and l∞ directions coincide")
        else:
            a = g.angles_deg
            parts.append(f"the directions differ: l2–l1 {a['l2-l1']:.3g}°, l2–l∞ {a['l2-linf']:.3g}°, "
                         f"l1–l∞ {a['l1-linf']:.3g}°")
        return " · ".join(parts)

    def _norms_in_use(self) -> set:
        return {ib.OPTIMIZER_NORM[o] for o in OPTS if getattr(self.state, f"run_{o}")}

    def _data_legend(self) -> None:
        """The legend of the data plot: the exact boundaries shown, and the runs' (in their colours)."""
        leg, g = self.data_legend, self.geo
        leg.clear()
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
        points = [[float(x), float(y)] for x, y in zip(s.xs, s.ys)]
        self.start_run("models.implicit_bias:lab_run",
                       dict(points=points, labels=[float(v) for v in s.labels], bias=float(s.bias),
                            runs=[list(r) for r in specs], steps=int(s.steps), per_decade=int(s.per_decade)),
                       {"batch": "_on_batch", "done": "_on_done", "failed": "_on_failed"}, start_paused=self.paused)
        return True

    def _show_caption(self) -> None:
        s = self.state
        runs = ", ".join(f"<span style='color:{OPT_COLORS[o]}'>{OPT_NAMES[o]}</span> η = {eta:.3g}"
                         for _, o, eta in self.run_specs)
        model = ("linear model w·(x, y) through the origin" if not s.bias else
                 f"linear model w·(x, y, b), b = {s.bias:g} (through the origin of (x, y, b))")
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
            line.setData(*_boundary(tr.w_now[r], b))
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
        notes = []
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
