"""Workers that run the engine's generators off the GUI thread.

``GeneratorRunner`` drives a trainer generator in a QThread: pause, resume, single step and abort between
yields, and it hands results to the GUI thread in batches at most ``interval_s`` apart (the display rate),
so training never waits on rendering and the GUI never drowns in signals.

``LatestJobWorker`` computes one thing at a time from the newest request only: dragging a data point
queues many grid evaluations, and only the latest one matters.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Generator

from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer, Signal

_LIVE: weakref.WeakSet[QThread] = weakref.WeakSet()
# Threads told to stop but not yet finished: kept alive here (a QThread destroyed while it runs aborts the
# process), without a parent (a lab closed meanwhile must not take them along), and dropped once finished.
_RETIRING: list[QThread] = []
_REAPER: list[QTimer] = []


def test_event(what: str) -> None:
    """For the process-hygiene tests: with LOSSLAB_TEST_EVENTS set, print ``losslab-test-event: <what>`` (the
    first frame shown, a trainer child started) so a test acts on the event, never after a fixed sleep."""
    if os.environ.get("LOSSLAB_TEST_EVENTS"):
        try:
            sys.stdout.write(f"losslab-test-event: {what}\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass


#: the nice level of the software rasterizer's threads (Mesa's llvmpipe, where there is no GPU) once a trainer has
#: run: below the trainer children's (models.procrun.CHILD_NICE). Measured (``losslab bench --only
#: stream_share_pct``, two runs each): rasterizer at nice 0, children at 10: 84% and 90% of the headless rate;
#: rasterizer 15, children 5: 99% and 105%, the GUI's longest stall unchanged (26-28 ms)
RASTERIZER_NICE = 15


def lower_rasterizer_priority() -> int:
    """Give the software rasterizer's threads a lower priority than the trainer children's, so that drawing
    uses the cores the training does not (llvmpipe starts one thread per core and all of them rasterize each
    frame: on two cores, at nice 0 they took the trainer's core for every frame). The GUI thread itself keeps
    its priority. Idempotent; a no-op without llvmpipe or /proc. Returns how many threads it lowered."""
    lowered = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="ascii", errors="replace") as f:
                name = f.read().strip()
            if name.startswith("llvmpipe-") and os.getpriority(os.PRIO_PROCESS, int(tid)) < RASTERIZER_NICE:
                os.setpriority(os.PRIO_PROCESS, int(tid), RASTERIZER_NICE)
                lowered += 1
        except (OSError, ValueError):  # the thread ended meanwhile, or no permission: nothing to do
            pass
    return lowered


def live_threads() -> list[QThread]:
    """Worker threads of ours that are still running (tests assert none outlive them)."""
    _reap()
    out = []
    for t in list(_LIVE):
        try:
            if t.isRunning():
                out.append(t)
        except RuntimeError:  # the C++ object is gone, so is its thread
            _LIVE.discard(t)
    return out


def _reap() -> None:
    _RETIRING[:] = [t for t in _RETIRING if not t.isFinished()]
    if not _RETIRING and _REAPER:
        _REAPER[0].stop()


def retire(thread: QThread) -> None:
    """Let ``thread`` (already told to stop) finish by itself: nobody waits for it, nothing is lost."""
    if not thread.isRunning():
        return
    if thread.parent() is not None:
        thread.setParent(None)
    if thread not in _RETIRING:
        _RETIRING.append(thread)
    app = QCoreApplication.instance()
    if app is None or QThread.currentThread() is not app.thread():
        return
    if not _REAPER:
        timer = QTimer(app)
        timer.setInterval(200)
        timer.timeout.connect(_reap)
        _REAPER.append(timer)
    if not _REAPER[0].isActive():
        _REAPER[0].start()


def join_all(timeout_s: float = 8.0) -> list[QThread]:
    """At exit only: give every worker of ours up to ``timeout_s`` to finish, events still processed.
    Returns those still running."""
    deadline = time.perf_counter() + timeout_s
    app = QCoreApplication.instance()
    while live_threads() and time.perf_counter() < deadline:
        for t in live_threads():
            t.wait(20)
        if app is not None:
            app.processEvents()
    return live_threads()


class GeneratorRunner(QThread):
    """Runs ``make_generator()`` (called inside the thread) and emits its items in throttled batches.

    The generator is advanced outside the control lock: pause, resume and abort from the GUI thread return at
    once, whatever the generator is computing; they take effect at its next yield."""

    batch = Signal(object)  # list of yielded items
    done = Signal(object)  # the generator's return value (None when aborted)
    failed = Signal(str)  # "TypeName: message\n<traceback>"

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

    # --- control, from any thread; none of these waits for the generator --------------------------
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

    def abort(self, wait_ms: int = 0) -> None:
        """Stop at the next yield. Returns at once (the thread finishes by itself, see ``retire``);
        ``wait_ms`` > 0 waits that long for it (at exit only, never on the GUI thread during use)."""
        with self._cond:
            self._abort = True
            self._cond.notify_all()
        if QThread.currentThread() is self:
            return
        if wait_ms > 0 and self.isRunning():
            self.wait(wait_ms)
        retire(self)

    def aborted(self) -> bool:
        return self._abort

    # --- the thread ----------------------------------------------------------------------------
    def _next_permission(self, have_items: bool) -> str:
        """'go' (compute one more item), 'flush' (paused: hand over what is buffered) or 'stop'."""
        with self._cond:
            while self._paused and self._permits == 0 and not self._abort:
                if have_items:
                    return "flush"
                self._cond.wait(0.05)
            if self._abort:
                return "stop"
            if self._paused:
                self._permits -= 1
            return "go"

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
        gen = None
        try:
            gen = self._make()
            while True:
                what = self._next_permission(bool(buf))
                if what == "stop":
                    break
                if what == "go":
                    try:
                        item = next(gen)  # outside the lock: control calls never wait for this
                    except StopIteration as stop:
                        result = stop.value
                        break
                    buf.append(item)
                    self.steps_done += 1
                now = time.perf_counter()
                if buf and (now - last_emit >= self._interval or self._paused or what == "flush"):
                    self.batch.emit(buf)
                    buf = []
                    last_emit = now
            if buf and not self._abort:
                self.batch.emit(buf)
            if self._abort and gen is not None:
                gen.close()
        except Exception as exc:  # the engine failed: report it, never crash the app
            if buf:
                self.batch.emit(buf)
            self.failed.emit(f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}")
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

    def pending(self) -> bool:
        """A request is waiting to be computed (``busy``: one is being computed)."""
        return self._has_pending

    def stop(self, wait_ms: int = 10000) -> None:
        """Stop after the computation in progress; waits up to ``wait_ms`` (0: not at all, the thread
        finishes by itself)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if wait_ms > 0 and self.isRunning() and QThread.currentThread() is not self:
            self.wait(wait_ms)
        retire(self)

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
                self.failed.emit(req, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}")
                self.busy = False
                continue
            with self._cond:
                superseded = self._has_pending
            if not superseded:
                self.result.emit(req, out)
            self.busy = False


def describe_exit(code: int | None) -> str:
    """A child's exit code in words: 'exit code 3', 'killed by signal 9 (SIGKILL)'."""
    if code is None:
        return "exit code unknown"
    if code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        hint = " — out of memory?" if -code == signal.SIGKILL else ""
        return f"killed by signal {-code} ({name}){hint}"
    return f"exit code {code}"


class ProcessRunner(QThread):
    """Same interface as GeneratorRunner, but the generator runs in a child process (models.procrun).

    ``target`` is 'module:function' returning the generator, called in the child with ``kwargs``. This
    thread only waits on the pipe (releasing the GIL) and re-emits what arrives as Qt signals. A child that
    dies (killed, out of memory, a crash in native code) ends the run with ``failed`` naming its exit code.
    After ``abort`` the child has ``ABORT_WAIT_S`` to answer; one that does not (a user's model sleeping in its
    factory or forward) is terminated, then killed: an aborted runner always ends, and its child with it.
    """

    batch = Signal(object)
    done = Signal(object)
    failed = Signal(str)
    holding = Signal()  # after ``hold``: every snapshot from before has been emitted
    pause_reached = Signal()  # after ``pause``: the child has stopped and every snapshot from before is emitted

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
        self._lock = threading.Lock()  # held only around a pipe write, never around a computation
        self.exit_code: int | None = None
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

    def aborted(self) -> bool:
        return self._abort

    def abort(self, wait_ms: int = 0) -> None:
        """Tell the child to stop. Returns at once: this thread ends the child (and waits for it) by itself;
        ``wait_ms`` > 0 waits that long (at exit only)."""
        self._abort = True
        self._send("abort")
        if QThread.currentThread() is self:
            return
        if wait_ms > 0 and self.isRunning():
            self.wait(wait_ms)
        retire(self)

    def _child_died(self, run) -> None:
        # this thread, never the GUI's, waits for the exit code (known once the forkserver has reaped the child)
        deadline = time.perf_counter() + 15.0
        while run.process.exitcode is None and time.perf_counter() < deadline:
            run.process.join(0.2)
        self.exit_code = run.process.exitcode
        if self._abort:
            self.done.emit(None)
        else:
            self.failed.emit(f"ChildProcessError: the training process died ({describe_exit(self.exit_code)}); "
                             "the path so far is kept")

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
            self.failed.emit(f"{type(exc).__name__}: could not start the training process: {exc}\n"
                             f"{traceback.format_exc(limit=6)}")
            return
        from models.procrun import ABORT_WAIT_S

        run = self._run
        test_event(f"trainer-started {run.process.pid}")
        lower_rasterizer_priority()
        aborted_at = None
        wait_s = 3.0  # for the child to finish once it has said all it had to say
        try:
            while True:
                if self._abort:
                    now = time.perf_counter()
                    aborted_at = aborted_at if aborted_at is not None else now
                    if now - aborted_at > ABORT_WAIT_S:  # no answer to 'abort': close() ends the child now
                        wait_s = 0.0
                        run.close(timeout=wait_s)
                        self.exit_code = run.process.exitcode
                        self.done.emit(None)
                        return
                if not run.poll(0.1):
                    if not run.process.is_alive() and not run.poll(0):
                        self._child_died(run)
                        return
                    continue
                try:
                    kind, payload = run.recv()
                except (EOFError, OSError):  # the pipe closed: the child is gone (it never closes it first)
                    self._child_died(run)
                    return
                except Exception as exc:  # a message that cannot be read: end the run, say why
                    self.failed.emit(f"{type(exc).__name__}: a message from the training process could not be "
                                     f"read: {exc}")
                    return
                if kind == "batch":
                    if payload:
                        self.batch.emit(payload)
                elif kind == "held":
                    self.holding.emit()
                elif kind == "paused":
                    self.pause_reached.emit()
                elif kind == "done":
                    self.done.emit(None if self._abort else payload)
                    return
                elif kind == "error":
                    self.failed.emit(payload)
                    return
        finally:
            run.close(timeout=wait_s)


class RunnerRelay(QObject):
    """Delivers one runner's signals to ``owner``'s handlers, on the GUI thread, without a reference cycle.

    The owner (a lab, a run on screen) keeps the relay; the relay holds the owner weakly and the runner holds
    the relay only through Qt's connections. So an owner dropped is freed at once by reference counting (never
    by the cyclic collector, which could free a QThread in the middle of a batch), its relay with it, and Qt
    discards the signals still queued for that relay. ``current`` names the owner's attribute that must still
    be this runner for a signal to count (a runner replaced or stopped may still have signals on their way).
    ``handlers`` maps signal names (batch, done, failed, pause_reached, holding) to method names of the owner;
    ``extra`` goes before each signal's own arguments."""

    SIGNALS = ("batch", "done", "failed", "pause_reached", "holding")

    def __init__(self, owner, runner, handlers: dict[str, str], *, current: str | None = None,
                 extra: tuple = ()) -> None:
        super().__init__()
        self._owner = weakref.ref(owner)
        self.runner = runner
        self._handlers = handlers
        self._current = current
        self._extra = extra
        for name in handlers:
            if name not in self.SIGNALS:
                raise ValueError(f"unknown runner signal '{name}'")
            sig = getattr(runner, name, None)
            if sig is not None:
                sig.connect(getattr(self, "_on_" + name))

    def _deliver(self, name: str, *args) -> None:
        owner = self._owner()
        if owner is None or self.runner is None:
            return
        if self._current is not None and getattr(owner, self._current, None) is not self.runner:
            return
        getattr(owner, self._handlers[name])(*self._extra, *args)

    def _on_batch(self, items) -> None:
        self._deliver("batch", items)

    def _on_done(self, result) -> None:
        self._deliver("done", result)

    def _on_failed(self, text: str) -> None:
        self._deliver("failed", text)

    def _on_pause_reached(self) -> None:
        self._deliver("pause_reached")

    def _on_holding(self) -> None:
        self._deliver("holding")

    def release(self) -> None:
        """Deliver nothing more (signals already queued included)."""
        self.runner = None
