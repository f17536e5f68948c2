"""Run a trainer generator in a separate process and stream its snapshots back through a pipe.

Why a process: on a two-core machine a training thread and the GUI thread fight over Python's GIL; every
OpenGL call the GUI makes releases and re-takes it, and each re-take can wait a full switch interval, so
frames stall for tens of milliseconds and training slows. In its own process the trainer has its own
interpreter and the GUI process only unpickles a batch of snapshots a few dozen times a second.

The child is forked from a forkserver that has already imported torch and the engine, so a run starts in
milliseconds. Messages to the child: 'pause', 'resume', 'step' (one more snapshot while paused), 'hold' (pause, drop
pending steps, flush, answer ('held', None)), 'abort'. Messages from it: ('batch', [snapshots]),
('done', result), ('error', text), ('held', None), ('paused', None) (after 'pause', once every snapshot from
before has been sent). No Qt here.

Ending: a child that does not answer 'abort' (a user's model sleeping in its factory or its forward, a native
call that never returns) is terminated, then killed, each after a bounded wait (``ProcessRun.close``). At exit
``end_all`` ends every process this one started, whatever it is doing: the runs' children, the forkserver,
multiprocessing's resource tracker and anything else below this process; and it removes multiprocessing's
temporary folder (the app leaves with ``os._exit``, which skips multiprocessing's own clean-up).
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback

_CTX = None
_LOCK = threading.Lock()  # guards _RUNS and _ENDED; held only briefly (never while a child starts)
_RUNS: set[ProcessRun] = set()  # runs started and not closed yet
_ENDED = False  # end_all ran: the app is leaving, no forkserver or child starts any more

#: how long a child gets to answer 'abort', then SIGTERM, then SIGKILL (seconds; each wait ends early)
ABORT_WAIT_S = 1.0
TERM_WAIT_S = 1.0
KILL_WAIT_S = 2.0
#: the trainer children's nice level: the GUI's own thread gets the CPU first when both want it, while the GUI's
#: software rasterizer threads yield to the children (visualizer.workers.RASTERIZER_NICE)
CHILD_NICE = 5
#: while running, the child looks at its control messages at most this often (seconds): a poll of the pipe costs
#: about 3 us, 2% of a small model's step if it were made every step; a pause or an abort waits at most this long
CONTROL_POLL_S = 0.001


def keep_torch_cache_out_of_tmp() -> None:
    """torch's optimizers import its compiler, which makes a cache folder in the temporary directory
    (``torchinductor_<user>``) and leaves it there: point it at the user's cache folder instead
    ($XDG_CACHE_HOME/losslab/torchinductor, ~/.cache by default), before any child process starts. An explicit
    TORCHINDUCTOR_CACHE_DIR is kept."""
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(base, "losslab", "torchinductor")


def context():
    """The multiprocessing context: a forkserver with torch preloaded where available, else spawn."""
    global _CTX
    if _CTX is None:
        if sys.platform.startswith("linux") or sys.platform == "darwin":
            _CTX = mp.get_context("forkserver")
            _CTX.set_forkserver_preload(["torch", "models.train", "models.toy2d"])
        else:  # pragma: no cover - other platforms
            _CTX = mp.get_context("spawn")
    return _CTX


def warm_up() -> None:
    """Start the forkserver now (it imports torch in the background) so the first run starts at once."""
    ctx = context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        with _LOCK:  # never after end_all: a forkserver started then would outlive the app
            if not _ENDED:
                forkserver.ensure_running()


def _packed(buf: list):
    """A batch as it goes through the pipe: packed by its items' type where it offers that (``pack_batch``, e.g.
    models.train.Snapshot: a few arrays in one pickle), else the list itself."""
    pack = getattr(type(buf[0]), "pack_batch", None) if buf else None
    return pack(buf) if pack is not None else buf


def _child(conn, target: str, kwargs: dict, interval_s: float, start_paused: bool, torch_threads: int) -> None:
    try:
        import os

        # the GUI gets the CPU first when both want it: the trainer only loses what drawing really uses
        if hasattr(os, "nice"):
            os.nice(CHILD_NICE)
        import torch

        torch.set_num_threads(torch_threads)
        module, name = target.split(":")
        gen = getattr(importlib.import_module(module), name)(**kwargs)
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    paused = start_paused
    permits = 0
    acks = 0  # pauses to confirm once nothing is left to do
    buf: list = []
    last = now = time.perf_counter()
    next_poll = 0.0
    try:
        while True:
            # control messages: never block while running (and look only every CONTROL_POLL_S), block (briefly)
            # while paused, and look before every step asked for one at a time
            if paused or now >= next_poll:
                next_poll = now + CONTROL_POLL_S
                while conn.poll(0 if not (paused and permits == 0) else 0.05):
                    msg = conn.recv()
                    if msg == "abort":
                        if buf:
                            conn.send(("batch", _packed(buf)))
                        gen.close()
                        conn.send(("done", None))
                        return
                    if msg == "pause":  # stop, hand over what was computed, and say so (below)
                        paused = True
                        acks += 1
                    elif msg == "resume":
                        paused, permits = False, 0
                    elif msg == "step":
                        paused = True
                        permits += 1
                    elif msg == "hold":  # pause, forget pending steps, flush, and say so: exact stepping follows
                        paused, permits = True, 0
                        if buf:
                            conn.send(("batch", _packed(buf)))
                            buf = []
                        conn.send(("held", None))
            if paused and permits == 0:
                if buf:
                    conn.send(("batch", _packed(buf)))
                    buf = []
                # every step asked for before the pause is made and sent: now the pause is where it stands
                for _ in range(acks):
                    conn.send(("paused", None))
                acks = 0
                continue
            if paused:
                permits -= 1
            try:
                buf.append(next(gen))
            except StopIteration as stop:
                if buf:
                    conn.send(("batch", _packed(buf)))
                conn.send(("done", stop.value))
                return
            now = time.perf_counter()
            if now - last >= interval_s or paused:
                conn.send(("batch", _packed(buf)))
                buf = []
                last = now
    except (BrokenPipeError, EOFError, KeyboardInterrupt):
        return
    except Exception as exc:
        try:
            if buf:
                conn.send(("batch", _packed(buf)))
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"))
        except (BrokenPipeError, OSError):
            pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


class ProcessRun:
    """The parent's handle on one child run: ``send`` control messages, ``poll``/``recv`` messages."""

    def __init__(self, target: str, kwargs: dict, *, interval_s: float = 1 / 30, start_paused: bool = False,
                 torch_threads: int = 1) -> None:
        ctx = context()
        with _LOCK:
            if _ENDED:
                raise RuntimeError("the app is closing: no new training process starts")
            self._conn, child_conn = ctx.Pipe(duplex=True)
            self.process = ctx.Process(target=_child, args=(child_conn, target, kwargs, interval_s, start_paused,
                                                            torch_threads), daemon=True)
            _RUNS.add(self)
        try:
            self.process.start()
        except BaseException:
            with _LOCK:
                _RUNS.discard(self)
            self._conn.close()
            raise
        finally:
            child_conn.close()

    def send(self, msg: str) -> None:
        try:
            self._conn.send(msg)
        except (BrokenPipeError, OSError):
            pass

    def poll(self, timeout: float) -> bool:
        try:
            return self._conn.poll(timeout)
        except (OSError, EOFError):
            return False

    def recv(self):
        return self._conn.recv()

    def close(self, timeout: float = 3.0, term_wait: float = TERM_WAIT_S, kill_wait: float = KILL_WAIT_S) -> None:
        """End the child: 'abort' and up to ``timeout`` s for it to finish, then SIGTERM and up to
        ``term_wait`` s, then SIGKILL and up to ``kill_wait`` s. Returns once it is gone (or the waits ran out)."""
        self.send("abort")
        if self.process.pid is not None:
            self.process.join(timeout)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(term_wait)
            if self.process.is_alive():  # SIGTERM ignored or blocked (a user's code can do that)
                self.process.kill()
                self.process.join(kill_wait)
        try:
            self._conn.close()
        except OSError:
            pass
        with _LOCK:
            _RUNS.discard(self)


