"""``losslab bench``: the project's benchmarks, each beside the peer it is compared to, in one run.

Prints a table; ``--json PATH`` writes {name: {"value": number, "unit": str}}; ``--only a,b`` runs a subset.
Timings are medians over repeats (this machine is noisy: compare ratios within one run, not across runs).
Needs a display for the GL figures: without DISPLAY it starts a virtual one (Xvfb) when it can.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import numpy as np

FIGURES: dict[str, tuple[str, str]] = {
    "surface_update_201_ms": ("ms", "201x201 surface update + render at 1280x720, our height field (GPU shading)"),
    "surface_update_201_cpu_ms": ("ms", "the same with our CPU-shaded item (normals and lit colours by numpy)"),
    "surface_update_201_stock_ms": ("ms", "the same with pyqtgraph's GLSurfacePlotItem(computeNormals, smooth)"),
    "surface_update_401_ms": ("ms", "401x401 surface update + render at 1280x720, our height field"),
    "surface_update_401_cpu_ms": ("ms", "the same with our CPU-shaded item"),
    "surface_update_801_ms": ("ms", "801x801 surface update + render at 1280x720, our height field"),
    "surface_new_201_ms": ("ms", "a new 201x201 surface's own cost, height field: set_data + upload, no drawing"),
    "surface_new_201_cpu_ms": ("ms", "the same for the CPU-shaded item"),
    "surface_new_401_ms": ("ms", "a new 401x401 surface's own cost, height field: set_data + upload, no drawing"),
    "surface_new_401_cpu_ms": ("ms", "the same for the CPU-shaded item"),
    "manifold2d_grid_201_ms": ("ms", "manifold2d loss grid 201x201, w2*tanh(w1*x), two points (vectorized)"),
    "manifold2d_grid_201_loop_ms": ("ms", "the same grid point by point"),
    "stream_steps_per_s": ("steps/s", "descent streaming into the lab's views"),
    "headless_steps_per_s": ("steps/s", "the same trainer with no GUI"),
    "gui_max_stall_ms": ("ms", "longest GUI event-loop stall while streaming"),
    "stream_share_pct": ("%", "streaming / headless, the median over neighbouring windows (goal >= 90)"),
    "startup_ms": ("ms", "process start to the first painted window"),
    "residual_grid_128_ms": ("ms", "3-parameter residual w3*tanh(w1*x+w2) on a 128^3 grid (vectorized)"),
    "marching_cubes_128_ms": ("ms", "zero-level mesh extraction on that 128^3 grid"),
    "manifold3d_update_64_ms": ("ms", "a data point moved: 64^3 re-extraction, refinement, slice and GL upload+render"),
    "manifold_walk_steps_per_s": ("steps/s", "walk on the solution manifold of an MLP 1-64-1 on 10 points"),
    "grid41_small_ms": ("ms", "41x41 loss surface, MLP 2-64-64-1 tanh, 2000 spiral points, BCE: ours (batched)"),
    "grid41_small_loop_ms": ("ms", "the same by a per-point torch loop under no_grad"),
    "grid41_small_losslandscapes_ms": ("ms", "the same by the loss-landscapes package (planar_interpolation)"),
    "grid41_big_ms": ("ms", "41x41 loss surface, MLP 2-256-256-256-1: ours"),
    "grid41_big_loop_ms": ("ms", "the same by a per-point loop"),
    "grid41_big_losslandscapes_ms": ("ms", "the same by loss-landscapes"),
    "grid41_big_gflops": ("GFLOP/s", "our big-model grid's arithmetic rate"),
    "matmul_gflops": ("GFLOP/s", "a 2048x2048 float32 matmul on the same machine, same run"),
    "first_coarse_surface_ms": ("ms", "surface lab, MLP 2-64-64-1 on 2000 spiral points: 'compute' to the first "
                                      "coarse surface drawn"),
    "record_1080p_fps": ("frames/s", "headless 1920x1080 render of a scene after a warm-up render (201x201 "
                                     "surface, streaming descent), H.264 encoding included"),
    "record_4k_frame_ms": ("ms", "one 3840x2160 off-screen frame of the 3D view"),
    "ntk_512x2_256pts_ms": ("ms", "empirical NTK (256x256), MLP 2-512-512-1 relu float32 on 256 points: ours "
                                  "(layer-wise Gram products, no Jacobian)"),
    "ntk_512x2_256pts_torchfunc_ms": ("ms", "the same by the torch.func recipe (vmap(jacrev) + J J^T)"),
    "width_sweep_steps_per_s": ("steps/s", "ntk lab's width sweep: GD steps of all seven widths 64..4096 (depth 1, "
                                           "relu, NTK param, 24 circle points), every live metric every 10 steps"),
    "width_sweep_bare_steps_per_s": ("steps/s", "the same sweep with no metrics (training loss and paths only)"),
    "hessian_top_eig_ms": ("ms", "top Hessian eigenvalue, MLP 2-64-64-1 tanh, MSE on 2000 points, float32 CPU: "
                                 "cached forward pass + 20 power iterations, no early stop, exact products by the "
                                 "R-operator by hand: ours (models.hessian.mlp_hvp_fn)"),
    "hessian_top_eig_pyhessian_ms": ("ms", "the same by PyHessian 0.1 (hessian(...).eigenvalues(maxIter=20, tol=0)),"
                                           " from the same start vector"),
    "hessian_top_eig_autograd_ms": ("ms", "the same by our double-backward products (models.hessian.hvp_fn: "
                                          "gradient graph + 20 power iterations), for reference"),
    "implicit_bias_1e6_steps_ms": ("ms", "implicit-bias lab: 10^6 GD steps of the 2D logistic model on 20 points, "
                                         "float64, the numba-compiled loop (compile excluded)"),
    "implicit_bias_1e6_steps_numpy_ms": ("ms", "the same by a plain numpy loop (10^5 steps measured, x10)"),
    "double_descent_sweep_ms": ("ms", "double-descent lab: min-norm random-features sweep, n = 100, d = 10, p = 10..400 "
                                      "step 5, 10 seeds (nested column sets, one QR / R update per seed)"),
    "double_descent_sweep_naive_ms": ("ms", "the same by one numpy.linalg.lstsq per (p, seed)"),
    "random_labels_steps_per_s": ("steps/s", "random-labels lab: MLP 20-512-512-2 on 200 points, full batch Adam, "
                                             "float32, one torch thread, one corruption fraction"),
    "random_labels_4fractions_steps_per_s": ("steps/s", "four fractions advancing together, their weights stacked "
                                                        "(batched matrix products)"),
    "random_labels_4separate_steps_per_s": ("steps/s", "the same four networks stepped one after another"),
    "grid_ray_2workers_pts_per_s": ("points/s", "losslab surface --ray: MLP 2-256-256-256-1 on 2000 spiral points, "
                                                "a 21x21 grid's rows as Ray tasks on a local Ray of two workers of "
                                                "one torch thread each (Ray started and warmed up before timing)"),
    "grid_local_pts_per_s": ("points/s", "the same rows in the local job, one torch thread"),
    "grid_local_2threads_pts_per_s": ("points/s", "the same rows in the local job, two torch threads"),
    "ray_task_overhead_ms": ("ms", "one empty Ray task's round trip (median of 20, after warm-up)"),
    "random_labels_4_bound_steps_per_s": ("steps/s", "the bound on four: their matrix products' operations at this "
                                                     "machine's best float32 product rate (200x512 by 512x512), "
                                                     "nothing else counted"),
}


def _median_ms(fn: Callable[[], None], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def _ensure_display(argv: list[str]):
    if os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    import shutil

    if shutil.which("xvfb-run") and not os.environ.get("LOSSLAB_BENCH_NO_REEXEC"):
        os.environ["LOSSLAB_BENCH_NO_REEXEC"] = "1"
        os.execvp("xvfb-run", ["xvfb-run", "-a", "-s", "-screen 0 1920x1080x24", sys.executable, "-m",
                               "visualizer", "bench", *argv])
    try:
        from pyvirtualdisplay import Display

        d = Display(visible=False, size=(1920, 1080), color_depth=24)
        d.start()
        return d
    except Exception as exc:  # pragma: no cover - depends on the machine
        print(f"bench: no display and no Xvfb ({exc}); GL figures will fail", file=sys.stderr)
        return None


def _dispose(*widgets) -> None:
    """Close widgets and delete them now: a plain processEvents() leaves deferred deletes queued, and the next
    benchmark's event loop would then tear down their GL contexts in the middle of its measurement (a 75 ms
    'stall' of the streaming bench once, right after the surface bench's nine views)."""
    from PySide6.QtCore import QCoreApplication, QEvent

    for w in widgets:
        w.close()
        w.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    QCoreApplication.processEvents()


