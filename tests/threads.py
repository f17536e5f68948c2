"""Test helper: which threads call a function."""

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