# --------------------------------------------------------------------------- ending every process at exit
def _proc_state(pid: int) -> str | None:
    """The state letter of ``pid`` from /proc (R, S, D, Z...), None when there is no such process, '?' when
    /proc cannot tell (another system: then os.kill(pid, 0) decides)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        return data[data.rindex(b")") + 2:][:1].decode("ascii", "replace")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:
            pass
        return "?"


def pid_alive(pid: int) -> bool:
    """``pid`` runs (a zombie, dead but not reaped yet, does not count)."""
    return _proc_state(pid) not in (None, "Z", "X")


def descendants(pid: int | None = None) -> list[int]:
    """Every process below ``pid`` (this one by default), children before grandchildren; [] without /proc."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
            ppid = int(data[data.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(0), []):
            if c not in out and c != root:
                out.append(c)
                todo.append(c)
    return out


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)  # our own child: collect its exit status (no zombie left)
    except (ChildProcessError, OSError):
        pass


def _signal(pids, sig) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_gone(pids, timeout: float) -> list[int]:
    """Wait up to ``timeout`` s for ``pids`` to end (reaping those that are our children); the survivors."""
    deadline = time.monotonic() + timeout
    while True:
        for pid in pids:
            _reap(pid)
        left = [p for p in pids if pid_alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def _end(pids, grace: float, term_wait: float = TERM_WAIT_S, kill_wait: float = KILL_WAIT_S) -> list[int]:
    """Wait ``grace`` s for ``pids`` to end by themselves, then SIGTERM, then SIGKILL; the survivors."""
    left = _wait_gone(list(pids), grace)
    if left:
        _signal(left, signal.SIGTERM)
        left = _wait_gone(left, term_wait)
    if left:
        _signal(left, signal.SIGKILL)
        left = _wait_gone(left, kill_wait)
    return left


def end_runs(term_wait: float = TERM_WAIT_S, kill_wait: float = KILL_WAIT_S) -> list[int]:
    """End the child of every run not closed yet (SIGTERM, then SIGKILL), whatever its runner thread is
    doing. By pid, never through the Process object another thread may be waiting on. Returns the survivors."""
    with _LOCK:
        runs = list(_RUNS)
    pids = [p for p in (getattr(r.process, "pid", None) for r in runs) if p is not None]
    pids += [p.pid for p in list(getattr(mp.process, "_children", ())) if p.pid is not None and p.pid not in pids]
    return _end([p for p in pids if pid_alive(p)], 0.0, term_wait, kill_wait)


def _stop_forkserver(grace: float) -> None:
    from multiprocessing import forkserver

    fs = forkserver._forkserver
    got = fs._lock.acquire(timeout=2.0)  # a thread in ensure_running holds it for a moment only
    try:
        pid, alive_fd, address = fs._forkserver_pid, fs._forkserver_alive_fd, fs._forkserver_address
        if pid is None:
            return
        fs._forkserver_pid = fs._forkserver_alive_fd = fs._forkserver_address = None
        if alive_fd is not None:
            try:
                os.close(alive_fd)  # its "alive" pipe at EOF: the forkserver leaves by itself
            except OSError:
                pass
        _end([pid], grace)  # ... unless it is still importing torch (its preload): then SIGTERM, SIGKILL
        _reap(pid)
        from multiprocessing import util

        if address and not util.is_abstract_socket_namespace(address):
            try:
                os.unlink(address)
            except OSError:
                pass
    finally:
        if got:
            fs._lock.release()


def _stop_resource_tracker(grace: float) -> None:
    from multiprocessing import resource_tracker

    rt = resource_tracker._resource_tracker
    got = rt._lock.acquire(timeout=2.0)
    try:
        fd, pid = rt._fd, rt._pid
        if fd is None:
            return
        rt._fd = rt._pid = None
        try:
            os.close(fd)  # at EOF (every child gone too) it cleans up what it tracks and leaves
        except OSError:
            pass
        if pid is not None:
            _end([pid], grace)  # it ignores SIGTERM: SIGKILL ends it if it does not leave
            _reap(pid)
    finally:
        if got:
            rt._lock.release()


def end_all(grace: float = 1.0) -> list[int]:
    """At exit only: end every process this one started and remove multiprocessing's temporary folder.

    The runs' children first (SIGTERM, SIGKILL), then the forkserver and the resource tracker (their pipes
    closed, ``grace`` s to leave, then signals), then whatever else still runs below this process. No process
    starts afterwards (``warm_up`` does nothing, ``ProcessRun`` refuses). Bounded: a few seconds at most.
    Returns the pids that could not be ended (normally none)."""
    global _ENDED
    with _LOCK:
        _ENDED = True
    end_runs()
    if _CTX is not None and _CTX.get_start_method() == "forkserver":
        _stop_forkserver(grace)
    _stop_resource_tracker(grace)
    left = _end([p for p in descendants() if pid_alive(p)], 0.0)
    for pid in descendants():
        _reap(pid)
    try:  # what multiprocessing's atexit hook would do, skipped by os._exit: its temporary folder
        from multiprocessing import util

        util._run_finalizers(0)
        util._run_finalizers()
    except Exception:
        pass
    return left
