"""Process hygiene: however the app is stopped (SIGTERM, SIGINT, its window closed) and whenever (after the
first frame; while a child trains a user's model that hangs), no process it started is left and no temporary
file remains.

The processes are found by walking /proc for descendants of the app's pid while it runs (every pid seen is
recorded with its start time, so a reused pid is never mistaken for ours) and are checked gone afterwards.
Every wait ends on an event (a line the app prints with LOSSLAB_TEST_EVENTS set, a file appearing, the process
exiting), bounded by a deadline; none is a fixed sleep.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.threads import HANGING_MODEL

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="walks /proc")



# ----------------------------------------------------------------------------------- the process table
def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, start time, state) of ``pid`` from /proc, None when there is no such process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[1]), int(fields[19]), fields[0].decode()


def descendants(root: int) -> dict[int, int]:
    """Every process below ``root``: pid -> start time."""
    children: dict[int, list[tuple[int, int]]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(st[0], []).append((int(name), st[1]))
    out: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            if pid not in out:
                out[pid] = start
                todo.append(pid)
    return out


def running(pid: int, start: int) -> bool:
    """The process ``pid`` that started at ``start`` still runs (a zombie has ended)."""
    st = _stat(pid)
    return st is not None and st[1] == start and st[2] not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
    except OSError:
        return "?"


# ----------------------------------------------------------------------------------- the app, watched
class WatchedApp:
    """``python -m visualizer ARGS`` with its own TMPDIR and config folder; every process below it recorded."""

    def __init__(self, args: list[str], tmp_path: Path) -> None:
        self.tmpdir = tmp_path / "tmp"
        self.cfg = tmp_path / "cfg"
        runtime = tmp_path / "runtime"
        for d in (self.tmpdir, runtime):
            d.mkdir()
        runtime.chmod(0o700)
        env = dict(os.environ, LOSSLAB_CONFIG_DIR=str(self.cfg), LOSSLAB_TEST_EVENTS="1", TMPDIR=str(self.tmpdir),
                   XDG_RUNTIME_DIR=str(runtime), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "visualizer", *args], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.seen: dict[int, int] = {}
        self.lines: list[str] = []
        self.events: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.events.put), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err.append), daemon=True).start()

    @staticmethod
    def _read(stream, put) -> None:
        for raw in iter(stream.readline, b""):
            put(raw.decode(errors="replace").rstrip("\n"))

    def scan(self) -> None:
        for pid, start in descendants(self.proc.pid).items():
            self.seen.setdefault(pid, start)

    def stderr(self) -> str:
        return "\n".join(self.err)

    def wait_until(self, cond, what: str, timeout: float = 90.0) -> None:
        """Until ``cond()``, recording the process tree meanwhile; fails if the app exits first."""
        deadline = time.monotonic() + timeout
        while not cond():
            self.scan()
            assert self.proc.poll() is None, f"the app exited ({self.proc.returncode}) before {what}:\n" \
                                             f"{self.stderr()[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{self.stderr()[-3000:]}"
            try:
                self.lines.append(self.events.get(timeout=0.05))
            except queue.Empty:
                pass

    def wait_event(self, name: str, timeout: float = 90.0) -> str:
        prefix = f"losslab-test-event: {name}"
        self.wait_until(lambda: any(x.startswith(prefix) for x in self.lines), f"event '{name}'", timeout)
        return next(x for x in self.lines if x.startswith(prefix))

    def wait_file(self, path: Path, timeout: float = 90.0) -> None:
        self.wait_until(path.exists, f"file {path.name}", timeout)

    def stop(self, how: str) -> None:
        self.scan()
        if how == "close":
            self.proc.stdin.write(b"close\n")
            self.proc.stdin.flush()
        else:
            self.proc.send_signal(getattr(signal, how))

    def wait_exit(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            self.scan()  # what it starts while closing counts too
            if time.monotonic() > deadline:
                raise AssertionError(f"the app did not exit within {timeout} s:\n{self.stderr()[-3000:]}")
            try:
                self.proc.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
        return self.proc.returncode

    def left(self, timeout: float) -> dict[int, str]:
        """The recorded processes still running after up to ``timeout`` s (normally none at once)."""
        deadline = time.monotonic() + timeout
        while True:
            alive = {p: _cmdline(p) for p, s in self.seen.items() if running(p, s)}
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.05)  # a bound for a slow machine, not a wait: the loop ends as soon as all are gone

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid, start in self.seen.items():
            if running(pid, start):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for s in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                s.close()
            except OSError:
                pass


def _leftover_files(app: WatchedApp) -> list[str]:
    found = [str(p.relative_to(app.tmpdir)) for p in app.tmpdir.rglob("*")]
    if app.cfg.exists():
        found += [p.name for p in app.cfg.iterdir() if p.name.startswith(".losslab-")]
    return found


CODES = {"SIGTERM": 128 + signal.SIGTERM, "SIGINT": 128 + signal.SIGINT, "close": 0}


@pytest.mark.parametrize("moment,how", [("first-frame", "SIGTERM"), ("first-frame", "close"),
                                        ("training", "SIGINT"),
                                        ("hanging-user-model", "SIGTERM"), ("hanging-user-model", "SIGINT"),
                                        ("hanging-user-model", "close")])
def test_stopping_the_app_leaves_no_process_and_no_temporary_file(tmp_path, moment, how):
    if moment == "first-frame":
        args = ["--lab", "manifold2d", "--size", "900x600"]
    elif moment == "training":  # the surface lab trains its network in a child as it opens
        args = ["--lab", "surface", "--size", "900x600"]
    else:
        marker = tmp_path / "factory-running"
        model = tmp_path / "sleeps.py"
        model.write_text(textwrap.dedent(HANGING_MODEL.format(marker=str(marker))))
        args = ["--model", f"{model}:make", "--size", "900x600"]
    app = WatchedApp(args, tmp_path)
    try:
        if moment == "first-frame":
            app.wait_event("first-frame")
        elif moment == "training":
            app.wait_event("trainer-started")
        else:
            app.wait_event("trainer-started")
            app.wait_file(marker)  # the trainer child is inside the user's factory, which never returns
        t0 = time.monotonic()
        app.stop(how)
        code = app.wait_exit()
        took = time.monotonic() - t0
        left = app.left(3.0)
        assert not left, f"still running after the app exited ({how} at {moment}): {left}"
        assert code == CODES[how], app.stderr()[-3000:]
        assert took < 20, f"the app took {took:.1f} s to exit"
        if moment != "first-frame":  # the resource tracker, the forkserver and the trainer child, all seen
            assert len(app.seen) >= 3, app.seen
        assert _leftover_files(app) == []
        assert "Traceback" not in app.stderr(), app.stderr()[-3000:]
    finally:
        app.cleanup()


END_ALL_SCRIPT = """
import sys
import time

