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
from PySide6.QtWidgets import QGridLayout, QLabel, QTabWidget, QWidget

from models import ntk_sweep as sw
from visualizer.labs.base import Action, SingleRunLab
from visualizer.labs.schema import setting
from visualizer.views.common import caption, dark_plot, lab_layout, splitter
from visualizer.views.scene3d import Scene3D

NET, DATA, TRAIN, COND, VIEW = "Networks", "Data", "Training", "Conditioning and sharpness", "Views"
#: each width keeps its colour whatever the list (narrow: warm, wide: cool)
WIDTH_COLORS = dict(zip(sw.WIDTH_CHOICES, ("#f94144", "#f3722c", "#f8961e", "#f9c74f", "#90be6d", "#43aa8b",
                                           "#4cc9f0", "#4895ef", "#b388ff", "#ff70d0")))
INF_COLOR = "#ffffff"
#: the runs of one width at several step sizes (the edge-of-stability experiment)
ETA_COLORS = ("#ff9f1c", "#4cc9f0", "#b8f35a")
PAGES = (("widths", "Width sweep"), ("conditioning", "Conditioning and sharpness"))
#: the edge-of-stability preset: sharpness climbs to 2/eta and rides it within a minute here (THEORY.md section 7;
#: the mean loss of the paper's code). Measured: from 13.7 to a median of 33.2 (2/eta 33.3) and 22.2 (22.2)
EOS_PRESET = dict(experiment="steps", one_width=128, etas=[0.06, 0.09], depth=2, activation="tanh",
                  parameterization="standard", output="plain", data="line", line_target="sin", n_points=64,
                  noise=0.0, loss_norm="mean", steps=4000, metric_every=20, hessian_every=20, seed=0,
                  time_axis="flow", page="conditioning", highlight_run=0)
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


