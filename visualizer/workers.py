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

_LIVE: weakref.WeakSet[QThread] = weakref.WeakSet()


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
    def run(self) -> None:
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

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._has_pending and not self._stop:
                    self._cond.wait(0.2)
                if self._stop:
                    return
                req = self._pending
                self._has_pending = False
                self.busy = True
            # ``busy`` drops only after the result is posted to the GUI thread: whoever sees it False (the
            # recorder waiting for a grid) finds the result in the event queue
            try:
                out = self._fn(req)
            except Exception as exc:  # reported to the GUI, which keeps running
                self.failed.emit(req, f"{exc}")
                self.busy = False
                continue
            with self._cond:
                superseded = self._has_pending
            if not superseded:
                self.result.emit(req, out)
            self.busy = False


class ProcessRunner(QThread):
    """Same interface as GeneratorRunner, but the generator runs in a child process (models.procrun).

    ``target`` is 'module:function' returning the generator, called in the child with ``kwargs``. This
    thread only waits on the pipe (releasing the GIL) and re-emits what arrives as Qt signals.
    """

    batch = Signal(object)
    done = Signal(object)
    failed = Signal(str)
    holding = Signal()  # after ``hold``: every snapshot from before has been emitted

    def __init__(self, target: str, kwargs: dict, *, interval_s: float = 1 / 30, start_paused: bool = False,
                 torch_threads: int = 1, parent=None) -> None:
        super().__init__(parent)
        self._target = target
        self._kwargs = kwargs
        self._interval = interval_s
        self._paused = start_paused
        self._threads = torch_threads
        self._abort = False
        self._queued: list[str] = []
        self._run = None
        self._lock = threading.Lock()
        _LIVE.add(self)

    def _send(self, msg: str) -> None:
        with self._lock:
            if self._run is not None:
                self._run.send(msg)
            elif msg in ("step", "pause", "resume", "hold"):
                self._queued.append(msg)  # sent once the child exists

    def pause(self) -> None:
        self._paused = True
        self._send("pause")

    def resume(self) -> None:
        self._paused = False
        self._send("resume")

    def step_once(self) -> None:
        self._paused = True
        self._send("step")

    def hold(self) -> None:
        """Pause, drop pending steps and flush; ``holding`` is emitted after the last snapshot from before.
        From then on ``advance(n)`` gives exactly n snapshots (a recording on the simulation clock)."""
        self._paused = True
        self._send("hold")

    def advance(self, n: int) -> None:
        """Exactly ``n`` more steps (after ``hold``), then wait."""
        for _ in range(n):
            self._send("step")

    def is_paused(self) -> bool:
        return self._paused

    def abort(self, wait_ms: int = 8000) -> None:
        self._abort = True
        self._send("abort")
        if self.isRunning() and QThread.currentThread() is not self:
            self.wait(wait_ms)

    def run(self) -> None:
        from models.procrun import ProcessRun

        try:
            with self._lock:
                self._run = ProcessRun(self._target, self._kwargs, interval_s=self._interval,
                                       start_paused=self._paused, torch_threads=self._threads)
                for msg in self._queued:
                    self._run.send(msg)
                self._queued = []
            if self._abort:
                self._run.send("abort")
        except Exception as exc:
            self.failed.emit(f"could not start the training process: {exc}")
            return
        run = self._run
        try:
            while True:
                if not run.poll(0.1):
                    if not run.process.is_alive() and not run.poll(0):
                        if not self._abort:
                            self.failed.emit(f"the training process exited unexpectedly "
                                             f"(exit code {run.process.exitcode})")
                        else:
                            self.done.emit(None)
                        return
                    continue
                try:
                    kind, payload = run.recv()
                except (EOFError, OSError):
                    continue
                if kind == "batch":
                    if payload:
                        self.batch.emit(payload)
                elif kind == "held":
                    self.holding.emit()
                elif kind == "done":
                    self.done.emit(None if self._abort else payload)
                    return
                elif kind == "error":
                    self.failed.emit(payload)
                    return
        finally:
            run.close()
