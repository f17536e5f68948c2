"""Lab "netmanifold": the solution manifold of a real network, too big to draw (THEORY.md section 1).

An MLP 1-h-1 with p = 3h + 1 parameters fits n < p points exactly on a (p - n)-dimensional manifold. Left:
the loss on a random plane through a solution (the white star). Right: a walk on the manifold (tangent step,
then Gauss-Newton back onto F(w) = y), its samples in their first three principal components, coloured by
distance from the start. Below: every sample's function passes through the data yet differs between the
points, and the loss along the straight segment from the start to the latest sample rises: M is not convex.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel

from visualizer import errorlog
from visualizer.labs.base import Action, SingleRunLab
from visualizer.labs.schema import setting
from visualizer.views.common import caption, dark_plot, lab_layout, lit_colors, splitter
from visualizer.views.plane import PlaneView
from visualizer.views.scene3d import Scene3D
from visualizer.workers import LatestJobWorker

#: while a walk streams, the loss along the segment to its latest sample is recomputed at most this often
SLICE_PACE_S = 0.5
NET, WALK, SLICE = "Network and data", "Walk on the manifold", "Slice through w*"


@dataclass
class NetState:
    """The network, its data and the walk are used by the next walk; the slice is redrawn for the current one."""

    width: int = setting(16, "width h", range=(2, 256), group=NET, commit="finish",
                         tooltip="Hidden units h of the MLP 1-h-1 (tanh): p = 3h + 1 parameters")
    # n < p = 3 width + 1: there is a manifold to walk on (a smaller width moves n down into its range)
    n_points: int = setting(10, "data points n", range=lambda s: (1, 3 * s.width), depends=("width",), group=NET,
                            tooltip="Points fitted exactly: at most 3h, so that n < p and the solutions form a "
                                    "manifold of dimension p − n")
    seed: int = setting(0, "seed", range=(0, 10**6), group=NET, tooltip="The data and the first solution")
    steps: int = setting(300, "steps", range=(1, 100000), group=WALK, tooltip="Steps of the walk")
    step_size: float = setting(0.08, "step length", range=(1e-4, 10.0), decimals=4, log=True, group=WALK,
                               tooltip="Length of each tangent move before projecting back onto F(w) = y")
    slice_mode: str = setting("random", "slice", group=SLICE, reacts="slice",
                              choices=(("random", "random plane through w*"),
                                       ("three", "plane through three solutions"),
                                       ("cube", "random 3D subspace through w* (loss shell in 3D)")),
                              tooltip="A random plane meets M only at w* (M has dimension p − n, the plane 2); "
                                      "the plane through three solutions shows three zeros and the ridges between")
    slice_extent: float = setting(1.5, "extent", range=(1e-3, 1e3), decimals=3, log=True, group=SLICE,
                                  reacts="slice", commit="finish", enabled_if=lambda s: s.slice_mode != "three",
                                  tooltip="Half-width of the plane (and of the 3D subspace) around w*, in parameter "
                                          "units; the plane through three solutions frames them itself")


def slice_plane(width: int, n: int, seed: int, w_star: np.ndarray, extent: float, mode: str) -> dict:
    """The loss on a plane (or, for 'cube', also a 3D subspace) through the solution w* (worker)."""
    from models import netmanifold as nm

    net = nm.MLP1D(width)
    x, y = nm.make_data(n, seed)
    stars = np.zeros((1, 2))
    center = w_star
    if mode == "three":
        # the plane spanned by three solutions (w* and two from other initializations)
        # bounded: a search that finds nothing is reported ("Slice failed: NoSolutionFound ...") within a minute
        w_b = nm.find_solution(net, x, y, seed + 5, max_seconds=30.0)
        w_c = nm.find_solution(net, x, y, seed + 9, max_seconds=30.0)
        d1, d2, stars = nm.plane_through(w_star, w_b, w_c)
        mid = stars.mean(0)
        center = w_star + mid[0] * d1 + mid[1] * d2
        stars = stars - mid
        extent = 1.35 * float(np.abs(stars).max())
    else:
        d1, d2 = nm.random_plane(net.n_params, seed + 11)
    t, grid = nm.slice_loss(net, x, y, center, d1, d2, extent, 121)
    out = {"t": t, "grid": grid, "stars": stars, "mode": mode, "shell": None}
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


class SliceJob:
    """The slice worker's job: the plane through w* and the loss along the segment to the latest sample, for
    ``req`` = (run, width, n, seed, w_star, w_last, extent, mode). The plane depends only on w* and the slice
    settings and is kept: while a walk streams only the segment is recomputed (a "three" plane finds two
    more solutions, a "cube" evaluates 41^3 networks)."""

    def __init__(self) -> None:
        self._key = None
        self._plane: dict | None = None

    def __call__(self, req: tuple) -> dict:
        from models import netmanifold as nm

        _run, width, n, seed, w_star, w_last, extent, mode = req
        key = (width, n, seed, w_star.tobytes(), extent, mode)
        if key != self._key or self._plane is None:
            self._plane, self._key = slice_plane(width, n, seed, w_star, extent, mode), key
        x, y = nm.make_data(n, seed)
        ts, seg = nm.segment_loss(nm.MLP1D(width), x, y, w_star, w_last)
        return {**self._plane, "ts": ts, "seg": seg}


class SampleRows:
    """The walk's parameter vectors in fixed-size blocks, filled on the GUI thread as samples arrive (O(new
    samples)); a block is never moved or rewritten, so a worker can read the rows filled so far while more
    are added."""

    BLOCK = 4096

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.n = 0

    def append(self, w: np.ndarray) -> None:
        if self.n == self.BLOCK * len(self.blocks):
            self.blocks.append(np.empty((self.BLOCK, len(w))))
        self.blocks[-1][self.n % self.BLOCK] = w
        self.n += 1

    def view(self) -> tuple:
        """The rows filled so far, as block views (O(blocks))."""
        if not self.blocks:
            return ()
        return (*self.blocks[:-1], self.blocks[-1][: self.n - self.BLOCK * (len(self.blocks) - 1)])


@dataclass(frozen=True)
class CloudRequest:
    run: int
    n: int
    blocks: tuple  # SampleRows.view(): n rows of p parameters
    width: int
    stops: tuple  # the colour map's (positions, float RGBA colours)


FIT_XS = np.linspace(-2.6, 2.6, 200)


def compute_cloud(req: CloudRequest) -> dict:
    """The samples on their first three principal components (axes oriented along the walk), their colours
    (distance from the start), and the fits f(x; w) of five of them (worker)."""
    import torch

    from models import netmanifold as nm

    w = np.concatenate(req.blocks)
    coords, var = nm.pca3(w)
    # an SVD's signs are arbitrary: orient each axis along the walk's progress, so the picture does not flip
    # as samples arrive
    order = np.arange(len(coords)) - 0.5 * (len(coords) - 1)
    signs = np.sign(order @ coords)
    coords = coords * np.where(signs == 0, 1.0, signs)
    dist = np.linalg.norm(w - w[0], axis=1)
    t = dist / max(float(dist.max()), 1e-12)
    pos, colors = req.stops
    rgba = np.stack([np.interp(t, pos, colors[:, i]) for i in range(colors.shape[1])], axis=1)
    span = max(float(np.abs(coords).max()), 1e-9)
    picks = list(range(0, len(w), max(1, len(w) // 4)))[-4:] + [len(w) - 1]
    with torch.no_grad():
        fits = nm.MLP1D(req.width).forward(torch.as_tensor(w[picks]), torch.as_tensor(FIT_XS)).numpy()
    return {"run": req.run, "n": req.n, "pos": (coords / span * 2.0).astype(np.float32),
            "colors": rgba.astype(np.float32), "var": var, "fits": fits}


class NetManifoldLab(SingleRunLab):
    key = "netmanifold"
    state_cls = NetState
    title = "Inside a network's solution manifold"
    actions = (Action("walk", "New solution and walk (Space)", "restart", group=WALK,
                      tooltip="Find a new solution with the settings above and walk on the manifold from it",
                      scene="find a new solution and start walking on the manifold (after setting changes)"),
               Action("reset", "Reset (R)", "reset", button=False, scene="stop the walk and clear the samples"))
    hint = "Space finds a solution and walks on the manifold; the slice and the cloud follow"
    help = ("<h3>Inside a network's solution manifold</h3><p>An MLP with p parameters fitting n &lt; p points "
            "exactly has a (p − n)-dimensional solution set M = {w : F(w) = y}. The walk steps in the tangent "
            "space (the null space of DF) and projects back with Gauss-Newton, w ← w − Jᵀ(JJᵀ)⁻¹(F(w) − y). "
            "The measured tangent dimension (p minus the numerical rank of DF) should equal p − n.</p>"
            "<p>The loss along a straight segment between two solutions rises: the loss is not convex across M.</p>")

    def __init__(self, device: str = "cpu", parent=None, restore: bool = True, start: bool = True,
                 runner_factory=None) -> None:
        super().__init__(device, parent, restore, start, runner_factory)
        self.samples: list = []
        self.rows = SampleRows()  # the samples' parameter vectors, for the cloud worker
        self.reason = ""  # why the last walk ended: "completed", "failed", "aborted" or the walk's own reason
        self.landscape = None
        self.cmap = pg.colormap.get("viridis")
        self._stops = tuple(np.asarray(a, dtype=np.float64) for a in self.cmap.getStops("float"))
        s = self.state
        self._run = 0  # bumped by every new walk and reset: results computed for an older one are not drawn
        self._run_net = (s.width, s.n_points, s.seed)  # the network and data of the samples shown
        self._run_steps = s.steps
        self._walk_over = True
        self._max_loss = -math.inf
        self._cloud_inflight = self._cloud_dirty = False
        self._cloud_var = None
        self._slice_inflight = False
        self._slice_next = None  # the newest slice request, sent when the one being computed is done
        self._slice_sent = None  # (key, number of samples, clock) of the last slice request
        self._shell_note = ""
        self._clock = time.monotonic
        self._build_views()
        self.make_form()  # width and slice_extent commit when typing ends (20 never passes through width 2)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.form.add_row(WALK, self.info)
        # two workers, each with at most one request at a time (the next waits here): the slice (plane, loss
        # shell, segment) and the cloud (PCA of all samples, their colours and fits); the GUI only draws
        self.worker = LatestJobWorker(SliceJob(), self)
        self.worker.result.connect(self._on_slice)
        self.worker.failed.connect(self._on_slice_failed)
        self.cloud_worker = LatestJobWorker(compute_cloud, self)
        self.cloud_worker.result.connect(self._on_cloud)
        self.cloud_worker.failed.connect(self._on_cloud_failed)
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.timeout.connect(self._draw_samples)
        self._slice_timer = QTimer(self)
        self._slice_timer.setSingleShot(True)
        self._slice_timer.timeout.connect(self._maybe_submit_slice)
        if start:
            self.start()

    def _build_views(self) -> None:
        self.plane = PlaneView(self.cmap, x_label="a (direction 1)", y_label="b (direction 2)", zero_legend=False)
        self._title_plane("random")
        self.plane.setToolTip("The loss L(w* + a d₁ + b d₂) on a plane through the solution w* (log scale)")
        self.plane.legend.setVisible(False)  # (no entries here: an empty box otherwise)
        self.scene = Scene3D(self.cmap, labels=("PC₁", "PC₂", "PC₃"))
        self.scene.surface.setVisible(False)
        self.scene.frame_drawn.connect(self.frame_drawn)
        self.cloud = gl.GLScatterPlotItem(size=8, pxMode=True)
        self.path = gl.GLLinePlotItem(color=(1, 1, 1, 0.35), width=1.5, antialias=True, glOptions="translucent")
        self.scene.addItem(self.path)
        self.scene.addItem(self.cloud)
        self.scene.set_home((0.0, 0.0, 0.0), 8.0, elevation=25, azimuth=-50)
        self.shell_item = None
        self.fit_plot = dark_plot("f(x; w) of the latest samples", x="x",
                                  tooltip="Every sample passes through the data (yellow), yet they differ between")
        self.data_item = pg.ScatterPlotItem(size=10, brush=pg.mkBrush("#ffb703"), pen=pg.mkPen("#000"))
        self.fit_plot.addItem(self.data_item)
        self.fit_curves = [self.fit_plot.plot(pen=pg.mkPen(c, width=1.4)) for c in
                           ("#4cc9f0", "#b8f35a", "#ff4d6d", "#c77dff", "#ffffff")]
        self.seg_plot = dark_plot("loss along w* → latest sample", x="t",
                                  tooltip="The loss along the straight segment from the start w* to the latest "
                                          "sample: it rises between two solutions, M is not convex")
        self.seg_curve = self.seg_plot.plot(pen=pg.mkPen("#ff9f1c", width=2))
        self.caption = caption()
        body = splitter("v", splitter("h", self.plane, self.scene.container),
                        splitter("h", self.fit_plot, self.seg_plot), stretch=(3, 1))
        lab_layout(self, self.caption, body=body)

    def _title_plane(self, mode: str) -> None:
        text = "L on the plane through three solutions" if mode == "three" else "L on a random plane through w*"
        self.plane.plot.setTitle(text, color="#c9d1d9", size="10pt")

    def views(self) -> dict:
        return {"3d": self.scene, "2d": self.plane}

    def active_view(self):
        return self.scene

    def has_drawn(self) -> bool:
        return self.landscape is not None

    # ----------------------------------------------------------------------------- settings
    def react_none(self, changed: dict) -> None:
        """Network and walk settings: the next walk uses them. A smaller width that pulled n down says so."""
        s, old_n = self.state, changed.get("n_points")
        if "width" in changed and old_n is not None and old_n > 3 * s.width:
            self.message.emit(f"data points n = {old_n} → {s.n_points}: h = {s.width} hidden units fit at most "
                              f"3h = {3 * s.width} points on a manifold (n < p = {3 * s.width + 1})", False)

    def react_slice(self, changed: dict) -> None:
        """Another slice, or its extent: recomputed for the walk shown, at once."""
        self._maybe_submit_slice()

    # ----------------------------------------------------------------------------- running
    def start(self) -> None:
        self.restart()

    def restart(self) -> bool:
        """A new solution and a walk from it with the current settings; False (and a message) when there is no
        manifold to walk on (the settings keep n < p; this guards a state written around them)."""
        s = self.state
        p = 3 * s.width + 1
        if s.n_points >= p:
            self.message.emit(f"n = {s.n_points} ≥ p = {p}: no manifold to walk on "
                              "(add hidden units or remove points)", True)
            return False
        self.stop_run()
        self._new_run()
        self._run_net, self._run_steps = (s.width, s.n_points, s.seed), s.steps
        from models import netmanifold as nm

        self.data_item.setData(*nm.make_data(s.n_points, s.seed))
        self.caption.setText(f"<b>MLP 1-{s.width}-1</b>: p = {p} parameters, n = {s.n_points} points → "
                             f"M has dimension p − n = {p - s.n_points}")
        self._walk_over = False
        self.start_run("models.netmanifold:walk_run",
                       dict(width=s.width, n_points=s.n_points, seed=s.seed, steps=s.steps, step_size=s.step_size),
                       {"batch": "_on_batch", "done": "_on_done", "failed": "_on_failed"}, start_paused=self.paused)
        return True

    def run_live(self) -> bool:
        """The walk's end counts, not only its runner's (a finished walk's process may still be closing)."""
        return not self._walk_over and super().run_live()

    def _new_run(self) -> None:
        """Forget the samples; what is still being computed for them will not be drawn."""
        self._run += 1
        self.samples = []
        self.rows = SampleRows()
        self.reason = ""
        self._max_loss = -math.inf
        self._cloud_dirty = False
        self._cloud_var = None
        self._slice_next = None
        self._slice_sent = None
        self._slice_timer.stop()
        self._redraw.stop()

    def _on_batch(self, items: list) -> None:
        """New samples of the walk (from its relay): O(new samples) here, the workers compute the rest."""
        if not items:
            return
        for smp in items:
            self.rows.append(np.asarray(smp.w, dtype=np.float64))
        self._max_loss = max(self._max_loss, max(float(k.loss) for k in items))
        self.samples.extend(items)
        self._cloud_dirty = True
        self._submit_cloud()
        self._maybe_submit_slice()
        if not self._redraw.isActive():
            self._redraw.start(60)

    def _end_walk(self) -> None:
        self._walk_over = True
        self._maybe_submit_slice(final=True)  # the segment to the last sample, at once
        self._redraw.stop()
        self._draw_samples()
        self.status.emit({"running": False})

    def _on_done(self, result) -> None:
        # decided from the samples, not from the wording of the walk's reason: a walk completed when its
        # last step arrived (the engine's walk yields steps 0..steps, or returns early with its reason)
        completed = bool(self.samples) and self.samples[-1].step >= self._run_steps
        if completed:
            self.reason = "completed"
        elif result is None:  # aborted
            self.reason = "aborted"
        else:
            self.reason = str(result)
            self.report_failure(errorlog.report("Walk", self.reason))
        self._end_walk()

    def _on_failed(self, text: str) -> None:
        self.reason = "failed"
        self.report_failure(errorlog.report("Walk failed", text))
        self._end_walk()


    # ----------------------------------------------------------------------------- drawing
    def _draw_samples(self) -> None:
        """The paced redraw: O(1) (the text, the status, and whether the slice is due)."""
        if not self.samples:
            return
        last = self.samples[-1]
        self._update_info()
        self.status.emit({"step": last.step, "loss": last.loss})
        self._maybe_submit_slice()

    def _update_info(self) -> None:
        if not self.samples:
            return
        width, n, _seed = self._run_net
        p = 3 * width + 1
        lines = [f"samples: {len(self.samples)} · max loss on the walk: {self._max_loss:.1e}",
                 f"tangent dimension measured: <b>{self.samples[-1].tangent_dim}</b> (p − n = {p - n})"]
        if self._cloud_var is not None:
            lines.append("PCA variance of the first three components: "
                         + ", ".join(f"{v:.2f}" for v in self._cloud_var))
        if self._shell_note:
            lines.append(self._shell_note)
        self.info.setText("<br>".join(lines))

    def _submit_cloud(self) -> None:
        """One cloud request at a time, for all samples so far; samples that arrive meanwhile go with the next
        one (sent when this one's result arrives)."""
        if self._cloud_inflight or not self._cloud_dirty or not self.samples:
            return
        self._cloud_dirty = False
        self._cloud_inflight = True
        self.cloud_worker.submit(CloudRequest(self._run, self.rows.n, self.rows.view(), self._run_net[0],
                                              self._stops))

    def _on_cloud(self, req: CloudRequest, out: dict) -> None:
        self._cloud_inflight = False
        if out["run"] == self._run:
            self.cloud.setData(pos=out["pos"], color=out["colors"])
            self.path.setData(pos=out["pos"])
            fits = out["fits"]
            for k, item in enumerate(self.fit_curves):
                if k < len(fits):
                    item.setData(FIT_XS, fits[k])
                else:
                    item.setData([], [])
            self._cloud_var = out["var"]
            self._update_info()
        self._submit_cloud()

    def _on_cloud_failed(self, req: CloudRequest, text: str) -> None:
        self._cloud_inflight = False
        if req.run == self._run:
            self.report_failure(errorlog.report("Drawing the walk failed", text))
        self._submit_cloud()

    def _slice_key(self) -> tuple:
        s = self.state
        return (self._run, *self._run_net, s.slice_extent, s.slice_mode)

    def _maybe_submit_slice(self, final: bool = False) -> None:
        """Ask for the slice when what it shows changed: at once for a new walk or another slice, at most every
        SLICE_PACE_S for the segment to the latest sample while the walk streams, at once when it ends."""
        if not self.samples:
            return
        key, n = self._slice_key(), len(self.samples)
        sent = self._slice_sent
        if sent is not None and sent[0] == key:
            if sent[1] == n:
                self._slice_timer.stop()
                return
            wait = SLICE_PACE_S - (self._clock() - sent[2])
            if wait > 0 and not final:
                if not self._slice_timer.isActive():
                    self._slice_timer.start(int(1000 * wait) + 1)
                return
        self._slice_timer.stop()
        self._slice_sent = (key, n, self._clock())
        width, n_points, seed = self._run_net
        s = self.state
        req = (self._run, width, n_points, seed, self.samples[0].w, self.samples[-1].w, s.slice_extent,
               s.slice_mode)
        if self._slice_inflight:
            self._slice_next = req
        else:
            self._slice_inflight = True
            self.worker.submit(req)

    def _slice_done(self) -> None:
        self._slice_inflight = False
        req, self._slice_next = self._slice_next, None
        if req is not None:
            self._slice_inflight = True
            self.worker.submit(req)

    def _on_slice_failed(self, req, text: str) -> None:
        self._slice_done()
        if req[0] == self._run:
            self.report_failure(errorlog.report("Slice failed", text))

    def _on_slice(self, req, out: dict) -> None:
        self._slice_done()
        if req[0] != self._run:
            return
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
        self._title_plane(out["mode"])
        cube = out["mode"] == "cube"
        self.cloud.setVisible(not cube)
        self.path.setVisible(not cube)
        self._shell_note = ""
        if cube and out["shell"] is not None and not out["shell"].empty:
            from pyqtgraph.opengl.MeshData import MeshData

            sh = out["shell"]
            span = max(float(np.abs(sh.vertices).max()), 1e-9)
            md = MeshData(vertexes=sh.vertices / span * 2.0, faces=sh.faces,
                          vertexColors=lit_colors(sh.normals, (0.35, 0.75, 1.0, 0.6), len(sh.vertices)))
            self.shell_item = gl.GLMeshItem(meshdata=md, smooth=True, computeNormals=False, glOptions="translucent")
            self.scene.addItem(self.shell_item)
            self._shell_note = (f"3D view: the shell L = {out['shell_level']:.2g} in a random 3D subspace through "
                                "w*: with n ≥ 3 it meets M only at w*, so the shell closes around it")
        self._update_info()

    # ----------------------------------------------------------------------------- Lab API
    def reset(self) -> None:
        self.stop_run()
        self._new_run()
        self.cloud.setData(pos=np.zeros((0, 3)))
        self.path.setData(pos=np.zeros((0, 3)))
        self.status.emit({"running": False})

    def busy(self) -> bool:
        """True from a request for the cloud or the slice until its result is drawn (or samples wait for the
        next cloud request): a recorder's frame shows every sample delivered."""
        return (self._cloud_inflight or self._cloud_dirty or self._slice_inflight or self._slice_next is not None
                or any(w.busy or w.pending() for w in (self.worker, self.cloud_worker)))

    def flush(self) -> None:
        if self._redraw.isActive():
            self._redraw.stop()
            self._draw_samples()

    def shutdown(self) -> None:
        self._redraw.stop()
        self._slice_timer.stop()
        self.worker.stop()
        self.cloud_worker.stop()
        super().shutdown()  # the walk, and the settings saved
