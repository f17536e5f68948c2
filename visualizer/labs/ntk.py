"""Lab "ntk": lazy training across widths (THEORY.md sections 2 and 3).

Several widths of one fully connected network train at once by full-batch GD in a child process
(``models.ntk_sweep.sweep_run``); everything lazy training predicts is measured as they go and drawn live:
the losses, the relative weight and kernel changes against width on log-log axes with fitted slopes, each
network against its linearization at w0, the infinite-width kernel model, the kernel itself, its spectrum and
the residual along its eigenvectors, and the outputs at three training inputs as paths in a 3D view.
Click a width anywhere to highlight it; click (or drag the marker) in the loss plot to scrub every view back in
time; double-click there to follow the run again.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFont, QKeySequence, QShortcut
from PySide6.QtWidgets import QLabel

from models import ntk_sweep as sw
from visualizer import errorlog
from visualizer.labs.base import Action, SingleRunLab
from visualizer.labs.schema import setting
from visualizer.views.common import caption, dark_plot, lab_layout, splitter
from visualizer.views.scene3d import Scene3D

NET, DATA, TRAIN, VIEW = "Networks", "Data", "Training", "Views"
#: each width keeps its colour whatever the list (narrow: warm, wide: cool)
WIDTH_COLORS = dict(zip(sw.WIDTH_CHOICES, ("#f94144", "#f3722c", "#f8961e", "#f9c74f", "#90be6d", "#43aa8b",
                                           "#4cc9f0", "#4895ef", "#b388ff", "#ff70d0")))
INF_COLOR = "#ffffff"
MAX_LOSS_ROWS = 20000  # per-step history kept for the loss plot (then every other row is dropped)
MAX_PATH_ROWS = 4096  # per-step outputs kept for the output-space paths
MAX_METRIC_ROWS = 240  # measured snapshots kept for scrubbing
MODES = (1, 2, 4, 8, 16, 32, 64)  # the eigenvectors whose residual component is drawn (1 = largest eigenvalue)


def _widths_check(value, state) -> str | None:
    ws = [int(v) for v in value]
    if any(v != int(v) for v in value) or any(m not in sw.WIDTH_CHOICES for m in ws):
        return "each width is a power of two from 16 to 8192"
    if len(set(ws)) != len(ws):
        return "each width once"
    return None


def _path_check(value, state) -> str | None:
    idx = [int(v) for v in value]
    if any(v != int(v) for v in value):
        return "three point numbers (whole numbers)"
    if any(not 1 <= i <= state.n_points for i in idx):
        return f"three of the training points 1 to {state.n_points}"
    return None


@dataclass
class NTKState:
    """Networks, data and training start a new sweep at once; the views' settings only redraw."""

    widths: list = setting([64, 256, 1024, 4096], "widths", group=NET, widget="widths", reacts="runs",
                           length=(1, len(sw.WIDTH_CHOICES)), range=(16, 8192), check=_widths_check,
                           tooltip="The widths trained side by side (hidden units per layer), on a log scale")
    depth: int = setting(1, "hidden layers", range=(1, 4), group=NET, reacts="runs",
                         tooltip="Hidden layers of width m: one hidden layer has p ≈ (d + 2) m parameters, deeper "
                                 "nets p ≈ (L − 1) m², so slopes against m differ (−½ against −1 for the weights)")
    activation: str = setting("relu", "activation", group=NET, reacts="runs",
                              choices=(("relu", "relu"), ("tanh", "tanh"), ("gelu", "gelu"), ("erf", "erf")),
                              tooltip="relu has a closed-form infinite-width kernel; the others are compared "
                                      f"with a Monte-Carlo mean of {sw.MC_SEEDS} kernels at width {sw.MC_WIDTH}")
    parameterization: str = setting("ntk", "parameterization", group=NET, reacts="runs",
                                    choices=(("ntk", "NTK: W ~ N(0, 1), z = W a / √fan_in + b"),
                                             ("standard", "standard (PyTorch's default layers)")),
                                    tooltip="In the NTK parameterization the kernel converges as the width grows; "
                                            "in the standard one λ_max(K) grows like the width, so a fixed step "
                                            "diverges for wide nets")
    output: str = setting("plain", "output", group=NET, reacts="runs",
                          choices=(("plain", "F = g(w)"), ("scaled", "F = α (g(w) − g(w₀)), loss / α²")),
                          tooltip="Scaled: the network starts at F = 0 and the output scale α makes training "
                                  "lazier (the weights move like 1/α) — lazy versus rich")
    alpha: float = setting(1.0, "α (output scale)", range=(0.01, 1000.0), decimals=3, log=True, group=NET,
                           reacts="runs", commit="finish", enabled_if=lambda s: s.output == "scaled",
                           tooltip="F = α (g(w) − g(w₀)) trained on the loss ½‖F − y‖² / α²")
    seed: int = setting(0, "seed", range=(0, 10**6), group=NET, reacts="runs",
                        tooltip="The networks' initialization and the data's jitter")
    data: str = setting("circle", "data", group=DATA, reacts="runs",
                        choices=(("circle", "points on the circle"), ("line", "a 1D function"),
                                 ("drawn", "a curve drawn by hand")),
                        tooltip="Inputs on the unit circle (d = 2) with a target of the angle θ, or a 1D input")
    circle_target: str = setting("mix", "target of θ", group=DATA, reacts="runs",
                                 choices=tuple((k, v[0]) for k, v in sw.CIRCLE_TARGETS.items()),
                                 enabled_if=lambda s: s.data == "circle",
                                 tooltip="Higher harmonics sit on smaller eigenvalues of K: fitted last")
    line_target: str = setting("sin", "target of x", group=DATA, reacts="runs",
                               choices=tuple((k, v[0]) for k, v in sw.LINE_TARGETS.items()),
                               enabled_if=lambda s: s.data == "line")
    drawn: list = setting(sw.default_drawn(), "drawn curve", group=DATA, widget="draw", reacts="runs",
                          length=(sw.DRAW_SLOTS, sw.DRAW_SLOTS), range=(-3.0, 3.0),
                          enabled_if=lambda s: s.data == "drawn",
                          tooltip="Drag across the panel to draw the target")
    n_points: int = setting(24, "training points n", range=(sw.MIN_POINTS, sw.MAX_POINTS), group=DATA,
                            reacts="runs", tooltip=f"Training points; the test grid has {sw.N_TEST} more")
    noise: float = setting(0.0, "label noise", range=(0.0, 1.0), decimals=3, group=DATA, reacts="runs",
                           tooltip="Standard deviation of Gaussian noise added to the training targets")
    eta: float = setting(0.015, "step η", range=(1e-6, 10.0), decimals=6, log=True, group=TRAIN, reacts="runs",
                         commit="finish",
                         tooltip="Full-batch GD on the sum loss ½‖F − y‖²: stable while η < 2/λ_max(K) "
                                 "(the limit per width is shown below)")
    step_scaling: str = setting("fixed", "step per width", group=TRAIN, reacts="runs",
                                choices=(("fixed", "the same η for every width"),
                                         ("width", "η · m_min / m (1/width)")),
                                enabled_if=lambda s: s.parameterization == "standard",
                                tooltip="The standard parameterization needs a step that shrinks like 1/width")
    steps: int = setting(2000, "steps", range=(1, 10**6), group=TRAIN, reacts="runs", commit="finish",
                         tooltip="GD steps of every width")
    metric_every: int = setting(10, "measure every k", range=(1, 1000), group=TRAIN, reacts="runs",
                                commit="finish",
                                tooltip="The kernel, the test loss, the weight change and the linearization "
                                        "are measured every k steps (the losses every step)")
    highlight: int = setting(1024, "highlighted width", range=(16, 8192), group=VIEW, reacts="highlight",
                             widget="hidden", tooltip="Click a width in any plot to highlight it everywhere")
    path_points: list = setting([1, 9, 17], "path inputs", group=VIEW, reacts="redraw", length=(3, 3),
                                range=(1, sw.MAX_POINTS), check=_path_check, depends=("n_points",),
                                tooltip="The three training points (numbered by position) whose outputs "
                                        "(F(x₁), F(x₂), F(x₃)) are drawn as paths in the 3D view")


