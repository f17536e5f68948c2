"""Test helpers: which threads call a function; a user model that hangs."""

import threading


def record_threads(monkeypatch, module, name: str) -> list:
    """Replace ``module.name`` by a wrapper that records the calling thread; returns that (growing) list."""
    threads = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return threads


# a user's model as stubborn as one can be: its factory ignores SIGTERM, says it is running (the marker file),
# then sleeps for ever (only SIGKILL ends it)
HANGING_MODEL = """
import signal
import time


def make():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open({marker!r}, "w").close()
    while True:
        time.sleep(3600)
"""
