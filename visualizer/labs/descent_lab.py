"""What the labs that run descents share: run control (Space/S/R), pacing of redraws, re-running the
descents on screen after a change, the error banner, persisted state, and a clean shutdown."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel

from visualizer import settings as store
from visualizer.labs.base import Lab

MAX_STORED_TEXT = 2000  # a stored string longer than this (an expression, a width list) is not restored


def restore_state(cls, d: dict, max_list: int):
    """A ``cls`` dataclass from a stored dict, keeping only values of the field's own kind (finite numbers,
    short strings, short lists of finite numbers); every other field keeps its default. Ranges are the
    caller's to clamp."""
    s = cls()
    if not isinstance(d, dict):
        return s
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        cur = getattr(s, f.name)
        v = d[f.name]
        if isinstance(cur, bool):
            if not isinstance(v, bool):
                continue
        elif isinstance(cur, int):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
                continue
            v = int(v)
        elif isinstance(cur, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            try:
                v = float(v)
            except OverflowError:  # an integer too large for a float
                continue
            if not math.isfinite(v):
                continue
        elif isinstance(cur, str):
            if not isinstance(v, str) or len(v) > MAX_STORED_TEXT:
                continue
        elif isinstance(cur, list):
            if not isinstance(v, list) or not v or len(v) > max_list:
                continue
            if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in v):
                continue
            try:
                v = [float(a) for a in v]
            except OverflowError:
                continue
            if not all(math.isfinite(a) and abs(a) <= 1e6 for a in v):
                continue
        else:
            continue
        setattr(s, f.name, v)
    return s


