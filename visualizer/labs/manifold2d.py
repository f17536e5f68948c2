"""Lab "manifold2d": the solution manifold of two-parameter models (THEORY.md section 1).

Left, the parameter plane with the loss as a colour map, its contours and the zero-loss set; right, the
same loss as an OpenGL surface. Click the plane to start gradient descent there; drag a data point and the
manifold moves. For the linear model the orthogonal projection of each start onto the solution line is
marked: gradient descent lands exactly there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from visualizer import settings as store
from visualizer.labs.descent_lab import DescentLab, restore_state
from visualizer.runs import DescentRun
from visualizer.views.data_panel import DATA_COLORS, DataPanel
from visualizer.views.plane import PlaneView
from visualizer.views.scene3d import Scene3D
from visualizer.workers import LatestJobWorker

MODEL_CHOICES = [
    ("tanh", "w₂ · tanh(w₁ x)"),
    ("linear", "w₁ x + w₂"),
    ("factor", "w₁ · w₂ · x  (scalar factorization)"),
    ("custom", "custom expression…"),
]
OPTIMIZER_CHOICES = [("gd", "gradient descent"), ("sgd", "SGD (mini-batch)"), ("momentum", "momentum"),
                     ("adam", "Adam")]
PALETTE = ["#ff9f1c", "#ff4d6d", "#4cc9f0", "#b8f35a", "#ffd60a", "#c77dff", "#2ec4b6", "#f72585",
           "#90e0ef", "#fb8500"]
MAX_GRID = 1601
MAX_SURFACE = 401  # the 3D mesh is subsampled past this; the 2D map keeps every point
SETTINGS_KEY = "labs/manifold2d"


@dataclass
class Manifold2DState:
    """Everything the lab's controls set; saved between sessions."""

    model: str = "tanh"
    expression: str = "w2*sin(w1*x) + 0.2*w1"
    xs: list = field(default_factory=lambda: [1.0])
    ys: list = field(default_factory=lambda: [0.8])
    optimizer: str = "gd"
    lr: float = 0.1
    momentum: float = 0.9
    batch_size: int = 1
    steps: int = 2000
    extent: float = 3.0
    resolution: int = 201
    log_scale: bool = True
    contours: bool = True
    wireframe: bool = False
    curvature: bool = False
    color_by: str = "loss"
    mu: float = 0.05
    pl_ball: bool = False
    n_random: int = 8
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> Manifold2DState:
        """Restore what is valid in ``d``; anything malformed falls back to its default."""
        s = restore_state(cls, d, 2)
        if len(s.xs) != len(s.ys):
            s.xs, s.ys = [1.0], [0.8]
        if s.model not in dict(MODEL_CHOICES):
            s.model = "tanh"
        if s.optimizer not in dict(OPTIMIZER_CHOICES):
            s.optimizer = "gd"
        if s.color_by not in ("loss", "kernel"):
            s.color_by = "loss"
        # every number within what its control can show (a stored value must never break the lab's build)
        s.mu = float(min(max(s.mu, 1e-4), 1e4))
        s.resolution = int(min(max(s.resolution, 21), MAX_GRID))
        s.extent = float(min(max(s.extent, 0.1), 1000.0))
        s.steps = int(min(max(s.steps, 1), 1_000_000))
        s.lr = float(min(max(s.lr, 1e-5), 100.0))
        s.momentum = float(min(max(s.momentum, 0.0), 0.999))
        s.batch_size = int(min(max(s.batch_size, 1), len(s.xs)))
        s.n_random = int(min(max(s.n_random, 1), 200))
        s.seed = int(min(max(s.seed, 0), 10**6))
        return s


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
    settings_key = SETTINGS_KEY
    state_cls = Manifold2DState

    def __init__(self, device: str = "cpu", parent=None, restore: bool = True, start: bool = True) -> None:
        super().__init__(parent)
        self.device = device
        self.state = Manifold2DState.from_dict(store.load_json(SETTINGS_KEY)) if restore else Manifold2DState()
        self._init_descents()
        self.landscape: dict | None = None
        self._palette_i = 0
        self._last_view = "3d"
        self.cmap = pg.colormap.get("viridis")
        self._build_views()
        self._build_controls()
        self.ball_worker = LatestJobWorker(compute_ball, self)
        self.ball_worker.result.connect(self._on_ball)
        self.ball_worker.failed.connect(lambda req, text: self.message.emit(f"PL* ball: {text}", True))
        self.grid_worker = LatestJobWorker(compute_landscape, self)
        self.grid_worker.result.connect(self._on_landscape)
        self.grid_worker.failed.connect(self._on_landscape_failed)
        self._workers = [self.grid_worker, self.ball_worker]
        self._reset_view_pending = True
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
        self._make_banner()
        self.caption = QLabel()
        self.caption.setStyleSheet("color:#c9d1d9;padding:2px 6px;")
        self.caption.setTextFormat(Qt.TextFormat.RichText)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.plane)
        split.addWidget(self.scene.container)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)
        self.plane.setMinimumWidth(220)
        self.scene.container.setMinimumWidth(220)
        self.split = split
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.banner)
        lay.addWidget(self.caption)
        lay.addWidget(split, 1)
        self.plane.installEventFilter(self)
        self.scene.installEventFilter(self)

    def eventFilter(self, obj, ev):
        from PySide6.QtCore import QEvent

        if ev.type() in (QEvent.Type.MouseButtonPress, QEvent.Type.FocusIn):
            self._last_view = "2d" if obj is self.plane else "3d"
        return False

    def _build_controls(self) -> None:
        s = self.state
        panel = QWidget()
        v = QVBoxLayout(panel)
        v.setContentsMargins(6, 6, 6, 6)

        # model
        g = QGroupBox("Model f(x; w₁, w₂)")
        f = QFormLayout(g)
        self.model_combo = QComboBox()
        for key, label in MODEL_CHOICES:
            self.model_combo.addItem(label, key)
        self.model_combo.setCurrentIndex([k for k, _ in MODEL_CHOICES].index(s.model))
        self.model_combo.setToolTip("The two-parameter model whose solution set is drawn")
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        f.addRow(self.model_combo)
        self.expr_edit = QLineEdit(s.expression)
        self.expr_edit.setPlaceholderText("e.g. w2*sin(w1*x) + 0.2*w1")
        self.expr_edit.setToolTip("An expression in w1, w2 and x with + - * / ** and tanh, sin, cos, exp, log, "
                                  "relu, sigmoid. Press Enter to apply.")
        self.expr_edit.returnPressed.connect(self._apply_expression)
        f.addRow("f =", self.expr_edit)
        self.expr_error = QLabel()
        self.expr_error.setWordWrap(True)
        self.expr_error.setStyleSheet("color:#ff6b6b;")
        self.expr_error.setVisible(False)
        f.addRow(self.expr_error)
        v.addWidget(g)

        # data
        g = QGroupBox("Data (drag the points, or type)")
        dl = QVBoxLayout(g)
        self.data_panel = DataPanel(s.xs, s.ys, 2, "One point: the solutions form a curve (p − n = 1). "
                                    "Two points: isolated solutions.")
        self.data_panel.changed.connect(self._on_data_changed)
        self.data_panel.error.connect(lambda text: self.message.emit(text, True))
        # names the tests and the rest of the lab use
        self.n_points, self.table, self.fit_curve = (self.data_panel.n_points, self.data_panel.table,
                                                     self.data_panel.fit_curve)
        dl.addWidget(self.data_panel)
        v.addWidget(g)

        # descent
        g = QGroupBox("Gradient descent")
        f = QFormLayout(g)
        self.opt_combo = QComboBox()
        for key, label in OPTIMIZER_CHOICES:
            self.opt_combo.addItem(label, key)
        self.opt_combo.setCurrentIndex([k for k, _ in OPTIMIZER_CHOICES].index(s.optimizer))
        self.opt_combo.setToolTip("Changing it re-runs the descents on screen from their starting points")
        self.opt_combo.currentIndexChanged.connect(self._on_descent_setting)
        f.addRow("optimizer", self.opt_combo)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 100.0)
        self.lr_spin.setSingleStep(0.01)
        self.lr_spin.setValue(s.lr)
        self.lr_spin.setToolTip("Step size η (re-runs the descents on screen). Too large and the descent "
                                "diverges: try 5 with w₁·w₂·x to see it.")
        self.lr_spin.valueChanged.connect(self._on_descent_setting)
        f.addRow("learning rate η", self.lr_spin)
        self.mom_spin = QDoubleSpinBox()
        self.mom_spin.setRange(0.0, 0.999)
        self.mom_spin.setSingleStep(0.05)
        self.mom_spin.setValue(s.momentum)
        self.mom_spin.valueChanged.connect(self._on_descent_setting)
        f.addRow("momentum", self.mom_spin)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 2)
        self.batch_spin.setValue(min(s.batch_size, 2))
        self.batch_spin.setToolTip("Mini-batch size for SGD (points per step)")
        self.batch_spin.valueChanged.connect(self._on_descent_setting)
        f.addRow("batch size", self.batch_spin)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 1_000_000)
        self.steps_spin.setSingleStep(500)
        self.steps_spin.setValue(s.steps)
        self.steps_spin.valueChanged.connect(self._on_descent_setting)
        f.addRow("steps", self.steps_spin)
        row = QHBoxLayout()
        self.n_random_spin = QSpinBox()
        self.n_random_spin.setRange(1, 200)
        self.n_random_spin.setValue(s.n_random)
        self.n_random_spin.valueChanged.connect(self._on_descent_setting)
        row.addWidget(self.n_random_spin)
        self.random_btn = QPushButton("Random starts")
        self.random_btn.setToolTip("Start N descents at once from random points of the box")
        self.random_btn.clicked.connect(self.random_starts)
        row.addWidget(self.random_btn)
        f.addRow("N", row)
        self.clear_btn = QPushButton("Clear descents (R)")
        self.clear_btn.clicked.connect(self.reset)
        f.addRow(self.clear_btn)
        v.addWidget(g)

        # view
        g = QGroupBox("View")
        f = QFormLayout(g)
        self.extent_spin = QDoubleSpinBox()
        self.extent_spin.setRange(0.1, 1000.0)
        self.extent_spin.setValue(s.extent)
        self.extent_spin.setToolTip("Half-width of the box: w₁, w₂ ∈ [−a, a]")
        self.extent_spin.editingFinished.connect(self._on_view_setting)
        f.addRow("extent a", self.extent_spin)
        self.res_spin = QSpinBox()
        self.res_spin.setRange(21, 5000)
        self.res_spin.setValue(s.resolution)
        self.res_spin.setToolTip(f"Grid points per side (at most {MAX_GRID})")
        self.res_spin.editingFinished.connect(self._on_view_setting)
        f.addRow("resolution", self.res_spin)
        self.log_check = QCheckBox("log scale (log₁₀ L)")
        self.log_check.setChecked(s.log_scale)
        self.contour_check = QCheckBox("contour lines")
        self.contour_check.setChecked(s.contours)
        self.wire_check = QCheckBox("wireframe")
        self.wire_check.setChecked(s.wireframe)
        self.curv_check = QCheckBox("shade negative curvature (λ_min(∇²L) < 0)")
        self.curv_check.setChecked(s.curvature)
        self.curv_check.setToolTip("Red: the loss Hessian has a negative eigenvalue. For non-linear models "
                                   "this region touches the solution set: the loss is non-convex next to it.")
        for cb in (self.log_check, self.contour_check, self.wire_check, self.curv_check):
            cb.toggled.connect(self._on_view_setting)
            f.addRow(cb)
        v.addWidget(g)

        # tangent kernel and PL*
        g = QGroupBox("Tangent kernel and PL*")
        f = QFormLayout(g)
        self.colorby_combo = QComboBox()
        self.colorby_combo.addItem("loss L(w)", "loss")
        self.colorby_combo.addItem("λ_min of the tangent kernel K(w) = DF DFᵀ", "kernel")
        self.colorby_combo.setCurrentIndex(0 if s.color_by == "loss" else 1)
        self.colorby_combo.setToolTip("What the 2D map shows. Uniform conditioning λ_min(K) ≥ μ implies PL*: "
                                      "½‖∇L‖² ≥ μ L (sum loss).")
        self.colorby_combo.currentIndexChanged.connect(self._on_view_setting)
        f.addRow("2D map", self.colorby_combo)
        self.mu_spin = QDoubleSpinBox()
        self.mu_spin.setDecimals(4)
        self.mu_spin.setRange(1e-4, 1e4)
        self.mu_spin.setValue(s.mu)
        self.mu_spin.setToolTip("Outline the set where λ_min(K) < μ: outside it the loss is μ-PL*")
        self.mu_spin.editingFinished.connect(self._on_view_setting)
        f.addRow("μ", self.mu_spin)
        self.ball_check = QCheckBox("PL* ball B(w₀, R) for new descents")
        self.ball_check.setChecked(s.pl_ball)
        self.ball_check.setToolTip("R = 2√(2βL(w₀))/μ with μ (min λ_min(K)) and β (max Hessian eigenvalue) "
                                   "sampled in the ball. With η ≤ 1/β the descent stays inside and "
                                   "L(w_t) ≤ (1 − ημ)ᵗ L(w₀) (dashed, in the loss plot).")
        self.ball_check.toggled.connect(self._on_view_setting)
        f.addRow(self.ball_check)
        self.ball_label = QLabel()
        self.ball_label.setWordWrap(True)
        f.addRow(self.ball_label)
        v.addWidget(g)

        # loss curve
        g = QGroupBox("Loss of the latest descent")
        gl_ = QVBoxLayout(g)
        self.loss_plot = pg.PlotWidget()
        self.loss_plot.setBackground("#14161c")
        self.loss_plot.setLogMode(x=False, y=True)
        self.loss_plot.setLabel("bottom", "step")
        self.loss_plot.setLabel("left", "L")
        self.loss_plot.setMinimumHeight(120)
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen("#ff9f1c", width=1.5))
        gl_.addWidget(self.loss_plot)
        v.addWidget(g)
        v.addStretch(1)
        self._controls = panel
        self.bind("expression", setter="_expression_setting")
        for name, w in (("model", self.model_combo), ("optimizer", self.opt_combo),
                        ("lr", self.lr_spin), ("momentum", self.mom_spin), ("batch_size", self.batch_spin),
                        ("steps", self.steps_spin), ("n_random", self.n_random_spin), ("extent", self.extent_spin),
                        ("resolution", self.res_spin), ("log_scale", self.log_check),
                        ("contours", self.contour_check), ("wireframe", self.wire_check),
                        ("curvature", self.curv_check), ("color_by", self.colorby_combo), ("mu", self.mu_spin),
                        ("pl_ball", self.ball_check)):
            self.bind(name, w)
        self._update_enabled()
        self._update_caption()

    def controls(self) -> QWidget:
        return self._controls

    def help_html(self) -> str:
        return (
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

    def active_view(self) -> QWidget:
        return self.plane if self._last_view == "2d" else self.scene

    # ----------------------------------------------------------------------------- state changes
    def _update_enabled(self) -> None:
        custom = self.state.model == "custom"
        self.expr_edit.setEnabled(custom)
        opt = self.state.optimizer
        self.mom_spin.setEnabled(opt == "momentum")
        self.batch_spin.setEnabled(opt == "sgd")
        self.batch_spin.setRange(1, len(self.state.xs))

    def _update_caption(self) -> None:
        s = self.state
        name = s.expression if s.model == "custom" else dict(MODEL_CHOICES)[s.model].split("  ")[0]
        n = len(s.xs)
        dim = 2 - n
        what = "a curve of solutions" if dim == 1 else "isolated solutions"
        self.caption.setText(
            f"<b>f(x; w) = {name}</b> &nbsp; n = {n} point{'s' if n > 1 else ''}, p = 2 → {what} "
            f"(dimension p − n = {dim}) &nbsp;·&nbsp; L(w) = ½ Σ (f(xᵢ; w) − yᵢ)² "
            f"&nbsp;·&nbsp; <i>click the plane to start gradient descent</i>")

    def _on_model_changed(self) -> None:
        key = self.model_combo.currentData()
        if key == "custom" and not self._validate_expression(self.expr_edit.text()):
            self.state.model = "custom"
            self._update_enabled()
            return
        self.state.model = key
        self._update_enabled()
        self._problem_changed()

    def _validate_expression(self, text: str) -> bool:
        from models.expr import ExpressionError, parse_expression

        try:
            parse_expression(text)
        except ExpressionError as exc:
            self.expr_error.setText(f"✗ {exc}")
            self.expr_error.setVisible(True)
            self.message.emit(f"Expression refused: {exc}", True)
            self._expr_ok = False
            return False
        self.expr_error.setVisible(False)
        self._expr_ok = True
        return True

    def _apply_expression(self) -> None:
        self._expr_ok = False
        text = self.expr_edit.text()
        if not self._validate_expression(text):
            return
        self.state.expression = text.strip()
        if self.state.model != "custom":
            self.model_combo.setCurrentIndex([k for k, _ in MODEL_CHOICES].index("custom"))
        else:
            self._problem_changed()

    def _expression_setting(self, text: str) -> None:
        """A scene's ``expression``: the custom model's formula, used when (and only when) model = custom."""
        self.expr_edit.setText(text)
        if self._validate_expression(text):
            self.state.expression = text.strip()
            if self.state.model == "custom":
                self._problem_changed()

    def set_expression(self, text: str) -> bool:
        """Programmatic equivalent of typing an expression and pressing Enter."""
        self.expr_edit.setText(text)
        if self.state.model != "custom":
            self.model_combo.setCurrentIndex([k for k, _ in MODEL_CHOICES].index("custom"))
        self._apply_expression()
        return self._expr_ok

    @property
    def targets(self) -> list:
        return self.data_panel.targets

    def _on_data_changed(self) -> None:
        self._update_enabled()
        self._problem_changed()

    def set_data_point(self, i: int, x: float, y: float) -> None:
        """Move data point i to (x, y): the landscape and the manifold update at once."""
        self.data_panel.set_point(i, x, y)

    def _on_descent_setting(self) -> None:
        s = self.state
        s.optimizer = self.opt_combo.currentData()
        s.lr = float(self.lr_spin.value())
        s.momentum = float(self.mom_spin.value())
        s.batch_size = int(self.batch_spin.value())
        s.steps = int(self.steps_spin.value())
        rerun = s.n_random == int(self.n_random_spin.value())
        s.n_random = int(self.n_random_spin.value())
        self._update_enabled()
        self.save_state()
        if rerun:
            self._schedule_rerun()  # a new step size or optimizer re-runs the descents on screen

    def _on_view_setting(self) -> None:
        s = self.state
        res = int(self.res_spin.value())
        if res > MAX_GRID:
            gb = res * res * 8 * (6 + len(s.xs)) / 1e9
            self.message.emit(f"A {res}×{res} grid would need about {gb:.1f} GB and minutes per update: "
                              f"clamped to {MAX_GRID}×{MAX_GRID}", True)
            res = MAX_GRID
            self.res_spin.blockSignals(True)
            self.res_spin.setValue(res)
            self.res_spin.blockSignals(False)
        extent_changed = float(self.extent_spin.value()) != s.extent or res != s.resolution
        s.extent = float(self.extent_spin.value())
        s.resolution = res
        s.log_scale = self.log_check.isChecked()
        s.contours = self.contour_check.isChecked()
        s.wireframe = self.wire_check.isChecked()
        s.curvature = self.curv_check.isChecked()
        s.color_by = self.colorby_combo.currentData()
        s.mu = float(self.mu_spin.value())
        s.pl_ball = self.ball_check.isChecked()
        self.scene.surface.set_wireframe(s.wireframe)
        self.save_state()
        self.request_landscape(reset_view=extent_changed)

    def _problem_changed(self) -> None:
        """Model or data changed: redraw the landscape now, rerun the descents once the change settles."""
        self._update_caption()
        self.save_state()
        self.request_landscape()
        self._schedule_rerun()

    def request_landscape(self, reset_view: bool = False) -> None:
        s = self.state
        self._reset_view_pending = getattr(self, "_reset_view_pending", False) or reset_view
        self.grid_worker.submit(GridRequest(s.model, s.expression, tuple(s.xs), tuple(s.ys), s.extent,
                                            s.resolution, s.log_scale, s.curvature, s.contours, self.device,
                                            s.color_by, s.mu))

    def _on_landscape_failed(self, req, text: str) -> None:
        self.show_error(f"Cannot evaluate the loss: {text}")

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
    def _next_colors(self, n: int) -> list[str]:
        out = [PALETTE[(self._palette_i + k) % len(PALETTE)] for k in range(n)]
        self._palette_i += n
        return out

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
        run = DescentRun(self, "models.toy2d:descent", params, starts, self._next_colors(len(starts)),
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

    def _on_run_done(self, run: DescentRun, result) -> None:
        run.redraw()
        if result is None:
            return
        if result.reason == "diverged" or result.diverged.any():
            self.show_error(result.message)
        else:
            msg = result.message
            if run.projections is not None:
                end = np.array([tr.last_params for tr in run.trajs])
                d = np.max(np.linalg.norm(end - run.projections, axis=1))
                msg += f" · landing point vs projection of the start: |Δ| = {d:.2e}"
            self.message.emit(msg, False)
        if all(r.finished for r in self.runs):
            self.status.emit({"running": False})

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

    # ----------------------------------------------------------------------------- Lab API
    def _start_default(self) -> None:
        self.start_descent(self.default_start())
