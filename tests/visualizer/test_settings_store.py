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
    out = subprocess.run([sys.executable, "-m", "visualizer", "--screenshot", str(tmp_path / "shot.png"),
                          "--size", "1000x700"], capture_output=True, text=True, env=env, timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
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
