"""The workers that run the engine off the GUI thread: control calls never wait for a computation."""

import threading

from tests.threads import HANGING_MODEL
from visualizer.workers import GeneratorRunner, LatestJobWorker, live_threads


def test_pause_and_abort_return_while_the_generator_computes(qtbot):
    entered, release = threading.Event(), threading.Event()
    seen = {}

    def slow():
        yield 0
        entered.set()
        # a long computation between two yields (a whole grid level); 20 s is only a guard against a hang
        seen["released_by_the_test"] = release.wait(20)
        yield 1

    from PySide6.QtCore import QObject

    owner = QObject()
    runner = GeneratorRunner(slow, parent=owner)
    runner.start()
    assert entered.wait(20)
    runner.pause()
    runner.step_once()
    runner.abort()  # before the fix these waited for the generator's lock: the generator was never released
    release.set()
    qtbot.waitUntil(runner.isFinished, timeout=20000)
    assert seen["released_by_the_test"] is True
    assert runner.parent() is None  # nobody's child: a lab closed meanwhile cannot take it down


def test_an_aborted_runner_lives_until_it_has_finished(qtbot):
    import gc
    import weakref

    from PySide6.QtCore import QObject

    entered, release = threading.Event(), threading.Event()

    def slow():
        entered.set()
        release.wait(20)
        yield 0

    owner = QObject()
    runner = GeneratorRunner(slow, parent=owner)
    runner.start()
    assert entered.wait(20)
    ref = weakref.ref(runner)
    runner.abort()
    del runner
    owner.deleteLater()
    del owner
    gc.collect()
    assert ref() is not None and ref().isRunning()  # kept alive while it runs (destroying it would abort the app)
    release.set()
    qtbot.waitUntil(lambda: ref() is None or ref().isFinished(), timeout=20000)
    qtbot.waitUntil(lambda: live_threads() == [], timeout=20000)


def test_failures_carry_the_type_and_the_traceback(qtbot):
    def bad():
        yield 0
        raise KeyError("missing")

    runner = GeneratorRunner(bad)
    with qtbot.waitSignal(runner.failed, timeout=20000) as sig:
        runner.start()
    text = sig.args[0]
    assert text.startswith("KeyError: 'missing'") and "Traceback" in text and "in bad" in text
    qtbot.waitUntil(runner.isFinished, timeout=20000)

    def boom(req):
        raise ZeroDivisionError("no")

    worker = LatestJobWorker(boom)
    with qtbot.waitSignal(worker.failed, timeout=20000) as sig:
        worker.submit(1)
    assert sig.args[1].startswith("ZeroDivisionError: no") and "Traceback" in sig.args[1]
    worker.stop()


def test_error_report_logs_the_traceback_and_names_the_log(fresh_settings):
    from visualizer.errorlog import log_path, report

    try:
        {}["x"]
    except KeyError as exc:
        line = report("Something failed", exc)
    assert line.startswith("Something failed: KeyError: 'x'") and log_path() in line
    from pathlib import Path

    text = Path(log_path()).read_text(encoding="utf-8")
    assert "Something failed" in text and "Traceback" in text and "KeyError" in text




def _hanging_spec(tmp_path):
    marker = tmp_path / "factory-running"
    model = tmp_path / "sleeps.py"
    model.write_text(HANGING_MODEL.format(marker=str(marker)))
    return f"{model}:make", marker


def pid_alive(pid) -> bool:
    """``pid`` runs (a zombie has ended); from /proc, or os.kill(pid, 0) elsewhere."""
    import os

    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        return data[data.rindex(b")") + 2:][:1] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _kill(pid):
    import os
    import signal

    if pid is not None and pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def test_an_aborted_runner_ends_a_child_that_never_answers(qtbot, tmp_path):
    """A user's model stuck in its factory: abort, then SIGTERM (ignored), then SIGKILL; the runner ends."""
    import time

    from visualizer.workers import ProcessRunner

    spec, marker = _hanging_spec(tmp_path)
    runner = ProcessRunner("models.surface_job:user_train_run",
                           dict(spec=spec, optimizer="sgd", lr=0.1, steps=10, every=1))
    done = []
    runner.done.connect(done.append)
    runner.start()
    pid = None
    try:
        qtbot.waitUntil(marker.exists, timeout=90000)
        pid = runner._run.process.pid
        t0 = time.perf_counter()
        runner.abort()
        qtbot.waitUntil(runner.isFinished, timeout=15000)  # before the fix it waited for the child for ever
        assert time.perf_counter() - t0 < 10
        assert not pid_alive(pid) and runner.exit_code == -9  # SIGTERM was ignored: killed
        qtbot.waitUntil(lambda: done == [None], timeout=5000)  # an aborted run ends with done(None)
    finally:
        _kill(pid)


