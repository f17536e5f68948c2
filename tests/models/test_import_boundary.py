import subprocess
import sys


def test_models_never_imports_qt():
    code = (
        "import sys, models, models.toy2d, models.train, models.expr, models.trajectory\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'OpenGL', 'visualizer', 'shiboken6')]\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
