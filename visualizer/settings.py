"""Persistent settings: one JSON file, ``losslab.json`` in the config folder (``LOSSLAB_CONFIG_DIR`` moves it).

Plain JSON text only. QSettings is not used: PySide6's ``QSettings.value()`` unpickles ``@Variant(...)`` values,
so a crafted INI file would run code when the app starts. Nothing read here is ever unpickled or evaluated; a
value is a JSON number, string, list or object, and every reader checks what it gets. Writes are atomic (a
temporary file in the same folder, then a rename), so a crash never leaves half a file. A file that is not
valid JSON, or is larger than ``MAX_BYTES``, is moved aside as ``losslab.json.bad`` and the defaults are used.
"""

from __future__ import annotations

import json
import os

FILE_NAME = "losslab.json"
MAX_BYTES = 4_000_000  # far above what the app writes; a larger file is not read into memory

#: what went wrong when the file was last read (the main window shows it once); None when all was well
last_problem: str | None = None


def config_dir() -> str:
    """The folder of settings and the log: LOSSLAB_CONFIG_DIR, else $XDG_CONFIG_HOME/losslab (~/.config)."""
    folder = os.environ.get("LOSSLAB_CONFIG_DIR")
    if folder:
        return folder
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "losslab")


def settings_path() -> str:
    return os.path.join(config_dir(), FILE_NAME)


def _read() -> dict:
    global last_problem
    path = settings_path()
    try:
        size = os.path.getsize(path)
    except OSError:
        return {}
    problem = None
    data: object = None
    if size > MAX_BYTES:
        problem = f"it is {size:,} bytes (at most {MAX_BYTES:,} are read)"
    else:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            problem = f"it is not valid JSON ({type(exc).__name__}: {exc})"
        else:
            if not isinstance(data, dict):
                problem = "it does not hold a JSON object"
    if problem is None:
        return data  # type: ignore[return-value]
    try:
        os.replace(path, path + ".bad")
        kept = f"; it was kept as {path}.bad"
    except OSError:
        kept = ""
    last_problem = f"Settings file {path} was not used: {problem}{kept}. Defaults are used."
    return {}


def _write(data: dict) -> None:
    from models.export import atomic_write

    path = settings_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True, allow_nan=False).encode("utf-8"))


def get(key: str, default=None):
    """The value stored under ``key`` (plain JSON data), or ``default``."""
    return _read().get(key, default)


def put(key: str, value) -> bool:
    """Store ``value`` (JSON data; NaN and infinities are refused) under ``key``. False when it could not be
    written (a read-only folder, a full disk): settings are a convenience, never a reason to stop."""
    data = _read()
    data[key] = value
    try:
        _write(data)
    except (OSError, ValueError, TypeError):
        return False
    return True


def load_json(key: str) -> dict:
    """A JSON object stored under ``key``; {} when missing or not an object (never fatal)."""
    value = get(key)
    return value if isinstance(value, dict) else {}


def save_json(key: str, value: dict) -> bool:
    return put(key, value)
