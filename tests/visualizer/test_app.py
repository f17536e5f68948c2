"""The main window: shortcuts, status bar, persistence, closing mid-run, the command line."""

import subprocess
import sys

import numpy as np
from PySide6.QtCore import Qt

from visualizer.app import MainWindow
from visualizer.cli import build_parser


def make_window(qtbot, **kw):
    win = MainWindow(**kw)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.lab().landscape is not None, timeout=30000)
    return win


def test_keyboard_space_step_reset_and_status(qtbot, fresh_settings):
    win = make_window(qtbot, lab="manifold2d")
    lab = win.lab()
    # a descent that cannot end during the test (a finished one would make Space start another)
    lab.widget("steps").setValue(lab.widget("steps").maximum())
    lab.widget("lr").setValue(lab.widget("lr").minimum())
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow, timeout=5000)
    lab.plane.setFocus()
    qtbot.keyClick(lab.plane, Qt.Key.Key_Space)  # nothing runs: Space starts a descent
    qtbot.waitUntil(lambda: bool(lab.runs) and lab.runs[0].trajs[0].last_step > 3, timeout=20000)
    qtbot.waitUntil(lambda: win.step_label.text() != "step —", timeout=10000)
    assert win.loss_label.text().startswith("loss ") and win.run_state == "running"
    assert not lab.runs[0].finished
    qtbot.keyClick(lab.plane, Qt.Key.Key_Space)  # pause
    assert lab.paused and win.run_state == "paused"
    # the child confirms the pause once every step it made before it has arrived: only then is the count final
    qtbot.waitUntil(lab.pause_settled, timeout=20000)
    s0 = lab.runs[0].trajs[0].last_step
    qtbot.keyClick(lab.plane, Qt.Key.Key_S)
    qtbot.waitUntil(lambda: lab.runs[0].trajs[0].last_step >= s0 + 1, timeout=20000)
    assert lab.runs[0].trajs[0].last_step == s0 + 1  # exactly one step, none lost, none extra
    qtbot.keyClick(lab.plane, Qt.Key.Key_R)
    assert lab.runs == [] and win.run_state == "idle"
    win.close()


def test_a_killed_training_process_ends_the_run_with_its_exit_code(qtbot, fresh_settings):
    import os
    import signal

    win = make_window(qtbot, lab="manifold2d")
    lab = win.lab()
    lab.widget("steps").setValue(lab.widget("steps").maximum())
    lab.widget("lr").setValue(lab.widget("lr").minimum())
    msgs = []
    lab.message.connect(lambda t, e: msgs.append((t, e)))
    run = lab.start_descent(np.array([1.0, 1.0]))
    qtbot.waitUntil(lambda: run.trajs[0].last_step > 5 and run.runner._run is not None, timeout=20000)
    os.kill(run.runner._run.process.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: run.finished, timeout=20000)
    assert run.failed and run.trajs[0].last_step > 5  # the path so far stays
    text = [t for t, e in msgs if e][-1]
    assert "died" in text and "signal 9" in text and "SIGKILL" in text
    qtbot.waitUntil(lambda: not run.runner.isRunning(), timeout=10000)  # the runner ended: no spinning loop
    assert win.run_state == "idle"
    win.close()


def test_window_geometry_lab_and_settings_survive_a_restart(qtbot, fresh_settings):
    win = make_window(qtbot, lab="manifold2d")
    win.resize(1420, 801)
    lab = win.lab()
    lab.widget("model").setCurrentIndex(2)
    lab.set_data_point(0, 1.25, -0.5)
    lab.widget("lr").setValue(0.033)
    win.close()
    win2 = make_window(qtbot)
    assert win2.current_key == "manifold2d"
    assert (win2.width(), win2.height()) == (1420, 801)
    s = win2.lab().state
    assert s.model == "factor" and s.xs == [1.25] and s.ys == [-0.5] and abs(s.lr - 0.033) < 1e-12
    win2.close()


