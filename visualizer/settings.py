"""Persistent settings (QSettings, INI format). LOSSLAB_CONFIG_DIR moves them, e.g. for tests."""

from __future__ import annotations

import json
import os

from PySide6.QtCore import QSettings


def settings() -> QSettings:
    folder = os.environ.get("LOSSLAB_CONFIG_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        return QSettings(os.path.join(folder, "losslab.ini"), QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "losslab", "losslab")


def load_json(key: str) -> dict:
    """A JSON object stored under ``key``; {} when missing or unreadable (never fatal)."""
    raw = settings().value(key, "")
    if not raw:
        return {}
    try:
        value = json.loads(str(raw))
    except (ValueError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def save_json(key: str, value: dict) -> None:
    s = settings()
    s.setValue(key, json.dumps(value))
    s.sync()