def _app():
    from PySide6.QtWidgets import QApplication

    from visualizer.qtsetup import prepare_qt

    prepare_qt()
    return QApplication.instance() or QApplication([])


# ------------------------------------------------------------------------------------------------

def bench_surface(results: dict, wanted: set) -> None:
    """A new surface on the same grid, uploaded and drawn, per item and size. The height field and the CPU item
    are timed in turns (their ratio is issue 19's goal, see _interleaved_ms), each on its own view of the same
    size so that neither's buffers are in the other's frame."""
    import numpy as np
    import pyqtgraph as pg
    import pyqtgraph.opengl as gl
    from OpenGL import GL

    from visualizer.gl.heightfield import HeightFieldItem
    from visualizer.gl.surface import CpuSurfaceItem

    app = _app()

    def frame_fn(item, n: int, update, draw: bool = True) -> Callable[[], None]:
        """One update + frame of ``item`` on its own 1280x720 view, a different surface each call. Without
        ``draw``: a new surface's own cost, ``update`` and the upload of what changed (each item's
        ``_upload_pending``, the first thing its paint does), finished, with nothing drawn: what a frame adds to
        that is the rasterizer's."""
        view = gl.GLViewWidget()
        view.resize(1280, 720)
        view.show()
        views.append(view)
        for _ in range(5):
            app.processEvents()
        view.setCameraPosition(distance=9, elevation=30, azimuth=45)
        view.addItem(item)
        x = np.linspace(-3, 3, n)
        zs = [np.sin(x[:, None] * (1 + 0.05 * k)) * np.cos(x[None, :]) for k in range(4)]
        state = {"k": 0}

        def once():
            state["k"] += 1
            update(item, x, zs[state["k"] % 4])
            view.makeCurrent()  # binds the widget's framebuffer
            if draw:
                view.paintGL()  # a real frame: uploads what changed and draws everything
            else:
                item._upload_pending()
            GL.glFinish()

        for _ in range(2):  # warm-up: buffers allocated, shaders compiled
            once()
        return once

    def ours(item, x, z):
        item.set_data(x, x, z)

    def stock(item, x, z):
        item.setData(x=x, y=x, z=z)

    viridis = pg.colormap.get("viridis")
    views: list = []
    for n in (201, 401):
        names = [f"surface_update_{n}_ms", f"surface_update_{n}_cpu_ms"]
        fns = [frame_fn(cls(viridis), n, ours) for name, cls in zip(names, (HeightFieldItem, CpuSurfaceItem))
               if name in wanted]
        for name, ms in zip([m for m in names if m in wanted], _interleaved_ms(fns, 15)):
            results[name] = ms
    new_names = {n: (f"surface_new_{n}_ms", f"surface_new_{n}_cpu_ms") for n in (201, 401)}
    for n, names in new_names.items():
        fns = [frame_fn(cls(viridis), n, ours, draw=False) for name, cls in zip(names, (HeightFieldItem, CpuSurfaceItem))
               if name in wanted]
        for name, ms in zip([m for m in names if m in wanted], _interleaved_ms(fns, 15)):
            results[name] = ms
    if "surface_update_801_ms" in wanted:
        results["surface_update_801_ms"] = _median_ms(frame_fn(HeightFieldItem(viridis), 801, ours), 7, 0)
    if "surface_update_201_stock_ms" in wanted:
        fn = frame_fn(gl.GLSurfacePlotItem(computeNormals=True, smooth=True, shader="shaded"), 201, stock)
        results["surface_update_201_stock_ms"] = _median_ms(fn, 7, 0)
    _dispose(*views)


def bench_grid(results: dict, wanted: set) -> None:
    import torch

    from models import toy2d

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = toy2d.make_model("tanh")
    data = toy2d.Data([1.0, 2.0], [0.8, 1.2])
    spec = toy2d.GridSpec(3.0, 201)
    if "manifold2d_grid_201_ms" in wanted:
        results["manifold2d_grid_201_ms"] = _median_ms(lambda: toy2d.evaluate_grid(model, data, spec), 30)
    if "manifold2d_grid_201_loop_ms" in wanted:
        results["manifold2d_grid_201_loop_ms"] = _median_ms(lambda: toy2d.grid_by_loop(model, data, spec), 1, 0)