def test_corrupt_settings_fall_back_to_defaults(qtbot, fresh_settings):
    from visualizer import settings as store

    store.put("labs/manifold2d", "{not json")
    store.put("window/lab", "no-such-lab")
    store.put("window/geometry", "!!not base64 at all")
    win = make_window(qtbot)
    assert win.current_key == "manifold2d" and win.lab().state.model == "tanh"
    win.close()
    (fresh_settings / "losslab.json").write_text("{ half a file")
    win = make_window(qtbot)
    assert win.current_key == "manifold2d"
    assert "not valid JSON" in win.last_error
    assert (fresh_settings / "losslab.json.bad").read_text() == "{ half a file"
    win.close()
    # stored values the settings do not take: each back to its default, and the status bar names them
    store.save_json("labs/manifold2d", {"lr": "NaN", "xs": ["a"], "resolution": 10**9, "model": 3, "steps": 77})
    win = make_window(qtbot)
    st = win.lab().state
    assert st.lr == 0.1 and st.xs == [1.0] and st.resolution == 201 and st.model == "tanh" and st.steps == 77
    assert all(w in win.last_error for w in ("4 stored settings", "lr", "xs", "model", "resolution: 1e+09 is out "
                                             "of range; expected an integer in [21, 1601]"))
    win.close()


def test_closing_mid_run_leaves_no_thread(qtbot, fresh_settings):
    win = make_window(qtbot, lab="manifold2d")
    lab = win.lab()
    lab.widget("steps").setValue(1_000_000)
    lab.widget("n_random").setValue(20)
    lab.random_starts()
    lab.start_descent([1.0, 1.0])
    qtbot.waitUntil(lambda: lab.runs[0].trajs[0].last_step > 10, timeout=10000)
    win.close()
    from visualizer.workers import live_threads

    assert live_threads() == []


def test_screenshot_to_unwritable_path_is_reported(qtbot, fresh_settings):
    win = make_window(qtbot, lab="manifold2d")
    msgs = []
    win.statusBar().messageChanged.connect(msgs.append)
    assert win.save_screenshot("/proc/forbidden/x.png") is None
    assert any("not saved" in m for m in msgs)
    win.close()


