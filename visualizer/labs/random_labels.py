"""Lab "random-labels": networks that fit noise (Zhang et al. 2017; THEORY.md section 4, issue 16).

One MLP per corruption fraction trains by full-batch Adam or GD in a child process (``models.random_labels.fit_run``,
the runs batched): training accuracy (every run reaches 100%), clean test accuracy (falling to chance as the
fraction grows), steps to fit against the fraction, and the weight norm, live. Next to it a 2D toy: a small MLP
fits two-class points in the plane; click a point to flip its label and the refit boundary contorts around it
(computed in a LatestJobWorker thread).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer

from models import random_labels as rl
from visualizer import errorlog
from visualizer.labs.base import Action, SingleRunLab
from visualizer.labs.schema import setting
from visualizer.views.common import Banner, caption, dark_plot, lab_layout, splitter
from visualizer.workers import LatestJobWorker

NET, DATA, TRAIN, TOY = "Network", "Data and corruption", "Training", "2D toy"
CLASS_COLORS = ("#4cc9f0", "#ff9f1c")  # the toy's two classes
FRACTION_MAP = pg.ColorMap([0.0, 0.5, 1.0], ["#4cc9f0", "#c77dff", "#ffd166"])
PICK_PIXELS = 14  # a click this close to a toy point flips it


def fraction_color(f: float) -> str:
    """Each fraction keeps its colour whatever the list: clean (0) violet to fully random (1) yellow."""
    return FRACTION_MAP.map(float(f), mode="qcolor").name()


def _fractions_check(value, state) -> str | None:
    if any(not 0.0 <= float(v) <= 1.0 for v in value):
        return "each fraction is between 0 and 1"
    return None


def _widths_check(value, state) -> str | None:
    if any(v != int(v) or not 1 <= v <= rl.MAX_WIDTH for v in value):
        return f"hidden widths are whole numbers from 1 to {rl.MAX_WIDTH}"
    return None


def _flips_check(value, state) -> str | None:
    if any(v != int(v) or not 0 <= v < state.toy_points for v in value):
        return f"flipped points are numbers from 0 to {state.toy_points - 1}"
    return None


@dataclass
class RandomLabelsState:
    """The network, the data and the training restart every run at once; the toy refits."""

    data: str = setting("gaussian", "data", group=DATA, reacts="runs",
                        choices=(("gaussian", "Gaussian, d = 20 (a linear teacher)"), ("digits", "8×8 digits")),
                        tooltip=f"x ~ N(0, I₂₀) labelled by the argmax of a fixed random linear teacher "
                                f"({rl.N_TEST_GAUSS} clean test points), or scikit-learn's 8×8 digits (10 classes, "
                                "the images not trained on are the test set)")
    classes: int = setting(2, "classes", range=(2, 10), group=DATA, reacts="runs",
                           enabled_if=lambda s: s.data == "gaussian", tooltip="Classes of the Gaussian teacher")
    n: int = setting(200, "training points n", range=(20, rl.MAX_TRAIN), group=DATA, reacts="runs",
                     commit="finish", tooltip="Training points (the digits keep at least 200 images for the test)")
    fraction: float = setting(1.0, "corruption fraction", range=(0.0, 1.0), decimals=2, group=DATA, reacts="runs",
                              widget="slider",
                              tooltip="This fraction of the TRAINING labels is replaced by uniformly random "
                                      "classes, drawn once from the seed and kept for the whole run (the paper's "
                                      "setting); the test labels stay clean. Moving it restarts the runs")
    companions: list = setting([0.0, 0.5], "trained beside it", group=DATA, reacts="runs", length=(0, 6),
                               range=(0.0, 1.0), check=_fractions_check,
                               tooltip="Other fractions trained side by side in the same child process (batched: "
                                       "one set of matrix products advances every run); type them separated by "
                                       "commas")
    widths: list = setting([512, 512], "hidden widths", group=NET, reacts="runs", length=(1, 4),
                           range=(1, rl.MAX_WIDTH), check=_widths_check,
                           tooltip="Hidden layers of the relu MLP (widths separated by commas)")
    optimizer: str = setting("adam", "optimizer", group=TRAIN, reacts="runs",
                             choices=(("adam", "Adam (full batch)"), ("gd", "gradient descent (full batch)")),
                             tooltip="Full-batch Adam (PyTorch's defaults) or plain gradient descent on the mean "
                                     "cross-entropy")
    lr: float = setting(1e-3, "learning rate", range=(1e-6, 10.0), decimals=6, log=True, group=TRAIN, reacts="runs",
                        commit="finish", tooltip="Adam: about 1e−3; gradient descent: about 0.5")
    steps: int = setting(400, "steps", range=(1, 10**6), group=TRAIN, reacts="runs", commit="finish",
                         tooltip="Full-batch steps of every run")
    eval_every: int = setting(5, "test every k", range=(1, 1000), group=TRAIN, reacts="runs", commit="finish",
                              tooltip="The clean test accuracy is measured every k steps (and when a run fits)")
    seed: int = setting(0, "seed", range=(0, 10**6), group=TRAIN, reacts="runs",
                        tooltip="The initialization (the same for every fraction) and the corrupted labels")
    data_seed: int = setting(0, "data seed", range=(0, 10**6), group=DATA, reacts="runs",
                             tooltip="The teacher, the sample, the digits' split")
    toy_preset: str = setting("blobs", "preset", group=TOY, reacts="toy",
                              choices=tuple((k, k) for k in rl.TOY_PRESETS),
                              tooltip="Two-class points in the plane; click one to flip its label")
    toy_points: int = setting(30, "points", range=(6, 120), group=TOY, reacts="toy",
                              tooltip="Points of the preset")
    toy_flips: list = setting([], "flipped points", group=TOY, reacts="toy", widget="hidden", length=(0, 120),
                              range=(0, 119), check=_flips_check, depends=("toy_points",),
                              tooltip="The points whose labels are flipped (click a point to flip it)")


@dataclass(frozen=True)
class ToyRequest:
    preset: str
    n: int
    flips: tuple
    seed: int


def compute_toy(req: ToyRequest) -> dict:
    pts, labels = rl.toy_preset(req.preset, req.n, seed=req.seed)
    labels = labels.copy()
    for i in req.flips:
        labels[i] = 1 - labels[i]
    fit = rl.fit_toy(pts, labels, seed=req.seed)
    return {"points": pts, "labels": labels, "fit": fit}


class RunHistory:
    """What the runs have delivered: per-step training accuracy, loss and weight norm; the measured test
    accuracies; the latest steps to fit."""

    def __init__(self) -> None:
        self.init: rl.RLInit | None = None
        self.steps: list = []
        self.train: list = []
        self.loss: list = []
        self.wnorm: list = []
        self.test_steps: list = []
        self.test: list = []
        self.fit_step: np.ndarray | None = None
        self.last_step = -1

    def add(self, s: rl.RLStep) -> None:
        if s.init is not None:
            self.init = s.init
        self.steps.append(s.step)
        self.train.append(s.train_acc)
        self.loss.append(s.loss)
        self.wnorm.append(s.wnorm)
        if s.test_acc is not None:
            self.test_steps.append(s.step)
            self.test.append(s.test_acc)
        self.fit_step = s.fit_step
        self.last_step = s.step


class RandomLabelsLab(SingleRunLab):
    key = "random-labels"
    state_cls = RandomLabelsState
    title = "Random labels: networks that fit noise"
    actions = (Action("restart", "Restart the runs (Space)", "restart", group=TRAIN,
                      tooltip="Train every fraction again from the initialization",
                      scene="start the runs again from the initialization"),
               Action("clear_flips", "Unflip every point", "clear_flips", group=TOY,
                      tooltip="Every toy point back to its preset's label", scene="unflip every toy point"),
               Action("reset", "Reset (R)", "reset", button=False, scene="stop the runs and clear the plots"))
    hint = "Every fraction reaches 100% training accuracy; watch the clean test accuracy. Click a toy point to flip it"
    help = ("<h3>Random labels</h3>"
            "<p>Zhang, Bengio, Hardt, Recht and Vinyals (2017): a network big enough fits <b>any</b> labelling of "
            "its training set, even uniformly random labels, with no change to the architecture or the optimizer: "
            "training accuracy reaches 100% while the accuracy on clean test labels falls to chance. So the "
            "capacity of the model class (what it <i>can</i> fit) cannot by itself explain why it generalizes on "
            "real labels: the same networks, the same training, fit both.</p>"
            "<p>Here one MLP per corruption fraction trains by full-batch Adam or GD (the same initialization, "
            "batched in one child process). A fraction f replaces that fraction of the training labels by "
            "uniformly random classes, drawn once and kept fixed. Plots: training accuracy, clean test accuracy "
            "(the dashed line is chance), the steps to 100% training accuracy against f (more noise, longer "
            "fits), and the weight norm ‖w‖ (noise needs the weights to travel farther).</p>"
            "<p>The 2D toy: a 2-64-64-1 relu MLP fits two-class points in the plane. Click a point to flip its "
            "label: the refit decision boundary (the filled regions, the white contour) contorts to take it in — "
            "memorization, in a picture.</p>")

    def __init__(self, device: str = "cpu", parent=None, restore: bool = True, start: bool = True,
                 runner_factory=None) -> None:
        super().__init__(device, parent, restore, start, runner_factory)
        self.hist = RunHistory()
        self._told: set[int] = set()
        self.run_fractions: list[float] = []
        self.finished = False
        self.reason = ""
        self.toy: dict | None = None
        self._build_views()
        self.make_form()
        self.toy_worker = LatestJobWorker(compute_toy, self)
        self.toy_worker.result.connect(self._on_toy)
        self.toy_worker.failed.connect(lambda req, text: self.report_failure(
            errorlog.report("The 2D toy's fit failed", text)))
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.timeout.connect(self.draw)
        if start:
            self.start()

    # ----------------------------------------------------------------------------- building
    def _build_views(self) -> None:
        self.banner = Banner()
        self.caption = caption()

        def legend(plot):
            return plot.addLegend(offset=(-8, -8), labelTextSize="8pt", brush=(20, 22, 28, 200))

        self.train_plot = dark_plot("training accuracy (on the corrupted labels)", x="step", y="accuracy",
                                    tooltip="Every fraction reaches 100%: the network fits the noise")
        self.test_plot = dark_plot("clean test accuracy", x="step", y="accuracy",
                                   tooltip="Accuracy on clean test labels, measured every k steps: it falls to "
                                           "chance (dashed) as the fraction grows")
        self.fit_plot = dark_plot("steps to 100% training accuracy", x="corruption fraction", y="steps",
                                  tooltip="The first step each run fits its training labels (open: not yet, "
                                          "drawn at the current step). Click a point to pick out its run in "
                                          "every plot; click it again to show them all")
        self.norm_plot = dark_plot("weight norm ‖w‖", x="step", y="‖w‖",
                                   tooltip="The Euclidean norm of all weights and biases of each run")
        for plot in (self.train_plot, self.test_plot, self.fit_plot, self.norm_plot):
            plot.setTitle(plot.getPlotItem().titleLabel.text, color="#c9d1d9", size="10pt")
        for plot in (self.train_plot, self.test_plot):
            plot.setYRange(0, 1.02)
        self.train_legend = legend(self.train_plot)
        self.test_legend = legend(self.test_plot)
        self.chance_line = self.test_plot.plot(pen=pg.mkPen("#ffffff80", width=1.2, style=Qt.PenStyle.DashLine))
        self.fit_line = self.fit_plot.plot(pen=pg.mkPen("#ffffff60", width=1.2))
        self.fit_pts = pg.ScatterPlotItem(size=11)
        self.fit_pts.sigClicked.connect(self._on_fit_clicked)
        self.fit_plot.addItem(self.fit_pts)
        self.highlighted: int | None = None  # the run picked out in every plot (an index into run_fractions)
        self.fit_plot.setXRange(-0.03, 1.03)
        for plot in (self.train_plot, self.test_plot, self.fit_plot, self.norm_plot):
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)
        self.train_curves: list = []
        self.test_curves: list = []
        self.norm_curves: list = []
        # the 2D toy
        self.toy_plot = dark_plot("2D toy: click a point to flip its label", x="x₁", y="x₂",
                                  tooltip="A 2-64-64-1 relu MLP fitted by full-batch Adam to the points; the "
                                          "filled regions are its predicted classes, the white line its decision "
                                          "boundary; flipped points are ringed")
        self.toy_plot.setTitle(self.toy_plot.getPlotItem().titleLabel.text, color="#c9d1d9", size="10pt")
        self.toy_plot.setAspectLocked(True)
        e = rl.TOY_EXTENT
        self.toy_plot.setRange(xRange=(-e, e), yRange=(-e, e), padding=0)
        self.toy_plot.setMouseEnabled(False, False)
        self.toy_image = pg.ImageItem(axisOrder="row-major")
        lut = np.array([pg.mkColor(CLASS_COLORS[0]).getRgb(), (20, 22, 28, 255),
                        pg.mkColor(CLASS_COLORS[1]).getRgb()], float)
        t = np.linspace(0, 1, 256)[:, None]
        ramp = np.where(t < 0.5, lut[0] + (lut[1] - lut[0]) * (t / 0.5), lut[1] + (lut[2] - lut[1]) * ((t - 0.5) / 0.5))
        ramp[:, :3] = 0.45 * ramp[:, :3] + 0.55 * 20  # dimmed: the points stand out
        self.toy_image.setLookupTable(ramp.astype(np.uint8))
        self.toy_plot.addItem(self.toy_image)
        self.toy_iso = pg.IsocurveItem(level=0.0, pen=pg.mkPen("#ffffff", width=2))
        self.toy_iso.setParentItem(self.toy_image)
        self.toy_pts = pg.ScatterPlotItem(size=10)
        self.toy_pts.setZValue(20)
        self.toy_plot.addItem(self.toy_pts)
        self.toy_note = caption()
        self.toy_plot.scene().sigMouseClicked.connect(self._on_toy_click)

        grid = splitter("v", splitter("h", self.train_plot, self.test_plot),
                        splitter("h", self.fit_plot, self.norm_plot))
        right = splitter("v", self.toy_plot, self.toy_note, stretch=(1, 0))
        body = splitter("h", grid, right, stretch=(3, 2))
        body.setSizes([1000, 600])
        lab_layout(self, self.banner, self.caption, body=body)

    def _build_run_items(self) -> None:
        for plot, items in ((self.train_plot, self.train_curves), (self.test_plot, self.test_curves),
                            (self.norm_plot, self.norm_curves)):
            for c in items:
                plot.removeItem(c)
            items.clear()
        for lg in (self.train_legend, self.test_legend):
            lg.clear()
        for f in self.run_fractions:
            pen = pg.mkPen(fraction_color(f), width=2)
            name = f"f = {f:g}"
            self.train_curves.append(self.train_plot.plot(pen=pen, name=name))
            self.test_curves.append(self.test_plot.plot(pen=pen, name=name, symbol="o", symbolSize=3,
                                                        symbolBrush=fraction_color(f), symbolPen=None))
            self.norm_curves.append(self.norm_plot.plot(pen=pen))
        self.highlighted = None

    def highlight(self, k: int | None) -> None:
        """Pick out run ``k`` in the three curve plots (drawn wider, the others faded), or none (None)."""
        self.highlighted = k
        for j, f in enumerate(self.run_fractions):
            color = pg.mkColor(fraction_color(f))
            if k is not None and j != k:
                color.setAlpha(55)
            pen = pg.mkPen(color, width=3.2 if j == k else 2)
            for curves in (self.train_curves, self.test_curves, self.norm_curves):
                curves[j].setPen(pen)
                curves[j].setZValue(10 if j == k else 0)
            self.test_curves[j].setSymbolBrush(color)

    def _on_fit_clicked(self, _item, points, _ev=None) -> None:
        if not len(points) or not self.run_fractions:
            return
        x = points[0].pos().x()
        k = int(np.argmin([abs(f - x) for f in self.run_fractions]))
        self.highlight(None if self.highlighted == k else k)

    # ----------------------------------------------------------------------------- the contract
    def views(self) -> dict:
        return {"2d": self}

    def active_view(self):
        return self.test_plot

    def has_drawn(self) -> bool:
        return self.hist.init is not None and self.toy is not None

    def busy(self) -> bool:
        return self.toy_worker.busy or self.toy_worker.pending()

    def start(self) -> None:
        self.request_toy()
        self.restart()

    def reset(self) -> None:
        self.stop_run()
        self.finished = True
        self._clear()
        self.status.emit({"running": False})

    def flush(self) -> None:
        if self._redraw.isActive() or self.hist.steps:
            self.draw()

    def shutdown(self) -> None:
        self._redraw.stop()
        self.banner.stop()
        self.toy_worker.stop(wait_ms=0)
        super().shutdown()

    # ----------------------------------------------------------------------------- settings
    def fractions(self) -> list[float]:
        s = self.state
        return sorted({round(float(f), 4) for f in [s.fraction, *s.companions]})

    def data_args(self) -> dict:
        s = self.state
        return dict(kind=s.data, n=s.n, classes=s.classes if s.data == "gaussian" else 10, data_seed=s.data_seed)

    def react_runs(self, changed: dict) -> None:
        self.restart()

    def react_toy(self, changed: dict) -> None:
        if "toy_points" in changed or "toy_preset" in changed:
            s = self.state
            keep = [i for i in s.toy_flips if i < s.toy_points] if "toy_preset" not in changed else []
            if keep != list(s.toy_flips):
                self.settings.update({"toy_flips": keep}, "lab")
                return  # (the update reacts again)
        self.request_toy()

    def show_error(self, text: str) -> None:
        self.banner.show_text(text)
        self.message.emit(text, True)

    # ----------------------------------------------------------------------------- running
    def restart(self) -> bool:
        """New runs with the current settings; False (and a message) when they do not make any."""
        s = self.state
        fr = self.fractions()
        try:
            rl.make_data(**{**self.data_args(), "n_test": 10})
            rl.check_run(fr, s.widths, s.optimizer, s.lr, s.steps)
        except ValueError as exc:
            self.show_error(str(exc))
            return False
        self.stop_run()
        self.run_fractions = fr
        self._clear()
        self.finished = False
        self.reason = ""
        self.start_run("models.random_labels:fit_run",
                       dict(data=self.data_args(), fractions=fr, widths=[int(w) for w in s.widths],
                            optimizer=s.optimizer, lr=float(s.lr), steps=int(s.steps),
                            eval_every=int(s.eval_every), seed=int(s.seed), device=self.device),
                       {"batch": "_on_batch", "done": "end_of_run", "failed": "_on_failed"}, start_paused=self.paused)
        return True

    def _clear(self) -> None:
        self._redraw.stop()
        self.hist = RunHistory()
        self._told: set[int] = set()  # runs whose divergence was reported
        self._build_run_items()
        self.fit_pts.setData([], [])
        self.fit_line.setData([], [])
        self.chance_line.setData([], [])
        s = self.state
        self.caption.setText(f"<b>{len(self.run_fractions)} runs</b> side by side, corruption fractions "
                             f"{', '.join(f'{f:g}' for f in self.run_fractions)}: MLP "
                             f"{'-'.join(str(int(w)) for w in s.widths)}, full-batch {s.optimizer}, "
                             f"lr {s.lr:g}, n = {s.n}")

    def _on_batch(self, items: list) -> None:
        for snap in items:
            self.hist.add(snap)
            self._check_diverged(snap)
        if not self._redraw.isActive():
            self._redraw.start(50)

    def _on_failed(self, text: str) -> None:
        self.run_failed("Random-labels training failed", text)

    def _check_diverged(self, snap) -> None:
        """A run whose loss is no longer finite, or 1000 times its first, has diverged: said once, in words (the
        runs go on; the curves show what happened)."""
        first = self.hist.loss[0]
        for k, loss in enumerate(snap.loss):
            if k in self._told or not (not np.isfinite(loss) or loss > 1e3 * max(float(first[k]), 1e-12)):
                continue
            self._told.add(k)
            s = self.state
            hint = "about 1e−3 suits Adam" if s.optimizer == "adam" else "about 0.5 suits gradient descent"
            self.message.emit(f"the run with f = {self.run_fractions[k]:g} diverged at step {snap.step}: its loss "
                              f"grew to {float(loss):.3g} — the learning rate {s.lr:g} is too large ({hint})", True)

    # ----------------------------------------------------------------------------- drawing
    def draw(self) -> None:
        self._redraw.stop()
        h = self.hist
        if h.init is None or not h.steps:
            return
        steps = np.array(h.steps, float)
        train, wn = np.array(h.train), np.array(h.wnorm)
        for k in range(len(self.run_fractions)):
            self.train_curves[k].setData(steps, train[:, k])
            self.norm_curves[k].setData(steps, wn[:, k])
        if h.test:
            ts, test = np.array(h.test_steps, float), np.array(h.test)
            for k in range(len(self.run_fractions)):
                self.test_curves[k].setData(ts, test[:, k])
        self.chance_line.setData([0, max(steps[-1], 1)], [h.init.chance] * 2)
        fr = np.array(self.run_fractions)
        fit = h.fit_step.astype(float)
        done = fit >= 0
        y = np.where(done, fit, h.last_step)
        self.fit_pts.setData([{"pos": (f, v), "brush": pg.mkBrush(fraction_color(f)) if ok else pg.mkBrush(0, 0, 0, 0),
                               "pen": pg.mkPen(fraction_color(f), width=2), "symbol": "o" if ok else "t"}
                              for f, v, ok in zip(fr, y, done)])
        self.fit_line.setData(fr[done], fit[done])
        last_test = h.test[-1] if h.test else None
        words = []
        for k, f in enumerate(self.run_fractions):
            part = f"f = {f:g}: " + (f"fit at step {int(fit[k])}" if done[k] else f"{100 * train[-1, k]:.0f}% fit")
            if last_test is not None:
                part += f", test {100 * last_test[k]:.1f}%"
            words.append(part)
        self.fit_plot.setTitle("steps to 100% training accuracy", color="#c9d1d9", size="10pt")
        self.test_plot.setTitle(f"clean test accuracy ({h.init.n_test} points, chance {h.init.chance:.2f})",
                                color="#c9d1d9", size="10pt")
        self.toy_note.setText(self.toy_words())
        self.status.emit({"step": h.last_step, "loss": float(np.mean(h.loss[-1]))})
        self._run_words = " · ".join(words)
        self.caption.setText(self.caption.text().split("<br>")[0] + "<br>" + self._run_words)

    # ----------------------------------------------------------------------------- the 2D toy
    def request_toy(self) -> None:
        s = self.state
        self.toy_worker.submit(ToyRequest(s.toy_preset, int(s.toy_points), tuple(sorted(int(i) for i in s.toy_flips)),
                                          0))

    def _on_toy(self, req: ToyRequest, out: dict) -> None:
        s = self.state
        if req != ToyRequest(s.toy_preset, int(s.toy_points), tuple(sorted(int(i) for i in s.toy_flips)), 0):
            return  # (a newer request is on its way)
        self.toy = out
        fit = out["fit"]
        e = rl.TOY_DRAWN_EXTENT
        self.toy_image.setImage(np.tanh(fit.values / 2.0), levels=(-1, 1))
        self.toy_image.setRect(-e, -e, 2 * e, 2 * e)
        # (the isocurve is drawn in the image's own pixel coordinates, its parent's transform)
        self.toy_iso.setData(fit.values.T)
        pts, labels = out["points"], out["labels"]
        flips = set(req.flips)
        spots = []
        for i, (p, y) in enumerate(zip(pts, labels)):
            ring = i in flips
            spots.append({"pos": (float(p[0]), float(p[1])), "data": i, "brush": pg.mkBrush(CLASS_COLORS[int(y)]),
                          "pen": pg.mkPen("#ffffff", width=2.5) if ring else pg.mkPen("#000000", width=1),
                          "size": 13 if ring else 10, "symbol": "s" if ring else "o"})
        self.toy_pts.setData(spots)
        self.toy_note.setText(self.toy_words())

    def toy_words(self) -> str:
        if self.toy is None:
            return ""
        fit, n = self.toy["fit"], len(self.toy["labels"])
        flips = len(self.state.toy_flips)
        wrong = int((fit.pred != self.toy["labels"]).sum())
        return (f"{n} points, {flips} flipped (squares): " +
                (f"fitted in {fit.steps} steps" if fit.fitted else f"{wrong} still misclassified after {fit.steps} "
                 "steps"))

    def toy_point_scene_pos(self, i: int):
        """Where toy point i is on the scene (for clicks)."""
        p = self.toy["points"][i]
        from PySide6.QtCore import QPointF

        return self.toy_plot.getPlotItem().vb.mapViewToScene(QPointF(float(p[0]), float(p[1])))

    def _on_toy_click(self, ev) -> None:
        if self.toy is None or ev.button() != Qt.MouseButton.LeftButton:
            return
        vb = self.toy_plot.getPlotItem().vb
        if not vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        pts = self.toy["points"]
        scene = np.array([[q.x(), q.y()] for q in (vb.mapViewToScene(pg.Point(float(a), float(b))) for a, b in pts)])
        d = np.hypot(scene[:, 0] - ev.scenePos().x(), scene[:, 1] - ev.scenePos().y())
        i = int(np.argmin(d))
        if d[i] <= PICK_PIXELS:
            self.flip(i)

    def flip(self, i: int) -> None:
        """Flip toy point i's label (again: back) and refit."""
        flips = set(int(v) for v in self.state.toy_flips) ^ {int(i)}
        self.set_setting("toy_flips", sorted(flips))

    def clear_flips(self) -> None:
        self.set_setting("toy_flips", [])
