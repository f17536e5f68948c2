"""A descent run on screen: one child-process runner with N trajectories, drawn in a 2D plot and a 3D view.

Labs differ only in how a parameter path maps to the views: ``to2d(path)`` gives plot coordinates (k, 2)
and ``to3d(path, loss, lift)`` scene coordinates (k, 3). Everything else (streaming, bounded storage,
landing markers, projection markers, clean removal) is shared.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl


class DescentRun:
    def __init__(self, lab, target: str, params: dict, starts: np.ndarray, colors: list[str], *,
                 to2d: Callable[[np.ndarray], np.ndarray], to3d: Callable[[np.ndarray, np.ndarray, float], np.ndarray],
                 projections: np.ndarray | None = None) -> None:
        from models.trajectory import Trajectory

        self.lab = lab
        self.starts = np.asarray(starts, dtype=np.float64)
        self.colors = colors
        self.params = params
        self.to2d, self.to3d = to2d, to3d
        # one descent keeps every step's loss; many at once keep an evenly thinned record (bounded memory)
        cap = None if len(self.starts) <= 4 else 65536
        self.trajs = [Trajectory(self.starts.shape[1], max_measured=cap) for _ in range(len(self.starts))]
        self.finished = False
        self.failed = False
        self.removed = False
        self.result = None
        self.dirty = True
        self._pauses = self._pauses_confirmed = 0  # counted here, on the GUI thread, after the batches before
        self.runner = lab.make_runner(target, dict(params, starts=self.starts), start_paused=lab.paused)
        from visualizer.workers import RunnerRelay

        self._relay = RunnerRelay(self, self.runner, {"batch": "_on_batch", "done": "_on_done",
                                                      "failed": "_on_failed", "pause_reached": "_on_pause_reached"})
        plot = lab.plane.plot
        self.curves2d, self.lines3d = [], []
        for c in colors:
            curve = pg.PlotCurveItem(pen=pg.mkPen(c, width=2.2))
            curve.setZValue(20)
            plot.addItem(curve)
            self.curves2d.append(curve)
            line = gl.GLLinePlotItem(color=pg.mkColor(c).getRgbF(), width=2.5, antialias=True,
                                     glOptions="translucent")
            lab.scene.addItem(line)
            self.lines3d.append(line)
        self.start_marks = pg.ScatterPlotItem(pos=to2d(self.starts), symbol="o", size=9,
                                              brush=[pg.mkBrush(c) for c in colors], pen=pg.mkPen("#000", width=1))
        self.start_marks.setZValue(21)
        plot.addItem(self.start_marks)
        self.land_marks = pg.ScatterPlotItem(symbol="star", size=16, pen=pg.mkPen("#000", width=1))
        self.land_marks.setZValue(22)
        plot.addItem(self.land_marks)
        self.land3d = gl.GLScatterPlotItem(size=12, pxMode=True)
        self.land3d.setGLOptions("translucent")
        lab.scene.addItem(self.land3d)
        self.projections = projections
        self.proj_marks = self.proj3d = None
        if projections is not None:
            self.proj_marks = pg.ScatterPlotItem(pos=to2d(projections), symbol="o", size=17,
                                                 brush=pg.mkBrush(0, 0, 0, 0), pen=pg.mkPen("#ffffff", width=2))
            self.proj_marks.setZValue(23)
            plot.addItem(self.proj_marks)

    def start(self) -> None:
        self.runner.start()

    def pause(self) -> None:
        self._pauses += 1
        self.runner.pause()

    @property
    def pause_reached(self) -> bool:
        """The runner confirmed every pause asked of it: each step made before the last one has arrived."""
        return self._pauses_confirmed >= self._pauses

    def _on_pause_reached(self) -> None:
        self._pauses_confirmed += 1

    def _on_batch(self, snaps) -> None:
        if self.removed:  # a batch already under way when the run was cleared
            return
        from models.trajectory import SnapshotBatch

        if isinstance(snaps, SnapshotBatch):
            self._take_packed(snaps)
        else:
            self._take(snaps)
        self.dirty = True
        self.lab._schedule_redraw()

    def _take_packed(self, b) -> None:
        """A packed batch, a trajectory at a time: what ``_take`` does step by step, with arrays."""
        for k, tr in enumerate(self.trajs):
            p = b.params[:, k]
            before = tr.last_params[None] if tr.last_step >= 0 else np.full((1, p.shape[1]), np.nan)
            # frozen (converged or diverged): an inactive row equal to the one before it adds nothing
            same = (p == np.concatenate([before, p[:-1]])).all(axis=1)
            keep = ~(~b.active[:, k] & same)
            tr.extend(b.steps[keep], p[keep], b.loss[keep, k], b.grad_norm[keep, k])
            tr.diverged = bool(b.diverged[-1, k])

    def _take(self, snaps: list) -> None:
        for snap in snaps:
            for k, tr in enumerate(self.trajs):
                frozen = not snap.active[k] and tr.last_step >= 0 and np.array_equal(snap.params[k], tr.last_params)
                if not frozen:
                    tr.append(snap.step, snap.params[k], float(snap.loss[k]), float(snap.grad_norm[k]))
                tr.diverged = bool(snap.diverged[k])

    def _on_done(self, result) -> None:
        if self.removed:
            return
        self.finished = True
        self.result = result
        self.dirty = True
        self.lab._on_run_done(self, result)

    def _on_failed(self, text: str) -> None:
        if self.removed:
            return
        from visualizer.errorlog import report

        self.finished = True
        self.failed = True
        self.dirty = True
        self.lab._on_run_failed(self, report("Descent failed", text))

    def redraw(self) -> None:
        ends, end_loss = [], []
        for k, tr in enumerate(self.trajs):
            # a diverged path keeps huge (finite) values: clip what is drawn, never what is measured
            path = np.clip(tr.path, -1e6, 1e6)
            if len(path) == 0:
                continue
            p2 = self.to2d(path)
            self.curves2d[k].setData(p2[:, 0], p2[:, 1])
            self.lines3d[k].setData(pos=self.to3d(path, tr.path_loss, 0.012))
            ends.append(path[-1])
            end_loss.append(tr.last_loss)
        if self.finished and ends:
            ends = np.array(ends)
            self.land_marks.setData(pos=self.to2d(ends), brush=[pg.mkBrush(c) for c in self.colors[: len(ends)]])
            self.land3d.setData(pos=self.to3d(ends, np.array(end_loss), 0.02),
                                color=np.array([pg.mkColor(c).getRgbF() for c in self.colors[: len(ends)]]))
        self.dirty = False

    def remove(self) -> None:
        self.removed = True
        self._relay.release()  # what the runner still sends is dropped
        self.runner.abort()  # returns at once; the runner ends its child by itself
        plot = self.lab.plane.plot
        for item in self.curves2d + [self.start_marks, self.land_marks] + ([self.proj_marks] if self.proj_marks else []):
            plot.removeItem(item)
        for item in self.lines3d + [self.land3d]:
            self.lab.scene.removeItem(item)
