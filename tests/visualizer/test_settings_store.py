"""Stored settings: plain JSON, never unpickled; no stored value can crash a start."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from visualizer import settings as store

ROOT = Path(__file__).resolve().parents[2]


class _Evil:
    """Pickled by QSettings into an ``@Variant(...)`` value; unpickling it creates ``marker``."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_crafted_settings_file_runs_no_code(qtbot, fresh_settings, tmp_path):
    from PySide6.QtCore import QSettings

    marker = tmp_path / "code-ran"
    _Evil.marker = str(marker)
    fresh_settings.mkdir(parents=True, exist_ok=True)
    ini = QSettings(str(fresh_settings / "losslab.ini"), QSettings.Format.IniFormat)
    ini.setValue("window/lab", _Evil())  # the attack of the old format: a pickled object in the INI file
    ini.setValue("window/geometry", _Evil())
    ini.sync()
    assert "@Variant" in (fresh_settings / "losslab.ini").read_text(errors="replace")
    assert not marker.exists()
    # the same kind of text inside the JSON file is only a string
    (fresh_settings / "losslab.json").write_text(json.dumps({"window/lab": "@Variant(\\0\\0\\0\\x7f)",
                                                             "labs/manifold2d": {"model": "@Variant(x)"}}))
    from visualizer.app import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.lab().landscape is not None, timeout=30000)
    assert win.current_key == "manifold2d" and win.lab().state.model == "tanh"
    win.close()
    assert not marker.exists()
    saved = json.loads((fresh_settings / "losslab.json").read_text())
    assert saved["window/lab"] == "manifold2d" and isinstance(saved["window/geometry"], str)


HOSTILE = [10**40, -(10**40), 3_000_000_000, -5, 0, 0.0, float("nan"), float("inf"), "", "x" * 100000, None,
           [1e308] * 5, {"a": 1}, True, [], 1e-300]


@pytest.mark.parametrize("lab_key", ["manifold2d", "manifold3d", "netmanifold", "surface"])
def test_no_stored_value_breaks_a_lab(qtbot, fresh_settings, lab_key):
    """Every field of every lab, set to each hostile value: the lab builds, with values its controls show."""
    import dataclasses

    from visualizer.labs import LABS

    cls = LABS[lab_key].load()
    names = [f.name for f in dataclasses.fields(cls.state_cls)]
    for value in HOSTILE:
        raw = json.dumps({n: value for n in names}, allow_nan=True)  # as a damaged file could hold it
        store.put(f"labs/{lab_key}", json.loads(raw))
        lab = cls(restore=True, start=False)
        qtbot.addWidget(lab)
        state = lab.state
        for n in names:
            v = getattr(state, n)
            if isinstance(v, float):
                assert np.isfinite(v), (value, n)
        lab.shutdown()
        lab.close()
        lab.deleteLater()


def test_a_lab_whose_stored_settings_fail_starts_with_its_defaults(qtbot, fresh_settings, monkeypatch):
    from visualizer.app import MainWindow
    from visualizer.labs import manifold3d, schema

    def broken(cls, d):
        raise ZeroDivisionError("a stored value no check foresaw")

    store.put("labs/manifold3d", {"lr": 0.2})
    monkeypatch.setattr(schema, "restore", broken)
    win = MainWindow(lab="manifold3d")
    qtbot.addWidget(win)
    win.show()
    lab = win.lab()
    assert win.current_key == "manifold3d" and lab.state == manifold3d.Manifold3DState()
    msg = win.statusBar().currentMessage()
    assert "defaults" in msg and "ZeroDivisionError" in msg and "losslab.log" in msg
    assert "a stored value no check foresaw" in (fresh_settings / "losslab.log").read_text()
    assert store.get("labs/manifold3d") == __import__("dataclasses").asdict(manifold3d.Manifold3DState())
    win.close()


@pytest.mark.parametrize("lab_key,stored", [("manifold3d", {"shell_level": 0, "shells": True}),
                                            ("netmanifold", {"steps": 3_000_000_000}),
                                            ("surface", {"directions": "gone-in-a-later-version", "grid": 9,
                                                         "steps": 5})])