def test_closing_a_process_run_escalates_to_sigkill(tmp_path):
    import time

    from models.procrun import ProcessRun

    spec, marker = _hanging_spec(tmp_path)
    run = ProcessRun("models.surface_job:user_train_run", dict(spec=spec, optimizer="sgd", lr=0.1, steps=10,
                                                                every=1))
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert time.monotonic() < deadline and run.process.is_alive(), "the factory never ran"
            time.sleep(0.02)  # polling for the file, not a fixed wait
        t0 = time.perf_counter()
        run.close(timeout=0.5)
        assert time.perf_counter() - t0 < 6  # 0.5 s for 'abort', 1 s after SIGTERM, then SIGKILL
        assert not pid_alive(run.process.pid) and run.process.exitcode == -9
    finally:
        _kill(run.process.pid)


def _descent_kwargs(steps: int = 10**6) -> dict:
    import numpy as np

    return dict(model_key="tanh", expression="", xs=(1.0,), ys=(0.8,), starts=np.array([[2.5, -2.5]]),
                optimizer="gd", lr=1e-4, momentum=0.9, batch_size=1, steps=steps, device="cpu", seed=0)


def _nice_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[16])


def test_a_running_child_stops_exactly_where_a_pause_finds_it():
    """The child looks at its messages only every CONTROL_POLL_S while it runs: a pause still stops it, every
    snapshot made before it is sent before 'paused', and from then on each 'step' is exactly one more step."""
    from models.procrun import ProcessRun

    run = ProcessRun("models.toy2d:descent", _descent_kwargs())
    try:
        steps = []

        def take_until(kind: str) -> None:
            while True:
                assert run.poll(30), f"no {kind!r} from the child"
                what, payload = run.recv()
                if what == "batch":
                    steps.extend(int(s) for s in payload.steps)
                elif what == kind:
                    return

        while len(steps) < 50:  # running
            assert run.poll(30)
            what, payload = run.recv()
            assert what == "batch"
            steps.extend(int(s) for s in payload.steps)
        run.send("pause")
        take_until("paused")
        assert steps == list(range(steps[0], steps[0] + len(steps)))  # every step, in order, none lost
        assert not run.poll(0.3)  # paused means nothing more comes
        last = steps[-1]
        for k in range(1, 4):
            run.send("step")
            assert run.poll(30)
            what, payload = run.recv()
            assert what == "batch" and [int(s) for s in payload.steps] == [last + k]
    finally:
        run.close()


def test_a_trainer_child_runs_below_the_gui_thread_and_above_the_rasterizer():
    import os

    from models.procrun import CHILD_NICE, ProcessRun
    from visualizer.workers import RASTERIZER_NICE

    assert 0 < CHILD_NICE < RASTERIZER_NICE
    run = ProcessRun("models.toy2d:descent", _descent_kwargs())
    try:
        assert run.poll(60)  # the child has started its generator
        child = _nice_of(run.process.pid)
        assert os.getpriority(os.PRIO_PROCESS, 0) < child < RASTERIZER_NICE
    finally:
        run.close()


def test_a_process_runner_lowers_the_rasterizer_when_its_child_starts(qtbot, monkeypatch):
    import visualizer.workers as workers

    calls = []
    monkeypatch.setattr(workers, "lower_rasterizer_priority", lambda: calls.append(1) or 0)
    runner = workers.ProcessRunner("models.toy2d:descent", _descent_kwargs())
    runner.start()
    try:
        qtbot.waitUntil(lambda: calls == [1], timeout=60000)
    finally:
        runner.abort()
        qtbot.waitUntil(runner.isFinished, timeout=15000)


def _rasterizer_threads() -> list[int]:
    import os

    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().startswith("llvmpipe-"):
                    out.append(int(tid))
        except OSError:
            pass
    return out


def test_the_software_rasterizer_yields_to_trainers(qtbot):
    """Under Mesa's llvmpipe every core gets a rasterizer thread; they are lowered below the trainer children
    (the GUI thread is not), once, and a second call changes nothing."""
    import os

    import pyqtgraph.opengl as gl

    from visualizer.workers import RASTERIZER_NICE, lower_rasterizer_priority

    view = gl.GLViewWidget()
    qtbot.addWidget(view)
    view.resize(200, 150)
    view.show()
    qtbot.waitExposed(view)
    assert not view.grabFramebuffer().isNull()  # a frame was drawn: the GL driver's threads exist now
    threads = _rasterizer_threads()
    if not threads:
        import pytest

        pytest.skip("no llvmpipe threads: this GL driver is not Mesa's software rasterizer")
    gui = os.getpriority(os.PRIO_PROCESS, 0)
    before = [os.getpriority(os.PRIO_PROCESS, t) for t in threads]
    assert lower_rasterizer_priority() == sum(p < RASTERIZER_NICE for p in before)
    assert [os.getpriority(os.PRIO_PROCESS, t) for t in threads] == [max(p, RASTERIZER_NICE) for p in before]
    assert os.getpriority(os.PRIO_PROCESS, 0) == gui
    assert lower_rasterizer_priority() == 0