def _headless_trainer():
    """The streaming bench's peer: the same trainer generator, stepped in this process with no GUI."""
    import numpy as np
    import torch

    from models.toy2d import descent

    torch.set_num_threads(1)
    gen = descent("tanh", "", (1.0,), (0.8,), np.array([[2.5, -2.5]]), "gd", 1e-4, 0.9, 1, 10**8, "cpu", 0)
    next(gen)
    return gen


def _steps_per_s(gen, seconds: float) -> float:
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(100):
            next(gen)
        n += 100
    return n / (time.perf_counter() - t0)


#: the streaming bench's windows: this machine's own speed changes by up to 2x from one second to the next (the
#: headless trainer alone, in 0.6 s windows pinned to either core: 4700 to 9200 steps/s, the slow spells lasting a
#: second or two, on both cores), so the two are measured in turns, a short window each; each rate is the median
#: of its windows and their ratio the median of the ratios of neighbouring windows. Even a trainer child with no
#: GUI at all gives pairs from 67% to 134% of the headless rate (medians of 16 pairs: 96%, 102%, 103%), so it
#: takes 24 pairs for the median to be within about 4% of what it estimates
STREAM_WINDOWS = 24
STREAM_WINDOW_S = 0.5
HEADLESS_WINDOW_S = 0.4


def bench_stream(results: dict, wanted: set, windows: int = STREAM_WINDOWS) -> None:
    """Streaming into the 2D lab against the same trainer headless, in turns: the run is paused (the child
    confirms, the GUI has nothing to draw) while the headless trainer takes its window, then resumed for its
    own. The streaming rate of a window is the least-squares slope of the run's step count against time, read
    every 5 ms (a batch arrives every 33 ms: the slope is not thrown by where a window starts in that cycle)."""
    import numpy as np
    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer

    from visualizer.labs.manifold2d import Manifold2DLab

    gen = _headless_trainer()
    if not ({"stream_steps_per_s", "gui_max_stall_ms", "stream_share_pct"} & wanted):
        results["headless_steps_per_s"] = statistics.median(_steps_per_s(gen, HEADLESS_WINDOW_S)
                                                            for _ in range(windows))
        return
    _app()

    def spin(ms: int) -> None:  # a real event loop, as in the app (no busy polling)
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    def spin_until(cond, timeout_s: float) -> None:
        t_end = time.perf_counter() + timeout_s
        while not cond() and time.perf_counter() < t_end:
            spin(20)

    with tempfile.TemporaryDirectory() as cfg:
        os.environ["LOSSLAB_CONFIG_DIR"] = cfg
        lab = Manifold2DLab(restore=False)
        lab.resize(1280, 720)
        lab.show()
        spin_until(lambda: lab.landscape is not None, 20)
        from models.procrun import warm_up

        warm_up()
        lab.apply_settings({"lr": 1e-4, "steps": 10**6})
        run = lab.start_descent(np.array([2.5, -2.5]))
        spin_until(lambda: run.trajs[0].last_step >= 10, 30)
        spin(500)
        clock = QElapsedTimer()
        clock.start()
        samples: list[tuple[float, int]] = []  # (s, the run's last step), every 5 ms
        gaps: list[float] = []  # the event loop's latency probe: a 5 ms timer; the longest gap beyond 5 ms

        def tick():
            now = clock.nsecsElapsed() / 1e9
            if samples:
                gaps.append(1000 * (now - samples[-1][0]))
            samples.append((now, run.trajs[0].last_step))

        timer = QTimer()
        timer.setInterval(5)
        timer.timeout.connect(tick)
        streamed, headless, stalls = [], [], []
        for _ in range(windows):
            run.pause()
            spin_until(lambda: run.pause_reached, 10)
            headless.append(_steps_per_s(gen, HEADLESS_WINDOW_S))
            run.runner.resume()
            spin(150)  # the child is stepping and the views drawing again
            samples.clear()
            gaps.clear()
            timer.start()
            spin(int(STREAM_WINDOW_S * 1000))
            timer.stop()
            t, k = np.array(samples, dtype=np.float64).T
            streamed.append(float(np.polyfit(t - t[0], k, 1)[0]))
            stalls.append(max(gaps[2:]) - 5.0 if len(gaps) > 3 else float("nan"))
        results["stream_steps_per_s"] = statistics.median(streamed)
        results["headless_steps_per_s"] = statistics.median(headless)
        results["gui_max_stall_ms"] = max(0.0, max(stalls))
        results["_stream_windows"] = [s / h for s, h in zip(streamed, headless)]
        results["stream_share_pct"] = 100 * statistics.median(results["_stream_windows"])
        if os.environ.get("LOSSLAB_BENCH_DEBUG"):
            print("stream", [round(v) for v in streamed], "headless", [round(v) for v in headless],
                  "stalls", [round(v, 1) for v in stalls], "frame", lab.views()["3d"].last_frame_ms)
        lab.shutdown()
        _dispose(lab)


