"""Errors shown to the user in one line, with their full text (type and traceback) kept in a log file.

A worker's ``failed`` signal carries ``"TypeName: message\\n<traceback>"``; ``report`` appends all of it to
``losslab.log`` in the config folder and returns the first line followed by where the details are, so the
status bar stays short and nothing is lost.
"""

from __future__ import annotations

import datetime as _dt
import os
import traceback

MAX_LOG_BYTES = 2_000_000  # past this the log starts again (the previous one is kept as losslab.log.1)


def log_path() -> str:
    from visualizer.settings import config_dir

    return os.path.join(config_dir(), "losslab.log")


def describe(exc: BaseException) -> str:
    """``TypeName: message`` and the traceback, as a worker sends it."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{type(exc).__name__}: {exc}\n{tb}"


def write_log(context: str, text: str) -> str | None:
    """Append ``text`` under a time-stamped heading; returns the log's path (None when it cannot be written)."""
    path = log_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path) and os.path.getsize(path) > MAX_LOG_BYTES:
            os.replace(path, path + ".1")
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"--- {stamp} {context}\n{text.rstrip()}\n")
    except OSError:
        return None
    return path


def report(context: str, error: BaseException | str) -> str:
    """Log ``error`` (an exception, or a worker's failure text) and return the line to show the user:
    ``"<context>: <Type>: <message> (details in <log>)"``."""
    text = describe(error) if isinstance(error, BaseException) else str(error)
    first = text.strip().splitlines()[0] if text.strip() else "unknown error"
    path = write_log(context, text)
    where = f" (details in {path})" if path else ""
    return f"{context}: {first}{where}"
