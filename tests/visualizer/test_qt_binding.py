import sys


def test_process_events_keeps_none_refcount(qapp):
    """PySide6 6.12.0 drops a reference to None on every processEvents() call (Python 3.11), which aborts
    the interpreter after a few thousand calls; the pinned version must not."""
    from visualizer.workers import join_all

    join_all(60)  # earlier tests' workers end first: freeing what they held also lowers None's count
    for _ in range(200):
        qapp.processEvents()
    before = sys.getrefcount(None)
    for _ in range(20000):
        qapp.processEvents()
    # the fault loses one reference per call (20000 here); objects freed meanwhile may lose a few
    assert sys.getrefcount(None) >= before - 2000