def test_cli_help_lists_labs_and_unknown_lab_is_refused():
    help_text = build_parser().format_help()
    assert "manifold2d" in help_text and "--lab" in help_text and "bench" in help_text
    out = subprocess.run([sys.executable, "-m", "visualizer", "--lab", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown lab" in out.stderr


def test_f1_help_mentions_the_formula(qtbot, fresh_settings):
    win = make_window(qtbot, lab="manifold2d")
    win.show_help()
    assert "½" in win._help_box.text() and "projection" in win._help_box.text()
    win._help_box.close()
    win.close()


def test_device_list_arrives_and_cpu_is_selectable(qtbot, fresh_settings):
    win = make_window(qtbot, lab="manifold2d")
    qtbot.waitUntil(lambda: win.devices_known, timeout=60000)  # the list from the torch loader has arrived
    from models.train import available_devices

    items = [win.device_combo.itemText(i) for i in range(win.device_combo.count())]
    assert items == available_devices() and items[-1] == "cpu"
    assert win.device_combo.currentText() == items[0]
    win.device_combo.setCurrentText("cpu")
    assert win.lab().device == "cpu"
    run = win.lab().start_descent(np.array([1.0, 2.0]))
    qtbot.waitUntil(lambda: run.finished, timeout=30000)
    win.close()


def test_cyclic_garbage_is_collected_on_the_gui_thread_only(qtbot, monkeypatch):
    import gc
    import threading

    from visualizer import qtsetup as app_module

    assert not gc.isenabled()  # never automatically, in whatever thread allocates
    assert app_module._GC is not None and app_module._GC.timer.isActive()
    calls = []
    real = gc.collect

    def spy(generation=2):
        calls.append((threading.current_thread(), generation))
        return real(generation)

    monkeypatch.setattr(gc, "collect", spy)
    keep = []

    def allocate_and_check(flag):
        # live allocations until the first generation's count passes its threshold (frees of earlier tests'
        # objects, still under way, lower that count: allocate as long as it takes)
        keep.append([[i] for i in range(500)])
        return bool(flag)

    qtbot.waitUntil(lambda: allocate_and_check(calls), timeout=30000)
    assert calls[0] == (threading.main_thread(), 0)
    # and what it collects is freed: a cycle made now, in the youngest generation
    freed = []

    class Node:
        pass

    node = Node()
    node.me = node
    import weakref

    weakref.finalize(node, lambda: freed.append(threading.current_thread()))
    del node
    qtbot.waitUntil(lambda: allocate_and_check(freed), timeout=30000)
    assert freed == [threading.main_thread()]


ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _losslab(args, tmp_path, timeout=240, **popen):
    import os

    env = dict(os.environ, LOSSLAB_CONFIG_DIR=str(tmp_path / "cfg"))
    env.update(popen.pop("env", {}))
    return subprocess.run([sys.executable, "-m", "visualizer", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT, **popen)


def test_closing_the_window_ends_a_trainer_stuck_in_a_users_model(qtbot, fresh_settings, tmp_path):
    import multiprocessing
    import time

    from tests.visualizer.test_workers import _hanging_spec, _kill, pid_alive

    spec, marker = _hanging_spec(tmp_path)
    win = MainWindow(lab="surface", lab_options={"surface": {"user_model": spec}})
    qtbot.addWidget(win)
    win.show()
    pid = None
    try:
        qtbot.waitUntil(marker.exists, timeout=90000)  # the child is in the factory, which never returns
        pid = win.lab().runner._run.process.pid
        t0 = time.perf_counter()
        win.close()
        assert time.perf_counter() - t0 < 8  # abort unanswered, SIGTERM ignored, SIGKILL: a few seconds
        assert not pid_alive(pid) and multiprocessing.active_children() == []
    finally:
        _kill(pid)


def test_a_screenshot_path_that_cannot_be_written_is_refused_before_the_window(tmp_path):
    import os
    import time

    (tmp_path / "a-file").write_text("")
    bad = {"/proc/forbidden/x.png": "does not exist", str(tmp_path / "shot.txt"): "must end in .png",
           str(tmp_path / "no-such-folder" / "x.png"): "does not exist", str(tmp_path): "must end in",
           str(tmp_path / "a-file" / "x.png"): "is not a folder"}
    for path, why in bad.items():
        t0 = time.perf_counter()
        out = _losslab(["--lab", "manifold2d", "--screenshot", path], tmp_path, timeout=60)
        assert out.returncode == 2, (path, out.returncode, out.stderr[-2000:])
        assert why in out.stderr and path in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
        assert time.perf_counter() - t0 < 30  # no window, no lab: refused at once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing written, nothing left
    from tests.visualizer.test_settings_store import can_write

    if os.path.isdir("/sys/kernel") and not can_write("/sys/kernel"):  # exists, cannot be written (even by root)
        out = _losslab(["--screenshot", "/sys/kernel/x.png"], tmp_path, timeout=60)
        assert out.returncode == 2 and "cannot be written" in out.stderr, out.stderr


def test_a_screenshot_run_exits_nonzero_when_the_lab_reports_an_error(tmp_path):
    """A user's model factory that loads but raises when the lab calls it: the window shows the error, the
    picture is taken, the exit status says so."""
    factory = tmp_path / "broken_model.py"
    factory.write_text("def factory():\n    raise RuntimeError('the weights file is missing')\n")
    shot = tmp_path / "out.png"
    out = _losslab(["--lab", "surface", "--model", f"{factory}:factory", "--screenshot", str(shot), "--size",
                    "900x600"], tmp_path)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "the lab reported an error" in out.stderr and "the weights file is missing" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert shot.exists()  # the picture shows the error


def test_a_surface_file_that_cannot_be_read_is_refused_before_any_window(tmp_path):
    bad = tmp_path / "F.h5"
    bad.write_text("this is not an HDF5 file")
    shot = tmp_path / "out.png"
    out = _losslab([str(bad), "--screenshot", str(shot), "--size", "900x600"], tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "surface file" in lines[0], out.stderr
    assert not shot.exists()


def test_a_screenshot_that_cannot_be_saved_exits_nonzero(tmp_path):
    """Once the window is on screen (an event, not a delay) a folder takes the screenshot's name: the picture,
    taken once the lab has settled, cannot be saved there; the exit code says so."""
    import os
    import threading

    folder = tmp_path / "shots"
    folder.mkdir()
    env = dict(os.environ, LOSSLAB_CONFIG_DIR=str(tmp_path / "cfg"), LOSSLAB_TEST_EVENTS="1")
    proc = subprocess.Popen([sys.executable, "-m", "visualizer", "--lab", "manifold2d", "--size", "900x600",
                             "--screenshot", str(folder / "x.png")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    err = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    try:
        for line in proc.stdout:
            if line.startswith("losslab-test-event: first-frame"):
                (folder / "x.png").mkdir()
                break
        proc.stdout.read()
        code = proc.wait(120)
        reader.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    text = "".join(err)
    assert code == 1, text[-2000:]
    assert "screenshot not saved" in text and "Traceback" not in text, text
    assert sorted(p.name for p in folder.iterdir()) == ["x.png"]  # no temporary file left


def test_save_image_respects_the_umask_and_reports_failures(qtbot, tmp_path):
    import os
    import stat

    from PySide6.QtGui import QImage

    from visualizer.app import save_image

    img = QImage(8, 8, QImage.Format.Format_RGB32)
    img.fill(0x336699)
    old = os.umask(0o027)
    try:
        assert save_image(img, str(tmp_path / "a.png")) is None
        assert save_image(img, str(tmp_path / "b.jpg")) is None
    finally:
        os.umask(old)
    for name in ("a.png", "b.jpg"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o640  # not mkstemp's 0600
    assert QImage(str(tmp_path / "b.jpg")).width() == 8
    assert "encoded" in save_image(QImage(), str(tmp_path / "c.png"))  # a null image: no file
    assert save_image(img, "/proc/forbidden/x.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.jpg"]  # no temporary file left


def test_bench_json_path_is_checked_before_the_benchmarks(tmp_path, monkeypatch, capsys):
    import json
    import os
    import stat

    from visualizer import bench

    ran = []

    def fake(results, wanted):
        ran.append(1)
        results["startup_ms"] = 123.0

    monkeypatch.setattr(bench, "GROUPS", [({"startup_ms"}, fake)])
    assert bench.main(["--json", "/proc/forbidden/out.json", "--only", "startup_ms"]) == 2
    assert ran == [] and "/proc/forbidden" in capsys.readouterr().err  # refused before any benchmark ran
    old = os.umask(0o022)
    try:
        assert bench.main(["--json", str(tmp_path / "out.json"), "--only", "startup_ms"]) == 0
    finally:
        os.umask(old)
    assert ran == [1] and json.loads((tmp_path / "out.json").read_text())["startup_ms"]["value"] == 123.0
    assert stat.S_IMODE(os.stat(tmp_path / "out.json").st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_switching_back_to_a_lab_shows_its_own_controls_again(qtbot, fresh_settings):
    """manifold2d -> manifold3d -> manifold2d: each lab keeps one scroll area for its controls (a lab's controls
    handed to a second scroll area were resized by both in turn without end, and the app crashed)."""
    win = make_window(qtbot)
    first = win.current_key
    scrolls = {}
    for key in ("manifold3d", first, "manifold3d", first):
        win.switch_lab(key)
        qtbot.waitUntil(lambda key=key: win.lab() is win.labs[key] and win.dock.widget().isVisible(), timeout=10000)
        qtbot.wait(50)  # a few event-loop turns: the layout settles (it used to recurse here)
        scroll = win.dock.widget()
        assert scroll.widget() is win.labs[key].controls()
        assert scrolls.setdefault(key, scroll) is scroll
    assert scrolls[first] is not scrolls["manifold3d"]
