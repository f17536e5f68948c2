"""Shared fixtures: settings go to a temporary folder; no worker thread may outlive a test."""

import os
import tempfile
import time

import pytest

from models.procrun import keep_torch_cache_out_of_tmp

if not os.environ.get("LOSSLAB_CONFIG_DIR"):
    _SESSION_CFG = tempfile.mkdtemp(prefix="losslab-test-cfg-")
    os.environ["LOSSLAB_CONFIG_DIR"] = _SESSION_CFG
else:
    _SESSION_CFG = None
# torch's compiler cache (made when a test's Adam imports torch._dynamo) goes where the app puts it, not into TMPDIR
keep_torch_cache_out_of_tmp()
# hypothesis keeps its example database in the session's folder (removed with it), not in the checkout
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY",
                      os.path.join(_SESSION_CFG or tempfile.gettempdir(), "hypothesis"))


def pytest_unconfigure(config):
    if _SESSION_CFG is not None:  # the session's settings folder goes with the session
        import shutil

        shutil.rmtree(_SESSION_CFG, ignore_errors=True)


def pytest_configure(config):
    # before pytest-qt creates the QApplication: GL views share one context group (see app.prepare_qt)
    from visualizer.qtsetup import prepare_qt

    prepare_qt()


@pytest.fixture(autouse=True)
def _gc_on_gui_thread(request):
    # as in the app: Python's cyclic collector runs on the GUI thread only (see qtsetup.GuiThreadGC)
    if "qtbot" in request.fixturenames or "qapp" in request.fixturenames:
        request.getfixturevalue("qapp")
        from visualizer.qtsetup import collect_garbage_on_gui_thread

        collect_garbage_on_gui_thread()
    yield


@pytest.fixture(autouse=True)
def _no_leftover_threads(request):
    yield
    if "qtbot" not in request.fixturenames and "qapp" not in request.fixturenames:
        return
    from visualizer.workers import live_threads

    deadline = time.time() + 60  # a bound for a hang, not a wait: the loop ends as soon as all are gone
    while live_threads() and time.time() < deadline:
        from PySide6.QtWidgets import QApplication

        QApplication.processEvents()
        time.sleep(0.02)
    left = live_threads()
    assert not left, f"worker threads outlived the test: {left}"
    import multiprocessing

    deadline = time.time() + 60  # a bound for a hang, not a wait: the loop ends as soon as all are gone
    while multiprocessing.active_children() and time.time() < deadline:
        time.sleep(0.05)
    procs = multiprocessing.active_children()
    assert not procs, f"training processes outlived the test: {procs}"


@pytest.fixture
def fresh_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSLAB_CONFIG_DIR", str(tmp_path / "cfg"))
    return tmp_path / "cfg"