def bench_startup(results: dict, wanted: set, repeats: int = 3) -> None:
    ts = []
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cfg:
        env["LOSSLAB_CONFIG_DIR"] = cfg
        for _ in range(repeats):
            t0 = time.perf_counter()
            p = subprocess.Popen([sys.executable, "-m", "visualizer", "--lab", "manifold2d", "--report-startup"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
            for line in p.stdout:
                if line.startswith("startup_ms"):
                    ts.append((time.perf_counter() - t0) * 1e3)
                    break
            p.wait(60)
    results["startup_ms"] = statistics.median(ts) if ts else float("nan")


def bench_manifold3d(results: dict, wanted: set) -> None:
    import torch

    from models import toy2d, toy3d

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, data = toy3d.make_model("tanh"), toy2d.Data([1.0], [0.5])
    spec = toy3d.GridSpec3(2.5, 128)
    res = toy3d.residual_grid(model, data, spec)
    if "residual_grid_128_ms" in wanted:
        results["residual_grid_128_ms"] = _median_ms(lambda: toy3d.residual_grid(model, data, spec), 7)
    if "marching_cubes_128_ms" in wanted:
        results["marching_cubes_128_ms"] = _median_ms(lambda: toy3d.zero_mesh(res[0], spec), 7)
    if "manifold3d_update_64_ms" in wanted:
        from OpenGL import GL

        from visualizer.labs.manifold3d import Manifold3DLab, Request3, compute_landscape3d

        app = _app()
        with tempfile.TemporaryDirectory() as cfg:
            os.environ["LOSSLAB_CONFIG_DIR"] = cfg
            lab = Manifold3DLab(restore=False, start=False)
            lab.resize(1280, 720)
            lab.show()
            for _ in range(10):
                app.processEvents()
            ys = iter(np.linspace(0.3, 0.7, 64))
            view = lab.views()["3d"]

            def update():
                req = Request3("tanh", "", (1.0,), (float(next(ys)),), 2.5, 64, 0.8, False, 0.05)
                lab._on_landscape(req, compute_landscape3d(req))
                view.makeCurrent()
                view.paintGL()
                GL.glFinish()

            results["manifold3d_update_64_ms"] = _median_ms(update, 9)
            lab.shutdown()
            _dispose(lab)


def bench_walk(results: dict, wanted: set) -> None:
    from models import netmanifold as nm

    net = nm.MLP1D(64)
    x, y = nm.make_data(10)
    w = nm.find_solution(net, x, y)
    gen = nm.walk(net, x, y, w, steps=10**6, step_size=0.05, seed=0)
    next(gen)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 3.0:
        next(gen)
        n += 1
    results["manifold_walk_steps_per_s"] = n / (time.perf_counter() - t0)


def _interleaved_ms(fns: list[Callable[[], None]], repeats: int) -> list[float]:
    """Median milliseconds of each function (warmed up by the caller), run in turns (a, b, a, b, ...): on a
    shared machine the load changes over seconds, and two figures whose ratio is a goal must see the same load."""
    ts: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, times in zip(fns, ts):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return [statistics.median(times) * 1e3 for times in ts]


def _losslandscapes_grid(net, c, d1, d2, t: np.ndarray, x, y) -> Callable[[], np.ndarray] | None:
    """The loss-landscapes package's planar_interpolation over the grid t x t (None when it is not installed).

    The package walks its own grid: it starts at the corner and steps by delta along each direction, updating
    the parameters in place and calling the module.
    """
    try:
        import copy

        import loss_landscapes
        import loss_landscapes.metrics
    except ImportError:
        print("bench: loss-landscapes is not installed (pip install '.[bench]')", file=sys.stderr)
        return None
    import torch

    from models.nets import bce_loss

    delta = t[1] - t[0]
    steps = len(t)

    def shifted(a, b):
        m = copy.deepcopy(net)
        with torch.no_grad():
            for p, cc, u, v in zip(m.parameters(), c, d1, d2):
                p.copy_(cc + a * u + b * v)
        return m

    start = shifted(t[0], t[0])
    end_one = shifted(t[0] + steps * delta, t[0])
    end_two = shifted(t[0], t[0] + steps * delta)
    metric = loss_landscapes.metrics.Loss(bce_loss, x, y)
    return lambda: np.asarray(loss_landscapes.planar_interpolation(copy.deepcopy(start), end_one, end_two, metric,
                                                                   steps=steps))


def _grid41(hidden: tuple, label: str, results: dict, wanted: set) -> None:
    """Ours, the per-point loop and the loss-landscapes package on one 41 x 41 grid. Ours and the package are
    timed in turns (their ratio is issue 19's goal, see _interleaved_ms); ours must equal the loop to 1e-6."""
    from models import directions as dr
    from models import landscape as ls
    from models.nets import MLP, MLPSpec, bce_loss, make_data

    x, y = make_data("spirals", 2000, seed=0)
    net = MLP(MLPSpec(hidden=hidden, activation="tanh"), seed=0).eval()
    c, d1, d2 = dr.params_of(net), dr.random_direction(net, 1), dr.random_direction(net, 2)
    t = np.linspace(-1, 1, 41)
    steps = len(t)
    reps = 3 if label == "small" else 1

    def run_ours():
        return ls.grid_mlp(net, x, y, bce_loss, c, d1, d2, t, t)

    ours = run_ours()
    loop = ls.grid_loop(net, x, y, bce_loss, c, d1, d2, t, t)
    results[f"grid41_{label}_loop_ms"] = _median_ms(lambda: ls.grid_loop(net, x, y, bce_loss, c, d1, d2, t, t),
                                                    reps, 0)
    err = float(np.max(np.abs(ours - loop)))
    print(f"grid41_{label}: max |ours - loop| = {err:.2e}", file=sys.stderr)
    if err > 1e-6:
        raise AssertionError(f"grid41_{label}: batched values differ from the loop by {err}")
    run_ll = _losslandscapes_grid(net, c, d1, d2, t, x, y)
    if run_ll is None:
        results[f"grid41_{label}_ms"] = _median_ms(run_ours, reps, 1)
    else:
        vals = run_ll()
        results[f"grid41_{label}_ms"], results[f"grid41_{label}_losslandscapes_ms"] = _interleaved_ms(
            [run_ours, run_ll], 5 if label == "small" else 3)
        # its walk offsets every other column by one step: compare where the coordinates agree
        diffs = []
        for i in range(steps):
            for j in range(steps):
                jj = j + 1 if i % 2 == 0 else j
                if jj < steps:
                    diffs.append(abs(vals[i][j] - loop[i, jj]))
        print(f"grid41_{label}: max |loss-landscapes - loop| where coordinates agree = {max(diffs):.2e}",
              file=sys.stderr)
    if label == "big":
        w = MLPSpec(hidden=hidden).widths
        flops_point = 2 * x.shape[0] * sum(w[k] * w[k + 1] for k in range(len(w) - 1))
        results["grid41_big_gflops"] = flops_point * steps * steps / (results["grid41_big_ms"] / 1e3) / 1e9


def bench_grid41(results: dict, wanted: set) -> None:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if {"grid41_small_ms", "grid41_small_loop_ms", "grid41_small_losslandscapes_ms"} & wanted:
        _grid41((64, 64), "small", results, wanted)
    if {"grid41_big_ms", "grid41_big_loop_ms", "grid41_big_losslandscapes_ms", "grid41_big_gflops",
        "matmul_gflops"} & wanted:
        _grid41((256, 256, 256), "big", results, wanted)
        a = torch.randn(2048, 2048)
        b = torch.randn(2048, 2048)
        ms = _median_ms(lambda: a @ b, 5)
        results["matmul_gflops"] = 2 * 2048**3 / (ms / 1e3) / 1e9


def bench_first_surface(results: dict, wanted: set) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    from visualizer.labs.surface import SurfaceLab

    app = _app()

    def spin(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    with tempfile.TemporaryDirectory() as cfg:
        os.environ["LOSSLAB_CONFIG_DIR"] = cfg
        lab = SurfaceLab(restore=False, start=False)
        lab.resize(1280, 800)
        lab.show()
        lab.apply_settings({"hidden": "64x64", "n": 2000, "steps": 150, "grid": 41})
        lab.train()
        end = time.perf_counter() + 120
        while not (lab.landscape is not None and lab.landscape["stride"] == 1) and time.perf_counter() < end:
            spin(50)
        times = []
        for _ in range(3):
            spin(300)
            t0 = time.perf_counter()
            lab.compute_surface()
            while lab.first_grid_at is None and time.perf_counter() < t0 + 30:
                app.processEvents()
            times.append((lab.first_grid_at - t0) * 1e3 if lab.first_grid_at else float("nan"))
            while not (lab.landscape is not None and lab.landscape["stride"] == 1) and time.perf_counter() < t0 + 60:
                spin(20)
        results["first_coarse_surface_ms"] = statistics.median(times)
        lab.shutdown()
        _dispose(lab)


def bench_record(results: dict, wanted: set) -> None:
    from visualizer.recording.keyframes import Camera
    from visualizer.recording.recorder import render
    from visualizer.recording.scene import Event, Scene

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LOSSLAB_CONFIG_DIR"] = tmp
        scene = Scene(lab="manifold2d", size=(1920, 1080), fps=30, duration=4.0, steps_per_frame=5,
                      settings={"model": "tanh", "resolution": 201},
                      camera=[(0.0, Camera(-60, 28, 10)), (4.0, Camera(0, 35, 8))],
                      events=[Event(0.0, action="descent", start=[2.0, -2.0])])
        if "record_1080p_fps" in wanted:
            # warm-up: a 3-frame render of the same lab first, so that one-time costs of the process (importing
            # torch and torch.optim's dynamo, compiling shaders) are not counted as frame time
            import dataclasses

            render(dataclasses.replace(scene, duration=0.1), os.path.join(tmp, "w.mp4"), size=(320, 240),
                   progress=False)
            t0 = time.perf_counter()
            n = render(scene, os.path.join(tmp, "b.mp4"), progress=False)
            results["record_1080p_fps"] = n / (time.perf_counter() - t0)
        if "record_4k_frame_ms" in wanted:
            from PySide6.QtWidgets import QApplication

            from visualizer.labs.manifold2d import Manifold2DLab
            from visualizer.qtsetup import prepare_qt

            prepare_qt()
            app = QApplication.instance() or QApplication([])
            lab = Manifold2DLab(restore=False)
            lab.resize(1280, 720)
            lab.show()
            end = time.perf_counter() + 30
            while lab.landscape is None and time.perf_counter() < end:
                app.processEvents()
                time.sleep(0.01)
            results["record_4k_frame_ms"] = _median_ms(lambda: lab.views()["3d"].render_offscreen(3840, 2160), 3, 1)
            lab.shutdown()
            lab.close()
            app.processEvents()


def bench_ntk(results: dict, wanted: set) -> None:
    import torch

    from models.ntk import NTKNet, NTKSpec, empirical_ntk, ntk_torchfunc, relative_change

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    net = NTKNet(NTKSpec(in_dim=2, width=512, depth=2, activation="relu", parameterization="ntk"), seed=0)
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    err = relative_change(empirical_ntk(net, x), ntk_torchfunc(net, x))
    print(f"ntk_512x2_256pts: ||ours - torch.func|| / ||torch.func|| = {err:.2e}", file=sys.stderr)
    if err > 1e-5:
        raise AssertionError(f"ntk_512x2_256pts: our kernel differs from torch.func's by {err}")
    if "ntk_512x2_256pts_ms" in wanted:
        results["ntk_512x2_256pts_ms"] = _median_ms(lambda: empirical_ntk(net, x), 15)
    if "ntk_512x2_256pts_torchfunc_ms" in wanted:
        results["ntk_512x2_256pts_torchfunc_ms"] = _median_ms(lambda: ntk_torchfunc(net, x), 7)


#: the ntk lab's default sweep, as the bench and scripts/gpu_check.py time it
WIDTH_SWEEP = dict(data=dict(kind="circle", target="mix", n=24, seed=0), widths=[2**k for k in range(6, 13)], depth=1,
                   activation="relu", parameterization="ntk", eta=0.01, step_scaling="fixed", output="plain",
                   metric_every=10, seed=0)


def width_sweep_rates(device: str = "cpu", steps: int = 200, repeats: int = 5) -> tuple[float, float]:
    """(with metrics, bare): GD steps per second of the whole sweep (a step advances every width), medians over
    ``repeats`` runs of ``steps`` steps each, the two kinds alternating so that the machine's drift hits both. The
    first step of a run (the kernels at w0, the infinite-width kernel) is set-up, not a GD step: not timed."""
    import torch

    from models.ntk_sweep import sweep_run

    cuda = torch.device(device).type == "cuda"

    def once(metrics: bool) -> float:
        gen = sweep_run(**WIDTH_SWEEP, steps=steps, metrics=metrics, device=device)
        next(gen)
        if cuda:
            torch.cuda.synchronize()
        n, last, t0 = 0, None, time.perf_counter()
        for snap in gen:
            n, last = n + 1, snap
        if cuda:
            torch.cuda.synchronize()
        rate = n / (time.perf_counter() - t0)
        if n != steps or last.diverged.any() or (metrics and last.metrics is None):
            raise AssertionError(f"width sweep: {n} steps, diverged {last.diverged.tolist()}: not the benchmark")
        return rate

    once(True)  # warm-up: first calls of every kernel, allocator
    once(False)
    with_m, bare = [], []
    for _ in range(repeats):
        with_m.append(once(True))
        bare.append(once(False))
    return statistics.median(with_m), statistics.median(bare)


def bench_width_sweep(results: dict, wanted: set) -> None:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    results["width_sweep_steps_per_s"], results["width_sweep_bare_steps_per_s"] = width_sweep_rates("cpu")


HESSIAN_ITERS = 20
HESSIAN_CHECK_ITERS = 100
_HESSIAN_START_SEED = 1


def _hessian_problem():
    """The Hessian benchmark's network and data: MLP 2-64-64-1 tanh (torch's default init, seed 0), mean squared
    error to a smooth target on 2000 normal 2D points, float32."""
    import torch

    torch.manual_seed(0)  # nn.Linear draws its initial weights from the global generator
    model = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 1))
    x = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    y = (torch.sin(2 * x[:, 0]) * torch.cos(x[:, 1]))[:, None]
    return model, torch.nn.MSELoss(), x, y


def _square_loss_weight(criterion, y) -> float:
    """w with criterion(f, y) = w * sum 1/2 (f - y)^2 for an nn.MSELoss: 2 / numel for the mean, 2 for the sum."""
    return {"mean": 2.0 / y.numel(), "sum": 2.0}[criterion.reduction]


def bench_hessian(results: dict, wanted: set) -> None:
    import torch

    from models.hessian import hvp_fn, lanczos_top, mlp_hvp_for, power_iteration, random_vector

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, criterion, x, y = _hessian_problem()
    params = list(model.parameters())
    weight = _square_loss_weight(criterion, y)

    def ours(iters: int) -> float:
        # both start from torch.randn(p.shape) per parameter, in order, from the global generator seeded alike;
        # timed: the start vector, the product's cached forward and backward pass (as PyHessian's gradient graph
        # is timed), the power iterations
        torch.manual_seed(_HESSIAN_START_SEED)
        v0 = random_vector(params)
        hvp = mlp_hvp_for(model, x, y, weight)
        if hvp is None:  # not a perceptron the hand-made product knows: double backward
            hvp = hvp_fn(lambda: criterion(model(x), y), params)
        return power_iteration(hvp, v0, iters=iters, tol=None)[0]

    def autograd(iters: int) -> float:
        torch.manual_seed(_HESSIAN_START_SEED)
        v0 = random_vector(params)
        return power_iteration(hvp_fn(lambda: criterion(model(x), y), params), v0, iters=iters, tol=None)[0]

    try:
        from pyhessian import hessian as PyHessian
    except ImportError:
        PyHessian = None
        print("bench: PyHessian is not installed (pip install '.[bench]'): hessian_top_eig_pyhessian_ms unavailable",
              file=sys.stderr)

    def theirs(iters: int) -> float:
        model.zero_grad(set_to_none=True)  # its constructor accumulates the gradient (with a graph) into .grad
        with warnings.catch_warnings():  # torch's warning about that .grad <-> graph cycle: we break it below
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
            h = PyHessian(model, criterion, data=(x, y), cuda=False)
        torch.manual_seed(_HESSIAN_START_SEED)
        eig = h.eigenvalues(maxIter=iters, tol=0.0)[0][0]  # tol 0: its relative-change test never stops it early
        model.zero_grad(set_to_none=True)  # and drops the .grad <-> graph reference cycle it leaves
        return eig

    # the check (not timed): the same start vector, the same product, then the same answer after 100 iterations
    # by ours, double backward, Lanczos (on double backward) and PyHessian
    torch.manual_seed(_HESSIAN_START_SEED)
    start_parts = random_vector(params)
    start = torch.cat([v.reshape(-1) for v in start_parts])
    fast = mlp_hvp_for(model, x, y, weight)
    if fast is None:
        raise AssertionError("hessian_top_eig: the benchmark's model is not one the hand-made product knows")
    slow = hvp_fn(lambda: criterion(model(x), y), params)
    a, b = (torch.cat([h.reshape(-1) for h in f(start_parts)]) for f in (fast, slow))
    product_err = float((a - b).norm() / b.norm())
    lam = ours(HESSIAN_CHECK_ITERS)
    lam_autograd = autograd(HESSIAN_CHECK_ITERS)
    top = lanczos_top(slow, params, tol=1e-8)
    worst = max(abs(lam - top) / abs(top), abs(lam_autograd - lam) / abs(lam))
    line = (f"hessian_top_eig: one product, ours vs double backward: {product_err:.1e} relative; after "
            f"{HESSIAN_CHECK_ITERS} iterations ours {lam:.7g}, double backward {lam_autograd:.7g}, Lanczos {top:.7g}")
    if PyHessian is not None:
        module = sys.modules["pyhessian.hessian"]  # the module: the package's attribute 'hessian' is the class
        seen = []
        normalization = module.normalization

        def record(v):  # its first normalization is of the raw random start vector
            seen.append(torch.cat([t.detach().reshape(-1) for t in v]))
            return normalization(v)

        module.normalization = record
        try:
            theirs_lam = theirs(HESSIAN_CHECK_ITERS)
        finally:
            module.normalization = normalization
        start_err = float((seen[0] / seen[0].norm() - start).abs().max())
        worst = max(worst, abs(theirs_lam - top) / abs(top), abs(theirs_lam - lam) / abs(lam))
        line += f", PyHessian {theirs_lam:.7g}; start vectors differ by {start_err:.1e}"
        if start_err > 1e-6:
            raise AssertionError(f"hessian_top_eig: PyHessian started from another vector ({start_err})")
    print(f"{line}; worst relative difference {worst:.1e}", file=sys.stderr)
    if product_err > 1e-4:
        raise AssertionError(f"hessian_top_eig: our product differs from double backward's by {product_err:.1e}")
    if worst > 1e-4:
        raise AssertionError(f"hessian_top_eig: the eigenvalues disagree by {worst:.1e} relative")
    del fast, slow

    runs = []
    if "hessian_top_eig_ms" in wanted:
        runs.append(("hessian_top_eig_ms", lambda: ours(HESSIAN_ITERS)))
    if "hessian_top_eig_pyhessian_ms" in wanted and PyHessian is not None:
        runs.append(("hessian_top_eig_pyhessian_ms", lambda: theirs(HESSIAN_ITERS)))
    if wanted & {"hessian_top_eig_ms", "hessian_top_eig_autograd_ms"}:  # ours's reference: timed alongside it
        runs.append(("hessian_top_eig_autograd_ms", lambda: autograd(HESSIAN_ITERS)))
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    for rep in range(2 + 15):  # alternating, so that the machine's drift hits all; the first two are warm-up
        for name, fn in runs:
            t = time.perf_counter()
            fn()
            if rep >= 2:
                times[name].append(time.perf_counter() - t)
    for name, ts in times.items():
        results[name] = statistics.median(ts) * 1e3
    if "hessian_top_eig_ms" in results and "hessian_top_eig_autograd_ms" not in wanted:  # not in the table
        ref, ours_ms = results["hessian_top_eig_autograd_ms"], results["hessian_top_eig_ms"]
        print(f"hessian_top_eig: for reference, double backward (hvp_fn) {ref:.2f} ms, ours {ours_ms:.2f} ms: "
              f"double backward / ours = {ref / ours_ms:.2f}x", file=sys.stderr)


def bench_ray(results: dict, wanted: set) -> None:
    """The grid of the big MLP row by row: locally on one and on two torch threads, and as Ray tasks on two
    workers, all three the same rows of the same job (models.surface_job's row evaluator, as the job runs it)."""
    import numpy as np
    import torch

    from models import distributed
    from models import surface_job as sj

    if distributed.ray_missing():
        print(f"bench: Ray figures skipped: {distributed.ray_missing()}", file=sys.stderr)
        return
    x, y = sj.parse_data("spirals:2000:0.1")
    problem = sj.train_mlp("mlp:256x256x256:tanh", x, y, steps=20, seed=0, checkpoints=0)
    center = sj.entries(problem.model, "weights")
    d1, d2 = (sj.dr.make_direction(problem.model, s) for s in (100, 101))
    plane = (center, d1, d2)
    t = np.linspace(-1, 1, 21)
    rows = {i: (np.full(len(t), t[i]), t) for i in range(len(t))}
    n_points = len(t) * len(t)
    before = torch.get_num_threads()
    try:
        for threads, name in ((1, "grid_local_pts_per_s"), (2, "grid_local_2threads_pts_per_s")):
            torch.set_num_threads(threads)
            ev = sj._RowEvaluator(problem, False, "weights", None, plane, False)
            ev(*rows[0])  # warm-up
            t0 = time.perf_counter()
            for a, b in rows.values():
                ev(a, b)
            results[name] = n_points / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    shared = {"key": "bench", "user": False, "model": "mlp:256x256x256:tanh", "seed": 0, "data": (x, y),
              "dir_type": "weights", "batch_size": None, "plane": plane, "with_test": False}
    distributed.connect(None, num_cpus=2)
    try:
        # warm-up: both workers started, torch imported, the job's model built in each
        distributed.run_chunks({0: rows[0], 1: rows[1]}, sj._ray_row, shared, lambda i, r: None)
        t0 = time.perf_counter()
        distributed.run_chunks(rows, sj._ray_row, shared, lambda i, r: None, torch_threads=1)
        results["grid_ray_2workers_pts_per_s"] = n_points / (time.perf_counter() - t0)
        results["ray_task_overhead_ms"] = distributed.ray_task_overhead_ms()
    finally:
        distributed.disconnect()


def bench_random_labels(results: dict, wanted: set) -> None:
    from models.random_labels import bench_figures

    results.update(bench_figures())


def bench_double_descent(results: dict, wanted: set) -> None:
    from models.double_descent import bench_figures

    results.update(bench_figures())


def bench_implicit_bias(results: dict, wanted: set) -> None:
    from models.implicit_bias import bench_figures

    results.update(bench_figures())


GROUPS = [
    ({"surface_update_201_ms", "surface_update_201_cpu_ms", "surface_update_201_stock_ms", "surface_update_401_ms",
      "surface_update_401_cpu_ms", "surface_update_801_ms", "surface_new_201_ms", "surface_new_201_cpu_ms",
      "surface_new_401_ms", "surface_new_401_cpu_ms"}, bench_surface),
    ({"manifold2d_grid_201_ms", "manifold2d_grid_201_loop_ms"}, bench_grid),
    ({"stream_steps_per_s", "headless_steps_per_s", "gui_max_stall_ms", "stream_share_pct"}, bench_stream),
    ({"startup_ms"}, bench_startup),
    ({"residual_grid_128_ms", "marching_cubes_128_ms", "manifold3d_update_64_ms"}, bench_manifold3d),
    ({"manifold_walk_steps_per_s"}, bench_walk),
    ({"grid41_small_ms", "grid41_small_loop_ms", "grid41_small_losslandscapes_ms", "grid41_big_ms",
      "grid41_big_loop_ms", "grid41_big_losslandscapes_ms", "grid41_big_gflops", "matmul_gflops"}, bench_grid41),
    ({"first_coarse_surface_ms"}, bench_first_surface),
    ({"record_1080p_fps", "record_4k_frame_ms"}, bench_record),
    ({"ntk_512x2_256pts_ms", "ntk_512x2_256pts_torchfunc_ms"}, bench_ntk),
    ({"width_sweep_steps_per_s", "width_sweep_bare_steps_per_s"}, bench_width_sweep),
    ({"hessian_top_eig_ms", "hessian_top_eig_pyhessian_ms", "hessian_top_eig_autograd_ms"}, bench_hessian),
    ({"implicit_bias_1e6_steps_ms", "implicit_bias_1e6_steps_numpy_ms"}, bench_implicit_bias),
    ({"double_descent_sweep_ms", "double_descent_sweep_naive_ms"}, bench_double_descent),
    ({"grid_ray_2workers_pts_per_s", "grid_local_pts_per_s", "grid_local_2threads_pts_per_s", "ray_task_overhead_ms"},
     bench_ray),
    ({"random_labels_steps_per_s", "random_labels_4fractions_steps_per_s", "random_labels_4separate_steps_per_s",
      "random_labels_4_bound_steps_per_s"}, bench_random_labels),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="losslab bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--only", metavar="NAME[,NAME]", help="run only these figures")
    args = p.parse_args(argv)
    wanted = set(FIGURES)
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - set(FIGURES)
        if unknown:
            print(f"losslab bench: unknown figure(s) {', '.join(sorted(unknown))}; known: {', '.join(FIGURES)}",
                  file=sys.stderr)
            return 2
    if args.json:
        from models.export import check_output_path

        problem = check_output_path(args.json, what="--json")  # before the benchmarks, not after them
        if problem:
            print(f"losslab bench: {problem}", file=sys.stderr)
            return 2
    display = _ensure_display(list(argv if argv is not None else sys.argv[2:]))
    results: dict[str, float] = {}
    failed: list[str] = []
    try:
        for names, fn in GROUPS:
            if names & wanted:
                try:
                    fn(results, wanted)
                except Exception as exc:  # one benchmark's fault: say which, measure the rest, exit 1
                    import traceback

                    traceback.print_exc(file=sys.stderr)
                    print(f"losslab bench: {fn.__name__} failed ({type(exc).__name__}: {exc}); its figures are "
                          f"missing below", file=sys.stderr)
                    failed.append(fn.__name__)
    finally:
        if display is not None:
            display.stop()
    stream_windows = results.pop("_stream_windows", None)
    results = {k: v for k, v in results.items() if k in wanted}
    width = max(len(k) for k in FIGURES)
    print(f"{'figure':<{width}}  {'value':>12}  unit      what")
    for name in FIGURES:
        if name in results:
            unit, what = FIGURES[name]
            print(f"{name:<{width}}  {results[name]:>12.2f}  {unit:<8}  {what}")
    ratios = []
    r = results
    if "surface_update_201_ms" in r and "surface_update_201_stock_ms" in r:
        ratios.append(f"surface 201: stock / ours = {r['surface_update_201_stock_ms'] / r['surface_update_201_ms']:.1f}x")
    for n, goal in ((201, 15), (401, 50)):
        if f"surface_update_{n}_ms" in r and f"surface_update_{n}_cpu_ms" in r:
            ratios.append(f"surface {n}: CPU-shaded / height field = "
                          f"{r[f'surface_update_{n}_cpu_ms'] / r[f'surface_update_{n}_ms']:.1f}x (the goal: at least "
                          f"2x, and the height field under {goal} ms)")
    for n in (201, 401):
        if f"surface_new_{n}_ms" in r and f"surface_new_{n}_cpu_ms" in r:
            ratios.append(f"surface {n}, a new surface's own cost (no drawing): CPU-shaded / height field = "
                          f"{r[f'surface_new_{n}_cpu_ms'] / r[f'surface_new_{n}_ms']:.1f}x")
    if "manifold2d_grid_201_ms" in r and "manifold2d_grid_201_loop_ms" in r:
        ratios.append(f"grid 201: loop / vectorized = {r['manifold2d_grid_201_loop_ms'] / r['manifold2d_grid_201_ms']:.0f}x")
    for lab in ("small", "big"):
        if f"grid41_{lab}_ms" in r and f"grid41_{lab}_loop_ms" in r:
            extra = ""
            if f"grid41_{lab}_losslandscapes_ms" in r:
                extra = f", loss-landscapes / ours = {r[f'grid41_{lab}_losslandscapes_ms'] / r[f'grid41_{lab}_ms']:.2f}x"
            ratios.append(f"grid41 {lab}: loop / ours = {r[f'grid41_{lab}_loop_ms'] / r[f'grid41_{lab}_ms']:.2f}x{extra}")
    if "grid41_big_gflops" in r and "matmul_gflops" in r:
        ratios.append(f"grid41 big: {100 * r['grid41_big_gflops'] / r['matmul_gflops']:.0f}% of the matmul rate")
    if "ntk_512x2_256pts_ms" in r and "ntk_512x2_256pts_torchfunc_ms" in r:
        ratios.append(f"ntk 512x2, 256 points: torch.func / ours = "
                      f"{r['ntk_512x2_256pts_torchfunc_ms'] / r['ntk_512x2_256pts_ms']:.1f}x")
    if "width_sweep_steps_per_s" in r and "width_sweep_bare_steps_per_s" in r:
        share = r["width_sweep_steps_per_s"] / r["width_sweep_bare_steps_per_s"]
        ratios.append(f"width sweep: with metrics / bare = {100 * share:.0f}% (the goal: at least 70%; the metrics "
                      f"add {100 * (1 / share - 1):.0f}% to a step's time)")
    if "hessian_top_eig_ms" in r and "hessian_top_eig_pyhessian_ms" in r:
        ratios.append(f"hessian top eigenvalue, {HESSIAN_ITERS} power iterations: PyHessian / ours = "
                      f"{r['hessian_top_eig_pyhessian_ms'] / r['hessian_top_eig_ms']:.2f}x (the goal: at least 1.3x)")
    if "hessian_top_eig_ms" in r and "hessian_top_eig_autograd_ms" in r:
        ratios.append(f"hessian top eigenvalue: double backward / ours = "
                      f"{r['hessian_top_eig_autograd_ms'] / r['hessian_top_eig_ms']:.2f}x")
    if "random_labels_4fractions_steps_per_s" in r and "random_labels_4separate_steps_per_s" in r:
        ratios.append(f"random labels, four fractions: batched / separate = "
                      f"{r['random_labels_4fractions_steps_per_s'] / r['random_labels_4separate_steps_per_s']:.2f}x "
                      f"(the goal: at least 1.5x)")
        if "random_labels_4_bound_steps_per_s" in r:
            bound = r["random_labels_4_bound_steps_per_s"] / r["random_labels_4separate_steps_per_s"]
            ratios.append(f"random labels, four fractions: the arithmetic bound / separate = {bound:.2f}x (no "
                          f"batching of the same operations can beat it)")
    if {"grid_ray_2workers_pts_per_s", "grid_local_pts_per_s", "grid_local_2threads_pts_per_s"} <= set(r):
        ray_r = r["grid_ray_2workers_pts_per_s"]
        ratios.append(f"surface grid on Ray, two workers / local one thread = {ray_r / r['grid_local_pts_per_s']:.2f}x "
                      f"(the goal: at least 1.6x); / local two threads = "
                      f"{ray_r / r['grid_local_2threads_pts_per_s']:.2f}x (the goal: above 1x)")
    if "double_descent_sweep_ms" in r and "double_descent_sweep_naive_ms" in r:
        ratios.append(f"double descent sweep: naive / ours = "
                      f"{r['double_descent_sweep_naive_ms'] / r['double_descent_sweep_ms']:.1f}x (the goal: at least 3x, "
                      f"and under 500 ms)")
    if "implicit_bias_1e6_steps_ms" in r and "implicit_bias_1e6_steps_numpy_ms" in r:
        ratios.append(f"implicit bias, 10^6 steps: numpy / numba = "
                      f"{r['implicit_bias_1e6_steps_numpy_ms'] / r['implicit_bias_1e6_steps_ms']:.0f}x (the goal: at least 6x)")
    if "stream_share_pct" in r and stream_windows:
        of_medians = ""
        if "stream_steps_per_s" in r and "headless_steps_per_s" in r:
            of_medians = f"; the two medians' ratio {100 * r['stream_steps_per_s'] / r['headless_steps_per_s']:.0f}%"
        ratios.append(f"streaming / headless = {r['stream_share_pct']:.0f}% (the median of {len(stream_windows)} pairs of "
                      f"neighbouring windows: {', '.join(f'{100 * v:.0f}%' for v in stream_windows)}{of_medians}; "
                      f"the goal: at least 90%)")
    for line in ratios:
        print(line)
    if args.json:
        from models.export import atomic_write

        out = {k: {"value": float(v), "unit": FIGURES[k][0]} for k, v in results.items()}
        try:
            atomic_write(args.json, json.dumps(out, indent=2).encode("utf-8"))
        except OSError as exc:  # the folder went away during the run: say so, the table above stands
            print(f"losslab bench: --json {args.json}: not written ({exc})", file=sys.stderr)
            return 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
