"""Lab "surface": random-direction loss surfaces of a trained toy network (THEORY.md section 6).

Train an MLP on a two-dimensional toy set (its training streams from a child process into the loss curve),
then see L(theta* + a d1 + b d2) on a plane: filter-normalized random directions, the PCA plane of the
training path, or the plane through the initialization, a midpoint and the final weights. The surface
arrives coarse first and refines. The training path is projected onto the plane and drawn honestly: at its
true loss or at the surface's value below it (toggle), with its distance from the plane reported.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QLineEdit, QMessageBox, QProgressBar, QStackedWidget, QWidget

from visualizer.labs.base import Action, SingleRunLab
from visualizer.labs.schema import setting
from visualizer.views.common import caption, dark_plot, lab_layout, save_atomically, splitter
from visualizer.views.plane import PlaneView
from visualizer.views.scene3d import Scene3D
from visualizer.workers import GeneratorRunner, LatestJobWorker, RunnerRelay

DATA = ("spirals", "moons", "circles", "xor", "blobs", "digits")
NET_FIELDS = ("hidden", "activation", "parameterization", "residual", "data", "n", "noise", "seed", "network")
TRAIN = "Used by the next Train."
SURFACE = "Used by the next surface (Recompute the surface)."


def parse_hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.lower().replace(" ", "").split("x") if w)
    except ValueError:
        raise ValueError(f"hidden layers '{text}': write widths like 64x64") from None
    if not widths or min(widths) < 1 or max(widths) > 1024 or len(widths) > 8:
        raise ValueError(f"hidden layers '{text}': 1 to 8 layers of 1 to 1024 units")
    return widths


def _hidden_refused(value: str, state) -> str | None:
    try:
        parse_hidden(value)
    except ValueError as exc:
        return str(exc)
    return None


def _cnn_needs_digits(value, state) -> str | None:
    """The check of network and of data (``state`` holds both as they would be): the CNN takes only digits."""
    if state.network == "cnn" and state.data != "digits":
        return "the small CNN takes 8x8 images: choose the digits data set first"
    return None


def _same(*names: str) -> tuple:
    return tuple((n, n) for n in names)


def _in(group: str):
    return lambda default, label, **spec: setting(default, label, group=group, **spec)


_net, _train, _plane = _in("Data and network"), _in("Training"), _in("Plane and grid")


@dataclass
class SurfaceState:
    data: str = _net("spirals", "data", choices=_same(*DATA), check=_cnn_needs_digits, depends=("network",),
                     tooltip=f"The training set (the small CNN takes only digits). {TRAIN}")
    n: int = _net(1000, "points", range=(10, 20000), tooltip=TRAIN)
    noise: float = _net(0.1, "noise", range=(0.0, 2.0), step=0.05, decimals=2, tooltip=TRAIN)
    network: str = _net("mlp", "network", choices=(("mlp", "MLP"), ("cnn", "small CNN (8x8 digits)")),
                        check=_cnn_needs_digits, depends=("data",),
                        tooltip=f"The CNN takes scikit-learn's 8x8 digits (10 classes, cross-entropy). {TRAIN}")
    hidden: str = _net("32x32", "hidden layers", check=_hidden_refused, commit="finish",
                       tooltip=f"Hidden layer widths, e.g. 64x64 for an MLP 2-64-64-1. {TRAIN}")
    activation: str = _net("tanh", "activation", choices=_same("tanh", "relu", "gelu"), tooltip=TRAIN)
    parameterization: str = _net("standard", "weight scaling", choices=(("standard", "standard"), ("ntk", "NTK")),
                                 tooltip="The parameterization: standard, or NTK (weights N(0, 1), each layer's "
                                 f"output scaled by 1/√fan-in). {TRAIN}")
    residual: bool = _net(False, "residual connections", tooltip=TRAIN)
    optimizer: str = _train("adam", "optimizer", choices=_same("adam", "gd", "momentum"), tooltip=TRAIN)
    lr: float = _train(0.01, "learning rate", range=(1e-5, 10.0), decimals=5, log=True, tooltip=TRAIN)
    steps: int = _train(400, "steps", range=(1, 100000), tooltip=TRAIN)
    seed: int = _train(0, "seed", range=(0, 10**6), tooltip="Seeds the data, the initialization and the "
                       f"directions: same seed, same plane. {TRAIN}")
    directions: str = _plane("filter", "directions", choices=(
        ("filter", "filter-normalized random"), ("pca", "PCA of the training path"),
        ("three", "through init, midpoint, final")), tooltip="Filter-normalized random directions, the PCA "
        "plane of the training path, or the plane through the initialization, a midpoint and the final weights. "
        f"{SURFACE}")
    orthogonal: bool = _plane(True, "orthogonalize the random directions", tooltip=SURFACE,
                              enabled_if=lambda s: s.directions == "filter")
    include_bias: bool = _plane(False, "give biases a direction too", tooltip=SURFACE,
                                enabled_if=lambda s: s.directions == "filter")
    grid: int = _plane(31, "grid points", range=(5, 201), tooltip=f"Grid points a side. {SURFACE}")
    extent: float = _plane(1.0, "range ±", range=(0.01, 10.0), step=0.1, decimals=2,
                           tooltip=f"How far the plane reaches along each direction. {SURFACE}")
    log_scale: bool = _plane(True, "log scale", reacts="redraw", tooltip="Heights and colours as log₁₀ L")
    true_height: bool = _plane(True, "path at its true loss", reacts="path",
                               tooltip="On: each checkpoint at its own loss (it is off the plane). Off: at the "
                               "surface's value below it, as if it lay in the plane")
    live_pca: bool = _plane(True, "live PCA plane while training", enabled_if=lambda s: s.directions == "pca",
                            tooltip="With PCA directions, the plane follows the checkpoints as they arrive (a "
                            "coarse grid, aligned between updates so the picture does not flip)")


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """The values computed so far, gaps (NaN) filled from the nearest computed point, for drawing only."""
    v = values.copy()
    if np.isnan(v).any():
        ok = ~np.isnan(v)
        idx = np.argwhere(ok)
        if len(idx):
            from scipy.spatial import cKDTree

            _, nearest = cKDTree(idx).query(np.argwhere(~ok))
            v[~ok] = v[tuple(idx[nearest].T)]
    return v


def to_display(values: np.ndarray, log_scale: bool, floor: float | None = None) -> tuple[np.ndarray, tuple]:
    """Values as drawn (log10 with a floor at the smallest finite value, or as they are) and their range."""
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if log_scale:
        floor = np.log10(max(lo, 1e-12)) if floor is None else floor
        return np.log10(np.maximum(values, 10**floor)), (floor, np.log10(max(hi, 10 ** floor * 1.0001)))
    return values, (lo, hi if hi > lo else lo + 1)


def contours_on(x: np.ndarray, y: np.ndarray, shown: np.ndarray, count: int = 12) -> list[np.ndarray]:
    """Contour polylines of a field ``shown[i, j]`` at ``(x[i], y[j])``, in those coordinates: traced on the
    grid's indices and mapped through each axis (any length and spacing); they stop at gaps (NaN)."""
    from skimage.measure import find_contours

    from models.toy2d import contour_levels

    ix, iy = np.arange(len(x)), np.arange(len(y))
    return [np.column_stack([np.interp(c[:, 0], ix, x), np.interp(c[:, 1], iy, y)])
            for level in contour_levels(shown, count) for c in find_contours(shown, level)]


