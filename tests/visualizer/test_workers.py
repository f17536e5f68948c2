"""The workers that run the engine off the GUI thread: control calls never wait for a computation."""

import threading

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
