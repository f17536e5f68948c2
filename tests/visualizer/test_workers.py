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
