"""Lab "netmanifold": the solution manifold of a real network, too big to draw (THEORY.md section 1).

An MLP 1-h-1 with p = 3h + 1 parameters fits n < p points exactly on a (p - n)-dimensional manifold. Left:
the loss on a random plane through a solution (the white star). Right: a walk on the manifold (tangent step,
then Gauss-Newton back onto F(w) = y), its samples in their first three principal components, coloured by
distance from the start. Below: every sample's function passes through the data yet differs between the
points, and the loss along the straight segment from the start to the latest sample rises: M is not convex.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from visualizer import runs
from visualizer import settings as store
from visualizer.labs.base import Lab
from visualizer.views.plane import PlaneView
from visualizer.views.scene3d import Scene3D
from visualizer.workers import LatestJobWorker, ProcessRunner

SETTINGS_KEY = "labs/netmanifold"


@dataclass
class NetState:
    width: int = 16
    n_points: int = 10
    seed: int = 0
    steps: int = 300
    step_size: float = 0.08
    slice_extent: float = 1.5
    slice_mode: str = "random"

    @classmethod
    def from_dict(cls, d: dict) -> NetState:
        s = cls()
        for f in dataclasses.fields(cls):
            if f.name in d:
                try:
                    v = type(getattr(s, f.name))(d[f.name])
                    if isinstance(v, float) and not math.isfinite(v):
                        continue
                    setattr(s, f.name, v)
                except (TypeError, ValueError):
                    pass
        s.width = min(max(s.width, 2), 256)
        s.n_points = min(max(s.n_points, 1), 3 * s.width)
        s.step_size = min(max(s.step_size, 1e-4), 10.0)
        return s


def compute_slice(req: tuple) -> dict:
    """Loss on a random plane through the solution, and along the segment to the latest sample (worker)."""
    from models import netmanifold as nm

    width, n, seed, w_star, w_last, extent, mode = req
    net = nm.MLP1D(width)
    x, y = nm.make_data(n, seed)
    stars = np.zeros((1, 2))
    center = w_star
    if mode == "three":
        # the plane spanned by three solutions (w* and two from other initializations)
        w_b = nm.find_solution(net, x, y, seed + 5)
        w_c = nm.find_solution(net, x, y, seed + 9)
        d1, d2, stars = nm.plane_through(w_star, w_b, w_c)
        mid = stars.mean(0)
        center = w_star + mid[0] * d1 + mid[1] * d2
        stars = stars - mid
        extent = 1.35 * float(np.abs(stars).max())
    else:
        d1, d2 = nm.random_plane(net.n_params, seed + 11)
    t, grid = nm.slice_loss(net, x, y, center, d1, d2, extent, 121)
    ts, seg = nm.segment_loss(net, x, y, w_star, w_last)
    out = {"t": t, "grid": grid, "ts": ts, "seg": seg, "stars": stars, "mode": mode, "shell": None}
    if mode == "cube":
        # a random 3D affine subspace through w*: the loss on a 41^3 grid and its shell L = level
        from models import toy3d

        q, _ = np.linalg.qr(np.random.default_rng(seed + 11).normal(size=(net.n_params, 3)))
        r = 41
        tt = np.linspace(-extent, extent, r)
        a, b, c = np.meshgrid(tt, tt, tt, indexing="ij")
        w = w_star + a[..., None] * q[:, 0] + b[..., None] * q[:, 1] + c[..., None] * q[:, 2]
        cube = nm.loss(net, w, x, y)
        level = 1e-3 * float(cube.max())
        out["shell"] = toy3d.level_mesh(cube, toy3d.GridSpec3(extent, r), level)
        out["shell_level"] = level
    return out


class NetManifoldLab(Lab):
    key = "netmanifold"
    state_cls = NetState
    scene_actions = {"walk": "find a new solution and start walking on the manifold (after setting changes)",
                     "reset": "stop the walk and clear the samples"}
    title = "Inside a network's solution manifold"

    def __init__(self, device: str = "cpu", parent=None, restore: bool = True, start: bool = True) -> None:
        super().__init__(parent)
        self.device = device
        self.state = NetState.from_dict(store.load_json(SETTINGS_KEY)) if restore else NetState()
        self.paused = False
        self.runner: ProcessRunner | None = None
        self.samples: list = []
        self.reason = ""
        self.landscape = None
        self.cmap = pg.colormap.get("viridis")
        self._build_views()
        self._build_controls()
        self.worker = LatestJobWorker(compute_slice, self)
        self.worker.result.connect(self._on_slice)
        self.worker.failed.connect(lambda req, text: self.message.emit(f"Slice failed: {text}", True))
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.timeout.connect(self._draw_samples)
        if start:
            self.start()

    def _build_views(self) -> None:
        self.plane = PlaneView(self.cmap, x_label="a (direction 1)", y_label="b (direction 2)", zero_legend=False)
        self.plane.plot.setTitle("L(w* + a d₁ + b d₂): a random plane through a solution", color="#c9d1d9",
                                 size="10pt")
        self.scene = Scene3D(self.cmap, labels=("PC₁", "PC₂", "PC₃"))
        self.scene.surface.setVisible(False)
        self.scene.frame_drawn.connect(self.frame_drawn)
        self.cloud = gl.GLScatterPlotItem(size=8, pxMode=True)
        self.path = gl.GLLinePlotItem(color=(1, 1, 1, 0.35), width=1.5, antialias=True, glOptions="translucent")
        self.scene.addItem(self.path)
        self.scene.addItem(self.cloud)
        self.scene.set_home((0.0, 0.0, 0.0), 8.0, elevation=25, azimuth=-50)
        self.shell_item = None
        self.fit_plot = pg.PlotWidget(title="f(x; w) of the latest samples: all pass through the data")
        self.fit_plot.setBackground("#14161c")
        self.fit_plot.setLabel("bottom", "x")
        self.data_item = pg.ScatterPlotItem(size=10, brush=pg.mkBrush("#ffb703"), pen=pg.mkPen("#000"))
        self.fit_plot.addItem(self.data_item)
        self.fit_curves = [self.fit_plot.plot(pen=pg.mkPen(c, width=1.4)) for c in
                           ("#4cc9f0", "#b8f35a", "#ff4d6d", "#c77dff", "#ffffff")]
        self.seg_plot = pg.PlotWidget(title="loss along the straight segment from w* to the latest sample")
        self.seg_plot.setBackground("#14161c")
        self.seg_plot.setLabel("bottom", "t")
        self.seg_curve = self.seg_plot.plot(pen=pg.mkPen("#ff9f1c", width=2))
        self.caption = QLabel()
        self.caption.setStyleSheet("color:#c9d1d9;padding:2px 6px;")
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self.plane)
        top.addWidget(self.scene.container)
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(self.fit_plot)
        bottom.addWidget(self.seg_plot)
        outer = QSplitter(Qt.Orientation.Vertical)
        outer.addWidget(top)
        outer.addWidget(bottom)
        outer.setStretchFactor(0, 3)
        outer.setStretchFactor(1, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.caption)
        lay.addWidget(outer, 1)

    def _build_controls(self) -> None:
        s = self.state
        panel = QWidget()
        v = QVBoxLayout(panel)
        g = QGroupBox("Network and data")
        f = QFormLayout(g)
        self.width_spin = QSpinBox()
        self.width_spin.setRange(2, 256)
        self.width_spin.setValue(s.width)
        self.width_spin.setToolTip("Hidden units h of the MLP 1-h-1 (tanh): p = 3h + 1 parameters")
        f.addRow("width h", self.width_spin)
        self.n_spin = QSpinBox()
        self.n_spin.setRange(1, 200)
        self.n_spin.setValue(s.n_points)
        f.addRow("data points n", self.n_spin)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 10**6)
        self.seed_spin.setValue(s.seed)
        f.addRow("seed", self.seed_spin)
        v.addWidget(g)
        g = QGroupBox("Walk on the manifold")
        f = QFormLayout(g)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100000)
        self.steps_spin.setValue(s.steps)
        f.addRow("steps", self.steps_spin)
        self.step_spin = QDoubleSpinBox()
        self.step_spin.setDecimals(4)
        self.step_spin.setRange(1e-4, 10.0)
        self.step_spin.setValue(s.step_size)
        self.step_spin.setToolTip("Length of each tangent move before projecting back onto F(w) = y")
        f.addRow("step length", self.step_spin)
        self.slice_combo = QComboBox()
        self.slice_combo.addItem("random plane through w*", "random")
        self.slice_combo.addItem("plane through three solutions", "three")
        self.slice_combo.addItem("random 3D subspace through w* (loss shell in 3D)", "cube")
        self.slice_combo.setCurrentIndex(max(0, ["random", "three", "cube"].index(s.slice_mode)
                                             if s.slice_mode in ("random", "three", "cube") else 0))
        self.slice_combo.setToolTip("A random plane meets M only at w* (M has dimension p − n, the plane 2); "
                                    "the plane through three solutions shows three zeros and the ridges between")
        self.slice_combo.currentIndexChanged.connect(self._on_slice_mode)
        f.addRow("slice", self.slice_combo)
        btn = QPushButton("New solution and walk (Space)")
        btn.clicked.connect(self.restart)
        f.addRow(btn)
        v.addWidget(g)
        self.info = QLabel()
        self.info.setWordWrap(True)
        v.addWidget(self.info)
        v.addStretch(1)
        self._controls = panel
        for name, w in (("width", self.width_spin), ("n_points", self.n_spin), ("seed", self.seed_spin),
                        ("steps", self.steps_spin), ("step_size", self.step_spin), ("slice_mode", self.slice_combo)):
            self.bind(name, w)

    def controls(self) -> QWidget:
        return self._controls

    def help_html(self) -> str:
        return ("<h3>Inside a network's solution manifold</h3><p>An MLP with p parameters fitting n &lt; p points "
                "exactly has a (p − n)-dimensional solution set M = {w : F(w) = y}. The walk steps in the tangent "
                "space (the null space of DF) and projects back with Gauss-Newton, w ← w − Jᵀ(JJᵀ)⁻¹(F(w) − y). "
                "The measured tangent dimension (p minus the numerical rank of DF) should equal p − n.</p>"
                "<p>The loss along a straight segment between two solutions rises: the loss is not convex across M."
                "</p>")

    def active_view(self) -> QWidget:
        return self.scene

    # ----------------------------------------------------------------------------- running
    def start(self) -> None:
        self.restart()

    def restart(self) -> None:
        s = self.state
        s.width, s.n_points, s.seed = self.width_spin.value(), self.n_spin.value(), self.seed_spin.value()
        s.steps, s.step_size = self.steps_spin.value(), float(self.step_spin.value())
        store.save_json(SETTINGS_KEY, dataclasses.asdict(s))
        if s.n_points >= 3 * s.width + 1:
            self.message.emit(f"n = {s.n_points} ≥ p = {3 * s.width + 1}: no manifold to walk on "
                              "(add hidden units or remove points)", True)
            return
        self._stop_runner()
        self.samples = []
        self.reason = ""
        self.runner = runs.RUNNER_FACTORY("models.netmanifold:walk_run",
                                    dict(width=s.width, n_points=s.n_points, seed=s.seed, steps=s.steps,
                                         step_size=s.step_size), start_paused=self.paused)
        self.runner.batch.connect(self._on_batch)
        self.runner.done.connect(self._on_done)
        self.runner.failed.connect(lambda text: self.message.emit("Walk failed: " + text.splitlines()[0], True))
        self.runner.start()
        p = 3 * s.width + 1
        self.caption.setText(f"<b>MLP 1-{s.width}-1</b>: p = {p} parameters, n = {s.n_points} points → "
                             f"M has dimension p − n = {p - s.n_points}")

    def _stop_runner(self) -> None:
        if self.runner is not None:
            self.runner.abort()
            self.runner = None

    def _on_batch(self, items: list) -> None:
        self.samples.extend(items)
        if not self._redraw.isActive():
            self._redraw.start(60)

    def _on_done(self, reason) -> None:
        self.reason = reason or ""
        if self.reason and self.reason != "completed":
            self.message.emit(f"Walk {self.reason}", True)
        self._draw_samples()

    def _draw_samples(self) -> None:
        if not self.samples:
            return
        from models import netmanifold as nm

        s = self.state
        w = np.array([k.w for k in self.samples])
        coords, var = nm.pca3(w)
        # an SVD's signs are arbitrary: orient each axis along the walk's progress, so the picture does not
        # flip as samples arrive
        order = np.arange(len(coords)) - 0.5 * (len(coords) - 1)
        signs = np.sign(order @ coords)
        coords = coords * np.where(signs == 0, 1.0, signs)
        dist = np.linalg.norm(w - w[0], axis=1)
        colors = self.cmap.map(dist / max(dist.max(), 1e-12), mode="float")
        span = max(float(np.abs(coords).max()), 1e-9)
        self.cloud.setData(pos=coords / span * 2.0, color=colors)
        self.path.setData(pos=coords / span * 2.0)
        last = self.samples[-1]
        p = 3 * s.width + 1
        self.info.setText(f"samples: {len(self.samples)} · max loss on the walk: "
                          f"{max(k.loss for k in self.samples):.1e}<br>tangent dimension measured: "
                          f"<b>{last.tangent_dim}</b> (p − n = {p - s.n_points})<br>"
                          f"PCA variance of the first three components: {', '.join(f'{v:.2f}' for v in var)}")
        self.status.emit({"step": last.step, "loss": last.loss})
        net = nm.MLP1D(s.width)
        x, y = nm.make_data(s.n_points, s.seed)
        self.data_item.setData(x, y)
        xs = np.linspace(-2.6, 2.6, 200)
        picks = self.samples[:: max(1, len(self.samples) // 4)][-4:] + [last]
        import torch

        for item, smp in zip(self.fit_curves, picks):
            with torch.no_grad():
                f = net.forward(torch.as_tensor(smp.w), torch.as_tensor(xs)).numpy()
            item.setData(xs, f)
        self.worker.submit((s.width, s.n_points, s.seed, self.samples[0].w, last.w, s.slice_extent, s.slice_mode))

    def _on_slice_mode(self) -> None:
        self.state.slice_mode = self.slice_combo.currentData()
        store.save_json(SETTINGS_KEY, dataclasses.asdict(self.state))
        self._draw_samples()

    def _on_slice(self, req, out: dict) -> None:
        self.landscape = out
        lv = out["grid"]
        top = math.log10(max(float(lv.max()), 1e-300))
        values = np.log10(np.maximum(lv, 10 ** (top - 8)))
        self.plane.set_field(out["t"], out["t"], values, (top - 8, top), "log₁₀ L")
        self.plane.set_zero_set([], out["stars"])
        self.seg_curve.setData(out["ts"], out["seg"])
        if self.shell_item is not None:
            self.scene.removeItem(self.shell_item)
            self.shell_item = None
        cube = out["mode"] == "cube"
        self.cloud.setVisible(not cube)
        self.path.setVisible(not cube)
        if cube and out["shell"] is not None and not out["shell"].empty:
            from pyqtgraph.opengl.MeshData import MeshData

            from visualizer.labs.manifold3d import lit_colors

            sh = out["shell"]
            span = max(float(np.abs(sh.vertices).max()), 1e-9)
            md = MeshData(vertexes=sh.vertices / span * 2.0, faces=sh.faces,
                          vertexColors=lit_colors(sh.normals, (0.35, 0.75, 1.0, 0.6), len(sh.vertices)))
            self.shell_item = gl.GLMeshItem(meshdata=md, smooth=True, computeNormals=False, glOptions="translucent")
            self.scene.addItem(self.shell_item)
            self.info.setText(self.info.text() + f"<br>3D view: the shell L = {out['shell_level']:.2g} in a random "
                              "3D subspace through w*: with n ≥ 3 it meets M only at w*, so the shell closes around it")

    # ----------------------------------------------------------------------------- Lab API
    def toggle_run(self) -> None:
        if self.runner is None or not self.runner.isRunning():
            self.restart()
            return
        self.paused = not self.paused
        (self.runner.pause if self.paused else self.runner.resume)()

    def single_step(self) -> None:
        self.paused = True
        if self.runner is None or not self.runner.isRunning():
            self.restart()
        self.runner.step_once()

    def reset(self) -> None:
        self._stop_runner()
        self.samples = []
        self.cloud.setData(pos=np.zeros((0, 3)))
        self.path.setData(pos=np.zeros((0, 3)))

    # ----------------------------------------------------------------------------- recording
    def scene_action(self, action: str, start=None) -> None:
        if action == "walk":
            self.restart()
        else:
            super().scene_action(action, start)

    def runners(self) -> list:
        return [self.runner] if self.runner is not None and self.runner.isRunning() else []

    def busy(self) -> bool:
        return self.worker.busy or self.worker._has_pending

    def flush(self) -> None:
        if self._redraw.isActive():
            self._redraw.stop()
            self._draw_samples()

    def shutdown(self) -> None:
        self._redraw.stop()
        self._stop_runner()
        self.worker.stop()
