"""Playing a scene on a lab, frame by frame, on the simulation clock.

The same driver renders a scene headless (``losslab record``) and previews it in the app (the scene player):
frame i applies the events due at t = i / fps, waits for what they asked to be computed, advances every run
``steps_per_frame`` steps, draws, and sets the keyframed camera. Runs are synchronous here (``SyncRunner``,
swapped in for the child-process runner), so a scene gives the same frames every time, however slow the
machine.
"""

from __future__ import annotations

import importlib
import time

from PySide6.QtCore import QObject, Signal

from models.limits import MAX_SCENE_TEXT
from visualizer.recording.keyframes import Camera, camera_at


class SyncRunner(QObject):
    """The interface of ProcessRunner, advanced by the driver instead of a child process."""

    batch = Signal(object)
    done = Signal(object)
    failed = Signal(str)
    holding = Signal()
    pause_reached = Signal()

    def __init__(self, target: str, kwargs: dict, start_paused: bool = False, **_) -> None:
        super().__init__()
        self._target, self._kwargs = target, kwargs
        self._gen = None
        self._finished = False
        self._paused = start_paused

    def start(self) -> None:
        try:
            module, name = self._target.split(":")
            self._gen = getattr(importlib.import_module(module), name)(**self._kwargs)
        except Exception as exc:
            self._finished = True
            self.failed.emit(f"{type(exc).__name__}: {exc}")
            return
        self.advance(1)  # the step-0 snapshot

    def advance(self, n: int) -> None:
        if self._finished or self._gen is None or n <= 0:
            return
        items = []
        try:
            for _ in range(n):
                items.append(next(self._gen))
        except StopIteration as stop:
            self._finished = True
            if items:
                self.batch.emit(items)
            self.done.emit(stop.value)
            return
        except Exception as exc:
            self._finished = True
            if items:
                self.batch.emit(items)
            self.failed.emit(f"{type(exc).__name__}: {exc}")
            return
        if items:
            self.batch.emit(items)

    def hold(self) -> None:
        self._paused = True
        self.holding.emit()

    def isRunning(self) -> bool:
        return not self._finished

    def is_paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        self._paused = True
        self.pause_reached.emit()  # nothing runs between steps here

    def resume(self) -> None:
        self._paused = False

    def step_once(self) -> None:
        self.advance(1)

    def abort(self, *_) -> None:
        self._finished = True
        if self._gen is not None:
            self._gen.close()