class DescentLab(Lab):
    """Base of labs whose ``runs`` are DescentRuns. Subclasses set ``settings_key``, hold ``state``,
    ``scene`` and implement ``start_descent``, ``clear_runs`` and ``_start_default``."""

    settings_key = ""

    def _init_descents(self) -> None:
        self.paused = False
        self.runs: list = []
        self._workers: list = []
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.timeout.connect(self._redraw_runs)
        self._rerun_timer = QTimer(self)
        self._rerun_timer.setSingleShot(True)
        self._rerun_timer.setInterval(180)
        self._rerun_timer.timeout.connect(self._rerun)
        self._pending_rerun: list[np.ndarray] = []

    def _make_banner(self) -> QLabel:
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        self.banner.setStyleSheet("QLabel{background:#5c1d24;color:#ffe3e3;padding:6px 10px;border-radius:4px;}")
        self._banner_timer = QTimer(self)
        self._banner_timer.setSingleShot(True)
        self._banner_timer.timeout.connect(lambda: self.banner.setVisible(False))
        return self.banner

    # --- pacing and re-running ----------------------------------------------------------------------
    def _schedule_redraw(self) -> None:
        # adaptive frame pacing: never spend more than about a third of the GUI thread on drawing
        if not self._redraw_timer.isActive():
            self._redraw_timer.start(int(min(150, max(40, 3 * self.scene.last_frame_ms))))

    def _redraw_runs(self):
        """Redraw what changed; report the latest run's step and loss. Returns that run (or None)."""
        latest = None
        for r in self.runs:
            if r.dirty:
                r.redraw()
            latest = r
        if latest is not None and latest.trajs and latest.trajs[0].last_step >= 0:
            tr = latest.trajs[0]
            self.status.emit({"step": tr.last_step, "loss": tr.last_loss})
            return latest
        return None

    def _schedule_rerun(self) -> None:
        """After a change of problem or optimizer: clear the descents and start them again from their starts."""
        if self.runs:
            self._pending_rerun = [r.starts for r in self.runs]
            self.clear_runs()
            self._rerun_timer.start()

    def _rerun(self) -> None:
        starts, self._pending_rerun = self._pending_rerun, []
        for st in starts:
            self.start_descent(st)

    # --- recording and scenes ------------------------------------------------------------------------
    scene_actions = {
        "descent": "start a descent at 'start' (a list of parameters; the lab's default start without it)",
        "random_starts": "start the lab's batch of random starts",
        "reset": "stop and clear all descents",
    }

    def scene_action(self, action: str, start=None) -> None:
        if action == "descent":
            self.start_descent(np.atleast_2d(np.asarray(start, dtype=np.float64)) if start is not None
                               else self.default_start())
        elif action == "random_starts":
            self.random_starts()
        else:
            super().scene_action(action, start)

    def runners(self) -> list:
        return [r.runner for r in self.runs if not r.finished]

    def busy(self) -> bool:
        return self._rerun_timer.isActive() or any(w.busy or w.pending() for w in self._workers)

    def flush(self) -> None:
        if self._rerun_timer.isActive():
            self._rerun_timer.stop()
            self._rerun()
        self._redraw_timer.stop()
        self._redraw_runs()

    def apply_settings(self, values: dict) -> None:
        values = dict(values)
        xs, ys = values.pop("xs", None), values.pop("ys", None)
        super().apply_settings(values)
        if xs is not None or ys is not None:
            xs = list(self.state.xs) if xs is None else xs
            ys = list(self.state.ys) if ys is None else ys
            self.set_points([float(a) for a in xs], [float(a) for a in ys])

    def set_points(self, xs: list, ys: list) -> None:
        """Replace the data points (a scene's ``xs``/``ys``): the panel's count, then each point."""
        if len(xs) != len(ys) or not xs:
            raise ValueError("xs and ys need the same, non-zero length")
        panel = self.data_panel
        panel.n_points.setValue(len(xs))
        for i, (x, y) in enumerate(zip(xs, ys)):
            panel.set_point(i, x, y)

    # --- Lab API ------------------------------------------------------------------------------------
    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        for r in self.runs:
            if not r.finished:
                (r.pause if paused else r.runner.resume)()
        self.status.emit({"paused": paused})

    def pause_settled(self) -> bool:
        """Paused, and every unfinished run has confirmed it: what is drawn is where the runs stand."""
        return self.paused and all(r.finished or r.pause_reached for r in self.runs)

    def _on_run_failed(self, run, text: str) -> None:
        """A run ended with an error (the engine raised, its process died): keep its path, say why."""
        run.redraw()
        self.show_error(text)
        if all(r.finished for r in self.runs):
            self.status.emit({"running": False})

    def toggle_run(self) -> None:
        if not any(not r.finished for r in self.runs):
            self.paused = False
            self._start_default()
            return
        self.set_paused(not self.paused)
        self.message.emit("Paused: Space resumes, S steps" if self.paused else "Running", False)

    def single_step(self) -> None:
        if not any(not r.finished for r in self.runs):
            self.paused = True
            self._start_default()
        self.paused = True
        for r in self.runs:
            if not r.finished:
                r.runner.step_once()
        self.status.emit({"paused": True})

    def reset(self) -> None:
        self._rerun_timer.stop()
        self._pending_rerun = []
        self.clear_runs()
        self.paused = False
        self.status.emit({"step": 0, "loss": float("nan"), "running": False})
        self.message.emit("Cleared all descents", False)

    def set_device(self, device: str) -> None:
        self.device = device

    def show_error(self, text: str) -> None:
        self.banner.setText("⚠ " + text)
        self.banner.setVisible(True)
        self._banner_timer.start(10000)
        self.message.emit(text, True)

    def save_state(self) -> None:
        store.save_json(self.settings_key, dataclasses.asdict(self.state))

    def shutdown(self) -> None:
        self._redraw_timer.stop()
        self._rerun_timer.stop()
        self._banner_timer.stop()
        for r in self.runs:
            r.remove()
        self.runs = []  # the runs go now, by reference counting; their runners end by themselves
        for w in self._workers:
            w.stop(wait_ms=0)
        self.save_state()