from models import procrun

run = procrun.ProcessRun("models.surface_job:user_train_run",
                         dict(spec=sys.argv[1], optimizer="sgd", lr=0.1, steps=10, every=1))
print("started", run.process.pid, flush=True)
sys.stdin.readline()  # the test has seen the factory running and recorded the processes
t0 = time.monotonic()
left = procrun.end_all()
print("ended", left, round(time.monotonic() - t0, 2), flush=True)
import os

os._exit(0)  # as the app leaves: no atexit clean-up of multiprocessing
"""


def test_end_all_ends_the_children_the_forkserver_and_the_resource_tracker(tmp_path):
    marker = tmp_path / "factory-running"
    model = tmp_path / "sleeps.py"
    model.write_text(textwrap.dedent(HANGING_MODEL.format(marker=str(marker))))
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", END_ALL_SCRIPT, f"{model}:make"], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            seen.update({p: s for p, s in descendants(proc.pid).items() if p not in seen})
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the factory never ran"
            time.sleep(0.05)  # polling for the file, not a fixed wait
        seen.update({p: s for p, s in descendants(proc.pid).items() if p not in seen})
        assert len(seen) >= 3, seen  # tracker, forkserver, trainer child
        out, err = proc.communicate("go\n", timeout=60)
        assert proc.returncode == 0, err
        ended = [line for line in out.splitlines() if line.startswith("ended")]
        assert ended and ended[0].split()[1] == "[]", out
        assert float(ended[0].split()[-1]) < 10, out  # bounded: abort, SIGTERM (ignored), SIGKILL
        assert not {p: _cmdline(p) for p, s in seen.items() if running(p, s)}
        assert list(tmpdir.iterdir()) == []  # multiprocessing's pymp-* folder and the forkserver's socket
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid, start in seen.items():
            if running(pid, start):
                os.kill(pid, signal.SIGKILL)