def prepare_display(req: tuple) -> dict:
    """What the views draw for one grid (a worker thread): the display transform, contour lines and the
    surface's value under each point of the projected path. The GUI thread only uploads it.

    ``req``: (x, y, values, log_scale, coords, fill), the axes ascending, ``values[i, j]`` at ``(x[i], y[j])``
    (a 1D curve: y is one point, values (nx, 1)). A value that is not a finite number is a gap: drawn as a hole,
    unless ``fill`` (a coarse level of a computation in progress, a preview) fills it from the nearest point."""
    from scipy.interpolate import RegularGridInterpolator

    x, y, values, log_scale, coords, fill = req
    one_d = len(y) == 1
    with_path = coords is not None and len(coords) and not one_d
    gaps = np.where(np.isfinite(values), values, np.nan)
    filled = fill_gaps(gaps) if fill or with_path else gaps  # the path's heights need a value everywhere
    shown, rng = to_display(filled if fill else gaps, log_scale)
    contours = [] if one_d else contours_on(x, y, shown)
    under_path = None
    if with_path:
        f = RegularGridInterpolator((x, y), filled, bounds_error=False, fill_value=None)
        under_path = f(coords)
    return {"x": x, "y": y, "one_d": one_d, "shown": shown, "range": rng, "log": log_scale, "contours": contours,
            "coords": coords, "under_path": under_path, "values": values}


def surface_for_views(path: str, surf) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """A file's surface as the views draw it, on its own coordinates: ``(x, y, values, note)`` with both axes
    ascending and ``values[i, j]`` the file's value at ``(x[i], y[j])`` (nothing resampled or filled; a 1D file:
    y is its single 0 and values (nx, 1)); the note says, for the caption, what the views show of it.

    A descending axis (the reference writes 1:-1:N so) is turned around together with its values, so the value
    at each (a, b) of the file is drawn at that (a, b) and the axis labels are the file's coordinates.
    Refused (SurfaceFileError, nothing changed in the lab): coordinates the views cannot draw."""
    from models.surface_io import SurfaceFileError

    name = "train_loss" if "train_loss" in surf.values else next(iter(surf.values))
    values = surf.values[name]
    x, y = np.asarray(surf.x, dtype=np.float64), np.asarray(surf.y, dtype=np.float64)
    with np.errstate(over="ignore"):
        spans = np.array([x[-1] - x[0], y[-1] - y[0]])
    if not np.isfinite(spans).all():
        raise SurfaceFileError(f"{path}: its coordinates span too wide a range to draw")
    notes = []
    if x[0] > x[-1]:
        x, values = x[::-1], values[::-1, :]
        notes.append("a")
    if y[0] > y[-1]:
        y, values = y[::-1], values[:, ::-1]
        notes.append("b")
    note = f" ({' and '.join(notes)} descending in the file, drawn ascending)" if notes else ""
    missing = int((~np.isfinite(values)).sum())
    if missing:
        note += f" · {missing} of {values.size} points missing (drawn as gaps)"
    if name != "train_loss":
        note += f" · {name}"
    return x, y, np.ascontiguousarray(values, dtype=np.float64), note


def read_for_views(path: str):
    """``(surface, x, y, values, note)`` of the file at ``path``: read (``read_surface``) and made ready for the
    views (``surface_for_views``). A file that is not there, or a direction file given for a surface, is named
    as such; any other refusal is the reader's SurfaceFileError."""
    from models.surface_io import SurfaceFileError, read_surface

    if not os.path.exists(path):
        raise SurfaceFileError(f"{path}: no such file")
    if _is_direction_file(path):
        raise SurfaceFileError(f"{path}: a direction file (xdirection, ydirection), not a surface file: open the "
                               "surface file whose dir_file names it")
    surf = read_surface(path)
    return (surf, *surface_for_views(path, surf))