def test_the_app_starts_with_the_stored_settings_that_crashed_it(tmp_path, lab_key, stored):
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "losslab.json").write_text(json.dumps({"window/lab": lab_key, f"labs/{lab_key}": stored}))
    env = dict(os.environ, LOSSLAB_CONFIG_DIR=str(cfg))
    mask = os.umask(0o022)
    os.umask(mask)
    out = subprocess.run([sys.executable, "-m", "visualizer", "--screenshot", str(tmp_path / "shot.png"),
                          "--size", "1000x700"], capture_output=True, text=True, env=env, timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert ((tmp_path / "shot.png").stat().st_mode & 0o777) == 0o666 & ~mask  # not mkstemp's 0600
    from PySide6.QtGui import QImage

    img = QImage(str(tmp_path / "shot.png"))
    assert (img.width(), img.height()) == (1000, 700)
    colors = {img.pixel(x, y) for x in range(0, 1000, 20) for y in range(0, 700, 20)}
    assert len(colors) > 30  # the lab drew its views, not an empty window
    assert "Traceback" not in out.stderr


def test_writes_are_atomic_and_a_failed_write_keeps_the_old_file(fresh_settings, monkeypatch):
    assert store.put("a", {"x": 1})
    before = (fresh_settings / "losslab.json").read_bytes()

    def fail(*a, **k):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", fail)  # the new file is half on disk when the write fails
        assert store.put("a", {"x": 2}) is False
    assert (fresh_settings / "losslab.json").read_bytes() == before
    assert sorted(p.name for p in fresh_settings.iterdir()) == ["losslab.json"]  # no temporary file left
    assert store.put("b", float("nan")) is False and store.get("a") == {"x": 1}


def test_a_huge_settings_file_is_not_read(fresh_settings, monkeypatch):
    fresh_settings.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(store, "MAX_BYTES", 1000)
    (fresh_settings / "losslab.json").write_text(json.dumps({"pad": "x" * 5000}))
    try:
        assert store.get("pad") is None
        assert "at most 1,000" in store.last_problem and (fresh_settings / "losslab.json.bad").exists()
    finally:
        store.last_problem = None


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_written_files_respect_the_umask(fresh_settings, tmp_path, mask):
    """mkstemp makes its files 0600: settings, scenes and exports get what open() would give them."""
    import stat

    from models import export

    old = os.umask(mask)
    try:
        assert store.put("a", 1)
        export.write_csv(str(tmp_path / "t.csv"), {"x": np.arange(3.0)})
        export.atomic_write(str(tmp_path / "t.bin"), b"data")
        export.atomic_write(str(tmp_path / "t.bin"), b"again")  # replacing a file: the same rule
    finally:
        os.umask(old)
    for path in (fresh_settings / "losslab.json", tmp_path / "t.csv", tmp_path / "t.bin"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
    assert (tmp_path / "t.bin").read_bytes() == b"again"


def can_write(folder) -> bool:
    """A file can be made in ``folder`` (the only sure test: root ignores permissions, not read-only mounts)."""
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def _unusable_config(kind: str, tmp_path: Path) -> Path:
    if kind == "a file":
        (tmp_path / "cfg").write_text("not a folder")
        return tmp_path / "cfg"
    if kind == "under a file":
        (tmp_path / "plain").write_text("")
        return tmp_path / "plain" / "deeper" / "cfg"
    # a folder that cannot be written: permissions where they count, a read-only system folder for root
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    if can_write(folder):  # root: permissions do not stop it; a system folder does
        folder = Path("/sys/kernel")
        if not folder.is_dir() or can_write(folder):
            pytest.skip("no folder here that this user cannot write")
    return folder


@pytest.mark.parametrize("kind", ["a file", "under a file", "unwritable"])
def test_an_unusable_config_folder_keeps_the_settings_in_memory(tmp_path, monkeypatch, kind):
    folder = _unusable_config(kind, tmp_path)
    monkeypatch.setenv("LOSSLAB_CONFIG_DIR", str(folder))
    monkeypatch.setattr(store, "_memory", None)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    line = store.check_config()
    assert line and str(folder) in line and "memory only" in line and "\n" not in line
    assert {"a file": "is a file", "under a file": "is under", "unwritable": "cannot be written"}[kind] in line
    assert store.memory_only()
    assert store.put("window/lab", "surface") and store.get("window/lab") == "surface"
    assert store.save_json("labs/x", {"a": [1, 2]}) and store.load_json("labs/x") == {"a": [1, 2]}
    got = store.load_json("labs/x")
    got["a"].append(3)  # what a reader gets is its own copy
    assert store.load_json("labs/x") == {"a": [1, 2]}
    assert store.put("b", float("nan")) is False  # the same rules as the file
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    # another folder (the next test's) is not in memory
    monkeypatch.setenv("LOSSLAB_CONFIG_DIR", str(tmp_path / "fine"))
    assert not store.memory_only() and store.check_config() is None and store.get("window/lab") is None


def test_an_unwritable_config_folder_still_gives_its_settings(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "losslab.json").write_text(json.dumps({"window/lab": "netmanifold"}))
    folder.chmod(0o500)
    if can_write(folder):
        folder.chmod(0o700)
        pytest.skip("root: permissions do not stop it")
    monkeypatch.setenv("LOSSLAB_CONFIG_DIR", str(folder))
    monkeypatch.setattr(store, "_memory", None)
    try:
        assert "cannot be written" in store.check_config()
        assert store.get("window/lab") == "netmanifold" and store.put("window/lab", "surface")
        assert json.loads((folder / "losslab.json").read_text()) == {"window/lab": "netmanifold"}
    finally:
        folder.chmod(0o700)


def test_the_app_runs_with_an_unusable_config_folder_and_says_so_in_one_line(tmp_path):
    cfg = tmp_path / "cfg"
    cfg.write_text("a file where the folder should be")
    env = dict(os.environ, LOSSLAB_CONFIG_DIR=str(cfg))
    out = subprocess.run([sys.executable, "-m", "visualizer", "--lab", "manifold2d", "--size", "800x600",
                          "--screenshot", str(tmp_path / "shot.png")], capture_output=True, text=True, env=env,
                         timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [x for x in out.stderr.splitlines() if x.startswith("losslab:")]
    assert len(lines) == 1 and str(cfg) in lines[0] and "is a file" in lines[0] and "memory only" in lines[0], \
        out.stderr
    assert "Traceback" not in out.stderr
    assert (tmp_path / "shot.png").exists() and cfg.read_text() == "a file where the folder should be"
