"""prepare_qt's malloc settings: blocks a frame allocates and frees are reused by the next frame, not faulted in
anew (as Mesa's software rasterizer's 64 KB bins were, 5,000 page faults a frame)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")

# a fresh interpreter (malloc's state is the process's): a 'frame' of 320 blocks of 64 KB, written and freed,
# five times; prints the page faults of one frame
_FRAMES = r"""
import ctypes, resource, sys
if sys.argv[1] == "tuned":
    from visualizer.qtsetup import reuse_freed_memory
    assert reuse_freed_memory()
elif sys.argv[1] == "prepare_qt":  # what the app, the recorder, the bench and the tests call first
    from visualizer.qtsetup import prepare_qt
    prepare_qt()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def frame():
    blocks = [libc.malloc(64 << 10) for _ in range(320)]
    for b in blocks:
        libc.memset(b, 1, 64 << 10)
    for b in reversed(blocks):
        libc.free(b)
frame()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    frame()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 5)
"""


def _faults_per_frame(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _FRAMES, mode], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def test_a_frames_memory_is_reused_not_faulted_in_again():
    pages = (320 * 64 << 10) // 4096
    assert _faults_per_frame("default") > pages / 2  # glibc's defaults: the frame's memory goes back each time
    assert _faults_per_frame("tuned") < pages / 50


def test_prepare_qt_applies_them():
    pages = (320 * 64 << 10) // 4096
    assert _faults_per_frame("prepare_qt") < pages / 50