def _is_direction_file(path: str) -> bool:
    """The file has the groups of a direction file and no surface coordinates (only its links are looked at:
    nothing is followed or read)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.id.links.exists(b"xdirection") and not f.id.links.exists(b"xcoordinates")
    except Exception:  # not HDF5 at all: the reader says what it is
        return False


def parameter_shapes(trained: dict) -> list[tuple[int, ...]]:
    """The shapes of the trained network's parameter tensors in ``parameters()`` order: a direction file holds
    one dataset per tensor. The network is built again from its settings (or the user's factory called)."""
    if trained["user_model"]:
        from models.surface_job import from_factory

        model = from_factory(trained["user_model"]).model
    else:
        from models.nets import build_net, make_data

        x, y = make_data(trained["data"], trained["n"], trained["noise"], trained["seed"])
        model = build_net(trained["network"], parse_hidden(trained["hidden"]), trained["activation"],
                          trained["parameterization"], trained["residual"], x, y, trained["seed"])
    return [tuple(p.shape) for p in model.parameters()]


def with_shapes(job, trained: dict | None):
    """The surface job's items, first ('shapes', parameter_shapes(trained)) when ``trained`` is given (once a
    training: a worker's job, so the GUI thread never builds a network)."""
    if trained is not None:
        yield ("shapes", parameter_shapes(trained))
    return (yield from job)


class SurfaceLab(SingleRunLab):
    """The training is the lab's run (``runner``); the surface job is a second, GUI-process runner."""

    key = "surface"
    title = "Loss surfaces of a trained network"
    state_cls = SurfaceState
    hint = "Space trains the network from its seed; the surface around the trained weights follows"
    help = ("<h3>Random-direction loss surfaces</h3><p>L(θ* + a d₁ + b d₂) around the trained weights θ*. "
            "Random directions are Gaussian and <b>filter-normalized</b>: each output unit's row of d is "
            "rescaled to the norm of the same row of θ* (biases get zero direction), which makes surfaces of "
            "different networks comparable (Li et al. 2018). A training path hardly lies in a random plane: "
            "use the PCA plane of the checkpoints' offsets θᵢ − θ* to draw it. The path is drawn at its true "
            "loss; its distance from the plane is reported.</p><p><b>Files</b>: a surface file, written here or by "
            "the reference loss-landscape code, is drawn on its own coordinates (any grid, any range); points it "
            "lacks (the reference's −1) are gaps, counted in the caption; a 1D file is drawn as its curve. Save "
            "writes the reference's layout, with the directions in a file beside it.</p>")
    actions = (
        Action("train", "Train and plot (Space)", "train", group="Training",
               tooltip="Train from the seed with the settings above; the surface follows",
               scene="train the network from its seed (after setting changes); the surface follows"),
        Action("surface", "Recompute the surface", "compute_surface", group="Plane and grid",
               tooltip="The surface around the trained weights with the plane and grid settings above",
               scene="compute the surface again with the current direction and grid settings", row="recompute"),
        Action("cancel", "Cancel", "cancel_surface", group="Plane and grid",
               tooltip="Stop the surface computation: what was computed stays", row="recompute"),
        Action("reset", "Reset (R)", "reset", button=False, scene="stop training and the surface"),
        Action("save", "Save surface…", "_ask_save", group="Files",
               tooltip="HDF5 in the reference loss-landscape layout, with a direction file", row="h5"),
        Action("open", "Open surface…", "_ask_open", group="Files",
               tooltip="An HDF5 surface written here or by the reference code", row="h5"),
        Action("mesh", "Export mesh…", "_ask_mesh", group="Files", tooltip="The surface as a triangle mesh (OBJ, PLY)",
               row="export"),
        Action("data", "Export data…", "_ask_data", group="Files",
               tooltip="Surface values and the projected training path (CSV, NPZ)", row="export"),
        Action("png", "3D image…", "_ask_png", group="Files",
               tooltip="The 3D view as a PNG, rendered off screen at the image size below", row="png"),
        Action("png2d", "2D map…", "_ask_png2d", group="Files",
               tooltip="The contour map as a PNG, at the width of the image size below", row="png"),
    )

    def __init__(self, device: str = "cpu", parent=None, restore: bool = True, start: bool = True,
                 runner_factory=None, *, open_path: str | None = None, user_model: str | None = None) -> None:
        super().__init__(device, parent, restore, start, runner_factory)
        self.open_path = open_path  # a surface file to open instead of the first training
        self.user_model = user_model  # 'package.module:factory' or 'file.py:factory' from `losslab --model`
        self.surface_runner: GeneratorRunner | None = None
        self.trained: dict | None = None  # the network settings the checkpoints were trained with
        self.surface_final = False  # the full (not live) surface of the latest training is complete
        self.shown: dict | None = None  # what the views show: prepare_display's result for the latest grid
        self.opened = None  # the Surface of the file the lab shows (None: a computed surface), saved as read
        self._shapes: list[tuple] | None = None  # the trained network's parameter shapes (from its first job)
        self.refusal: QMessageBox | None = None  # the dialog of the last file refused by "Open surface…"
        self._ck_loss: list[float] = []  # the training loss at each checkpoint
        self.display_worker = LatestJobWorker(prepare_display, self)
        self.display_worker.result.connect(self._on_display)
        self.display_worker.failed.connect(self._on_display_failed)
        self.snaps: list = []
        self.checkpoints: list[np.ndarray] = []
        self.plane: dict | None = None
        #: what the views show, on its own coordinates: values[i, j] at (grid_x[i], grid_y[j]), axes ascending
        self.grid_values: np.ndarray | None = None
        self.grid_x: np.ndarray | None = None
        self.grid_y: np.ndarray | None = None
        self.grid_plane: dict | None = None  # the plane (its directions) the computed grid was evaluated on
        self.landscape = None
        self.first_grid_at: float | None = None
        self._last_live = 0
        self._last_dirs: tuple | None = None
        self.live_updates = 0
        self.cmap = pg.colormap.get("viridis")
        self._build_views()
        self._build_controls()
        if start:
            self.start()

    @property
    def trainer(self):
        """The training run (the lab's ``runner``)."""
        return self.runner

    # ----------------------------------------------------------------------------- views
    def _build_views(self) -> None:
        self.plane_view = PlaneView(self.cmap, x_label="a (direction 1)", y_label="b (direction 2)", zero_legend=False)
        self.path_key = pg.PlotDataItem(pen=pg.mkPen("#ff9f1c", width=2))  # in the legend while there is a path
        self.plane_view.plot.setTitle("L(θ* + a d₁ + b d₂)", color="#c9d1d9", size="10pt")
        self.path2d = pg.PlotCurveItem(pen=pg.mkPen("#ff9f1c", width=2))
        self.path2d.setZValue(20)
        self.plane_view.plot.addItem(self.path2d)
        self.scene = Scene3D(self.cmap, labels=("a", "b", "loss"))
        self.scene.frame_drawn.connect(self.frame_drawn)
        self.path3d = gl.GLLinePlotItem(color=(1.0, 0.62, 0.11, 1.0), width=3, antialias=True,
                                        glOptions="translucent")
        self.scene.addItem(self.path3d)
        self.loss_plot = dark_plot("training loss", x="step", log_y=True)
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen("#ff9f1c", width=1.5))
        self.line_plot = dark_plot("loss from init (α = 0) to final (α = 1)", x="α")
        self.line_curve = self.line_plot.plot(pen=pg.mkPen("#4cc9f0", width=2))
        self.dist_plot = dark_plot("checkpoints' distance from the plane", x="step",
                                   tooltip="How far each checkpoint lies from the plane drawn above: what the "
                                   "picture cannot show")
        self.dist_curve = self.dist_plot.plot(pen=pg.mkPen("#c77dff", width=2), symbol="o", symbolSize=4,
                                              symbolBrush="#c77dff")
        # a 1D file: a curve in the 2D view's place, and the 3D view steps aside (it would have nothing to show)
        self.curve_plot = dark_plot("L(θ* + a d₁) along one direction", x="a (direction 1)", y="L")
        self.curve_plot.getAxis("left").enableAutoSIPrefix(False)
        self.curve = self.curve_plot.plot(pen=pg.mkPen("#4cc9f0", width=2), symbol="o", symbolSize=5,
                                          symbolBrush="#4cc9f0", symbolPen=None, connect="finite")
        self.curve_gaps = self.curve_plot.plot(pen=None, symbol="x", symbolSize=10, symbolBrush="#ff5a5a",
                                               symbolPen=pg.mkPen("#ff5a5a", width=1.5))
        self.curve_legend = self.curve_plot.addLegend(offset=(-8, 8), labelTextColor="#dddddd",
                                                      brush=pg.mkBrush(10, 12, 16, 190))
        self.view_stack = QStackedWidget()
        self.view_stack.addWidget(self.plane_view)
        self.view_stack.addWidget(self.curve_plot)
        self.caption = caption()
        body = splitter("v", splitter("h", self.view_stack, self.scene.container),
                        splitter("h", self.loss_plot, self.line_plot, self.dist_plot), stretch=(3, 1))
        lab_layout(self, self.caption, body=body)

    def _build_controls(self) -> None:
        form = self.make_form()
        self.progress = QProgressBar()
        self.progress.setRange(0, 4)
        form.add_row("Plane and grid", self.progress, "surface")
        self.info = QLabel()
        self.info.setWordWrap(True)
        form.add_row("Plane and grid", self.info)
        self.png_size = QLineEdit("1920x1080")  # not a setting: how big the next exported image is
        self.png_size.setToolTip("Width x height of the exported image, up to 3840x2160")
        form.add_row("Files", self.png_size, "image size")

    def views(self) -> dict[str, QWidget]:
        return {"3d": self.scene, "2d": self.plane_view}

    def active_view(self) -> QWidget:
        return self.curve_plot if self.showing_curve() else self.scene

    def showing_curve(self) -> bool:
        """The views show a 1D file: its curve in the 2D view's place, no 3D view."""
        return self.view_stack.currentWidget() is self.curve_plot

    def has_drawn(self) -> bool:
        return self.shown is not None

    # ----------------------------------------------------------------------------- reactions
    def react_redraw(self, changed: dict) -> None:
        self._redraw_surface()

    def react_path(self, changed: dict) -> None:
        self._redraw_path()

    # ----------------------------------------------------------------------------- training
    def start(self) -> None:
        if self.open_path:
            path, self.open_path = self.open_path, None
            self.open_surface(path)
        else:
            self.train()

    def train(self) -> bool:
        """The Train button and the scene action: a new training from the seed (the surface follows)."""
        self.paused = False
        return self.restart()

    def restart(self) -> bool:
        """A new training with the settings (started paused when ``paused``: S with no run)."""
        self._cancel_surface()
        s = self.state
        self.snaps, self.checkpoints, self.plane, self.grid_values = [], [], None, None
        self._ck_loss, self.opened, self._shapes = [], None, None
        self.shown = None
        self.surface_final = False
        self._last_dirs = None
        self._last_live = 0
        self.live_updates = 0
        every = max(1, s.steps // 60)
        # the surface is computed later with the network these checkpoints belong to, whatever the settings
        # say by then
        self.trained = {k: getattr(s, k) for k in NET_FIELDS}
        self.trained["user_model"] = self.user_model
        if self.user_model:
            target, kwargs = "models.surface_job:user_train_run", dict(
                spec=self.user_model, optimizer=s.optimizer, lr=s.lr, steps=s.steps, every=every)
        else:
            target, kwargs = "models.nets:train_run", dict(
                hidden=parse_hidden(s.hidden), activation=s.activation, parameterization=s.parameterization,
                residual=s.residual, data=s.data, n=s.n, noise=s.noise, optimizer=s.optimizer, lr=s.lr,
                steps=s.steps, seed=s.seed, every=every, device=self.device, network=s.network)
        self._set_caption()
        self.start_run(target, kwargs, {"batch": "_on_train_batch", "done": "_on_trained",
                                        "failed": "_on_trainer_failed"}, start_paused=self.paused)
        return True

    def _set_caption(self) -> None:
        s = self.state
        if self.user_model:
            self.caption.setText(f"<b>your model</b> {self.user_model} · its own loss and data "
                                 "(the data and network controls do not apply)")
            return
        if s.network == "cnn":
            name = "small CNN (conv 1→8, conv 8→16 stride 2, linear 256→10)"
        else:
            d_in, d_out = (64, 10) if s.data == "digits" else (2, 1)
            name = f"MLP {d_in}-{s.hidden.replace('x', '-')}-{d_out} ({s.activation}, {s.parameterization}" + \
                   (", residual)" if s.residual else ")")
        loss = "cross-entropy" if s.data == "digits" else "binary cross-entropy"
        self.caption.setText(f"<b>{name}</b> · {s.data}, {s.n} points · {loss} (mean) on the full training set, "
                             "eval mode")

    def _on_trainer_failed(self, text: str) -> None:
        from visualizer.errorlog import report

        self.report_failure(report("Training failed", text))
        self.status.emit({"running": False})

    def _on_train_batch(self, items: list) -> None:
        self.snaps.extend(items)
        for k in items:
            if k.params is not None:
                self.checkpoints.append(k.params)
                self._ck_loss.append(float(k.loss))
        # the live plane follows the checkpoints (a clock of training steps, not of wall time, so a recording
        # shows the same planes every time), at most one computation at a time
        if (self.state.directions == "pca" and self.state.live_pca and len(self.checkpoints) >= 4
                and len(self.checkpoints) - self._last_live >= 6
                and (self.surface_runner is None or not self.surface_runner.isRunning())):
            self._last_live = len(self.checkpoints)
            self.compute_surface(live=True)
        stride = max(1, len(self.snaps) // 4000)  # the curve is at most a few thousand points wide
        shown = self.snaps[::stride]
        if shown[-1] is not self.snaps[-1]:
            shown = shown + [self.snaps[-1]]
        steps = np.array([k.step for k in shown])
        loss = np.maximum(np.array([k.loss for k in shown]), 1e-12)
        self.loss_curve.setData(steps, loss)
        last = self.snaps[-1]
        self.status.emit({"step": last.step, "loss": last.loss})

    def training_diverged(self) -> bool:
        """The last training stopped on a loss that is not a finite number (from the data, not a message)."""
        return bool(self.snaps) and not np.isfinite(self.snaps[-1].loss)

    def _on_trained(self, result) -> None:
        self.status.emit({"running": False})
        diverged = self.training_diverged()
        if result:
            self.message.emit(str(result), diverged)
        if len(self.checkpoints) >= 2 and not diverged:
            self.compute_surface()

    # ----------------------------------------------------------------------------- the surface
    def compute_surface(self, live: bool = False) -> None:
        if len(self.checkpoints) < 2 or self.trained is None:
            self.message.emit("Train first: the surface is drawn around the trained weights", True)
            return
        self._cancel_surface()
        s, net = self.state, self.trained
        ck = np.array(self.checkpoints, dtype=np.float64)
        kw = dict(hidden=parse_hidden(net["hidden"]), activation=net["activation"],
                  parameterization=net["parameterization"], residual=net["residual"], data=net["data"], n=net["n"],
                  noise=net["noise"], seed=net["seed"], final=ck[-1], initial=ck[0], checkpoints=ck,
                  kind=s.directions, dir_seed=net["seed"] + 100, orthogonal=s.orthogonal,
                  include_bias=s.include_bias, grid=min(s.grid, 15) if live else s.grid, extent=s.extent,
                  device=self.device, align_to=self._last_dirs, network=net["network"])
        if live:
            self.live_updates += 1
        else:
            self.surface_final = False
        from models.landscape import surface_job

        self.progress.setValue(0)
        self.first_grid_at = None
        shapes_of = dict(net) if self._shapes is None else None  # once a training: what a saved direction needs
        if net["user_model"]:
            from models.surface_job import user_surface_job

            core = {k: kw[k] for k in ("final", "initial", "checkpoints", "kind", "dir_seed", "orthogonal",
                                       "include_bias", "grid", "extent", "align_to")}
            spec = net["user_model"]
            runner = GeneratorRunner(lambda: with_shapes(user_surface_job(spec, **core), shapes_of),
                                     torch_threads=None)
        else:
            runner = GeneratorRunner(lambda: with_shapes(surface_job(**kw), shapes_of), torch_threads=None)
        self.surface_runner = runner
        self._surface_relay = RunnerRelay(self, runner, {"batch": "_on_surface_batch"}, current="surface_runner")
        self._surface_done_relay = RunnerRelay(self, runner, {"done": "_on_surface_done", "failed": "_on_surface_failed"},
                                               current="surface_runner", extra=(live,))
        runner.start()

    def _on_surface_batch(self, items: list) -> None:
        self._on_surface_items(items)  # looked up now: a test may wrap it

    def _on_surface_done(self, live: bool, result) -> None:
        if not live:
            self.surface_final = True

    def _on_surface_failed(self, live: bool, text: str) -> None:
        from visualizer.errorlog import report

        self.report_failure(report("Surface failed", text))

    def surface_ready(self) -> bool:
        """Training has ended, its full surface is computed, and the views show it."""
        return (self.surface_final and not self.busy() and self.shown is not None
                and self.shown["values"] is self.grid_values
                and (self.trainer is None or not self.trainer.isRunning()))

    def _on_surface_items(self, items: list) -> None:
        for item in items:
            if item[0] == "shapes":
                self._shapes = item[1]
            elif item[0] == "plane":
                self.plane = item[1]
                p = self.plane
                if p["kind"] == "pca":
                    self._last_dirs = (p["u"], p["v"])
                extra = ""
                if p["explained"] is not None:
                    extra = f" · PCA explained variance {p['explained'][0]:.2f}, {p['explained'][1]:.2f}"
                ck_steps = [k.step for k in self.snaps if k.params is not None][: len(p["distance"])]
                self.dist_curve.setData(ck_steps, p["distance"][: len(ck_steps)])
                self.info.setText(f"directions: {p['kind']} · cos(d₁, d₂) = {p['cosine']:.3f}{extra}<br>"
                                  f"training path: max distance from the plane {p['distance'].max():.3g} "
                                  f"(what the picture cannot show)")
            elif item[0] == "grid":
                _, stride, t, values = item
                self.grid_x, self.grid_y, self.grid_values, self.grid_plane = t, t, values, self.plane
                self.progress.setValue({8: 1, 4: 2, 2: 3, 1: 4}.get(stride, 4))
                self.landscape = {"x": t, "y": t, "values": values, "stride": stride}
                self._redraw_surface()
                if self.first_grid_at is None:
                    self.first_grid_at = time.perf_counter()
            elif item[0] == "line":
                self.line_curve.setData(item[1], item[2])

    def _redraw_surface(self) -> None:
        """Ask for the display of the latest grid (transformed, contoured off the GUI thread); only a coarse
        level of a computation in progress has its gaps filled (a preview), any other gap is drawn as one."""
        if self.grid_values is None:
            return
        coords = self.plane["coords"] if self.plane is not None else None
        fill = self.landscape["stride"] > 1
        self.display_worker.submit((self.grid_x, self.grid_y, self.grid_values, self.state.log_scale, coords, fill))

    def _on_display(self, req, out: dict) -> None:
        if out["values"] is not self.grid_values:
            return  # an older grid's: the newest one's display follows
        self.shown = out
        x, y, shown, rng = out["x"], out["y"], out["shown"], out["range"]
        label = "log₁₀ L" if out["log"] else "L"
        if out["one_d"]:
            self._show_curve(x, out["values"][:, 0], out["log"])
            return
        self.view_stack.setCurrentWidget(self.plane_view)
        self.scene.container.show()
        # a and b share a unit (a multiple of a direction): one scale for both, unless the ranges are so unlike
        # that the picture would be a sliver
        spans = sorted((float(x[-1] - x[0]), float(y[-1] - y[0])))
        self.plane_view.plot.setAspectLocked(spans[1] <= 4 * spans[0])
        self.plane_view.set_field(x, y, shown, rng, label, holes=True)
        self.plane_view.set_contours(out["contours"])
        self.scene.set_surface(x, y, shown, rng, False, rng[0])
        self._redraw_path()

    def _show_curve(self, a: np.ndarray, loss: np.ndarray, log_scale: bool) -> None:
        """A 1D file: the loss along its direction (on a log axis with the log scale), gaps left open and marked
        along the bottom of the plot."""
        self.view_stack.setCurrentWidget(self.curve_plot)
        self.scene.container.hide()
        gaps = ~np.isfinite(loss)
        shown, (lo, hi) = to_display(np.where(gaps, np.nan, loss), log_scale)
        self.curve_plot.setLogMode(y=log_scale)
        self.curve_plot.setLabel("left", "L (log scale)" if log_scale else "L")
        # the loss itself; on the log axis floored at its smallest value, as the 2D view's colours are
        self.curve.setData(a, 10**shown if log_scale else shown)
        self.curve_gaps.setData(a[gaps], np.full(int(gaps.sum()), 10**lo if log_scale else lo))
        self.curve_legend.clear()
        if gaps.any():
            self.curve_legend.addItem(self.curve_gaps, f"missing ({int(gaps.sum())} of {len(a)} points)")
        pad = 0.02 * (a[-1] - a[0])
        self.curve_plot.setXRange(a[0] - pad, a[-1] + pad, padding=0)
        # room above the curve for the legend
        self.curve_plot.setYRange(lo - 0.04 * (hi - lo), hi + 0.14 * (hi - lo), padding=0)

    def _on_display_failed(self, req, text: str) -> None:
        from visualizer.errorlog import report

        self.report_failure(report("The surface could not be drawn", text))

    def _redraw_path(self) -> None:
        """The projected path at its true loss or at the surface below it: both are at hand, nothing computed."""
        out = self.shown
        if out is None or self.plane is None or out["coords"] is not self.plane["coords"] or not self._ck_loss:
            return
        coords = self.plane["coords"]
        self.path2d.setData(coords[:, 0], coords[:, 1])
        self.plane_view.set_legend_entry("path", self.path_key, "training path (projected)", True)
        n = min(len(coords), len(self._ck_loss))
        if self.state.true_height or out["under_path"] is None:
            loss = np.asarray(self._ck_loss[:n], dtype=np.float64)
        else:
            loss = np.asarray(out["under_path"][:n], dtype=np.float64)
        floor = out["range"][0] if out["log"] else None
        shown, _ = to_display(loss, out["log"], floor)
        lo, hi = self.scene.value_range
        z = (np.clip(shown, lo, hi) - lo) / (hi - lo if hi > lo else 1.0) * self.scene.zheight
        self.path3d.setData(pos=np.column_stack([coords[:n], z + 0.01 * self.scene.zheight]))

    # ----------------------------------------------------------------------------- files
    def _ask(self, title: str, filt: str, save: bool = True) -> str | None:
        from PySide6.QtWidgets import QFileDialog

        fn = QFileDialog.getSaveFileName if save else QFileDialog.getOpenFileName
        path, _ = fn(self, title, "", filt)
        return path or None

    def _ask_save(self) -> None:
        if (p := self._ask("Save surface", "HDF5 (*.h5)")):
            self.save_surface(p)

    def _ask_open(self) -> None:
        if (p := self._ask("Open surface", "HDF5 (*.h5 *.hdf5)", save=False)):
            self.open_surface(p, dialog=True)

    def _ask_mesh(self) -> None:
        if (p := self._ask("Export mesh", "Wavefront OBJ (*.obj);;PLY (*.ply)")):
            self.export_mesh(p)

    def _ask_data(self) -> None:
        if (p := self._ask("Export data", "NumPy (*.npz);;CSV (*.csv)")):
            self.export_data(p)

    def _ask_png(self) -> None:
        if (p := self._ask("Export image", "PNG (*.png)")):
            try:
                w, h = (int(t) for t in self.png_size.text().lower().split("x"))
            except ValueError:
                self.message.emit("Image size: write WIDTHxHEIGHT, e.g. 1920x1080", True)
                return
            self.export_png(p, w, h)

    def _ask_png2d(self) -> None:
        if (p := self._ask("Export 2D map", "PNG (*.png)")):
            try:
                w = int(self.png_size.text().lower().split("x")[0])
            except ValueError:
                self.message.emit("Image size: write WIDTHxHEIGHT, e.g. 1920x1080", True)
                return
            self.export_png_2d(p, w)

    def export_png_2d(self, path: str, width: int) -> bool:
        """The 2D map (with its colour bar and path; a 1D file: its curve) at ``width`` pixels, written
        atomically."""
        from pyqtgraph.exporters import ImageExporter

        if not 64 <= width <= 7680:
            self.message.emit("Image width must be between 64 and 7680", True)
            return False
        exporter = ImageExporter(self.curve_plot.plotItem if self.showing_curve() else self.plane_view.ci)
        exporter.parameters()["width"] = width
        try:
            save_atomically(path, lambda tmp: exporter.export(toBytes=True).save(tmp, "PNG"))
        except OSError as exc:
            self.message.emit(f"Not exported: {exc}", True)
            return False
        self.message.emit(f"Exported {path}", False)
        return True

    def _need_surface(self) -> bool:
        if self.grid_values is None:
            self.message.emit("No surface yet: train, or open a surface file", True)
            return False
        return True

    def save_surface(self, path: str) -> bool:
        """What the lab shows, in the reference layout (``write_surface``: accuracies in percent, gaps as -1).
        An opened file is written as it was read: its coordinates in their own order, every array, its
        ``dir_file``. A computed surface is written on its own grid, with the directions it was evaluated on
        beside it (FILE.h5.dirs.h5, one dataset per parameter tensor), which its ``dir_file`` names. The
        direction file is written once the surface's temporary file is complete and before it is renamed: a
        failure on either leaves the old files as they were."""
        from models.surface_io import Surface, write_directions, write_surface
        from models.surface_job import DIR_SUFFIX

        if not self._need_surface():
            return False
        try:
            if self.opened is not None:
                write_surface(path, self.opened)
            else:
                dir_name = os.path.basename(path) + DIR_SUFFIX
                dir_path = os.path.join(os.path.dirname(os.path.abspath(path)), dir_name)
                d1, d2 = (self._per_tensor(self.grid_plane[k]) for k in ("u", "v"))
                write_surface(path, Surface(self.grid_x, self.grid_y, {"train_loss": self.grid_values}, dir_name),
                              before_rename=lambda: write_directions(dir_path, d1, d2))
        except OSError as exc:
            self.message.emit(f"Not saved: {exc}", True)
            return False
        self.message.emit(f"Saved {path}", False)
        return True

    def _per_tensor(self, flat: np.ndarray) -> list[np.ndarray]:
        """A flat direction cut into the network's parameter tensors (the direction file's layout)."""
        sizes = [int(np.prod(shape)) for shape in self._shapes]
        return [part.reshape(shape) for part, shape in zip(np.split(flat, np.cumsum(sizes)[:-1]), self._shapes)]

    def open_surface(self, path: str, dialog: bool = False) -> bool:
        """Open a surface file. Everything is read and checked before the lab changes anything: a file refused
        (the message names the file and what is wrong) leaves the lab showing what it showed. ``dialog`` (the
        Open button): a refusal is shown in a dialog (``refusal``), else as the lab's error message."""
        from models.limits import html_escape
        from models.surface_io import SurfaceFileError

        try:
            surf, x, y, values, note = read_for_views(path)
        except Exception as exc:
            if isinstance(exc, SurfaceFileError):
                text = str(exc)
            else:  # not the file's fault: logged, and the lab still shows what it showed
                from visualizer.errorlog import report

                text = report(f"Could not open {path}", exc)
            if dialog:
                self._show_refusal(text)
            else:
                self.report_failure(text)
            return False
        self._stop_all()
        self.snaps, self.checkpoints, self.plane, self.grid_plane = [], [], None, None
        self.trained, self._ck_loss, self.shown, self.surface_final = None, [], None, True
        self.path2d.setData([], [])
        self.path3d.setData(pos=np.zeros((0, 3)))
        self.plane_view.set_legend_entry("path", self.path_key, "training path (projected)", False)
        self.opened = surf
        self.grid_x, self.grid_y, self.grid_values = x, y, values
        self.landscape = {"x": x, "y": y, "values": values, "stride": 1}
        self._redraw_surface()
        # the caption is rich text: what comes from the file (its name, its dir_file) goes in as plain text
        dirs = f" · directions in {html_escape(surf.dir_file)}" if surf.dir_file else ""
        what = f"a 1D curve of {len(x)} points" if surf.one_d else f"a surface of {len(x)} x {len(y)} points"
        self.caption.setText(f"<b>{html_escape(path)}</b>: {what}{html_escape(note)}{dirs}")
        self.message.emit(f"Opened {path}", False)
        return True

    def _show_refusal(self, text: str) -> None:
        """A file the user chose cannot be opened: a dialog with the reason (it does not block the app)."""
        if self.refusal is not None:
            self.refusal.close()
        box = QMessageBox(QMessageBox.Icon.Warning, "Surface not opened", text, QMessageBox.StandardButton.Ok,
                          self)
        box.setTextFormat(Qt.TextFormat.PlainText)  # the file's name and text, never markup
        box.open()
        self.refusal = box

    def export_mesh(self, path: str) -> bool:
        from models import export

        if not self._need_surface():
            return False
        if self.showing_curve():
            self.message.emit("A 1D curve has no mesh: Export data writes its values", True)
            return False
        verts, faces = export.grid_mesh(self.grid_x, self.grid_y, self.grid_values)
        try:
            (export.write_ply if path.lower().endswith(".ply") else export.write_obj)(path, verts, faces)
        except OSError as exc:
            self.message.emit(f"Not exported: {exc}", True)
            return False
        self.message.emit(f"Exported {path} ({len(verts)} vertices, {len(faces)} triangles)", False)
        return True

    def export_data(self, path: str) -> bool:
        from models import export

        if not self._need_surface():
            return False
        coords = self.plane["coords"] if self.plane else np.zeros((0, 2))
        loss = np.array([k.loss for k in self.snaps if k.params is not None])[: len(coords)]
        try:
            if path.lower().endswith(".csv"):
                export.write_csv(path, export.surface_columns(self.grid_x, self.grid_y, self.grid_values))
                if len(coords):
                    export.write_csv(path[:-4] + "_path.csv", {"a": coords[:, 0], "b": coords[:, 1], "loss": loss})
            else:
                export.write_npz(path, a=self.grid_x, b=self.grid_y, loss=self.grid_values, path_ab=coords,
                                 path_loss=loss)
        except OSError as exc:
            self.message.emit(f"Not exported: {exc}", True)
            return False
        self.message.emit(f"Exported {path}", False)
        return True

    def export_png(self, path: str, width: int, height: int) -> bool:
        from PySide6.QtGui import QImage

        if self.showing_curve():
            self.message.emit("A 1D curve has no 3D view: 2D map… writes its plot", True)
            return False
        if not (16 <= width <= 3840 and 16 <= height <= 2160):
            self.message.emit("Image size must be between 16x16 and 3840x2160", True)
            return False
        arr = np.ascontiguousarray(self.scene.render_offscreen(width, height))
        img = QImage(arr.data, width, height, 4 * width, QImage.Format.Format_ARGB32).copy()
        try:
            save_atomically(path, lambda tmp: img.save(tmp, "PNG"))
        except OSError as exc:
            self.message.emit(f"Not exported: {exc}", True)
            return False
        self.message.emit(f"Exported {path} ({width}x{height})", False)
        return True

    # ----------------------------------------------------------------------------- control
    def _cancel_surface(self) -> None:
        """Stop the surface computation: returns at once (the worker stops at its next row by itself)."""
        if self.surface_runner is not None:
            self.surface_runner.abort()
            self.surface_runner = None

    def cancel_surface(self) -> None:
        """The Cancel button."""
        if self.surface_runner is not None and self.surface_runner.isRunning():
            self._cancel_surface()
            self.message.emit("Surface cancelled: what was computed stays; Recompute starts again", False)

    def _stop_all(self) -> None:
        self._cancel_surface()
        self.stop_run()

    def reset(self) -> None:
        self._stop_all()

    def busy(self) -> bool:
        return ((self.surface_runner is not None and self.surface_runner.isRunning())
                or self.display_worker.busy or self.display_worker.pending())

    def shutdown(self) -> None:
        self._cancel_surface()
        self.display_worker.stop(wait_ms=0)
        super().shutdown()
