import sys


def test_process_events_keeps_none_refcount(qapp):
    """PySide6 6.12.0 drops a reference to None on every processEvents() call (Python 3.11), which aborts
    the interpreter after a few thousand calls; the pinned version must not."""
    before = sys.getrefcount(None)
    for _ in range(20000):
        qapp.processEvents()
    assert sys.getrefcount(None) >= before - 100