def _decimate(rows: list, cap: int) -> None:
    """Keep every other row (and the last) once ``rows`` passes ``cap``: history bounded, ends kept."""
    if len(rows) > cap:
        last = rows[-1]
        rows[:] = rows[::2]
        if rows[-1] is not last:
            rows.append(last)


class SweepHistory:
    """What a sweep has delivered, bounded: per-step losses and outputs (thinned evenly when full) and the
    measured snapshots (thinned likewise), so any earlier step can be shown again."""

    def __init__(self) -> None:
        self.init: sw.SweepInit | None = None
        self.loss_rows: list = []  # (step, loss (W,))
        self.out_rows: list = []  # (step, out (W, n))
        self.metric_rows: list = []  # (step, SweepMetrics)
        self.diverged: dict[int, int] = {}  # width index -> step
        self.last_step = -1
        self.last_loss: np.ndarray | None = None

    def add(self, snap: sw.SweepStep) -> None:
        if snap.init is not None:
            self.init = snap.init
        self.loss_rows.append((snap.step, snap.loss))
        _decimate(self.loss_rows, MAX_LOSS_ROWS)
        self.out_rows.append((snap.step, snap.out))
        _decimate(self.out_rows, MAX_PATH_ROWS)
        if snap.metrics is not None:
            self.metric_rows.append((snap.step, snap.metrics))
            _decimate(self.metric_rows, MAX_METRIC_ROWS)
        self.diverged.update(snap.diverged_at)
        self.last_step = snap.step
        self.last_loss = snap.loss

    def metrics_at(self, step: int | None):
        """(step, metrics) of the last measurement at or before ``step`` (None: the latest)."""
        if not self.metric_rows:
            return None
        if step is None:
            return self.metric_rows[-1]
        i = bisect.bisect_right([r[0] for r in self.metric_rows], step) - 1
        return self.metric_rows[max(i, 0)]

    def losses(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.loss_rows:
            return np.zeros(0), np.zeros((0, 0))
        return np.array([r[0] for r in self.loss_rows]), np.array([r[1] for r in self.loss_rows])

    def outputs(self, upto: int | None) -> tuple[np.ndarray, np.ndarray]:
        rows = self.out_rows if upto is None else [r for r in self.out_rows if r[0] <= upto]
        if not rows:
            return np.zeros(0), np.zeros((0, 0, 0))
        return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


class NTKLab(SingleRunLab):
    key = "ntk"
    state_cls = NTKState
    title = "Lazy training across widths: the tangent kernel"
    actions = (Action("restart", "Restart the sweep (Space)", "restart", group=TRAIN,
                      tooltip="Train every width again from its initialization with the settings above",
                      scene="start the sweep again from the initialization"),
               Action("follow", "Follow the run (L)", "follow", group=VIEW,
                      tooltip="Show the latest step again after scrubbing back in the loss plot",
                      scene="show the latest step (end a scrub)"),
               Action("next_width", "Highlight the next width (W)", "next_width", group=VIEW,
                      tooltip="Highlight the next wider width (wraps around)",
                      scene="highlight the next wider width"),
               Action("reset", "Reset (R)", "reset", button=False, scene="stop the sweep and clear the plots"))
    hint = "The widths train at once: click a width to highlight it, click the loss plot to go back in time"
    help = ("<h3>Lazy training across widths</h3>"
            "<p>Every width trains by full-batch gradient descent on the <b>sum loss</b> L = ½‖F(w) − y‖² "
            "(the identities below hold in that normalization; the mean loss would put η/n in them).</p>"
            "<p>The tangent kernel K(w) = DF DFᵀ (n × n) governs the outputs: F<sub>t+1</sub> − F<sub>t</sub> ≈ "
            "−η K (F<sub>t</sub> − y). If K stayed at K₀ the residual would be exactly (I − ηK₀)ᵗ(F₀ − y), "
            "each eigen-component decaying at its own rate (1 − ηλ<sub>k</sub>)ᵗ: large eigenvalues first "
            "(spectral bias). That is gradient descent on the linearization F(w₀) + DF(w₀)(w − w₀), drawn dashed.</p>"
            "<p>In the NTK parameterization ‖w<sub>t</sub> − w₀‖ stays O(1) while ‖w₀‖ grows like √p, so the "
            "relative weight change falls like p<sup>−½</sup>: m<sup>−½</sup> for one hidden layer, about "
            "m<sup>−1</sup> deeper; the kernel's change falls at least as fast; the net follows its "
            "linearization ever more closely. The empirical kernel tends to the infinite-width NTK (relu: the "
            "arc-cosine recursion) with fluctuations ~ m<sup>−½</sup>. In the standard parameterization "
            "λ_max(K) grows like m: a fixed step diverges for wide nets (at depth 3 and 4 the measured growth "
            "is slower, about m<sup>0.7</sup> over these widths).</p>"
            "<p>Scaled output F = α(g(w) − g(w₀)) with the loss divided by α² keeps the function-space dynamics "
            "and shrinks the distance travelled like 1/α: lazy (large α) against rich (small α).</p>"
            "<p>Click a width (a curve, a point) to highlight it; click or drag in the loss plot to scrub back "
            "in time, double-click to follow the run; W highlights the next width.</p>")

    def __init__(self, device: str = "cpu", parent=None, restore: bool = True, start: bool = True,
                 runner_factory=None) -> None:
        super().__init__(device, parent, restore, start, runner_factory)
        self.hist = SweepHistory()
        self.run_widths: list[int] = []
        self.run_data: sw.SweepData | None = None
        self.scrub: int | None = None  # the step every view shows (None: the latest)
        self.finished = False
        self.reason = ""
        self._run_etas: list[float] = []
        self._build_views()
        self.make_form(custom={"widths": self._make_picker, "draw": self._make_draw})
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setTextFormat(Qt.TextFormat.RichText)
        self.form.add_row(TRAIN, self.info)
        self.form.add_row(VIEW, self.paths_note)
        for key, fn in (("L", self.follow), ("W", self.next_width)):
            sc = QShortcut(QKeySequence(key), self)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(fn)
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.timeout.connect(self.draw)
        self._show_data()
        if start:
            self.start()

    # ----------------------------------------------------------------------------- building
    def _make_picker(self, settings):
        from visualizer.views.pickers import WidthPicker

        self.picker = WidthPicker(settings, "widths", sw.WIDTH_CHOICES, WIDTH_COLORS)
        self.picker.error.connect(lambda text: self.message.emit(text, True))
        return self.picker

    def _make_draw(self, settings):
        from visualizer.views.pickers import DrawPanel

        self.draw_panel = DrawPanel(settings, "drawn", sw.DOMAIN_1D, (-3.0, 3.0))
        self.draw_panel.error.connect(lambda text: self.message.emit(text, True))
        return self.draw_panel

    def _build_views(self) -> None:
        self.caption = caption()
        # training and test loss per width; the scrub marker
        self.loss_plot = dark_plot("loss: training —, test - -", x="step", y="½‖F − y‖²", log_y=True,
                                   tooltip="Sum loss on the training points; the test loss is the same sum over "
                                           f"the {sw.N_TEST}-point test grid, scaled to n points. Click to go "
                                           "back to a step (drag the marker), double-click to follow the run")
        self.loss_legend = self.loss_plot.addLegend(offset=(-8, 8), labelTextSize="8pt", brush=(20, 22, 28, 200))
        self.scrub_line = pg.InfiniteLine(angle=90, movable=True, pen=pg.mkPen("#ffffff", width=1.2,
                                                                                style=Qt.PenStyle.DashLine))
        self.scrub_line.setVisible(False)
        self.scrub_line.sigPositionChanged.connect(self._on_scrub_drag)
        self.loss_plot.addItem(self.scrub_line)
        self.loss_plot.scene().sigMouseClicked.connect(self._on_loss_click)
        # scalings against width
        self.scale_plot = dark_plot("change against width", x="width m", y="relative size",
                                    tooltip="Relative weight change ‖w_t − w₀‖/‖w₀‖, relative kernel change "
                                            "‖K_t − K₀‖_F/‖K₀‖_F, the gap to the linearization (RMS of f − f_lin "
                                            "over RMS of the targets) and the distance of K₀ to the "
                                            "infinite-width kernel, with least-squares slopes. Click a point to "
                                            "highlight its width")
        self.scale_plot.setLogMode(x=True, y=True)
        for plot in (self.loss_plot, self.scale_plot):
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)
        self.scale_legend = self.scale_plot.addLegend(offset=(-8, 8), labelTextSize="8pt", brush=(20, 22, 28, 200))
        self.series = {}
        for key, (name, color, symbol) in {
                "wchange": ("‖w_t − w₀‖/‖w₀‖", "#ff9f1c", "o"), "kchange": ("‖K_t − K₀‖/‖K₀‖", "#4cc9f0", "s"),
                "gap": ("‖f − f_lin‖/‖y‖", "#b8f35a", "t"), "dist_inf": ("‖K₀ − K_∞‖/‖K_∞‖", "#e0e0e0", "d")}.items():
            # (data items, not bare curves or scatters: only they follow the plot's log axes)
            pts = self.scale_plot.plot([], [], pen=None, symbol=symbol, symbolSize=9, symbolBrush=color,
                                       symbolPen="#000", name=name)
            pts.sigPointsClicked.connect(self._on_width_points)
            fit = self.scale_plot.plot([], [], pen=pg.mkPen(color, width=1.3, style=Qt.PenStyle.DashLine))
            self.series[key] = (pts, fit, name)
        self.hi_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#ffffff40", width=6))
        self.scale_plot.addItem(self.hi_line)
        # functions: each net against its linearization and the infinite-width kernel model
        self.fn_plot = dark_plot("network — vs linearization - -", x="θ", y="F(x)",
                                 tooltip="Every width's function over the input domain; the highlighted width's "
                                         "linearization at w₀ trained by the same GD (dashed) and the "
                                         "infinite-width kernel model (white, mean f₀ = 0). Click a curve to "
                                         "highlight its width")
        self.fn_target = self.fn_plot.plot(pen=pg.mkPen("#ffb70355", width=1))
        self.fn_data = pg.ScatterPlotItem(size=8, brush=pg.mkBrush("#ffb703"), pen=pg.mkPen("#000"))
        self.fn_data.setZValue(30)
        self.fn_plot.addItem(self.fn_data)
        self.fn_inf = self.fn_plot.plot(pen=pg.mkPen(INF_COLOR, width=1.6, style=Qt.PenStyle.DotLine))
        self.fn_inf.setZValue(25)
        self.fn_lin = self.fn_plot.plot(pen=pg.mkPen("#ffffff", width=2, style=Qt.PenStyle.DashLine))
        self.fn_lin.setZValue(24)
        self.fn_curves: list = []
        self.loss_curves: list = []
        # the kernel at w0 and now
        self.kernel_view = pg.GraphicsLayoutWidget()
        self.kernel_view.setBackground("#14161c")
        self.kernel_view.setToolTip("The tangent kernel K (training points ordered along the domain) of the "
                                    "highlighted width at w₀ and at the step shown, on one colour scale")
        self.k_title = self.kernel_view.addLabel("K at w₀  |  K now", col=0, colspan=3, color="#c9d1d9", size="9pt")
        self.kernel_view.nextRow()
        self.k_boxes, self.k_images = [], []
        for c in range(2):
            vb = self.kernel_view.addViewBox(row=1, col=c, lockAspect=True, invertY=True, enableMouse=False)
            img = pg.ImageItem(axisOrder="row-major")
            vb.addItem(img)
            self.k_boxes.append(vb)
            self.k_images.append(img)
        self.k_bar = pg.ColorBarItem(colorMap=pg.colormap.get("inferno"), interactive=False, width=12)
        self.k_bar.setImageItem(self.k_images, insert_in=None)
        self.kernel_view.addItem(self.k_bar, row=1, col=2)
        # spectrum and residual modes
        self.spec_plot = dark_plot("spectrum of K", x="k", y="λ_k", log_y=True,
                                   tooltip="Eigenvalues of K₀ (points) and K now (line) for the highlighted "
                                           "width, and of the infinite-width kernel (white)")
        self.spec0 = self.spec_plot.plot([], [], pen=None, symbol="o", symbolSize=6, symbolPen="#000")
        self.spec_now = self.spec_plot.plot(pen=pg.mkPen("#ffffff90", width=1))
        self.spec_inf = self.spec_plot.plot(pen=pg.mkPen(INF_COLOR, width=1.2, style=Qt.PenStyle.DotLine))
        self.mode_plot = dark_plot("residual along K₀'s eigenvectors", x="step", y="|u_kᵀ(F − y)|", log_y=True,
                                   tooltip="The residual's components along the eigenvectors u_k of K₀ "
                                           "(highlighted width): measured (solid) and (1 − ηλ_k)ᵗ|u_kᵀ(F₀ − y)| "
                                           "(dashed). Large eigenvalues are fitted first")
        self.mode_legend = self.mode_plot.addLegend(offset=(-8, 8), labelTextSize="8pt", brush=(20, 22, 28, 200),
                                                    colCount=2)
        cmap = pg.colormap.get("viridis")
        self.mode_colors = [cmap.map(0.1 + 0.85 * i / (len(MODES) - 1), mode="qcolor") for i in range(len(MODES))]
        self.mode_curves = []
        for i, k in enumerate(MODES):
            meas = self.mode_plot.plot(pen=pg.mkPen(self.mode_colors[i], width=1.8), name=f"k = {k}")
            pred = self.mode_plot.plot(pen=pg.mkPen(self.mode_colors[i], width=1, style=Qt.PenStyle.DashLine))
            self.mode_curves.append((meas, pred))
        # the output-space paths
        self.scene = Scene3D(pg.colormap.get("viridis"), labels=("F(x₁) − y₁", "F(x₂) − y₂", "F(x₃) − y₃"))
        self.scene.surface.setVisible(False)
        self.scene.frame_drawn.connect(self.frame_drawn)
        self.scene.floor.setSize(6, 6)
        self.scene.floor.setSpacing(0.5, 0.5)
        self.scene.floor.translate(0, 0, -2.2)
        self.target_item = gl.GLScatterPlotItem(pos=np.zeros((1, 3)), size=14, color=(1.0, 0.72, 0.0, 1.0),
                                                pxMode=True)
        self.scene.addItem(self.target_item)
        self.start_items = gl.GLScatterPlotItem(size=8, pxMode=True)
        self.scene.addItem(self.start_items)
        self.inf_path = gl.GLLinePlotItem(color=(1, 1, 1, 0.9), width=2.0, antialias=True, glOptions="translucent")
        self.lin_path = gl.GLLinePlotItem(color=(1, 1, 1, 0.6), width=1.5, antialias=True, glOptions="translucent")
        self.scene.addItem(self.inf_path)
        self.scene.addItem(self.lin_path)
        self.paths: list = []
        self.axes = gl.GLLinePlotItem(mode="lines", color=(1, 1, 1, 0.35), width=1.0, glOptions="translucent",
                                      pos=np.array([[-2.2, 0, 0], [2.2, 0, 0], [0, -2.2, 0], [0, 2.2, 0],
                                                    [0, 0, -2.2], [0, 0, 2.2]], float))
        self.scene.addItem(self.axes)
        for item, pos in zip(self.scene.labels, ([2.45, 0, 0], [0, 2.45, 0], [0, 0, 2.45])):
            item.setData(pos=pos, font=QFont("Sans", 10))
        self.scene.set_home((0.0, 0.0, 0.0), 6.5, elevation=22, azimuth=-55)
        self.paths_note = QLabel()
        self.paths_note.setStyleSheet("color: #9aa4b2; font-size: 9pt;")
        self.paths_note.setWordWrap(True)
        left = splitter("v", self.loss_plot, self.fn_plot, stretch=(1, 1))
        mid = splitter("v", self.scale_plot, self.mode_plot, stretch=(1, 1))
        right = splitter("v", self.scene.container, splitter("h", self.kernel_view, self.spec_plot, stretch=(3, 2)),
                         stretch=(5, 3))
        body = splitter("h", left, mid, right, stretch=(1, 1, 1))
        body.setSizes([1000, 1000, 1150])  # (proportions: the plots' titles need the room)
        lab_layout(self, self.caption, body=body)

    def views(self) -> dict:
        return {"3d": self.scene, "2d": self.loss_plot}

    def active_view(self):
        return self.scene

    def has_drawn(self) -> bool:
        return self.hist.init is not None

    # ----------------------------------------------------------------------------- settings
    def data_args(self) -> dict:
        s = self.state
        target = s.circle_target if s.data == "circle" else s.line_target
        return dict(kind=s.data, target=target, n=s.n_points, seed=s.seed, noise=s.noise,
                    drawn=list(s.drawn) if s.data == "drawn" else None)

    def _show_data(self) -> None:
        """The data on the function plot (and the drawing panel) as soon as the settings give them."""
        try:
            d = sw.make_data(**self.data_args())
        except ValueError as exc:
            self.message.emit(str(exc), True)
            return
        self.fn_plot.setLabel("bottom", d.axis_label)
        self.fn_data.setData(d.axis, d.y)
        self.fn_target.setData(d.axis_test, d.y_test)
        if hasattr(self, "draw_panel"):
            self.draw_panel.setVisible(self.state.data == "drawn")
            self.draw_panel.set_points(d.axis if d.in_dim == 1 else [], d.y if d.in_dim == 1 else [])

    def react_runs(self, changed: dict) -> None:
        """A network, data or training setting: the sweep starts again with it (a live view, not a form)."""
        if "n_points" in changed:
            s = self.state
            pts = [min(int(p), s.n_points) for p in s.path_points]
            if pts != [int(p) for p in s.path_points]:
                # (distinct where possible: the last points of the new set)
                fixed = sorted(set(pts)) if len(set(pts)) == 3 else [max(1, s.n_points - 2 + i) for i in range(3)]
                self.settings.update({"path_points": fixed}, "lab")
        self._show_data()
        self.restart()

    def react_highlight(self, changed: dict) -> None:
        self.draw()

    def react_redraw(self, changed: dict) -> None:
        self.draw()

    def highlighted(self) -> int | None:
        """Index of the highlighted width in the run's widths (the nearest on a log scale)."""
        if not self.run_widths:
            return None
        h = math.log2(max(self.state.highlight, 1))
        return int(np.argmin([abs(math.log2(m) - h) for m in self.run_widths]))

    def highlight(self, width: int) -> None:
        """Highlight ``width`` in every view."""
        self.set_setting("highlight", int(width))

    def next_width(self) -> None:
        i = self.highlighted()
        if i is not None:
            self.highlight(self.run_widths[(i + 1) % len(self.run_widths)])

    def follow(self) -> None:
        """Show the latest step again (end a scrub)."""
        self.set_scrub(None)

    def set_scrub(self, step: int | None) -> None:
        """Show every view at ``step`` (None: follow the run)."""
        if step is not None:
            step = int(min(max(step, 0), max(self.hist.last_step, 0)))
            if step >= self.hist.last_step and self.finished:
                step = None
        self.scrub = step
        self.scrub_line.blockSignals(True)
        self.scrub_line.setVisible(step is not None)
        if step is not None:
            self.scrub_line.setValue(step)
        self.scrub_line.blockSignals(False)
        self.draw()

    def _on_loss_click(self, ev) -> None:
        vb = self.loss_plot.getPlotItem().vb
        if not vb.sceneBoundingRect().contains(ev.scenePos()) or ev.button() != Qt.MouseButton.LeftButton:
            return
        if ev.double():
            self.set_scrub(None)
            return
        self.set_scrub(int(round(vb.mapSceneToView(ev.scenePos()).x())))

    def _on_scrub_drag(self, line) -> None:
        self.set_scrub(int(round(line.value())))

    def _on_width_points(self, item, points, ev=None) -> None:
        if len(points):
            self.highlight(int(round(points[0].data())))

    # ----------------------------------------------------------------------------- running
    def start(self) -> None:
        self.restart()

    def restart(self) -> bool:
        """A new sweep with the current settings; False (and a message) when they do not make one."""
        s = self.state
        widths = sorted(int(m) for m in s.widths)
        try:
            d = sw.make_data(**self.data_args())
            sw.check_sweep(widths, s.depth, d.in_dim, d.n)
        except Exception as exc:  # ValueError, LimitError: in words, nothing started
            self.message.emit(str(exc), True)
            return False
        self.stop_run()
        self._clear()
        self.run_widths, self.run_data = widths, d
        self._run_etas = sw.step_sizes(widths, s.eta, s.step_scaling if s.parameterization == "standard"
                                       else "fixed")
        self._build_width_items()
        self._show_caption()
        self.finished = False
        self.start_run("models.ntk_sweep:sweep_run",
                       dict(data=self.data_args(), widths=widths, depth=s.depth, activation=s.activation,
                            parameterization=s.parameterization, eta=s.eta,
                            step_scaling=s.step_scaling if s.parameterization == "standard" else "fixed",
                            output=s.output, alpha=s.alpha, steps=s.steps, metric_every=s.metric_every,
                            seed=s.seed, device=self.device),
                       {"batch": "_on_batch", "done": "_on_done", "failed": "_on_failed"}, start_paused=self.paused)
        return True

    def run_live(self) -> bool:
        return not self.finished and super().run_live()

    def _show_caption(self) -> None:
        s, d = self.state, self.run_data
        arch = f"{d.in_dim}-" + "-".join(["m"] * s.depth) + "-1"
        p_lo = sw.param_count(d.in_dim, self.run_widths[0], s.depth)
        p_hi = sw.param_count(d.in_dim, self.run_widths[-1], s.depth)
        out = "F = g(w)" if s.output == "plain" else f"F = α(g(w) − g(w₀)), α = {s.alpha:g}"
        self.caption.setText(
            f"<b>MLP {arch}</b> ({s.activation}, {s.parameterization} parameterization), widths "
            f"{', '.join(map(str, self.run_widths))}: p = {p_lo:,} to {p_hi:,} parameters · {out} · "
            f"n = {d.n} points, target {d.target_label} · sum loss ½‖F − y‖² · GD, η = {s.eta:g}")

    def _clear(self) -> None:
        self.hist = SweepHistory()
        self.scrub = None
        self.scrub_line.setVisible(False)
        self.reason = ""
        self._redraw.stop()

    def _build_width_items(self) -> None:
        for c in self.loss_curves:
            self.loss_plot.removeItem(c[0])
            self.loss_plot.removeItem(c[1])
        for c in self.fn_curves:
            self.fn_plot.removeItem(c)
        for p in self.paths:
            self.scene.removeItem(p)
        self.loss_legend.clear()
        self.loss_curves, self.fn_curves, self.paths = [], [], []
        for m in self.run_widths:
            col = WIDTH_COLORS.get(m, "#c9d1d9")
            tr = self.loss_plot.plot([], [], pen=pg.mkPen(col, width=1.6), name=f"m = {m}")
            te = self.loss_plot.plot([], [], pen=pg.mkPen(col, width=1.2, style=Qt.PenStyle.DashLine))
            fn = self.fn_plot.plot([], [], pen=pg.mkPen(col, width=1.4))
            for c in (tr, te, fn):
                c.setCurveClickable(True, width=6)
                c.sigClicked.connect(lambda _c, _ev=None, m=m: self.highlight(m))
            self.loss_curves.append((tr, te))
            self.fn_curves.append(fn)
            line = gl.GLLinePlotItem(color=pg.mkColor(col).getRgbF(), width=2.5, antialias=True,
                                     glOptions="translucent")
            self.scene.addItem(line)
            self.paths.append(line)
        for c in self.mode_curves:
            c[0].setData([], [])
            c[1].setData([], [])
        for img in self.k_images:
            img.clear()
        for pts, fit, _ in self.series.values():
            pts.setData([], [])
            fit.setData([], [])
        for item in (self.fn_inf, self.fn_lin, self.spec_now, self.spec_inf):
            item.setData([], [])
        self.spec0.setData([], [])
        for item in (self.inf_path, self.lin_path):
            item.setData(pos=np.zeros((0, 3)))
        self.start_items.setData(pos=np.zeros((0, 3)))

    def _on_batch(self, items: list) -> None:
        for snap in items:
            first = self.hist.init is None and snap.init is not None
            self.hist.add(snap)
            if first:
                self._on_init(snap.init)
            for k, t in snap.diverged_at.items():
                self._on_diverged(k, t)
        if not self._redraw.isActive():
            self._redraw.start(50)

    def _on_init(self, init: sw.SweepInit) -> None:
        over = [m for m, eta, lim in zip(init.widths, init.etas, init.limits) if eta >= lim]
        if over:
            self.message.emit(f"η exceeds 2/λ_max(K₀) for width{'s' if len(over) > 1 else ''} "
                              f"{', '.join(map(str, over))}: the loss grows at first; it diverges, or the kernel "
                              "shrinks until the step is stable and training comes back (a catapult)", False)

    def _on_diverged(self, k: int, step: int) -> None:
        init = self.hist.init
        m = self.run_widths[k]
        eta, lim = (init.etas[k], init.limits[k]) if init is not None else (self._run_etas[k], float("nan"))
        why = (f"η = {eta:.3g} is above its stability limit 2/λ_max(K₀) = {lim:.3g}" if eta >= lim else
               f"η = {eta:.3g} was below 2/λ_max(K₀) = {lim:.3g} at the start, but the kernel grew on the way")
        if self.state.parameterization == "standard":
            why += ("; in the standard parameterization λ_max(K) grows with the width: scale the step with 1/width "
                    "(step per width) or use the NTK parameterization")
        self.message.emit(f"width {m} diverged at step {step}: {why}", True)

    def _on_done(self, result) -> None:
        self.finished = True
        self.reason = "aborted" if result is None else "completed"
        self.flush()
        self.status.emit({"running": False})

    def _on_failed(self, text: str) -> None:
        self.finished = True
        self.reason = "failed"
        self.report_failure(errorlog.report("Width sweep failed", text))
        self.flush()
        self.status.emit({"running": False})

    # ----------------------------------------------------------------------------- drawing
    def draw(self) -> None:
        """Every view at the step shown (the latest, or the scrubbed one)."""
        self._redraw.stop()
        h = self.hist
        if h.init is None or not h.loss_rows:
            return
        hi = self.highlighted()
        at = h.metrics_at(self.scrub)
        self._draw_losses(hi)
        if at is not None:
            step, m = at
            self._draw_scalings(m, hi)
            self._draw_functions(m, hi)
            self._draw_kernel(m, hi, step)
            self._draw_modes(hi)
        self._draw_paths(hi)
        self._draw_info(at, hi)
        shown = self.scrub if self.scrub is not None else h.last_step
        loss = h.last_loss[hi] if h.last_loss is not None else float("nan")
        self.status.emit({"step": shown, "loss": float(loss)})

    def _width_pen(self, k: int, hi: int, width: float, dash: bool = False):
        col = pg.mkColor(WIDTH_COLORS.get(self.run_widths[k], "#c9d1d9"))
        if k != hi:
            col.setAlpha(150)
        style = Qt.PenStyle.DashLine if dash else Qt.PenStyle.SolidLine
        return pg.mkPen(col, width=width * (2.0 if k == hi else 1.0), style=style)

    def _draw_losses(self, hi: int) -> None:
        steps, loss = self.hist.losses()
        mrows = self.hist.metric_rows
        msteps = np.array([r[0] for r in mrows])
        for k, (tr, te) in enumerate(self.loss_curves):
            # a diverged width's curve ends where it diverged (the engine repeats its last finite loss after)
            upto = self.hist.diverged.get(k)
            keep = steps <= upto if upto is not None else slice(None)
            y = np.clip(np.nan_to_num(loss[keep, k], nan=1e30), 1e-12, 1e30)
            tr.setData(steps[keep], y)
            tr.setPen(self._width_pen(k, hi, 1.4))
            if len(mrows):
                ty = np.array([r[1].test_loss[k] for r in mrows])
                ok = np.isfinite(ty) & (ty > 0)
                te.setData(msteps[ok], np.clip(ty[ok], 1e-12, 1e30))
            te.setPen(self._width_pen(k, hi, 1.1, dash=True))
            tr.setZValue(10 if k == hi else 1)

    def _draw_scalings(self, m: sw.SweepMetrics, hi: int) -> None:
        ws = np.array(self.run_widths, float)
        init = self.hist.init
        values = {"wchange": m.wchange, "kchange": m.kchange, "gap": m.gap,
                  "dist_inf": init.dist_inf if init.dist_inf is not None else np.full(len(ws), np.nan)}
        self.slopes = {}
        # where eta is above 2/lambda_max(K0) the linearization itself diverges: no gap to measure there
        stable = np.array(init.etas) < np.array(init.limits)
        for key, (pts, fit, name) in self.series.items():
            v = np.asarray(values[key], float)
            ok = np.isfinite(v) & (v > 0) & (stable if key == "gap" else True)
            pts.setData(ws[ok], v[ok], symbolSize=[12 if w == ws[hi] else 8 for w in ws[ok]] if hi is not None
                        else 8, data=ws[ok])
            slope = sw.loglog_slope(ws[ok], v[ok]) if ok.sum() >= 2 else None
            self.slopes[key] = slope
            if slope is not None:
                c = np.polyfit(np.log10(ws[ok]), np.log10(v[ok]), 1)
                xs = np.array([ws[ok].min(), ws[ok].max()])
                fit.setData(xs, 10 ** np.polyval(c, np.log10(xs)))
            else:
                fit.setData([], [])
            label = f"{name}  slope {slope:+.2f}" if slope is not None else name
            for sample, lab in self.scale_legend.items:
                if sample.item is pts:
                    lab.setText(label)
        if hi is not None:
            self.hi_line.setValue(math.log10(self.run_widths[hi]))
        ticks = [(math.log10(w), str(w)) for w in self.run_widths]
        self.scale_plot.getAxis("bottom").setTicks([ticks, []])

    def _draw_functions(self, m: sw.SweepMetrics, hi: int) -> None:
        d = self.run_data
        ax = d.axis_test
        for k, c in enumerate(self.fn_curves):
            f = m.f_test[k]
            if np.all(np.isfinite(f)):
                c.setData(ax, np.clip(f, -1e3, 1e3))
            else:
                c.setData([], [])
            c.setPen(self._width_pen(k, hi, 1.3))
            c.setZValue(20 if k == hi else 5)
        lin = m.lin_test[hi] if hi is not None else None
        if lin is not None and np.all(np.isfinite(lin)):
            self.fn_lin.setData(ax, np.clip(lin, -1e3, 1e3))
            self.fn_lin.setPen(pg.mkPen(WIDTH_COLORS.get(self.run_widths[hi], "#fff"), width=2.2,
                                        style=Qt.PenStyle.DashLine))
        else:
            self.fn_lin.setData([], [])
        if m.inf_test is not None:
            self.fn_inf.setData(ax, np.clip(m.inf_test, -1e3, 1e3))
        else:
            self.fn_inf.setData([], [])

    def _draw_kernel(self, m: sw.SweepMetrics, hi: int, step: int) -> None:
        init = self.hist.init
        K0 = init.K0[hi]
        Kt = m.K[hi]
        lo, top = float(np.nanmin(K0)), float(np.nanmax(K0))
        self.k_images[0].setImage(K0, autoLevels=False)
        if np.all(np.isfinite(Kt)):
            self.k_images[1].setImage(Kt, autoLevels=False)
        self.k_bar.setLevels((lo, top))
        kc = m.kchange[hi]
        self.k_title.setText(f"K, m = {self.run_widths[hi]}:  w₀  |  step {step}"
                             + ("" if np.isfinite(kc) else " (diverged)"))
        lam0 = init.eig[hi]
        ks = np.arange(1, len(lam0) + 1)
        ok = lam0 > 0
        self.spec0.setData(ks[ok], lam0[ok], symbolBrush=WIDTH_COLORS.get(self.run_widths[hi], "#fff"))
        if np.all(np.isfinite(Kt)):
            lam = np.linalg.eigvalsh(0.5 * (Kt + Kt.T).astype(np.float64))[::-1]
            ok = lam > 0
            self.spec_now.setData(ks[ok], lam[ok])
        if init.eig_inf is not None:
            ok = init.eig_inf > 0
            self.spec_inf.setData(ks[ok], init.eig_inf[ok])
        else:
            self.spec_inf.setData([], [])

    def _draw_modes(self, hi: int) -> None:
        rows = self.hist.metric_rows
        upto = self.scrub
        rows = [r for r in rows if upto is None or r[0] <= upto]
        if not rows:
            return
        steps = np.array([r[0] for r in rows], float)
        coef = np.array([r[1].coef[hi] for r in rows])
        init = self.hist.init
        lam, eta = init.eig[hi], init.etas[hi]
        c0 = np.abs(self.hist.metric_rows[0][1].coef[hi])
        n = coef.shape[1]
        for k, (meas, pred) in zip(MODES, self.mode_curves):
            if k > n:
                meas.setData([], [])
                pred.setData([], [])
                continue
            v = np.abs(coef[:, k - 1])
            ok = np.isfinite(v) & (v > 0)
            meas.setData(steps[ok], v[ok])
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                p = c0[k - 1] * np.abs(1 - eta * lam[k - 1]) ** steps
            ok = np.isfinite(p) & (p > 1e-12)
            pred.setData(steps[ok], p[ok])
        for sample, lab in self.mode_legend.items:
            for k, (meas, _) in zip(MODES, self.mode_curves):
                if sample.item is meas:
                    if k > n:
                        lab.setText(f"k = {k} —")
                    elif abs(lam[k - 1]) < 1e-6 * abs(lam[0]):  # (zero to the kernel's float32 precision)
                        lab.setText(f"k = {k} (λ ≈ 0)")
                    else:
                        lab.setText(f"k = {k} (λ = {lam[k - 1]:.2g})")

    def _draw_paths(self, hi: int) -> None:
        d = self.run_data
        idx = [min(int(p), d.n) - 1 for p in self.state.path_points]
        steps, out = self.hist.outputs(self.scrub)
        if len(out) == 0:
            return
        y = d.y[idx]
        start = out[0][:, idx] - y  # (W, 3)
        span = np.nanmax(np.abs(start)) if np.any(np.isfinite(start)) else 1.0
        scale = 2.0 / max(float(span), 1e-9)
        starts = []
        for k, line in enumerate(self.paths):
            p = (out[:, k, :][:, idx] - y) * scale
            p = p[np.all(np.isfinite(p), axis=1)]
            p = np.clip(p, -50, 50)
            line.setData(pos=p.astype(np.float32), width=4.0 if k == hi else 2.0)
            col = pg.mkColor(WIDTH_COLORS.get(self.run_widths[k], "#c9d1d9")).getRgbF()
            line.setData(color=(col[0], col[1], col[2], 1.0 if k == hi else 0.75))
            if len(p):
                starts.append((p[0], col))
        if starts:
            self.start_items.setData(pos=np.array([s[0] for s in starts]), color=np.array([s[1] for s in starts]))
        rows = [r for r in self.hist.metric_rows if self.scrub is None or r[0] <= self.scrub]
        if rows and hi is not None:
            lin = np.array([r[1].lin_train[hi][idx] for r in rows]) - y
            lin = lin[np.all(np.isfinite(lin), axis=1)] * scale
            self.lin_path.setData(pos=np.clip(lin, -50, 50).astype(np.float32))
            if rows[0][1].inf_train is not None:
                # the infinite-width model starts at its mean, f0 = 0 (plain outputs) or at F0 = 0 (scaled)
                inf = np.array([r[1].inf_train[idx] for r in rows]) - y
                self.inf_path.setData(pos=np.clip(inf * scale, -50, 50).astype(np.float32))
            else:
                self.inf_path.setData(pos=np.zeros((0, 3)))
        self.scene.update()

    def _draw_info(self, at, hi: int) -> None:
        init, s = self.hist.init, self.state
        lines = []
        slopes = getattr(self, "slopes", {})

        def sl(key):
            v = slopes.get(key)
            return f"{v:+.2f}" if v is not None else "—"

        expect_w = "−½" if s.depth == 1 else "≈ −1"
        if s.parameterization == "ntk":
            lines.append(f"slope of ‖Δw‖/‖w₀‖ against m: <b>{sl('wchange')}</b> (theory {expect_w}); "
                         f"of ‖ΔK‖/‖K₀‖: <b>{sl('kchange')}</b> (≤ −½)")
            if init.dist_inf is not None:
                lines.append(f"‖K₀ − K_∞‖/‖K_∞‖: slope <b>{sl('dist_inf')}</b> (theory −½); K_∞: {init.inf_label}")
        else:
            lines.append(init.inf_label)
            lam = [2 / lim for lim in init.limits]
            ls = sw.loglog_slope(self.run_widths, lam) if len(lam) > 1 else None
            lines.append("λ_max(K₀) grows with width: slope " + (f"<b>{ls:+.2f}</b>" if ls is not None else "—")
                         + " (theory ≈ +1)")
        lims = ", ".join(f"{m}: {lim:.2g}" for m, lim in zip(self.run_widths, init.limits))
        lines.append(f"stability limit 2/λ_max(K₀) per width — {lims}")
        if self.hist.diverged:
            lines.append("<span style='color:#ff6b6b'>diverged: " + ", ".join(
                f"m = {self.run_widths[k]} at step {t}" for k, t in sorted(self.hist.diverged.items())) + "</span>")
        if self.scrub is not None:
            lines.append(f"showing step {at[0] if at else self.scrub} of {self.hist.last_step} "
                         "(double-click the loss plot or press L to follow the run)")
        self.info.setText("<br>".join(lines))
        if hi is not None:
            m = self.run_widths[hi]
            gap = at[1].gap[hi] if at is not None else float("nan")
            self.paths_note.setText(f"highlighted: m = {m}, gap to its linearization {gap:.2g}")

    # ----------------------------------------------------------------------------- Lab API
    def reset(self) -> None:
        self.stop_run()
        self.finished = True
        self._clear()
        self._build_width_items()
        self.status.emit({"running": False})

    def flush(self) -> None:
        if self._redraw.isActive() or self.hist.loss_rows:
            self.draw()

    def shutdown(self) -> None:
        self._redraw.stop()
        super().shutdown()