def _etas_check(value, state) -> str | None:
    if any(v <= 0 for v in value):
        return "step sizes are positive"
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

    experiment: str = setting("widths", "experiment", group=NET, reacts="runs",
                              choices=(("widths", "several widths, one step size"),
                                       ("steps", "one width, several step sizes")),
                              tooltip="A width sweep (lazy training), or one network trained with two or three "
                                      "step sizes side by side (the edge of stability)")
    widths: list = setting([64, 256, 1024, 4096], "widths", group=NET, widget="widths", reacts="runs",
                           length=(1, len(sw.WIDTH_CHOICES)), range=(16, 8192), check=_widths_check,
                           enabled_if=lambda s: s.experiment == "widths",
                           tooltip="The widths trained side by side (hidden units per layer), on a log scale")
    one_width: int = setting(128, "width", group=NET, reacts="runs",
                             choices=tuple((m, str(m)) for m in sw.WIDTH_CHOICES),
                             enabled_if=lambda s: s.experiment == "steps",
                             tooltip="The width of the network trained with several step sizes")
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
    etas: list = setting([0.06, 0.09], "step sizes", group=TRAIN, reacts="runs", length=(1, 3), range=(1e-6, 10.0),
                         check=_etas_check, enabled_if=lambda s: s.experiment == "steps",
                         tooltip="One to three step sizes for the same network, trained side by side "
                                 "(type them separated by commas)")
    loss_norm: str = setting("sum", "loss", group=TRAIN, reacts="runs",
                             choices=(("sum", "sum: ½‖F − y‖²"), ("mean", "mean: ½‖F − y‖² / n")),
                             tooltip="The sum loss makes the kernel identities plain; the mean loss is the edge-"
                                     "of-stability paper's (then the loss's kernel is K/n and the limit 2n/λ_max)")
    step_scaling: str = setting("fixed", "step per width", group=TRAIN, reacts="runs",
                                choices=(("fixed", "the same η for every width"),
                                         ("width", "η · m_min / m (1/width)")),
                                enabled_if=lambda s: s.parameterization == "standard" and s.experiment == "widths",
                                tooltip="The standard parameterization needs a step that shrinks like 1/width")
    steps: int = setting(2000, "steps", range=(1, 10**6), group=TRAIN, reacts="runs", commit="finish",
                         tooltip="GD steps of every width")
    metric_every: int = setting(10, "measure every k", range=(1, 1000), group=TRAIN, reacts="runs",
                                commit="finish",
                                tooltip="The kernel, the test loss, the weight change and the linearization "
                                        "are measured every k steps (the losses every step)")
    hessian_every: int = setting(20, "Hessian every k", range=(0, 10000), group=COND, reacts="runs", commit="finish",
                                 tooltip="The sharpness (top eigenvalue of the loss's Hessian) and the network's "
                                         "Hessian norm, by power iteration warm-started from the last estimate, "
                                         "every k steps (0: never)")
    time_axis: str = setting("steps", "time axis", group=COND, reacts="redraw",
                             choices=(("steps", "steps t"), ("flow", "flow time η t")),
                             tooltip="Runs with different step sizes follow the same path in flow time η t until "
                                     "each reaches its own 2/η")
    page: str = setting("widths", "page", group=VIEW, reacts="page", widget="hidden", choices=PAGES,
                        tooltip="Which page of the lab is shown")
    highlight_run: int = setting(0, "highlighted run", range=(0, 9), group=VIEW, reacts="highlight", widget="hidden",
                                 tooltip="With several step sizes: the run whose conditioning is drawn")
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
               Action("eos_preset", "Edge-of-stability preset", "eos_preset", group=COND,
                      tooltip="One tanh network (width 128, two hidden layers, standard parameterization) on 64 "
                              "points with the mean loss, at step sizes 0.06 and 0.09 side by side: the sharpness "
                              "climbs to 2/η and rides it (within a minute)",
                      scene="run the edge-of-stability preset (two step sizes of one network side by side)"),
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
            "<p><b>Conditioning and sharpness</b> (second page), for the highlighted run: λ_min and λ_max of "
            "the loss's kernel cK(w_t) (c = 1 for the sum loss, 1/n for the mean); the PL ratio ½‖∇L‖²/L, "
            "never below λ_min(cK) for the square loss, so uniform conditioning gives PL*; the loss under "
            "(1 − ημ)ᵗL(w₀); the distance ‖w_t − w₀‖ inside R = 2√(2βL(w₀))/μ (β the largest sharpness seen); "
            "the sharpness λ_max(∇²L) of every run against 2/η: it rises, then hovers at 2/η while the loss keeps "
            "falling, not monotonically (the edge of stability; the preset shows it); and the network's own "
            "Hessian norm, shrinking like m<sup>−½</sup>: why the kernel barely moves in wide nets.</p>"
            "<p>Click a width (a curve, a point) to highlight it; click or drag in the loss plot to scrub back "
            "in time, double-click to follow the run; W highlights the next width.</p>")

    def __init__(self, device: str = "cpu", parent=None, restore: bool = True, start: bool = True,
                 runner_factory=None) -> None:
        super().__init__(device, parent, restore, start, runner_factory)
        self.hist = SweepHistory()
        self.run_widths: list[int] = []  # per run (a width repeats when one width runs at several step sizes)
        self.run_labels: list[str] = []
        self.run_colors: list[str] = []
        self.run_mode = "widths"
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
        self.react_page({})  # (the page the settings name: a restored or preset state)
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
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(body, PAGES[0][1])
        self.tabs.addTab(self._build_conditioning(), PAGES[1][1])
        self.tabs.setTabToolTip(0, "Lazy training: the width sweep's losses, scalings, kernels and paths")
        self.tabs.setTabToolTip(1, "For the highlighted run: the kernel's conditioning, PL*, its bound and ball, and "
                                   "the sharpness against 2/η (the edge of stability)")
        self.tabs.currentChanged.connect(self._on_tab)
        lab_layout(self, self.caption, body=self.tabs)

    def _build_conditioning(self) -> QWidget:
        """Part 2 (THEORY.md sections 2 and 7): the highlighted run's conditioning along its path, the sharpness of
        every run against 2/η, and the network's Hessian across widths."""
        def legend(plot):
            return plot.addLegend(offset=(-8, 8), labelTextSize="8pt", brush=(20, 22, 28, 200))

        self.kcond_plot = dark_plot("eigenvalues of the loss's kernel cK(w_t)", x="step", y="λ", log_y=True,
                                    tooltip="λ_max and λ_min of cK(w_t) (c = 1 for the sum loss, 1/n for the mean) "
                                            "and their ratio, the condition number, for the highlighted run")
        legend(self.kcond_plot)
        self.c_lmax = self.kcond_plot.plot(pen=pg.mkPen("#ff9f1c", width=2.4), name="λ_max")
        self.c_lmin = self.kcond_plot.plot(pen=pg.mkPen("#4cc9f0", width=2.4), name="λ_min")
        self.c_cond = self.kcond_plot.plot(pen=pg.mkPen("#e0e0e0", width=1.8, style=Qt.PenStyle.DashLine),
                                           name="κ = λ_max/λ_min")
        self.pl_plot = dark_plot("PL*: ½‖∇L‖² / L ≥ λ_min(cK)", x="step", y="", log_y=True,
                                 tooltip="For the square loss ‖∇L‖² = c² rᵀK r / α², so ½‖∇L‖²/L = c rᵀKr/‖r‖² is "
                                         "never below c λ_min(K): uniform conditioning gives the PL* condition")
        legend(self.pl_plot)
        self.pl_ratio = self.pl_plot.plot(pen=pg.mkPen("#b8f35a", width=2.4), name="½‖∇L‖²/L")
        self.pl_lmin = self.pl_plot.plot(pen=pg.mkPen("#4cc9f0", width=1.8, style=Qt.PenStyle.DashLine),
                                         name="λ_min(cK_t)")
        self.pl_mu = self.pl_plot.plot(pen=pg.mkPen("#ffffff80", width=1, style=Qt.PenStyle.DotLine),
                                       name="μ: the smallest seen")
        self.bound_plot = dark_plot("loss against the PL* bound", x="step", y="L", log_y=True,
                                    tooltip="L(w_t) and (1 − ημ)ᵗ L(w₀), μ the smallest λ_min(cK) seen so far: "
                                            "with η ≤ 1/β the loss stays under it")
        legend(self.bound_plot)
        self.b_loss = self.bound_plot.plot(pen=pg.mkPen("#ff9f1c", width=2.4), name="L(w_t)")
        self.b_bound = self.bound_plot.plot(pen=pg.mkPen("#ffffff", width=1.8, style=Qt.PenStyle.DashLine),
                                            name="(1 − ημ)ᵗ L(w₀)")
        self.dist_plot = dark_plot("distance from w₀ against the radius R", x="step", y="", log_y=True,
                                   tooltip="‖w_t − w₀‖ against R = 2√(2βL(w₀))/μ, β the largest sharpness seen (the "
                                           "loss's smoothness along the path), μ the smallest λ_min(cK): the run "
                                           "stays in the ball B(w₀, R), which is usually far larger")
        legend(self.dist_plot)
        self.d_dist = self.dist_plot.plot(pen=pg.mkPen("#c77dff", width=2.4), name="‖w_t − w₀‖")
        self.d_radius = self.dist_plot.plot(pen=pg.mkPen("#ffffff", width=1.8, style=Qt.PenStyle.DashLine),
                                            name="R")
        self.sharp_plot = dark_plot("sharpness against 2/η", x="step", y="λ_max(∇²L)",
                                    tooltip="The top eigenvalue of the loss's Hessian (power iteration on "
                                            "Hessian-vector products, warm-started) of every run, and each run's "
                                            "2/η (dashed): it rises (progressive sharpening), then hovers at 2/η "
                                            "while the loss keeps falling, not monotonically (the edge of stability)")
        self.sharp_legend = legend(self.sharp_plot)
        self.sharp_curves: list = []
        self.mhess_plot = dark_plot("the network's Hessian against width", x="width m", y="‖∇²g‖",
                                    tooltip="The largest |eigenvalue| of the Hessian of the network's output g(x) in "
                                            "its weights (the largest over three training inputs), at the step shown: "
                                            "it shrinks as the width grows, so the kernel barely moves and the "
                                            "conditioning at w₀ holds across the ball (Liu, Zhu, Belkin 2020)")
        self.mhess_plot.setLogMode(x=True, y=True)
        for side in ("left", "bottom"):
            self.mhess_plot.getAxis(side).enableAutoSIPrefix(False)
        self.mh_legend = legend(self.mhess_plot)
        self.mh_pts = self.mhess_plot.plot([], [], pen=None, symbol="o", symbolSize=10, symbolBrush="#ff70d0",
                                           symbolPen="#000", name="‖∇²g‖")
        self.mh_pts.sigPointsClicked.connect(self._on_width_points)
        self.mh_fit = self.mhess_plot.plot([], [], pen=pg.mkPen("#ff70d0", width=1.3, style=Qt.PenStyle.DashLine))
        for plot in (self.kcond_plot, self.pl_plot, self.bound_plot, self.dist_plot, self.spec_plot, self.mode_plot):
            plot.getAxis("left").enableAutoSIPrefix(False)
        self.cond_note = QLabel()
        self.cond_note.setWordWrap(True)
        self.cond_note.setStyleSheet("color: #c9d1d9;")
        page = QWidget()
        grid = QGridLayout(page)
        grid.setContentsMargins(0, 0, 0, 0)
        for i, plot in enumerate((self.kcond_plot, self.pl_plot, self.bound_plot, self.dist_plot, self.sharp_plot,
                                  self.mhess_plot)):
            grid.addWidget(plot, i // 3, i % 3)
        grid.addWidget(self.cond_note, 2, 0, 1, 3)
        grid.setRowStretch(0, 1)
        grid.setRowStretch(1, 1)
        return page

    def _on_tab(self, index: int) -> None:
        if self.state.page != PAGES[index][0]:
            self.set_setting("page", PAGES[index][0])

    def react_page(self, changed: dict) -> None:
        i = [k for k, _ in PAGES].index(self.state.page)
        if self.tabs.currentIndex() != i:
            self.tabs.setCurrentIndex(i)
        self.draw()

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

    @property
    def by_steps(self) -> bool:
        """The runs shown are one width at several step sizes (not a width sweep)."""
        return self.run_mode == "steps"

    def highlighted(self) -> int | None:
        """Index of the highlighted run: the nearest width on a log scale (a sweep), or the chosen step size."""
        if not self.run_widths:
            return None
        if self.by_steps:
            return min(int(self.state.highlight_run), len(self.run_widths) - 1)
        h = math.log2(max(self.state.highlight, 1))
        return int(np.argmin([abs(math.log2(m) - h) for m in self.run_widths]))

    def highlight(self, width: int) -> None:
        """Highlight ``width`` in every view."""
        self.set_setting("highlight", int(width))

    def highlight_run(self, k: int) -> None:
        """Highlight run k (a width of the sweep, or a step size) in every view."""
        if self.by_steps:
            self.set_setting("highlight_run", int(k))
        else:
            self.highlight(self.run_widths[k])

    def next_width(self) -> None:
        i = self.highlighted()
        if i is not None:
            self.highlight_run((i + 1) % len(self.run_widths))

    def eos_preset(self) -> None:
        """The edge-of-stability preset: one tanh network, two step sizes, the mean loss, its sharpness shown."""
        self.apply_settings(EOS_PRESET)

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
        steps_mode = s.experiment == "steps"
        widths = [int(s.one_width)] * len(s.etas) if steps_mode else sorted(int(m) for m in s.widths)
        try:
            d = sw.make_data(**self.data_args())
            sw.check_sweep(widths, s.depth, d.in_dim, d.n)
        except Exception as exc:  # ValueError, LimitError: in words, nothing started
            self.message.emit(str(exc), True)
            return False
        self.stop_run()
        self._clear()
        self.run_widths, self.run_data = widths, d
        self.run_mode = s.experiment
        scaling = s.step_scaling if s.parameterization == "standard" else "fixed"
        self._run_etas = [float(e) for e in s.etas] if steps_mode else sw.step_sizes(widths, s.eta, scaling)
        if steps_mode:
            self.run_labels = [f"η = {e:g}" for e in self._run_etas]
            self.run_colors = [ETA_COLORS[i % len(ETA_COLORS)] for i in range(len(widths))]
        else:
            self.run_labels = [f"m = {m}" for m in widths]
            self.run_colors = [WIDTH_COLORS.get(m, "#c9d1d9") for m in widths]
        self._build_width_items()
        self._show_caption()
        self.finished = False
        self.start_run("models.ntk_sweep:sweep_run",
                       dict(data=self.data_args(), widths=widths, depth=s.depth, activation=s.activation,
                            parameterization=s.parameterization, eta=s.eta, step_scaling=scaling,
                            output=s.output, alpha=s.alpha, steps=s.steps, metric_every=s.metric_every,
                            seed=s.seed, device=self.device, loss_norm=s.loss_norm,
                            run_etas=self._run_etas if steps_mode else None, hessian_every=s.hessian_every),
                       {"batch": "_on_batch", "done": "end_of_run", "failed": "_on_failed"}, start_paused=self.paused)
        return True

    def run_live(self) -> bool:
        return not self.finished and super().run_live()

    def _show_caption(self) -> None:
        s, d = self.state, self.run_data
        arch = f"{d.in_dim}-" + "-".join(["m"] * s.depth) + "-1"
        p_lo = sw.param_count(d.in_dim, self.run_widths[0], s.depth)
        p_hi = sw.param_count(d.in_dim, self.run_widths[-1], s.depth)
        out = "F = g(w)" if s.output == "plain" else f"F = α(g(w) − g(w₀)), α = {s.alpha:g}"
        loss = "sum loss ½‖F − y‖²" if s.loss_norm == "sum" else "mean loss ½‖F − y‖²/n"
        if self.by_steps:
            runs = (f"width {self.run_widths[0]} (p = {p_lo:,}), step sizes "
                    f"{', '.join(f'{e:g}' for e in self._run_etas)}")
            gd = "GD"
        else:
            runs = f"widths {', '.join(map(str, self.run_widths))}: p = {p_lo:,} to {p_hi:,} parameters"
            gd = f"GD, η = {s.eta:g}"
        self.caption.setText(f"<b>MLP {arch}</b> ({s.activation}, {s.parameterization} parameterization), {runs} · "
                             f"{out} · n = {d.n} points, target {d.target_label} · {loss} · {gd}")

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
        for k, (col, label) in enumerate(zip(self.run_colors, self.run_labels)):
            tr = self.loss_plot.plot([], [], pen=pg.mkPen(col, width=1.6), name=label)
            te = self.loss_plot.plot([], [], pen=pg.mkPen(col, width=1.2, style=Qt.PenStyle.DashLine))
            fn = self.fn_plot.plot([], [], pen=pg.mkPen(col, width=1.4))
            for c in (tr, te, fn):
                c.setCurveClickable(True, width=6)
                c.sigClicked.connect(lambda _c, _ev=None, k=k: self.highlight_run(k))
            self.loss_curves.append((tr, te))
            self.fn_curves.append(fn)
            line = gl.GLLinePlotItem(color=pg.mkColor(col).getRgbF(), width=2.5, antialias=True,
                                     glOptions="translucent")
            self.scene.addItem(line)
            self.paths.append(line)
        for c in self.mode_curves:
            c[0].setData([], [])
            c[1].setData([], [])
        # the sharpness of every run, and 2/eta for each step size
        for item in self.sharp_curves:
            self.sharp_plot.removeItem(item)
        self.sharp_legend.clear()
        self.sharp_curves, self.sharp_runs, self.sharp_limits = [], [], []
        for k, (col, label) in enumerate(zip(self.run_colors, self.run_labels)):
            curve = self.sharp_plot.plot([], [], pen=pg.mkPen(col, width=2.4), name=label)
            curve.setCurveClickable(True, width=6)
            curve.sigClicked.connect(lambda _c, _ev=None, k=k: self.highlight_run(k))
            self.sharp_curves.append(curve)
            self.sharp_runs.append(curve)
        for eta in sorted(set(self._run_etas)):
            line = self.sharp_plot.plot([], [], pen=pg.mkPen("#ffffffa0", width=1.2, style=Qt.PenStyle.DashLine))
            self.sharp_curves.append(line)
            self.sharp_limits.append((eta, line))
        for item in (self.c_lmax, self.c_lmin, self.c_cond, self.pl_ratio, self.pl_lmin, self.pl_mu, self.b_loss,
                     self.b_bound, self.d_dist, self.d_radius, self.mh_pts, self.mh_fit):
            item.setData([], [])
        self.cond_note.setText("")
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
        who = f"the run with η = {self._run_etas[k]:g}" if self.by_steps else f"width {self.run_widths[k]}"
        eta, lim = (init.etas[k], init.limits[k]) if init is not None else (self._run_etas[k], float("nan"))
        why = (f"η = {eta:.3g} is above its stability limit 2/λ_max(K₀) = {lim:.3g}" if eta >= lim else
               f"η = {eta:.3g} was below 2/λ_max(K₀) = {lim:.3g} at the start, but the kernel grew on the way")
        if self.state.parameterization == "standard" and not self.by_steps:
            why += ("; in the standard parameterization λ_max(K) grows with the width: scale the step with 1/width "
                    "(step per width) or use the NTK parameterization")
        self.message.emit(f"{who} diverged at step {step}: {why}", True)

    def _on_failed(self, text: str) -> None:
        self.run_failed("Width sweep failed", text)

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
            self._draw_conditioning(m, hi, step)
        self._draw_paths(hi)
        self._draw_info(at, hi)
        shown = self.scrub if self.scrub is not None else h.last_step
        loss = h.last_loss[hi] if h.last_loss is not None else float("nan")
        self.status.emit({"step": shown, "loss": float(loss)})

    def _width_pen(self, k: int, hi: int, width: float, dash: bool = False):
        col = pg.mkColor(self.run_colors[k])
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
        if self.by_steps:  # one width: nothing to scale against
            for pts, fit, _name in self.series.values():
                pts.setData([], [])
                fit.setData([], [])
            self.slopes = {}
            self.scale_plot.setTitle("change against width (one width: none)", color="#9aa4b2", size="10pt")
            return
        self.scale_plot.setTitle("change against width", color="#c9d1d9", size="10pt")
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
            self.fn_lin.setPen(pg.mkPen(self.run_colors[hi], width=2.2,
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
        self.k_title.setText(f"K, {self.run_labels[hi]}:  w₀  |  step {step}"
                             + ("" if np.isfinite(kc) else " (diverged)"))
        lam0 = init.eig[hi]
        ks = np.arange(1, len(lam0) + 1)
        ok = lam0 > 0
        self.spec0.setData(ks[ok], lam0[ok], symbolBrush=self.run_colors[hi])
        if np.all(np.isfinite(Kt)):
            lam = np.linalg.eigvalsh(0.5 * (Kt + Kt.T).astype(np.float64))[::-1]
            ok = lam > 0
            self.spec_now.setData(ks[ok], lam[ok])
        if init.eig_inf is not None:
            ok = init.eig_inf > 0
            self.spec_inf.setData(ks[ok], init.eig_inf[ok])
        else:
            self.spec_inf.setData([], [])

    def _draw_conditioning(self, m: sw.SweepMetrics, hi: int, step: int) -> None:
        """Part 2 for the highlighted run: cK's extreme eigenvalues, PL*, the bound and the ball; every run's
        sharpness against 2/eta; the network's Hessian across widths."""
        init, s = self.hist.init, self.state
        c = init.kernel_scale
        rows = [r for r in self.hist.metric_rows if self.scrub is None or r[0] <= self.scrub]
        if not rows or rows[0][1].lam_min is None:
            return

        def col(name, k=hi):
            return np.array([getattr(r[1], name)[k] for r in rows], float)

        st = np.array([r[0] for r in rows], float)
        lmin, lmax = c * col("lam_min"), c * col("lam_max")

        def put(item, x, y):
            ok = np.isfinite(y) & (y > 0)
            item.setData(x[ok], y[ok])

        put(self.c_lmax, st, lmax)
        put(self.c_lmin, st, lmin)
        with np.errstate(divide="ignore", invalid="ignore"):
            put(self.c_cond, st, lmax / lmin)
            loss_m = col("loss")
            ratio = 0.5 * col("grad_sq") / loss_m
        put(self.pl_ratio, st, ratio)
        put(self.pl_lmin, st, lmin)
        pos = np.where(np.isfinite(lmin) & (lmin > 0), lmin, np.inf)
        mu_run = np.minimum.accumulate(pos)
        put(self.pl_mu, st, np.where(np.isfinite(mu_run), mu_run, np.nan))
        mu = float(mu_run[-1]) if np.isfinite(mu_run[-1]) else float("nan")
        # the loss under (1 - eta mu)^t L(w0), every step
        steps, loss = self.hist.losses()
        keep = steps <= (self.scrub if self.scrub is not None else steps[-1])
        upto = self.hist.diverged.get(hi)
        if upto is not None:
            keep &= steps <= upto
        L0, eta = float(loss[0, hi]), float(init.etas[hi])
        put(self.b_loss, steps[keep].astype(float), loss[keep, hi])
        under = None
        if np.isfinite(mu) and 0 < eta * mu < 1:
            bound = L0 * (1 - eta * mu) ** steps[keep].astype(float)
            put(self.b_bound, steps[keep].astype(float), bound)
            under = bool(np.all(loss[keep, hi] <= bound * (1 + 1e-6)))
        else:
            self.b_bound.setData([], [])
        # the distance travelled against R = 2 sqrt(2 beta L0) / mu
        wd = col("wdist")
        put(self.d_dist, st, wd)
        sharp_hi = col("sharpness")
        beta = float(np.nanmax(sharp_hi)) if np.isfinite(sharp_hi).any() else float("nan")
        R = 2 * math.sqrt(2 * beta * L0) / mu if np.isfinite(beta) and beta > 0 and mu > 0 else float("nan")
        if np.isfinite(R):
            self.d_radius.setData([st[0], st[-1]], [R, R])
        else:
            self.d_radius.setData([], [])
        # every run's sharpness, on steps or flow time
        flow = s.time_axis == "flow"
        self.sharp_plot.setLabel("bottom", "flow time η t" if flow else "step")
        every = init.hessian_every
        self.sharp_plot.setTitle(f"sharpness against 2/η (every {every} steps)" if every else
                                 "sharpness against 2/η (off: Hessian every k = 0)", color="#c9d1d9", size="10pt")
        end_t = 0.0
        for k, curve in enumerate(self.sharp_runs):
            v = col("sharpness", k)
            x = st * (init.etas[k] if flow else 1.0)
            ok = np.isfinite(v)
            curve.setData(x[ok], v[ok])
            curve.setPen(self._width_pen(k, hi, 2.0))
            curve.setZValue(10 if k == hi else 1)
            end_t = max(end_t, float(x[-1]) if len(x) else 0.0)
        for eta_k, line in self.sharp_limits:
            line.setData([0, max(end_t, 1e-9)], [2 / eta_k, 2 / eta_k])
        # the network's Hessian against width, at the step shown
        mh = m.model_hess
        if mh is not None and not self.by_steps:
            ws = np.array(self.run_widths, float)
            ok = np.isfinite(mh) & (mh > 0)
            self.mh_pts.setData(ws[ok], mh[ok], data=ws[ok])
            slope = sw.loglog_slope(ws[ok], mh[ok]) if ok.sum() >= 2 else None
            if slope is not None:
                cf = np.polyfit(np.log10(ws[ok]), np.log10(mh[ok]), 1)
                xs = np.array([ws[ok].min(), ws[ok].max()])
                self.mh_fit.setData(xs, 10 ** np.polyval(cf, np.log10(xs)))
            for _sample, lab in self.mh_legend.items:
                lab.setText("‖∇²g‖" + (f"  slope {slope:+.2f}" if slope is not None else ""))
            self.mhess_plot.getAxis("bottom").setTicks([[(math.log10(w), str(w)) for w in self.run_widths], []])
        else:
            self.mh_pts.setData([], [])
            self.mh_fit.setData([], [])
        self.mhess_plot.setTitle("the network's Hessian against width" + (" (one width: none)" if self.by_steps else
                                 f" (every {every} steps)" if every else " (off)"), color="#c9d1d9", size="10pt")
        # in words
        note = []
        if np.isfinite(lmin[-1]) and lmin[-1] > 1e-6 * lmax[-1]:
            note.append(f"κ(cK) = {lmax[-1] / lmin[-1]:.3g}")
        else:
            note.append("λ_min(cK) ≈ 0: the kernel is singular to float32 precision on these points, so PL* gives "
                        "no rate (no bound, no radius)")
        okr = np.isfinite(ratio) & (lmin > 0)
        if okr.any():
            worst = float(np.min(ratio[okr] / lmin[okr]))
            note.append(f"½‖∇L‖²/L ≥ λ_min(cK) at every measured step (smallest ratio {worst:.3g})" if worst >= 1 - 1e-4
                        else f"½‖∇L‖²/L fell to {worst:.3g} λ_min(cK)")
        if under is not None:
            note.append("the loss stays under (1 − ημ)ᵗL(w₀)" if under else
                        "the loss rose above (1 − ημ)ᵗL(w₀): η is beyond the theorem's 1/β")
        if np.isfinite(R) and np.isfinite(wd[-1]) and wd[-1] > 0:
            note.append(f"‖w_t − w₀‖ = {wd[-1]:.3g} inside R = {R:.3g} ({R / wd[-1]:.0f}× farther than the run went; "
                        f"β = {beta:.3g} the largest sharpness seen, μ = {mu:.3g})")
        elif not every:
            note.append("R needs the smoothness β: set Hessian every k above 0")
        last_sharp = [(k, r) for k in range(len(self.run_widths))
                      for r in [col("sharpness", k)] if np.isfinite(r).any()]
        if last_sharp:
            note.append("sharpness now: " + ", ".join(
                f"{self.run_labels[k]}: {r[np.isfinite(r)][-1]:.3g} (2/η = {2 / init.etas[k]:.3g})"
                for k, r in last_sharp))
        self.cond_note.setText(f"<b>{self.run_labels[hi]}</b> at step {step}: " + " · ".join(note))

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
            # (a mode with eta lambda > 2 grows in the linear model: drawn only while near the measured range)
            ok = np.isfinite(p) & (p > 1e-12) & (p <= 10 * max(float(np.nanmax(np.abs(coef))), 1e-12))
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
            upto = self.hist.diverged.get(k)
            if upto is not None:  # a diverged run's path ends before it left for infinity
                p = p[steps < upto]
            p = p[np.all(np.isfinite(p), axis=1)]
            p = np.clip(p, -4, 4)
            line.setData(pos=p.astype(np.float32), width=4.0 if k == hi else 2.0)
            col = pg.mkColor(self.run_colors[k]).getRgbF()
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
        if self.by_steps:
            lines.append(f"one width, {len(self.run_widths)} step sizes: no width scaling (see the conditioning "
                         "page for the sharpness against 2/η)")
        elif s.parameterization == "ntk":
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
        lims = ", ".join(f"{lab.split(' = ')[1]}: {lim:.2g}" for lab, lim in zip(self.run_labels, init.limits))
        lines.append(f"stability limit 2/λ_max(cK₀) per {'run' if self.by_steps else 'width'} — {lims}")
        if self.hist.diverged:
            lines.append("<span style='color:#ff6b6b'>diverged: " + ", ".join(
                f"{self.run_labels[k]} at step {t}" for k, t in sorted(self.hist.diverged.items())) + "</span>")
        if self.scrub is not None:
            lines.append(f"showing step {at[0] if at else self.scrub} of {self.hist.last_step} "
                         "(double-click the loss plot or press L to follow the run)")
        self.info.setText("<br>".join(lines))
        if hi is not None:
            gap = at[1].gap[hi] if at is not None else float("nan")
            self.paths_note.setText(f"highlighted: {self.run_labels[hi]}, gap to its linearization {gap:.2g}")

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
