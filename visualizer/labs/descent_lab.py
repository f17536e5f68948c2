"""What the labs that run descents share: run control (Space/S/R), pacing of redraws, re-running the
descents on screen after a change, the error banner, persisted state, and a clean shutdown."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QTimer

from visualizer.labs.base import Action, Lab
from visualizer.views.common import Banner

PALETTE = ["#ff9f1c", "#ff4d6d", "#4cc9f0", "#b8f35a", "#ffd60a", "#c77dff", "#2ec4b6", "#f72585",
           "#90e0ef", "#fb8500"]
DESCENT_ACTIONS = (
    Action("descent", "Descend from w₀", "scene_descent", scene="start a descent at 'start' (a list of "
           "parameters; the lab's default start without it)", button=False, with_start=True),
    Action("random_starts", "Random starts", "random_starts", group="Gradient descent", beside="n_random",
           tooltip="Start N descents at once from random points of the box",
           scene="start the lab's batch of random starts"),
    Action("reset", "Clear descents (R)", "reset", group="Gradient descent", scene="stop and clear all descents"),
)


class DescentLab(Lab):
    """Base of labs whose ``runs`` are DescentRuns. Subclasses hold ``scene`` and implement
    ``start_descent``, ``clear_runs``, ``default_start``, ``random_starts``, ``request_landscape`` and
    ``update_caption``."""

    actions = DESCENT_ACTIONS

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
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
        self._palette_i = 0
        self.banner = Banner()

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
    def scene_descent(self, start=None) -> None:
        self.start_descent(np.atleast_2d(np.asarray(start, dtype=np.float64)) if start is not None
                           else self.default_start())

    def react_problem(self, changed: dict) -> None:
        """The model or the data changed: the landscape now, the descents again once the change settles."""
        self.update_caption()
        self.request_landscape()
        self._schedule_rerun()

    def react_grid(self, changed: dict) -> None:
        """A view setting that needs the grid computed again."""
        self.update_caption()
        self.request_landscape()

    def react_runs(self, changed: dict) -> None:
        """A descent setting changed: the descents on screen run again from their starts."""
        self._schedule_rerun()

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

    def next_colors(self, n: int) -> list[str]:
        """Colours for the next ``n`` descents, round the palette."""
        out = [PALETTE[(self._palette_i + k) % len(PALETTE)] for k in range(n)]
        self._palette_i += n
        return out

    def _start_default(self) -> None:
        self.start_descent(self.default_start())

    def show_error(self, text: str) -> None:
        self.banner.show_text(text)
        self.message.emit(text, True)

    def shutdown(self) -> None:
        self._redraw_timer.stop()
        self._rerun_timer.stop()
        self.banner.stop()
        for r in self.runs:
            r.remove()
        self.runs = []  # the runs go now, by reference counting; their runners end by themselves
        for w in self._workers:
            w.stop(wait_ms=0)
        super().shutdown()