def wait_idle(app, lab, timeout: float = 120.0, stop=None) -> None:
    """Process events until the lab has computed what was asked (frames never show half-computed views), or
    until ``stop()`` is true (a render being stopped: the caller looks at why)."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        app.processEvents()
        if stop is not None and stop():
            return
        if not lab.busy():
            app.processEvents()
            if not lab.busy():
                return
        time.sleep(0.003)


class SceneDriver:
    """Applies ``scene`` to ``lab``: ``setup()`` once, then ``frame(i)`` for i = 0, 1, ... in order.

    ``settle`` is called whenever the lab must finish computing before the timeline goes on (headless: wait
    for it; the player calls ``frame`` only when the lab is idle)."""

    def __init__(self, scene, lab, settle=None) -> None:
        self.scene, self.lab = scene, lab
        self.settle = settle or (lambda: None)
        self.pending: list = []
        self.ramps: list = []
        self.next_frame = 0

    def setup(self) -> None:
        self.begin()
        self.settle()
        self.ready()

    def begin(self, defaults: bool = False, start: bool = True) -> None:
        """Apply the scene's settings (``defaults``: every other setting back to its default first, as in a
        fresh lab) and start the lab (``start`` False: it was started beforehand with these settings, its first
        computation made while something else played: a tour's next chapter)."""
        sc, lab = self.scene, self.lab
        settings = {}
        if lab.state_cls is not None:
            if defaults:
                import dataclasses

                settings = dataclasses.asdict(lab.state_cls())
            if "seed" in lab.settings_dict():
                settings["seed"] = sc.seed
        settings.update(sc.settings)
        lab.apply_settings(settings)
        if start:
            lab.start()

    def ready(self) -> None:
        """After the lab's first computation: the timeline starts."""
        self.lab.flush()
        self.ramps = []
        self.pending = sorted(self.scene.events, key=lambda e: e.time)
        self.next_frame = 0

    def time_of(self, i: int) -> float:
        return i / self.scene.fps

    def apply_events(self, i: int) -> bool:
        """Apply the events due by frame i, and the current step of gradual changes; True when any was."""
        t = self.time_of(i)
        applied = self._apply_ramps(t)
        while self.pending and self.pending[0].time <= t + 1e-9:
            ev = self.pending.pop(0)
            if ev.set and ev.over > 0:
                now = self.lab.settings_dict()
                self.ramps.append((ev.time, ev.over, {k: now.get(k, v) for k, v in ev.set.items()}, dict(ev.set)))
                self._apply_ramps(t)
            elif ev.set:
                self.lab.apply_settings(ev.set)
            if ev.action:
                self.lab.scene_action(ev.action, ev.start)
            applied = True
        return applied

    def _apply_ramps(self, t: float) -> bool:
        """Settings moving gradually: linear in time from their value when the event began."""
        if not self.ramps:
            return False
        keep = []
        for t0, over, start, end in self.ramps:
            s = min(1.0, max(0.0, (t - t0) / over))
            values = {}
            for k, b in end.items():
                a = start[k]
                if isinstance(b, list):
                    a = a if isinstance(a, list) and len(a) == len(b) else b  # another length: jump
                    values[k] = [x + s * (y - x) for x, y in zip(a, b)]
                elif isinstance(b, int) and isinstance(a, int):
                    values[k] = round(a + s * (b - a))
                else:
                    values[k] = float(a) + s * (float(b) - float(a))
            self.lab.apply_settings(values)
            if s < 1.0:
                keep.append((t0, over, start, end))
        self.ramps = keep
        return True

    def advance(self) -> None:
        for r in list(self.lab.runners()):
            if hasattr(r, "advance") and not r.is_paused():
                r.advance(self.scene.steps_per_frame)

    def camera(self, i: int) -> Camera | None:
        if not self.scene.camera:
            return None
        # keyframes without a centre or distance follow the view the lab chose for its content (its "home",
        # which moves when the content does: a new surface, a new extent)
        view = self.lab.views().get("3d")
        center, distance = getattr(view, "home", ((0.0, 0.0, 0.0), 10.0))
        keys = [(t, Camera(c.azimuth, c.elevation, distance if c.distance is None else c.distance,
                           center if c.center is None else c.center)) for t, c in self.scene.camera]
        return camera_at(keys, self.time_of(i), self.scene.easing)

    def set_camera(self, i: int) -> None:
        cam = self.camera(i)
        if cam is None or "3d" not in self.lab.views():
            return
        import pyqtgraph as pg

        self.lab.views()["3d"].setCameraPosition(pos=pg.Vector(*cam.center), distance=cam.distance,
                                                 elevation=cam.elevation, azimuth=cam.azimuth)

    def captions(self, i: int) -> str:
        """The captions shown at frame i, together at most MAX_SCENE_TEXT characters (many at once are cut)."""
        t = self.time_of(i)
        text = "  ·  ".join(c.text for c in self.scene.captions if c.start <= t <= c.end)
        return text if len(text) <= MAX_SCENE_TEXT else text[: MAX_SCENE_TEXT - 1] + "…"

    def frame(self, i: int) -> None:
        """Bring the lab to frame i (frames must come in order, each once)."""
        if self.apply_events(i):
            self.settle()
        self.advance()
        self.settle()
        self.lab.flush()
        self.set_camera(i)
        self.next_frame = i + 1
