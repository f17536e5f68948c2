import subprocess
import sys

import pytest


def test_models_never_imports_qt():
    code = (
        "import sys, models, models.toy2d, models.train, models.expr, models.trajectory\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'OpenGL', 'visualizer', 'shiboken6')]\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("module,heavy", [
    ("models.ntk_sweep", ("torch",)),  # the ntk lab builds its views from it: torch only when a run starts
    ("models.implicit_bias", ("numba", "scipy")),  # the JIT and the solvers load with the first run
])
def test_engine_modules_load_their_heavy_parts_lazily(module, heavy):
    code = (f"import sys, {module}\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            f"{('PySide6', 'pyqtgraph', 'OpenGL', 'visualizer', *heavy)!r}]\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
