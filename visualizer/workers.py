"""Workers that run the engine's generators off the GUI thread.

``GeneratorRunner`` drives a trainer generator in a QThread: pause, resume, single step and abort between
yields, and it hands results to the GUI thread in batches at most ``interval_s`` apart (the display rate),
so training never waits on rendering and the GUI never drowns in signals.

``LatestJobWorker`` computes one thing at a time from the newest request only: dragging a data point
queues many grid evaluations, and only the latest one matters.
"""

from __future__ import annotations

import threading
import time
import traceback
import weakref
from collections.abc import Callable, Generator

from PySide6.QtCore import QThread, Signal

_LIVE: "weakref.WeakSet[QThread]" = weakref.WeakSet()


def live_threads() -> list[QThread]:
    """Worker threads of ours that are still running (tests assert none outlive them)."""
    out = []
    for t in list(_LIVE):
        try:
            if t.isRunning():
                out.append(t)
        except RuntimeError:  # the C++ object is gone, so is its thread
            _LIVE.discard(t)
    return out


class GeneratorRunner(QThread):
    """Runs ``make_generator()`` (called inside the thread) and emits its items in throttled batches."""

    batch = Signal(object)  # list of yielded items
    done = Signal(object)  # the generator's return value (None when aborted)
    failed = Signal(str)

    def __init__(self, make_generator: Callable[[], Generator], *, interval_s: float = 1 / 60,
                 torch_threads: int | None = 1, start_paused: bool = False, parent=None) -> None:
        super().__init__(parent)
        self._make = make_generator
        self._interval = interval_s
        self._torch_threads = torch_threads
        self._cond = threading.Condition()
        self._paused = start_paused
        self._permits = 0
        self._abort = False
        self.steps_done = 0
        _LIVE.add(self)

    # --- control, from any thread ---------------------------------------------------------------
    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def step_once(self) -> None:
        """While paused: let exactly one more item through."""
        with self._cond:
            self._paused = True
            self._permits += 1
            self._cond.notify_all()

    def is_paused(self) -> bool:
        return self._paused

    def abort(self, wait_ms: int = 5000) -> None:
        with self._cond:
            self._abort = True
            self._cond.notify_all()
        if self.isRunning() and QThread.currentThread() is not self:
            self.wait(wait_ms)

    # --- the thread ----------------------------------------------------------------------------
    def run(self) -> None:  # noqa: D401 - Qt override
        if self._torch_threads:
            try:
                import torch

                torch.set_num_threads(self._torch_threads)
            except Exception:  # pragma: no cover - torch missing is reported by the generator
                pass
        buf: list = []
        last_emit = time.perf_counter()
        result = None
        try:
            gen = self._make()
            while True:
                with self._cond:
                    while self._paused and self._permits == 0 and not self._abort:
                        if buf:
                            break
                        self._cond.wait(0.05)
                    if self._abort:
                        break
                    if self._paused and self._permits == 0:
                        pass  # flush what we have, then wait again
                    else:
                        if self._paused:
                            self._permits -= 1
                        try:
                            item = next(gen)
                        except StopIteration as stop:
                            result = stop.value
                            break
                        buf.append(item)
                        self.steps_done += 1
                now = time.perf_counter()
                if buf and (now - last_emit >= self._interval or self._paused):
                    self.batch.emit(buf)
                    buf = []
                    last_emit = now
            if buf:
                self.batch.emit(buf)
            if self._abort:
                gen.close()
        except Exception as exc:  # the engine failed: report it, never crash the app
            if buf:
                self.batch.emit(buf)
            self.failed.emit(f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
            return
        self.done.emit(None if self._abort else result)


class LatestJobWorker(QThread):
    """A persistent thread that computes ``fn(request)`` for the newest request only."""

    result = Signal(object, object)  # (request, result)
    failed = Signal(object, str)

    def __init__(self, fn: Callable[[object], object], parent=None) -> None:
        super().__init__(parent)
        self._fn = fn
        self._cond = threading.Condition()
        self._pending = None
        self._has_pending = False
        self._stop = False
        self.busy = False
        _LIVE.add(self)

    def submit(self, request) -> None:
        with self._cond:
            self._pending = request
            self._has_pending = True
            self._cond.notify_all()
        if not self.isRunning():
            self.start()

    def stop(self, wait_ms: int = 10000) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self.isRunning():
            self.wait(wait_ms)

    def run(self) -> None:  # noqa: D401 - Qt override
        while True:
            with self._cond:
                while not self._has_pending and not self._stop:
                    self._cond.wait(0.2)
                if self._stop:
                    return
                req = self._pending
                self._has_pending = False
                self.busy = True
            try:
                out = self._fn(req)
            except Exception as exc:  # reported to the GUI, which keeps running
                self.busy = False
                self.failed.emit(req, f"{exc}")
                continue
            self.busy = False
            with self._cond:
                superseded = self._has_pending
            if not superseded:
                self.result.emit(req, out)
