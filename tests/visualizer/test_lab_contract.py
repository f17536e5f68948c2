"""The lab contract is the only thing the main window, the recorder and the scene player read from a lab; labs
declare their settings fully and never import one another."""

import ast
import dataclasses
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "visualizer"
CONSUMERS = [ROOT / "app.py", *sorted((ROOT / "recording").glob("*.py"))]
SHARED = {"__init__", "base", "schema", "descent_lab"}


def _is_lab(v) -> bool:
    """``lab``, ``labw``, ``self.lab``, ``win.lab()``."""
    return ((isinstance(v, ast.Name) and v.id in ("lab", "labw", "scene_lab"))
            or (isinstance(v, ast.Attribute) and v.attr == "lab" and isinstance(v.value, ast.Name))
            or (isinstance(v, ast.Call) and isinstance(v.func, ast.Attribute) and v.func.attr == "lab"))


def _lab_expressions(tree):
    """Attribute names read or written on a lab, directly or probed with getattr/hasattr/setattr."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_lab(node.value):
            yield node.attr, node.lineno
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2
              and _is_lab(node.args[0]) and isinstance(node.args[1], ast.Constant)):
            yield node.args[1].value, node.lineno


def test_the_contract_check_sees_what_it_must():
    probe = "def f(win, lab):\n    lab.scene\n    getattr(win.lab(), 'landscape', 1)\n    self.lab._x = 1\n"
    assert sorted(n for n, _ in _lab_expressions(ast.parse(probe))) == ["_x", "landscape", "scene"]


def test_consumers_use_only_the_lab_contract():
    from PySide6.QtWidgets import QWidget

    from visualizer.labs.base import Lab

    allowed = {n for n in dir(Lab) if not n.startswith("_")} - set(dir(QWidget)) | {
        "show", "hide", "resize", "close", "window", "deleteLater", "status", "message", "frame_drawn",
        "state_cls", "key", "title", "setStyleSheet"}
    bad = []
    for path in CONSUMERS:
        for name, line in _lab_expressions(ast.parse(path.read_text())):
            if name not in allowed:
                bad.append(f"{path.name}:{line}: lab.{name}")
    assert not bad, "outside the lab contract: " + ", ".join(bad)


def test_recording_calls_no_private_method_of_the_main_window():
    bad = []
    for path in sorted((ROOT / "recording").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and isinstance(node.value, ast.Call)
                    and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "_main"):
                bad.append(f"{path.name}:{node.lineno}: window.{node.attr}")
    assert not bad, bad


def test_no_lab_imports_another_and_no_lab_class_is_patched_from_outside():
    from visualizer.labs import LABS

    modules = {info.module.rsplit(".", 1)[1] for info in LABS.values()}
    bad = []
    for path in sorted((ROOT / "labs").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[:2] == ["visualizer", "labs"] and len(parts) > 2 and parts[2] in modules \
                        and parts[2] != path.stem:
                    bad.append(f"{path.name} imports {node.module}")
    classes = {info.cls for info in LABS.values()}
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in classes:
                        bad.append(f"{path.name}:{node.lineno} sets {t.value.id}.{t.attr}")
    assert not bad, bad


@pytest.mark.parametrize("key", ["manifold2d", "manifold3d", "netmanifold", "surface"])
def test_every_setting_is_declared_once_with_what_the_form_needs(key):
    from visualizer.labs import LABS
    from visualizer.labs.schema import range_of, specs

    cls = LABS[key].load()
    defaults = cls.state_cls()
    for f in dataclasses.fields(cls.state_cls):
        spec = specs(cls.state_cls)[f.name]
        assert "spec" in f.metadata, f"{key}.{f.name}: declared without setting(...)"
        if spec.widget == "hidden":
            continue
        assert spec.label and spec.group, f"{key}.{f.name}: a shown setting needs a label and a group"
        v = getattr(defaults, f.name)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not spec.choices:
            lo, hi = range_of(spec, defaults)
            assert lo <= v <= hi, f"{key}.{f.name}: the default {v} is outside its own range"
    # scene actions and buttons come from one declaration; every action names a method of the lab
    for a in cls.actions:
        assert callable(getattr(cls, a.method, None)), f"{key}: action {a.name} -> {a.method}?"
    assert "reset" in cls.scene_actions
    assert cls.help, f"{key}: no help"
    importlib.import_module(LABS[key].module)


def test_building_every_lab_with_its_stored_settings_imports_no_torch(tmp_path):
    """The window paints before torch loads (about a second here): building a lab, restoring and checking its
    settings (a stored custom expression included) and generating its form must not import it."""
    import json
    import os
    import subprocess
    import sys

    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "losslab.json").write_text(json.dumps({
        "labs/manifold2d": {"model": "custom", "expression": "w2*tanh(w1*x) + sin(w1)"},
        "labs/manifold3d": {"model": "custom", "expression": "w3*sin(w1*x) + w2"}}))
    code = ("import sys\n"
            "from visualizer.qtsetup import prepare_qt\n"
            "prepare_qt()\n"
            "from PySide6.QtWidgets import QApplication\n"
            "app = QApplication([])\n"
            "from visualizer.labs import LABS\n"
            "for key, info in LABS.items():\n"
            "    lab = info.load()(start=False)\n"
            "    assert not lab.restore_problems, (key, lab.restore_problems)\n"
            "    lab.controls()\n"
            "    lab.shutdown()\n"
            "print('torch' in sys.modules, flush=True)\n"
            "import os\n"
            "os._exit(0)\n")  # as the app does: Qt's exit-time teardown of GL windows is crash-prone
    env = {**os.environ, "LOSSLAB_CONFIG_DIR": str(cfg)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         cwd=ROOT.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
