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
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import sys
import time
import traceback

_CTX = None


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

        forkserver.ensure_running()


def _child(conn, target: str, kwargs: dict, interval_s: float, start_paused: bool, torch_threads: int) -> None:
    try:
        import os

        # the GUI gets the CPU first when both want it: the trainer only loses what drawing really uses
        if hasattr(os, "nice"):
            os.nice(10)
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
    last = time.perf_counter()
    try:
        while True:
            # control messages: never block while running, block (briefly) while paused
            while conn.poll(0 if not (paused and permits == 0) else 0.05):
                msg = conn.recv()
                if msg == "abort":
                    if buf:
                        conn.send(("batch", buf))
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
                        conn.send(("batch", buf))
                        buf = []
                    conn.send(("held", None))
            if paused and permits == 0:
                if buf:
                    conn.send(("batch", buf))
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
                    conn.send(("batch", buf))
                conn.send(("done", stop.value))
                return
            now = time.perf_counter()
            if now - last >= interval_s or paused:
                conn.send(("batch", buf))
                buf = []
                last = now
    except (BrokenPipeError, EOFError, KeyboardInterrupt):
        return
    except Exception as exc:
        try:
            if buf:
                conn.send(("batch", buf))
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
        self._conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_child, args=(child_conn, target, kwargs, interval_s, start_paused,
                                                        torch_threads), daemon=True)
        self.process.start()
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

    def close(self, timeout: float = 3.0) -> None:
        self.send("abort")
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(1.0)
        try:
            self._conn.close()
        except OSError:
            pass
