"""Lab "double-descent": test error against model size, exactly solved, live (THEORY.md section 4, issue 15).

Random-features regression (ReLU or Fourier features) on n noisy training points, solved exactly by
``models.double_descent`` (minimum norm, or ridge with the sum objective) for a sweep of the number of features p:
training and test error against p/n on log axes (median over seeds, quartile band, the infinite-width kernel's
error as the asymptote), ||a|| and sigma_min(Phi) that explain the peak, the test error over (p/n, ridge) as an
OpenGL surface, and the model at any point of the curve (click it). Every computation runs in a LatestJobWorker
thread (the newest request only); the curve refines as seeds arrive (two first, then all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
from PySide6.QtCore import Qt

from models import double_descent as dd
from visualizer.labs.base import Action, Lab
from visualizer.labs.schema import setting
from visualizer.views.common import Banner, caption, dark_plot, lab_layout, splitter
from visualizer.views.scene3d import Scene3D
from visualizer.workers import LatestJobWorker

DATA, MODEL, SWEEP, VIEW = "Data", "Features and solution", "Sweep", "Views"
DRAW_SLOTS = 40  # a hand-drawn curve: heights at this many evenly spaced x in the 1D domain
FIRST_SEEDS = 2  # the first pass of a sweep (the rest follow in a second pass)
SURFACE_RIDGES = tuple(float(r) for r in np.geomspace(1e-6, 1e2, 25))
SURFACE_SEEDS = 3
SURFACE_TEST = 500
TEST_COLOR, TRAIN_COLOR, KERNEL_COLOR = "#ff9f1c", "#4cc9f0", "#ffffff"
NORM_COLOR, SIGMA_COLOR = "#b8f35a", "#ff70d0"
X_SCALE, Y_SCALE = 2.0, 0.5  # surface coordinates: X_SCALE log10(p/n), Y_SCALE log10(ridge)


def default_drawn() -> list[float]:
    xs = np.linspace(*dd.DOMAIN_1D, DRAW_SLOTS)
    return [round(float(v), 3) for v in 0.8 * np.sin(2.5 * xs) + 0.3 * np.cos(7 * xs)]


@dataclass
class DoubleDescentState:
    """Data, features and the sweep recompute the curves at once (sliders drag live); the views only redraw."""

    data: str = setting("teacher", "data", group=DATA, reacts="sweep",
                        choices=(("teacher", "d-dimensional teacher"), ("function", "a 1D function"),
                                 ("drawn", "a 1D curve drawn by hand")),
                        tooltip="x ~ N(0, I_d) with a fixed linear + nonlinear target, or a 1D input on [−1, 1] "
                                "(then the model's whole function is drawn)")
    function: str = setting("sin", "target of x", group=DATA, reacts="sweep",
                            choices=tuple((k, v[0]) for k, v in dd.FUNCTIONS_1D.items()),
                            enabled_if=lambda s: s.data == "function",
                            tooltip="The 1D target; training x are stratified over [−1, 1]")
    drawn: list = setting(default_drawn(), "drawn curve", group=DATA, widget="draw", reacts="sweep",
                          length=(DRAW_SLOTS, DRAW_SLOTS), range=(-3.0, 3.0), enabled_if=lambda s: s.data == "drawn",
                          tooltip=f"Drag across the panel to draw the target: its {DRAW_SLOTS} points are the "
                                  "training set (no noise added)")
    n: int = setting(100, "training points n", range=(10, 400), group=DATA, reacts="sweep", widget="slider",
                     enabled_if=lambda s: s.data != "drawn",
                     tooltip=f"Training points; the test error is measured on {dd.N_TEST} noiseless points")
    d: int = setting(10, "input dimension d", range=(2, 100), group=DATA, reacts="sweep", widget="slider",
                     enabled_if=lambda s: s.data == "teacher", tooltip="Dimension of the teacher's inputs")
    noise: float = setting(0.5, "label noise", range=(0.0, 2.0), decimals=2, group=DATA, reacts="sweep",
                           widget="slider", enabled_if=lambda s: s.data != "drawn",
                           tooltip="Standard deviation of the Gaussian noise on the training labels: it raises "
                                   "the peak (an interpolating model must fit it)")
    data_seed: int = setting(0, "data seed", range=(0, 10**6), group=DATA, reacts="sweep",
                             tooltip="The training and test sample (the features have their own seeds)")
    feature: str = setting("relu", "features", group=MODEL, reacts="sweep",
                           choices=(("relu", "ReLU: relu(V x / √d) / √p"),
                                    ("fourier", "Fourier: √(2/p) cos(V x / (s√d) + b)")),
                           tooltip="Random features with V ~ N(0, 1); their infinite-width kernel is the arc-cosine "
                                   "kernel κ₁ (ReLU) or the Gaussian kernel of bandwidth s√d (Fourier)")
    scale: float = setting(1.0, "bandwidth s", range=(0.05, 20.0), decimals=2, log=True, group=MODEL,
                           reacts="sweep", enabled_if=lambda s: s.feature == "fourier",
                           tooltip="Fourier features cos(V x / (s√d) + b): kernel exp(−‖x − x′‖² / (2 s² d))")
    solution: str = setting("min-norm", "solution", group=MODEL, reacts="sweep",
                            choices=(("min-norm", "minimum norm a = Φ⁺y"),
                                     ("ridge", "ridge: ‖Φa − y‖² + λ‖a‖²")),
                            tooltip="Solved exactly (QR, SVD near p = n with the cutoff 1e−10 σ_max), never by "
                                    "gradient descent, whose fixed budget would hide the peak")
    ridge: float = setting(0.1, "ridge λ", range=(1e-6, 100.0), decimals=6, log=True, group=MODEL,
                           reacts="sweep", widget="slider", enabled_if=lambda s: s.solution == "ridge",
                           tooltip="λ of the sum objective ‖Φa − y‖² + λ‖a‖²: about 0.1 flattens the peak")
    seeds: int = setting(10, "seeds", range=(1, 40), group=SWEEP, reacts="sweep", widget="slider",
                         tooltip="Feature draws per p: the median and the quartile band over them (two arrive "
                                 "first, the rest follow)")
    p_ratio: float = setting(4.0, "p up to (× n)", range=(1.5, 20.0), decimals=1, log=True, group=SWEEP,
                             reacts="sweep", tooltip="The widest model, as a multiple of n")
    p_count: int = setting(60, "sizes p", range=(10, 200), group=SWEEP, reacts="sweep",
                           tooltip="Log-spaced sizes from p = 1, with every p near n (within 10%) added")
    surface: bool = setting(True, "(p/n, λ) surface", group=VIEW, reacts="sweep",
                            tooltip=f"The median test error of {SURFACE_SEEDS} seeds over p/n and "
                                    f"{len(SURFACE_RIDGES)} ridges from 1e−6 to 100, on log axes")
    shown_p: int = setting(0, "model shown (p)", range=(0, dd.MAX_P), group=VIEW, reacts="model", widget="hidden",
                           tooltip="Click the curve to show the model of that size (0: the threshold p = n)")
    shown_seed: int = setting(0, "model seed", range=(0, 39), group=VIEW, reacts="model",
                              tooltip="Which feature draw the model below the curve uses")


@dataclass(frozen=True)
class SweepRequest:
    data: dict
    ps: tuple
    seeds: int
    ridge: float
    feature: str
    scale: float
    stage: int = 0
    base: object = field(default=None, compare=False, hash=False)

    @property
    def key(self) -> tuple:
        return (tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in self.data.items())),
                self.ps, self.seeds, self.ridge, self.feature, self.scale)


@dataclass(frozen=True)
class SurfaceRequest:
    data: dict
    ps: tuple
    feature: str
    scale: float


@dataclass(frozen=True)
class ModelRequest:
    data: dict
    p: int
    seed: int
    ridge: float
    feature: str
    scale: float


def _make(data: dict) -> dd.Data:
    return dd.make_data(**data)


def compute_sweep(req: SweepRequest) -> dd.Sweep:
    """Stage 0: the first FIRST_SEEDS seeds (and the kernel asymptote); stage 1: the others, merged."""
    data = _make(req.data)
    lo = 0 if req.stage == 0 else len(req.base.seeds)
    hi = min(FIRST_SEEDS, req.seeds) if req.stage == 0 else req.seeds
    part = dd.sweep(data, list(req.ps), list(range(lo, hi)), req.ridge, req.feature, req.scale,
                    kernel=req.stage == 0)
    if req.stage == 0:
        part.complete = hi == req.seeds
        return part
    b = req.base
    merged = replace(b, seeds=b.seeds + part.seeds, complete=True, elapsed_ms=b.elapsed_ms + part.elapsed_ms,
                     methods={k: b.methods.get(k, 0) + part.methods.get(k, 0) for k in {*b.methods, *part.methods}},
                     **{k: np.vstack([getattr(b, k), getattr(part, k)]) for k in ("train", "test", "norm",
                                                                                  "sigma_min")})
    return merged


def compute_surface(req: SurfaceRequest) -> dict:
    data = _make(req.data)
    values = dd.ridge_surface(data, list(req.ps), SURFACE_RIDGES, SURFACE_SEEDS, req.feature, req.scale,
                              max_test=SURFACE_TEST)
    return {"ps": np.array(req.ps), "ridges": np.array(SURFACE_RIDGES), "values": values, "n": data.n}


def compute_model(req: ModelRequest) -> dd.Model:
    return dd.fit_model(_make(req.data), req.p, req.seed, req.ridge, req.feature, req.scale)


def _ratio_ticks(lo: float, hi: float) -> list:
    """Ticks of a log p/n axis (in log10 units): labelled 1-2-5 steps, unlabelled minor ticks (pyqtgraph's own
    log ticks label every minor tick of a short range, and the labels run together)."""
    major, minor = [], []
    for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in range(1, 10):
            v = m * 10.0**e
            if lo * 0.98 <= v <= hi * 1.02:
                if m in (1, 2, 5):
                    major.append((math.log10(v), f"{v:g}"))
                else:
                    minor.append((math.log10(v), ""))
    return [major, minor]


class DoubleDescentLab(Lab):
    key = "double-descent"
    state_cls = DoubleDescentState
    title = "Double descent: test error against model size"
    actions = (Action("show_threshold", "Show the model at p = n", "show_threshold", group=VIEW,
                      tooltip="The interpolation threshold: the wildest model of the sweep",
                      scene="show the model at the interpolation threshold p = n"),
               Action("show_widest", "Show the widest model", "show_widest", group=VIEW,
                      tooltip="The largest p of the sweep: close to the kernel limit",
                      scene="show the widest model of the sweep"),
               Action("reset", "Reset (R)", "reset", button=False, scene="recompute the sweep"))
    hint = "Drag the sliders: the curve recomputes live. Click a point of the curve to see that model"
    help = ("<h3>Double descent</h3>"
            "<p>Random-features regression: features φ(x) = relu(Vx/√d)/√p with V (p × d) of N(0, 1) entries "
            "(or random Fourier features), predictor a·φ(x), fitted to n noisy training points <b>exactly</b>: the "
            "minimum-norm solution a = Φ⁺y (Householder QR of nested column sets, an SVD with the cutoff "
            "10⁻¹⁰ σ_max near p = n), or ridge argmin ‖Φa − y‖² + λ‖a‖² (sum objective). Never gradient descent: "
            "a fixed budget of steps is early stopping and hides the peak.</p>"
            "<p>Test error falls, rises to a <b>peak at the interpolation threshold p = n</b>, then falls again "
            "(Belkin, Hsu, Ma, Mandal 2019). At p = n the square feature matrix has its smallest singular value "
            "near zero and ‖a‖ blows up to fit the noise: the second plot shows both. Label noise raises the peak; "
            "ridge λ ≈ 0.1 flattens it (the surface shows the whole (p/n, λ) picture). The over-parameterized "
            "error need not beat the best under-parameterized one: the peak is the point.</p>"
            "<p>As p grows, (1/p) Σ φ(v_k·x) φ(v_k·x′) tends (like p<sup>−½</sup>) to the arc-cosine kernel κ₁ "
            "with Σ(x, x′) = x·x′/d (Fourier: the Gaussian kernel): min-norm random features converge to "
            "ridgeless kernel regression with it, drawn as the white asymptote.</p>"
            "<p>Click a point of the curve to show that model (d = 1: its function with the training points, "
            "wild near p = n; d > 1: predictions against targets).</p>")

    def __init__(self, device: str = "cpu", parent=None, restore: bool = True, start: bool = True,
                 runner_factory=None) -> None:
        super().__init__(device, parent, restore, start, runner_factory)
        self.sweep_result: dd.Sweep | None = None
        self.surface_result: dict | None = None
        self.model: dd.Model | None = None
        self._sweep_key = None
        self._surface_req: SurfaceRequest | None = None
        self._model_req: ModelRequest | None = None
        self._build_views()
        self.make_form(custom={"draw": self._make_draw})
        self.sweep_worker = LatestJobWorker(compute_sweep, self)
        self.sweep_worker.result.connect(self._on_sweep)
        self.sweep_worker.failed.connect(lambda req, text: self._on_failed("the sweep", text))
        self.surface_worker = LatestJobWorker(compute_surface, self)
        self.surface_worker.result.connect(self._on_surface)
        self.surface_worker.failed.connect(lambda req, text: self._on_failed("the surface", text))
        self.model_worker = LatestJobWorker(compute_model, self)
        self.model_worker.result.connect(self._on_model)
        self.model_worker.failed.connect(lambda req, text: self._on_failed("the model", text))
        self._workers = [self.sweep_worker, self.surface_worker, self.model_worker]
        self._show_data_panel()
        if start:
            self.start()

    # ----------------------------------------------------------------------------- building
    def _make_draw(self, settings):
        from visualizer.views.pickers import DrawPanel

        self.draw_panel = DrawPanel(settings, "drawn", dd.DOMAIN_1D, (-3.0, 3.0))
        self.draw_panel.error.connect(lambda text: self.message.emit(text, True))
        return self.draw_panel

    def _build_views(self) -> None:
        self.banner = Banner()
        self.caption = caption()
        # error against p/n
        self.err_plot = dark_plot("test error (orange), training error (blue) against p/n", x="p / n",
                                  y="mean squared error",
                                  tooltip="Median over seeds (lines) with the quartile band; the white dotted line "
                                          "is the infinite-width kernel regression's test error (the right end); "
                                          "the dashed vertical line is p = n. Click a point to show that model")
        self.err_plot.setLogMode(x=True, y=True)
        self.err_legend = self.err_plot.addLegend(offset=(8, 8), labelTextSize="8pt", brush=(20, 22, 28, 200))
        self.test_lo = self.err_plot.plot(pen=pg.mkPen(TEST_COLOR + "00"))
        self.test_hi = self.err_plot.plot(pen=pg.mkPen(TEST_COLOR + "00"))
        self.test_band = pg.FillBetweenItem(self.test_lo, self.test_hi, brush=pg.mkBrush(TEST_COLOR + "40"))
        self.err_plot.addItem(self.test_band)
        self.train_lo = self.err_plot.plot(pen=pg.mkPen(TRAIN_COLOR + "00"))
        self.train_hi = self.err_plot.plot(pen=pg.mkPen(TRAIN_COLOR + "00"))
        self.train_band = pg.FillBetweenItem(self.train_lo, self.train_hi, brush=pg.mkBrush(TRAIN_COLOR + "40"))
        self.err_plot.addItem(self.train_band)
        self.test_curve = self.err_plot.plot(pen=pg.mkPen(TEST_COLOR, width=2.2), symbol="o", symbolSize=4,
                                             symbolBrush=TEST_COLOR, symbolPen=None, name="test (median)")
        self.train_curve = self.err_plot.plot(pen=pg.mkPen(TRAIN_COLOR, width=1.8), name="training (median)")
        self.kernel_line = self.err_plot.plot(pen=pg.mkPen(KERNEL_COLOR, width=1.5, style=Qt.PenStyle.DotLine),
                                              name="kernel limit (p → ∞)")
        self.threshold = pg.InfiniteLine(0.0, angle=90, pen=pg.mkPen("#ffffff60", width=1,
                                                                     style=Qt.PenStyle.DashLine))
        self.err_plot.addItem(self.threshold)
        self.pick_marker = self.err_plot.plot([], [], pen=None, symbol="o", symbolSize=13,
                                              symbolBrush=(0, 0, 0, 0), symbolPen=pg.mkPen("#ffffff", width=2))
        self.err_plot.scene().sigMouseClicked.connect(self._on_err_click)
        # norm and sigma_min
        self.aux_plot = dark_plot("‖a‖ (green) and σ_min(Φ) (pink) against p/n", x="p / n", y="size",
                                  tooltip="Median over seeds of the solution's norm ‖a‖ and the smallest singular "
                                          "value of the n × p feature matrix: σ_min → 0 and ‖a‖ blows up at "
                                          "p = n, which is the peak")
        self.aux_plot.setLogMode(x=True, y=True)
        self.aux_legend = self.aux_plot.addLegend(offset=(8, 8), labelTextSize="8pt", brush=(20, 22, 28, 200))
        self.norm_curve = self.aux_plot.plot(pen=pg.mkPen(NORM_COLOR, width=2), name="‖a‖")
        self.sigma_curve = self.aux_plot.plot(pen=pg.mkPen(SIGMA_COLOR, width=2), name="σ_min(Φ)")
        self.aux_threshold = pg.InfiniteLine(0.0, angle=90, pen=pg.mkPen("#ffffff60", width=1,
                                                                         style=Qt.PenStyle.DashLine))
        self.aux_plot.addItem(self.aux_threshold)
        self.aux_plot.setXLink(self.err_plot)
        for plot in (self.err_plot, self.aux_plot):
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)
        # the model
        self.model_plot = dark_plot("the model", x="x", y="f(x)",
                                    tooltip="d = 1: the fitted function over the domain (orange), the target "
                                            "(dim) and the training points; d > 1: predictions against targets "
                                            "at test points (the diagonal is perfect)")
        self.model_target = self.model_plot.plot(pen=pg.mkPen("#ffffff50", width=1.2))
        self.model_curve = self.model_plot.plot(pen=pg.mkPen(TEST_COLOR, width=2))
        self.model_points = pg.ScatterPlotItem(size=6, brush=pg.mkBrush("#8ecae6"), pen=pg.mkPen("#000"))
        self.model_points.setZValue(20)
        self.model_plot.addItem(self.model_points)
        # the (p/n, ridge) surface
        self.scene = Scene3D(pg.colormap.get("viridis"), labels=("log₁₀ p/n", "log₁₀ λ", "log₁₀ test error"))
        self.scene.container.setToolTip("Median test error over p/n (log) and the ridge λ (log), height and colour "
                                        "on a log scale; the white line is the λ of the curve (the front edge: "
                                        "min-norm). Left-drag rotates, wheel zooms")
        self.scene.frame_drawn.connect(self.frame_drawn)
        self.ridge_line = gl.GLLinePlotItem(color=(1, 1, 1, 1), width=2.5, antialias=True)
        self.scene.addItem(self.ridge_line)
        left = splitter("v", self.err_plot, self.aux_plot, stretch=(3, 2))
        right = splitter("v", self.scene.container, self.model_plot, stretch=(1, 1))
        body = splitter("h", left, right, stretch=(1, 1))
        body.setSizes([1000, 900])
        lab_layout(self, self.banner, self.caption, body=body)

    # ----------------------------------------------------------------------------- the contract
    def views(self) -> dict:
        return {"3d": self.scene, "2d": self.err_plot}

    def active_view(self):
        return self.err_plot

    def has_drawn(self) -> bool:
        return self.sweep_result is not None

    def busy(self) -> bool:
        return (any(w.busy or w.pending() for w in self._workers)
                or (self.sweep_result is not None and not self.sweep_result.complete))

    def start(self) -> None:
        self.recompute()

    def reset(self) -> None:
        self._sweep_key = None
        self._surface_req = None
        self.recompute()

    def shutdown(self) -> None:
        self.banner.stop()
        for w in self._workers:
            w.stop(wait_ms=0)
        super().shutdown()

    # ----------------------------------------------------------------------------- settings
    def data_args(self) -> dict:
        s = self.state
        if s.data == "drawn":
            xs = np.linspace(*dd.DOMAIN_1D, DRAW_SLOTS)
            return dict(kind="drawn", xs=[float(x) for x in xs], ys=[float(y) for y in s.drawn])
        if s.data == "function":
            return dict(kind="function", n=s.n, noise=s.noise, function=s.function, data_seed=s.data_seed)
        return dict(kind="teacher", n=s.n, d=s.d, noise=s.noise, data_seed=s.data_seed)

    def n_train(self) -> int:
        return DRAW_SLOTS if self.state.data == "drawn" else self.state.n

    def ps(self) -> tuple:
        n = self.n_train()
        return tuple(dd.p_values(n, max(int(round(self.state.p_ratio * n)), n + 2), self.state.p_count))

    def ridge_value(self) -> float:
        return self.state.ridge if self.state.solution == "ridge" else 0.0

    def _show_data_panel(self) -> None:
        if hasattr(self, "draw_panel"):
            self.draw_panel.setVisible(self.state.data == "drawn")
            if self.state.data == "drawn":
                self.draw_panel.set_points(np.linspace(*dd.DOMAIN_1D, DRAW_SLOTS), self.state.drawn)

    def react_sweep(self, changed: dict) -> None:
        self._show_data_panel()
        self.recompute()

    def react_model(self, changed: dict) -> None:
        self.request_model()

    def recompute(self) -> None:
        """Submit the sweep (first pass), the surface (when its inputs changed) and the model shown."""
        s = self.state
        try:
            data = self.data_args()
            _make(data)  # refused here, in words, before any thread starts
        except ValueError as exc:
            self.show_error(str(exc))
            return
        req = SweepRequest(data, self.ps(), s.seeds, self.ridge_value(), s.feature, s.scale)
        self._sweep_key = req.key
        self.sweep_worker.submit(req)
        if s.surface:
            n = self.n_train()
            sps = tuple(sorted(set(dd.p_values(n, max(int(round(s.p_ratio * n)), n + 2), 26)) - set(range(1, 4))
                               | {n}))
            sreq = SurfaceRequest(data, sps, s.feature, s.scale)
            if sreq != self._surface_req:
                self._surface_req = sreq
                self.surface_worker.submit(sreq)
        self.scene.container.setVisible(s.surface)
        self._draw_ridge_line()
        self.request_model()

    def shown_p(self) -> int:
        ps = self.ps()
        want = self.state.shown_p or self.n_train()
        return min(ps, key=lambda p: abs(math.log(p) - math.log(want)))

    def request_model(self) -> None:
        s = self.state
        req = ModelRequest(self.data_args(), self.shown_p(), s.shown_seed, self.ridge_value(), s.feature, s.scale)
        if req != self._model_req:
            self._model_req = req
            self.model_worker.submit(req)

    def show_p(self, p: int) -> None:
        """Show the model with p features (as a click on the curve does)."""
        self.set_setting("shown_p", int(p))

    def show_threshold(self) -> None:
        self.show_p(self.n_train())

    def show_widest(self) -> None:
        self.show_p(self.ps()[-1])

    def show_error(self, text: str) -> None:
        self.banner.show_text(text)
        self.message.emit(text, True)

    def _on_failed(self, what: str, text: str) -> None:
        self.banner.show_text(f"Cannot compute {what}: {text.splitlines()[0]}")
        self.report_failure(f"Cannot compute {what}: {text}")

    # ----------------------------------------------------------------------------- clicks
    def _on_err_click(self, ev) -> None:
        if self.sweep_result is None or ev.button() != Qt.MouseButton.LeftButton:
            return
        vb = self.err_plot.getPlotItem().vb
        if not vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        pt = vb.mapSceneToView(ev.scenePos())
        r = self.sweep_result
        x = np.log10(r.ps / r.n)
        j = int(np.argmin(np.abs(x - pt.x())))
        self.show_p(int(r.ps[j]))

    # ----------------------------------------------------------------------------- results
    def _on_sweep(self, req: SweepRequest, out: dd.Sweep) -> None:
        if req.key != self._sweep_key:
            return
        self.sweep_result = out
        self._draw_sweep()
        if not out.complete:
            self.sweep_worker.submit(replace(req, stage=1, base=out))
        self.status.emit({"running": not out.complete})

    def _on_surface(self, req: SurfaceRequest, out: dict) -> None:
        if req != self._surface_req:
            return
        self.surface_result = out
        v = np.log10(np.maximum(out["values"], 1e-12))  # (ridges, ps)
        lo = float(np.min(v))
        hi = float(min(np.max(v), lo + 3.0))  # three decades of height: the peak is clipped, not the floor
        w1 = X_SCALE * np.log10(out["ps"] / out["n"])
        w2 = Y_SCALE * np.log10(out["ridges"])
        self.scene.set_surface(w1, w2, v.T, (lo, hi), False, -12.0)
        self._draw_ridge_line()

    def _on_model(self, req: ModelRequest, m: dd.Model) -> None:
        if req != self._model_req:
            return
        self.model = m
        self._draw_model()
        self._draw_caption()

    # ----------------------------------------------------------------------------- drawing
    def _draw_sweep(self) -> None:
        r = self.sweep_result
        x = r.ps / r.n
        q1, med, q3 = r.quartiles("test")
        t1, tmed, t3 = r.quartiles("train")
        floor = 1e-32  # (interpolating fits reach ~1e-30: kept on the log axis)
        self.test_lo.setData(x, np.maximum(q1, floor))
        self.test_hi.setData(x, np.maximum(q3, floor))
        self.test_curve.setData(x, np.maximum(med, floor))
        self.train_lo.setData(x, np.maximum(t1, floor))
        self.train_hi.setData(x, np.maximum(t3, floor))
        self.train_curve.setData(x, np.maximum(tmed, floor))
        if math.isfinite(r.kernel_test):
            self.kernel_line.setData([x[0], x[-1]], [r.kernel_test, r.kernel_test])
        self.norm_curve.setData(x, np.maximum(r.median("norm"), 1e-12))
        # (rank-deficient features, as 1D ReLU features often are, have sigma_min ~ 0: drawn at 1e-12)
        self.sigma_curve.setData(x, np.maximum(r.median("sigma_min"), 1e-12))
        # the training error of interpolating fits is ~1e-30: the y range follows the test error
        top = float(np.max(q3))
        bottom = float(min(np.min(med), r.kernel_test if math.isfinite(r.kernel_test) else np.inf,
                           np.min(tmed[tmed > 1e-12]) if np.any(tmed > 1e-12) else np.inf))
        self.err_plot.setYRange(math.log10(max(bottom, 1e-12)) - 0.3, math.log10(max(top, 1e-12)) + 0.2,
                                padding=0)
        self.err_plot.setXRange(math.log10(x[0]), math.log10(x[-1]), padding=0.02)
        ticks = _ratio_ticks(float(x[0]), float(x[-1]))
        if not any(abs(t - math.log10(x[-1])) < 0.05 for t, _ in ticks[0]):
            ticks[0].append((math.log10(x[-1]), f"{x[-1]:.3g}"))
        for plot in (self.err_plot, self.aux_plot):
            plot.getAxis("bottom").setTicks(ticks)
        self._draw_pick()
        self._draw_caption()

    def _draw_pick(self) -> None:
        r = self.sweep_result
        if r is None:
            return
        p = self.shown_p()
        idx = np.flatnonzero(r.ps == p)
        if len(idx):
            self.pick_marker.setData([p / r.n], [max(float(r.median("test")[idx[0]]), 1e-32)])

    def _draw_ridge_line(self) -> None:
        out = self.surface_result
        if out is None:
            return
        lam = self.ridge_value() or SURFACE_RIDGES[0]
        w1 = X_SCALE * np.log10(out["ps"] / out["n"])
        v = np.log10(np.maximum(out["values"], 1e-12))
        lr = np.log10(out["ridges"])
        j = float(np.interp(math.log10(lam), lr, np.arange(len(lr))))
        lo_i, t = int(math.floor(j)), j - math.floor(j)
        hi_i = min(lo_i + 1, len(lr) - 1)
        row = (1 - t) * v[lo_i] + t * v[hi_i]
        z = self.scene.height_of(row) + 0.01 * self.scene.zheight
        y = np.full(len(w1), Y_SCALE * math.log10(lam))
        self.ridge_line.setData(pos=np.column_stack([w1, y, z]))

    def _draw_model(self) -> None:
        m = self.model
        if m is None:
            return
        one_d = self.state.data != "teacher"
        if one_d:
            data = _make(self._model_req.data)
            self.model_plot.setLabel("bottom", "x")
            self.model_plot.setLabel("left", "f(x)")
            self.model_target.setData(m.x_eval, m.target)
            self.model_curve.setData(m.x_eval, m.pred)
            self.model_curve.setPen(pg.mkPen(TEST_COLOR, width=2))
            self.model_curve.setSymbol(None)
            self.model_points.setData(data.x[:, 0], data.y)
            span = float(np.ptp(data.y)) or 1.0
            lo, hi = float(np.min(data.y)) - span, float(np.max(data.y)) + span
            self.model_plot.setXRange(*dd.DOMAIN_1D, padding=0.02)
            self.model_plot.setYRange(max(lo, float(np.min(m.pred))), min(hi, float(np.max(m.pred))), padding=0.05)
        else:
            self.model_plot.setLabel("bottom", "target f*(x)")
            self.model_plot.setLabel("left", "prediction")
            lo, hi = float(np.min(m.target)), float(np.max(m.target))
            self.model_target.setData([lo, hi], [lo, hi])
            self.model_curve.setData(m.target, m.pred)
            self.model_curve.setPen(None)
            self.model_curve.setSymbol("o")
            self.model_curve.setSymbolSize(4)
            self.model_curve.setSymbolBrush(TEST_COLOR)
            self.model_curve.setSymbolPen(None)
            self.model_points.setData([], [])
            span = hi - lo
            self.model_plot.setXRange(lo, hi, padding=0.05)
            self.model_plot.setYRange(lo - span, hi + span, padding=0)
        self.model_plot.setTitle(f"the model at p = {m.p} (p/n = {m.p / len(m.train_pred):.2f}, seed {m.seed}): "
                                 f"test {m.test_error:.3g}, train {m.train_error:.2g}, ‖a‖ = {m.norm:.3g}",
                                 size="9pt")
        self._draw_pick()

    def _draw_caption(self) -> None:
        r = self.sweep_result
        if r is None:
            return
        med = r.median("test")
        j = int(np.argmax(med))
        at_n = np.flatnonzero(r.ps == r.n)
        at = f"at p = n: test error <b>{med[at_n[0]]:.3g}</b>; " if len(at_n) else ""
        under = med[r.ps < r.n]
        best = f"{under.min():.3g}" if len(under) else "—"
        kind = "κ₁ arc-cosine" if r.feature == "relu" else "Gaussian"
        sol = f"ridge λ = {r.ridge:g}" if r.ridge > 0 else "minimum norm"
        seeds = f"{len(r.seeds)} of {self.state.seeds} seeds" if not r.complete else f"{len(r.seeds)} seeds"
        self.caption.setText(
            f"n = {r.n}, {sol}, {seeds}, {len(r.ps)} sizes in {r.elapsed_ms:.0f} ms — "
            f"{at}largest at p = {int(r.ps[j])} (p/n = {r.ps[j] / r.n:.2f}): {med[j]:.3g}; best "
            f"under-parameterized {best}; {kind} kernel limit {r.kernel_test:.3g}")
