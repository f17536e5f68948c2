"""The stated limits every input path checks before it allocates: the app, `losslab surface`, `losslab record`
and the file readers share these numbers, so a size the GUI refuses the CLI refuses too, with the same words.

Each check estimates what a request needs *before* anything is allocated or read and refuses with the largest
size that fits (``LimitError``, a ValueError whose message says what was asked, what it needs and what fits).
"""

from __future__ import annotations

#: one request (a dataset, a network, a grid, a surface file's arrays) may need at most this much memory
MEMORY_CAP_BYTES = 2 * 1024**3
#: a surface file: at most this many grid points (2001 x 2001) and this many values per coordinate axis
MAX_FILE_GRID_POINTS = 2001 * 2001
MAX_FILE_AXIS = 100_000
#: text read from a file (a direction file's name, a title) is shown as plain text, cut to this many characters
MAX_SHOWN_TEXT = 200
#: scene files
MAX_SCENE_BYTES = 1024**2  # 1 MiB of TOML
MAX_SCENE_TEXT = 2000  # characters of a title or caption
MAX_SCENE_EVENTS = 1000
MAX_SCENE_DEPTH = 8  # nesting of tables and arrays
MAX_FPS = 240


class LimitError(ValueError):
    """A request beyond a stated limit: the message says what fits."""


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def check_memory(need_bytes: float, what: str, largest: str = "") -> None:
    """Refuse (LimitError) a request estimated to need more than MEMORY_CAP_BYTES; ``largest`` names the largest
    request that fits ("at most 12000 points")."""
    if need_bytes > MEMORY_CAP_BYTES:
        tail = f"; {largest}" if largest else ""
        raise LimitError(f"{what} would need about {human_bytes(need_bytes)}, over the "
                         f"{human_bytes(MEMORY_CAP_BYTES)} limit{tail}")


def shown_text(text: str, limit: int = MAX_SHOWN_TEXT) -> str:
    """File-supplied text for display: control characters removed, cut to ``limit`` characters (plain text:
    the caller must not render it as rich text; see ``html_escape``)."""
    s = "".join(ch if ch.isprintable() else " " for ch in str(text)[: limit + 1])
    return s if len(s) <= limit else s[: limit - 1] + "…"


def html_escape(text: str) -> str:
    """``shown_text`` made safe inside a rich-text label."""
    import html

    return html.escape(shown_text(text))
