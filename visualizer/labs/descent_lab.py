"""What the labs that run descents share: run control (Space/S/R), pacing of redraws, re-running the
descents on screen after a change, the error banner, the data points and the custom model's formula as
declared settings, the end-of-run report, and a clean shutdown."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QTimer

from visualizer.labs.base import Action, Lab, SettingError
from visualizer.labs.schema import setting
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
DATA_GROUP = "Data (drag the points, or type)"


DATA_RANGE = (-1e6, 1e6)  # a data value past this (a stored 1e300) would break the drawing


def data_setting(default: list, label: str, other: str, max_points: int):
    """The data's ``xs`` or ``ys`` (``other`` names the other list): shown by the lab's DataPanel, as many
    values as the other list, a change of either a new problem."""
    def same_count(v, s):
        n = len(getattr(s, other))
        if len(v) == n:
            return None
        return f"{len(v)} value{'' if len(v) == 1 else 's'}, but {other} has {n}: one of each per point"
    return setting(default, label, group=DATA_GROUP, widget="data", length=(1, max_points), range=DATA_RANGE,
                   depends=(other,), check=same_count, reacts="problem")


def expression_check(variables: tuple = ("w1", "w2", "x")):
    """A ``check`` for the custom model's formula: None when it parses, else the parser's reason."""
    def check(text, state):
        from models.expr import ExpressionError, parse_expression

        try:
            parse_expression(text, variables)
        except ExpressionError as exc:
            return str(exc)
        return None
    return check


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

    # --- the data and the custom model -------------------------------------------------------------
    def make_data_panel(self, max_points: int, count_tip: str) -> dict:
        """The data panel (``self.data_panel``) for the settings xs/ys: the ``custom`` entry for make_form."""
        from visualizer.views.data_panel import DataPanel

        self.data_panel = DataPanel(self.settings, max_points, count_tip)
        self.data_panel.error.connect(self._on_data_error)
        return {"data": lambda settings: self.data_panel}

    def _on_data_error(self, text: str) -> None:
        self.message.emit(text, True)

    def set_data_point(self, i: int, x: float, y: float) -> None:
        """Move data point i to (x, y), as a drag does: the landscape and the manifold follow."""
        self.data_panel.set_point(i, x, y)

    def set_expression(self, text: str) -> bool:
        """Typing ``text`` as the custom model's formula and pressing Enter. One that parses becomes the
        expression and makes the model the custom one (one change: one new landscape); one that does not is
        refused with the reason under the field, and nothing changes. Returns whether it was taken."""
        try:
            self.settings.update({"expression": self.settings.check({"expression": text.strip()})["expression"],
                                  "model": "custom"}, "user")
        except SettingError:
            pass
        return self.form.enter_text("expression", text)  # a refusal shows under the field; a success clears it

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

    def _on_run_done(self, run, result) -> None:
        """A run ended: its landing points drawn; a divergence in the banner, else ``done_message``."""
        run.redraw()
        if result is None:
            return
        if result.diverged.any():
            self.show_error(result.message)
        else:
            self.message.emit(self.done_message(run, result), False)
        if all(r.finished for r in self.runs):
            self.status.emit({"running": False})

    def done_message(self, run, result) -> str:
        """What the status bar says about a run that ended well: the engine's words, and how far each landing
        point is from its marked projection (a lab adds its own measures)."""
        msg = result.message
        if run.projections is not None:
            d = max(np.linalg.norm(tr.last_params - p) for tr, p in zip(run.trajs, run.projections))
            msg += f" · |landing − projection| = {d:.2e}"
        return msg

    def _on_run_failed(self, run, text: str) -> None:
        """A run ended with an error (the engine raised, its process died): keep its path, say why."""
        run.redraw()
        self.show_error(text, failure=True)
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

    def show_error(self, text: str, failure: bool = False) -> None:
        """The error banner and message; ``failure``: a computation failed (``report_failure``)."""
        self.banner.show_text(text)
        (self.report_failure if failure else lambda t: self.message.emit(t, True))(text)

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
