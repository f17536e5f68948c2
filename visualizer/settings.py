"""Persistent settings: one JSON file, ``losslab.json`` in the config folder (``LOSSLAB_CONFIG_DIR`` moves it).

Plain JSON text only. QSettings is not used: PySide6's ``QSettings.value()`` unpickles ``@Variant(...)`` values,
so a crafted INI file would run code when the app starts. Nothing read here is ever unpickled or evaluated; a
value is a JSON number, string, list or object, and every reader checks what it gets. Writes are atomic (a
temporary file in the same folder, then a rename), so a crash never leaves half a file. A file that is not
valid JSON, or is larger than ``MAX_BYTES``, is moved aside as ``losslab.json.bad`` and the defaults are used.

A config folder that cannot be used (``LOSSLAB_CONFIG_DIR`` naming a file, a folder that cannot be written, a
path under a file): ``check_config`` says so in one line and from then on the settings live in memory only
(read from the file if it can be read, never written), so the app runs as usual and nothing is saved.
"""

from __future__ import annotations

import json
import os

FILE_NAME = "losslab.json"
MAX_BYTES = 4_000_000  # far above what the app writes; a larger file is not read into memory

#: what went wrong when the file was last read (the main window shows it once); None when all was well
last_problem: str | None = None
#: (folder, settings) while the settings of that config folder are kept in memory only (see check_config)
_memory: tuple[str, dict] | None = None


def config_dir() -> str:
    """The folder of settings and the log: LOSSLAB_CONFIG_DIR, else $XDG_CONFIG_HOME/losslab (~/.config)."""
    folder = os.environ.get("LOSSLAB_CONFIG_DIR")
    if folder:
        return folder
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "losslab")


def settings_path() -> str:
    return os.path.join(config_dir(), FILE_NAME)


def config_problem() -> str | None:
    """Why the config folder cannot hold the settings, in one line (None when it can). Creates the folder
    when it is missing, as saving would."""
    import stat
    import tempfile

    folder = config_dir()
    where = f"the settings folder {folder}" + (" (LOSSLAB_CONFIG_DIR)" if os.environ.get("LOSSLAB_CONFIG_DIR")
                                               else "")
    if os.path.exists(folder) and not os.path.isdir(folder):
        return f"{where} is a file, not a folder"
    above = os.path.abspath(folder)
    while not os.path.exists(above) and os.path.dirname(above) != above:
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        return f"{where} is under {above}, which is a file, not a folder"
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".losslab-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"{where} cannot be written ({exc.strerror or exc})"
    try:
        mode = os.stat(settings_path()).st_mode
    except OSError:
        return None
    if not stat.S_ISREG(mode):
        return f"{settings_path()} is not a regular file"
    return None


def check_config() -> str | None:
    """At start: when the config folder cannot be used, keep the settings in memory only and return the line
    that says so (None when the folder is fine)."""
    global _memory
    problem = config_problem()
    if problem is None:
        _memory = None
        return None
    _memory = None
    data = _read()  # a folder that cannot be written may still hold settings that can be read
    _memory = (config_dir(), data)
    return f"Settings are kept in memory only, not saved: {problem}"


def memory_only() -> bool:
    """The settings are kept in memory only (check_config found the config folder unusable)."""
    return _memory is not None and _memory[0] == config_dir()


def _read() -> dict:
    global last_problem
    if memory_only():
        return json.loads(json.dumps(_memory[1]))  # a copy: the caller changes what it gets
    path = settings_path()
    try:
        size = os.path.getsize(path)
    except OSError:
        return {}
    if not os.path.isfile(path):  # a FIFO would block the start, a folder is not ours to move
        last_problem = f"Settings file {path} was not used: it is not a regular file. Defaults are used."
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

    if memory_only():
        _memory[1].clear()
        _memory[1].update(json.loads(json.dumps(data, allow_nan=False)))
        return
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
