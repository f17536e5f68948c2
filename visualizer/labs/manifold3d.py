"""Lab "manifold3d": solution sets of three-parameter models, seen whole (THEORY.md sections 1 and 3).

Right, the parameter cube in OpenGL: one data point's solutions as a lit translucent surface, two points'
as a curve where their surfaces meet, three points' as isolated stars. Left, a movable slice w3 = c with
the loss on it: click it to start gradient descent from (w1, w2, c). Descents train the model itself
(plain), or, in lazy training, alpha * (f(w) - f(w0)) with the loss divided by alpha^2 for every alpha: as
alpha grows the descent lands ever closer to its start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
from pyqtgraph.opengl.MeshData import MeshData
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
    QSlider,
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
from visualizer.views.scene3d import Scene3D, polylines_to_segments
from visualizer.workers import LatestJobWorker

MODEL_CHOICES = [
    ("tanh", "w₃ · tanh(w₁ x + w₂)"),
    ("quadratic", "w₁ x + w₂ x² + w₃  (linear in w)"),
    ("product", "w₁ · w₂ · w₃ · x"),
    ("custom", "custom expression…"),
]
OPTIMIZERS = [("gd", "gradient descent"), ("momentum", "momentum"), ("adam", "Adam")]
SCALING_CHOICES = [("plain", "f(w): lands on the drawn solutions"),
                   ("lazy", "lazy: α·(f(w) − f(w₀)), loss / α²")]
PALETTE = ["#ff9f1c", "#ff4d6d", "#4cc9f0", "#b8f35a", "#ffd60a", "#c77dff", "#2ec4b6", "#f72585"]
SETTINGS_KEY = "labs/manifold3d"
MAX_RES = 160
LIGHT = np.array([0.35, -0.45, 0.82]) / np.linalg.norm([0.35, -0.45, 0.82])


@dataclass
class Manifold3DState:
    model: str = "tanh"
    expression: str = "w3*sin(w1*x) + w2"
    xs: list = field(default_factory=lambda: [1.0])
    ys: list = field(default_factory=lambda: [0.5])
    optimizer: str = "gd"
    lr: float = 0.1
    steps: int = 3000
    scaling: str = "plain"
    alpha: float = 1.0
    n_random: int = 6
    extent: float = 2.5
    resolution: int = 64
    slice_w3: float = 0.8
    shells: bool = False
    shell_level: float = 0.05
    slice_color: str = "loss"
    mu: float = 0.05
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> Manifold3DState:
        s = restore_state(cls, d, 3)
        if len(s.xs) != len(s.ys):
            s.xs, s.ys = [1.0], [0.5]
        if s.model not in dict(MODEL_CHOICES):
            s.model = "tanh"
        if s.optimizer not in dict(OPTIMIZERS):
            s.optimizer = "gd"
        # every number within what its control can show (a stored value must never break the lab's build)
        s.resolution = int(min(max(s.resolution, 16), MAX_RES))
        s.extent = float(min(max(s.extent, 0.1), 100.0))
        s.alpha = float(min(max(s.alpha, 0.1), 100.0))  # the slider's range, 10^-1 .. 10^2
        s.steps = int(min(max(s.steps, 1), 1_000_000))
        s.lr = float(min(max(s.lr, 1e-5), 50.0))
        s.n_random = int(min(max(s.n_random, 1), 100))
        s.slice_w3 = float(min(max(s.slice_w3, -s.extent), s.extent))
        s.shell_level = float(min(max(s.shell_level, 1e-3), 1.0))  # the slider's 10^-3 .. 1
        s.mu = float(min(max(s.mu, 1e-4), 1e4))
        s.seed = int(min(max(s.seed, 0), 10**6))
        if s.scaling not in dict(SCALING_CHOICES):
            s.scaling = "plain"
        if s.slice_color not in ("loss", "kernel"):
            s.slice_color = "loss"
        return s


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


def _log_slider(lab, value: float) -> int:
    """A slider showing log10(value) x 100."""
    return round(100 * math.log10(max(value, 1e-9)))


def _slice_slider(lab, c: float) -> int:
    """The slice slider: c as a percentage of the extent."""
    return round(100 * c / lab.state.extent)


def lit_colors(normals: np.ndarray | None, rgba: tuple, n: int) -> np.ndarray:
    base = np.tile(np.array(rgba, dtype=np.float32), (n, 1))
    if normals is None or len(normals) != n:
        return base
    d = np.abs(normals @ LIGHT).astype(np.float32)
    base[:, :3] *= (0.45 + 0.6 * d)[:, None]
    np.clip(base, 0, 1, out=base)
    return base


class Manifold3DLab(DescentLab):
    key = "manifold3d"
    state_cls = Manifold3DState
    title = "Solution manifolds (3 parameters)"
    settings_key = SETTINGS_KEY

    def __init__(self, device: str = "cpu", parent=None, restore: bool = True, start: bool = True) -> None:
        super().__init__(parent)
        self.device = device
        self.state = Manifold3DState.from_dict(store.load_json(SETTINGS_KEY)) if restore else Manifold3DState()
        self._init_descents()
        self.landscape: dict | None = None
        self._palette_i = 0
        self._last_view = "3d"
        self._mesh_items: list = []
        self.cmap = pg.colormap.get("viridis")
        self._build_views()
        self._build_controls()
        self.worker = LatestJobWorker(compute_landscape3d, self)
        self.worker.result.connect(self._on_landscape)
        self.worker.failed.connect(lambda req, text: self.show_error(f"Cannot compute the solution set: {text}"))
        self._workers = [self.worker]
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
        self.slice_item = gl.GLMeshItem(meshdata=MeshData(vertexes=np.zeros((4, 3)), faces=np.array([[0, 1, 2], [0, 2, 3]])),
                                        color=(0.55, 0.75, 1.0, 0.12), glOptions="translucent", smooth=False,
                                        computeNormals=False)
        self.scene.addItem(self.slice_item)
        self._make_banner()
        self.caption = QLabel()
        self.caption.setStyleSheet("color:#c9d1d9;padding:2px 6px;")
        self.caption.setWordWrap(True)  # a long formula wraps instead of widening the window
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.plane)
        split.addWidget(self.scene.container)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setChildrenCollapsible(False)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.banner)
        lay.addWidget(self.caption)
        lay.addWidget(split, 1)

    def _build_controls(self) -> None:
        s = self.state
        panel = QWidget()
        v = QVBoxLayout(panel)
        g = QGroupBox("Model f(x; w₁, w₂, w₃)")
        f = QFormLayout(g)
        self.model_combo = QComboBox()
        for k, label in MODEL_CHOICES:
            self.model_combo.addItem(label, k)
        self.model_combo.setCurrentIndex([k for k, _ in MODEL_CHOICES].index(s.model))
        self.model_combo.currentIndexChanged.connect(self._on_model)
        f.addRow(self.model_combo)
        self.expr_edit = QLineEdit(s.expression)
        self.expr_edit.setToolTip("An expression in w1, w2, w3 and x (Enter applies)")
        self.expr_edit.returnPressed.connect(self._on_model)
        f.addRow("f =", self.expr_edit)
        self.expr_error = QLabel()
        self.expr_error.setStyleSheet("color:#ff6b6b;")
        self.expr_error.setWordWrap(True)
        self.expr_error.setVisible(False)
        f.addRow(self.expr_error)
        v.addWidget(g)

        g = QGroupBox("Data (drag the points, or type)")
        dl = QVBoxLayout(g)
        self.data_panel = DataPanel(s.xs, s.ys, 3, "One point: a surface of solutions (p − n = 2). "
                                    "Two: a curve. Three: isolated solutions.")
        self.data_panel.changed.connect(self._problem_changed)
        self.data_panel.error.connect(lambda t: self.message.emit(t, True))
        dl.addWidget(self.data_panel)
        v.addWidget(g)

        g = QGroupBox("Gradient descent")
        f = QFormLayout(g)
        self.opt_combo = QComboBox()
        for k, label in OPTIMIZERS:
            self.opt_combo.addItem(label, k)
        self.opt_combo.setCurrentIndex([k for k, _ in OPTIMIZERS].index(s.optimizer))
        self.opt_combo.currentIndexChanged.connect(self._on_descent_setting)
        f.addRow("optimizer", self.opt_combo)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 50.0)
        self.lr_spin.setSingleStep(0.01)
        self.lr_spin.setValue(s.lr)
        self.lr_spin.valueChanged.connect(self._on_descent_setting)
        f.addRow("learning rate η", self.lr_spin)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 1_000_000)
        self.steps_spin.setValue(s.steps)
        self.steps_spin.valueChanged.connect(self._on_descent_setting)
        f.addRow("steps", self.steps_spin)
        self.scaling_combo = QComboBox()
        for key, text in SCALING_CHOICES:
            self.scaling_combo.addItem(text, key)
        self.scaling_combo.setCurrentIndex([k for k, _ in SCALING_CHOICES].index(s.scaling))
        # the panel keeps its width: the long item shows in full in the open list
        self.scaling_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.scaling_combo.setMinimumContentsLength(8)
        self.scaling_combo.setToolTip("What the descents train. Plain: the model f(w) itself, so they land on the "
                                      "solution set drawn here. Lazy: α·(f(w) − f(w₀)) with the loss divided by "
                                      "α², one formula for every α (THEORY.md section 3); its solutions are "
                                      "f(w) = f(w₀) + y/α, a copy of the drawn set shifted by each start's own "
                                      "output, which the descent reaches ever closer to its start as α grows.")
        self.scaling_combo.currentIndexChanged.connect(self._on_scaling)
        f.addRow("training", self.scaling_combo)
        self.alpha_slider = QSlider(Qt.Orientation.Horizontal)
        self.alpha_slider.setRange(-100, 200)  # log10(alpha) * 100
        self.alpha_slider.setValue(int(round(100 * math.log10(s.alpha))))
        self.alpha_slider.setToolTip("Output scale α: trains α·(f(w) − f(w₀)) with the loss divided by α². "
                                     "Large α = lazy training: the descent barely moves from its start.")
        self.alpha_slider.valueChanged.connect(self._on_alpha)
        self.alpha_slider.setEnabled(s.scaling == "lazy")
        self.alpha_label = QLabel()
        row = QHBoxLayout()
        row.addWidget(self.alpha_slider, 1)
        row.addWidget(self.alpha_label)
        f.addRow("output scale α", row)
        self.start_edit = QLineEdit("1.5, -1.0, 0.8")
        self.start_edit.setToolTip("A starting point w₀ = (w₁, w₂, w₃); Enter starts a descent from it")
        self.start_edit.returnPressed.connect(self._start_typed)
        f.addRow("start w₀", self.start_edit)
        row = QHBoxLayout()
        self.n_random_spin = QSpinBox()
        self.n_random_spin.setRange(1, 100)
        self.n_random_spin.setValue(s.n_random)
        row.addWidget(self.n_random_spin)
        btn = QPushButton("Random starts")
        btn.clicked.connect(self.random_starts)
        row.addWidget(btn)
        f.addRow("N", row)
        clear = QPushButton("Clear descents (R)")
        clear.clicked.connect(self.reset)
        f.addRow(clear)
        v.addWidget(g)

        g = QGroupBox("View")
        f = QFormLayout(g)
        self.slice_slider = QSlider(Qt.Orientation.Horizontal)
        self.slice_slider.setRange(-100, 100)
        self.slice_slider.setValue(int(round(100 * s.slice_w3 / s.extent)))
        self.slice_slider.setToolTip("Where the 2D slice w₃ = c cuts the cube")
        self.slice_slider.valueChanged.connect(self._on_view)
        f.addRow("slice c", self.slice_slider)
        self.extent_spin = QDoubleSpinBox()
        self.extent_spin.setRange(0.1, 100.0)
        self.extent_spin.setValue(s.extent)
        self.extent_spin.editingFinished.connect(self._on_view)
        f.addRow("extent a", self.extent_spin)
        self.res_spin = QSpinBox()
        self.res_spin.setRange(16, 2000)
        self.res_spin.setValue(s.resolution)
        self.res_spin.setToolTip(f"Grid points per side of the cube (at most {MAX_RES})")
        self.res_spin.editingFinished.connect(self._on_view)
        f.addRow("resolution", self.res_spin)
        self.shell_check = QCheckBox("loss shells L(w) = level")
        self.shell_check.setChecked(s.shells)
        self.shell_check.toggled.connect(self._on_view)
        f.addRow(self.shell_check)
        self.shell_slider = QSlider(Qt.Orientation.Horizontal)
        self.shell_slider.setRange(-300, 0)  # log10(level) * 100
        self.shell_slider.setValue(int(round(100 * math.log10(s.shell_level))))
        self.shell_slider.valueChanged.connect(self._on_view)
        f.addRow("shell level", self.shell_slider)
        self.slice_combo = QComboBox()
        self.slice_combo.addItem("loss L(w)", "loss")
        self.slice_combo.addItem("λ_min of the tangent kernel K(w)", "kernel")
        self.slice_combo.setCurrentIndex(0 if s.slice_color == "loss" else 1)
        self.slice_combo.setToolTip("Colour of the slice; with the kernel, the dashed line is λ_min(K) = μ: "
                                    "PL* holds (with constant μ) outside it")
        self.slice_combo.currentIndexChanged.connect(self._on_view)
        f.addRow("slice shows", self.slice_combo)
        self.mu_spin = QDoubleSpinBox()
        self.mu_spin.setDecimals(4)
        self.mu_spin.setRange(1e-4, 1e4)
        self.mu_spin.setValue(s.mu)
        self.mu_spin.editingFinished.connect(self._on_view)
        f.addRow("μ", self.mu_spin)
        v.addWidget(g)
        v.addStretch(1)
        self._controls = panel
        self.bind("expression", setter="_expression_setting")
        for name, w in (("model", self.model_combo), ("optimizer", self.opt_combo), ("scaling", self.scaling_combo),
                        ("lr", self.lr_spin), ("steps", self.steps_spin), ("n_random", self.n_random_spin),
                        ("extent", self.extent_spin), ("resolution", self.res_spin), ("shells", self.shell_check),
                        ("slice_color", self.slice_combo), ("mu", self.mu_spin)):
            self.bind(name, w)
        self.bind("alpha", self.alpha_slider, to_widget=_log_slider)
        self.bind("shell_level", self.shell_slider, to_widget=_log_slider)
        self.bind("slice_w3", self.slice_slider, to_widget=_slice_slider)
        self._update_labels()

    def controls(self) -> QWidget:
        return self._controls

    def help_html(self) -> str:
        return ("<h3>Solution manifolds of three-parameter models</h3>"
                "<p>The solutions of F(w) = y form a (p − n)-dimensional set: with p = 3, one data point gives a "
                "surface, two a curve (where the two points' surfaces meet), three isolated points.</p>"
                "<p>Loss <b>L(w) = ½ Σ (f(xᵢ; w) − yᵢ)²</b>. For the model linear in w the descent lands on the "
                "orthogonal projection of its start (white ring). <b>Lazy training</b> trains α(f(w) − f(w₀)) with "
                "loss / α², one formula for every α: as α grows the distance travelled shrinks like 1/α (the "
                "landing set is f(w) = f(w₀) + y/α, which approaches the start). <b>Plain</b> trains f(w) onto the "
                "drawn solution set.</p>"
                "<p>Click the slice (left) to start a descent from (w₁, w₂, c).</p>")

    def active_view(self) -> QWidget:
        return self.scene

    # ----------------------------------------------------------------------------- state
    def train_alpha(self) -> float:
        """The output scale the descents train with: α in the lazy scaling, 1 (none) in the plain one."""
        return self.state.alpha if self.state.scaling == "lazy" else 1.0

    def _update_labels(self) -> None:
        s = self.state
        self.alpha_label.setText(f"{s.alpha:.3g}" if s.scaling == "lazy" else f"({s.alpha:.3g})")
        self.expr_edit.setEnabled(s.model == "custom")
        n = len(s.xs)
        what = {1: "a surface", 2: "a curve", 3: "isolated points"}[n]
        self.caption.setText(f"<b>f = {s.expression if s.model == 'custom' else dict(MODEL_CHOICES)[s.model]}</b>"
                             f" &nbsp; n = {n}, p = 3 → {what} of solutions (dimension {3 - n}) · "
                             f"slice w₃ = {s.slice_w3:.2f} · "
                             + (f"lazy training, α = {s.alpha:.3g}" if s.scaling == "lazy" else "plain training"))

    def _on_model(self) -> None:
        from models.expr import ExpressionError, parse_expression
        from models.toy3d import VARIABLES

        key = self.model_combo.currentData()
        if key == "custom":
            try:
                parse_expression(self.expr_edit.text(), VARIABLES)
            except ExpressionError as exc:
                self.expr_error.setText(f"✗ {exc}")
                self.expr_error.setVisible(True)
                self.message.emit(f"Expression refused: {exc}", True)
                return
            self.state.expression = self.expr_edit.text().strip()
        self.expr_error.setVisible(False)
        self.state.model = key
        self._problem_changed()

    def _expression_setting(self, text: str) -> None:
        """A scene's ``expression``: the custom model's formula, used when (and only when) model = custom."""
        self.expr_edit.setText(text)
        if self.state.model == "custom":
            self._on_model()
        else:
            self.state.expression = text.strip()

    def _on_alpha(self) -> None:
        self.state.alpha = 10 ** (self.alpha_slider.value() / 100)
        self._on_descent_setting()

    def _on_scaling(self) -> None:
        self.state.scaling = self.scaling_combo.currentData()
        self.alpha_slider.setEnabled(self.state.scaling == "lazy")
        self._on_descent_setting()

    def _on_descent_setting(self) -> None:
        s = self.state
        s.optimizer = self.opt_combo.currentData()
        s.lr = float(self.lr_spin.value())
        s.steps = int(self.steps_spin.value())
        s.n_random = int(self.n_random_spin.value())
        self._update_labels()
        self.save_state()
        self._schedule_rerun()

    def _on_view(self) -> None:
        s = self.state
        res = int(self.res_spin.value())
        if res > MAX_RES:
            self.message.emit(f"A {res}³ grid would take minutes and gigabytes: clamped to {MAX_RES}³", True)
            res = MAX_RES
            self.res_spin.blockSignals(True)
            self.res_spin.setValue(res)
            self.res_spin.blockSignals(False)
        s.resolution = res
        s.extent = float(self.extent_spin.value())
        s.slice_w3 = s.extent * self.slice_slider.value() / 100
        s.shells = self.shell_check.isChecked()
        s.shell_level = 10 ** (self.shell_slider.value() / 100)
        s.slice_color = self.slice_combo.currentData()
        s.mu = float(self.mu_spin.value())
        self._update_labels()
        self.save_state()
        self.request()

    def _problem_changed(self) -> None:
        self._update_labels()
        self.save_state()
        self.request()
        self._schedule_rerun()

    def start(self) -> None:
        self.request()

    def request(self) -> None:
        s = self.state
        self.worker.submit(Request3(s.model, s.expression, tuple(s.xs), tuple(s.ys), s.extent, s.resolution,
                                    s.slice_w3, s.shells, s.shell_level, s.slice_color, s.mu))

    # ----------------------------------------------------------------------------- drawing
    def _on_landscape(self, req: Request3, out: dict) -> None:
        self.landscape = out
        e = req.extent
        self.plane.set_field(out["w1"], out["w2"], out["values"], out["range"], out["label"])
        from visualizer.views.plane import polylines_to_nan_separated

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
        colors = [PALETTE[(self._palette_i + k) % len(PALETTE)] for k in range(len(starts))]
        self._palette_i += len(starts)
        run = DescentRun(self, "models.toy3d:descent", params, starts, colors, to2d=lambda p: p[:, :2],
                         to3d=lambda p, loss, lift: p, projections=proj)
        if proj is not None:
            run.proj3d = gl.GLScatterPlotItem(pos=proj, size=18, color=(1, 1, 1, 0.9), pxMode=True)
            self.scene.addItem(run.proj3d)
        self.runs.append(run)
        if self.paused:
            self.set_paused(False)
        run.start()
        self.status.emit({"running": True})
        return run

    def _start_typed(self) -> None:
        try:
            w = [float(t) for t in self.start_edit.text().replace("(", "").replace(")", "").split(",")]
            if len(w) != 3 or not all(math.isfinite(a) for a in w):
                raise ValueError
        except ValueError:
            self.message.emit("A start needs three numbers: w₁, w₂, w₃ (for example 1.5, -1, 0.8)", True)
            return
        self.start_descent(w)

    def random_starts(self) -> DescentRun:
        s = self.state
        rng = np.random.default_rng(s.seed + self._palette_i)
        return self.start_descent(rng.uniform(-s.extent, s.extent, size=(s.n_random, 3)))

    def _on_run_done(self, run: DescentRun, result) -> None:
        run.redraw()
        if result is None:
            return
        if result.diverged.any():
            self.show_error(result.message)
            if all(r.finished for r in self.runs):
                self.status.emit({"running": False})
            return
        moved = [np.linalg.norm(tr.last_params - st) for tr, st in zip(run.trajs, run.starts)]
        how = f"lazy, α = {self.state.alpha:.3g}" if self.state.scaling == "lazy" else "plain"
        msg = f"{result.message} · distance travelled ‖w_T − w₀‖ = {np.mean(moved):.4f} ({how})"
        if run.projections is not None:
            d = max(np.linalg.norm(tr.last_params - p) for tr, p in zip(run.trajs, run.projections))
            msg += f" · |landing − projection| = {d:.2e}"
        self.last_distance = float(np.mean(moved))
        self.message.emit(msg, False)
        if all(r.finished for r in self.runs):
            self.status.emit({"running": False})

    def clear_runs(self) -> None:
        for r in self.runs:
            if getattr(r, "proj3d", None) is not None:
                self.scene.removeItem(r.proj3d)
            r.remove()
        self.runs = []

    def default_start(self) -> np.ndarray:
        try:
            w = [float(t) for t in self.start_edit.text().replace("(", "").replace(")", "").split(",")]
            if len(w) == 3 and all(math.isfinite(a) for a in w):
                return np.array(w)
        except ValueError:
            pass
        return np.array([1.5, -1.0, 0.8])

    # ----------------------------------------------------------------------------- Lab API
    def _start_default(self) -> None:
        self._start_typed()
