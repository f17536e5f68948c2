"""Tour files (TOML): a lecture as an ordered list of chapters, each a scene or a title card, with its title,
a one-line caption (what the picture proves, and the paper), speaker notes and pause points. Parsed with the
standard library's tomllib (never eval'd) and checked field by field like scene files: an error names the
file, the line and the field; a chapter naming a scene file that is not there names it.

    title = "Why deep learning works"
    size = [1920, 1080]          # of the rendered video (every chapter at this size and rate)
    fps = 30

    [[chapter]]                  # a title card: text on the app's background, a formula by matplotlib's mathtext
    title = "Why networks train"
    duration = 6.0
    card = { heading = "Why networks train", text = "p > n: ...", formula = '\\frac{1}{2}\\|\\nabla L\\|^2 \\geq \\mu L' }

    [[chapter]]                  # a scene file, relative to the tour's folder
    title = "A manifold of solutions"
    scene = "../scenes/manifold2d_projection.toml"
    caption = "Gradient descent lands on the nearest solution (Liu, Zhu, Belkin 2022)"
    pauses = [3.0, 6.0]          # where a live presentation waits for the presenter (seconds into the scene)
    notes = "What to say."

    [[chapter]]                  # or a scene written inline: the fields of a scene file
    title = "PL*"
    [chapter.scene]
    lab = "ntk"
    duration = 8.0
    [chapter.scene.settings]
    page = "conditioning"

The same limits as scene files hold (``models.limits``); a tour has at most MAX_TOUR_CHAPTERS chapters and a
chapter's notes at most MAX_TOUR_NOTES characters. ``is_tour`` tells a tour from a scene (``losslab record``
takes both): a tour has a top-level ``[[chapter]]`` array. ``card_image`` paints a title card (the same picture
in presenter mode and in the rendered video).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field

from models.limits import MAX_FPS, MAX_SCENE_DEPTH, MAX_SCENE_TEXT, shown_text
from visualizer.recording.scene import (
    _PARSE_DEPTH,
    MAX_SIZE,
    MIN_SIZE,
    Scene,
    SceneError,
    _failer,
    _nesting_line,
    _read,
    _shown,
    _too_deep,
    load_scene,
    parse_scene,
)

MAX_TOUR_CHAPTERS = 100
#: the colours of a title card: the app's background, its accent and its text (app.DARK_STYLE)
CARD_BACKGROUND = "#1b1e25"
CARD_ACCENT = "#88c0d0"
CARD_TEXT = "#d8dee9"
MAX_TOUR_NOTES = 10 * MAX_SCENE_TEXT
#: a title card's duration when the tour does not give one (seconds)
CARD_SECONDS = 5.0
#: an inline scene sits two levels below the top (``chapter[i].scene``)
_TOUR_DEPTH = MAX_SCENE_DEPTH + 2
_CHAPTER_FIELDS = ("title", "caption", "notes", "pauses", "scene", "card", "duration")
_CARD_FIELDS = ("heading", "text", "formula")
_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*chapter[ \t]*\]\]", re.MULTILINE)


class TourError(SceneError):
    """A malformed tour: the message names the file, the line and the field."""


@dataclass
class Card:
    """A title card: a heading, lines of text and an optional formula (mathtext, without the $ signs)."""

    heading: str
    text: str = ""
    formula: str = ""


@dataclass
class Chapter:
    title: str
    caption: str = ""
    notes: str = ""
    pauses: list[float] = field(default_factory=list)
    scene: Scene | None = None  # a scene chapter
    card: Card | None = None  # a title card
    card_seconds: float = CARD_SECONDS

    @property
    def duration(self) -> float:
        return self.scene.duration if self.scene is not None else self.card_seconds

    def frames(self, fps: int) -> int:
        """Frames of this chapter at ``fps`` (a scene keeps its pace at another rate)."""
        return max(1, round(self.duration * fps))

    def steps(self) -> list[float]:
        """The times a live presentation stops at: the pause points, then the chapter's end."""
        return [*self.pauses, self.duration]


@dataclass
class Tour:
    title: str = ""
    size: tuple[int, int] = (1920, 1080)
    fps: int = 30
    chapters: list[Chapter] = field(default_factory=list)
    path: str = ""

    def frames(self, chapters: list[int] | None = None) -> int:
        return sum(self.chapters[i].frames(self.fps) for i in (chapters or range(len(self.chapters))))


def is_tour(path: str) -> bool:
    """True when ``path`` reads as a tour (a top-level ``[[chapter]]`` array), not a scene. An unreadable or
    oversized file is no tour (the scene reader then says what is wrong with it)."""
    try:
        text = _read(path, "tour file")
    except SceneError:
        return False
    return _HEADER.search(text) is not None


def check_formula(tex: str) -> str | None:
    """Why mathtext cannot typeset ``tex`` (one line), or None."""
    from matplotlib.mathtext import MathTextParser

    try:
        MathTextParser("path").parse(f"${tex}$")
    except ValueError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return lines[-1] if lines else "not a formula"
    return None


def parse_chapters(spec: str, n: int) -> list[int]:
    """``--chapters`` (``2-4``, ``3``, ``1,3-5``; 1-based) as 0-based indices in order; ValueError in words."""
    out: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d{1,4})\s*(?:-\s*(\d{1,4})\s*)?", part)
        if not m:
            raise ValueError(f"--chapters wants numbers and ranges like 2-4 or 1,3-5, not {spec!r}")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if not 1 <= a <= b <= n:
            raise ValueError(f"--chapters {spec}: the tour has chapters 1 to {n}")
        out += [i - 1 for i in range(a, b + 1) if i - 1 not in out]
    return sorted(out)


def load_tour(path: str, labs: dict | None = None, lab_fields: dict | None = None) -> Tour:
    """Read and check a tour file and every scene it names (``labs`` and ``lab_fields`` as for ``load_scene``).
    Raises TourError or SceneError (a scene file's own error, naming that file) and nothing else."""
    text = _read(path, "tour file")
    fail = _failer(path, text)

    def error(exc: SceneError) -> TourError:
        return TourError(str(exc))

    deep = _nesting_line(text, _PARSE_DEPTH)
    if deep:
        raise error(fail("?", f"nested deeper than {_TOUR_DEPTH} levels of tables and arrays", line=deep))
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TourError(f"{path}: {exc}") from None
    except (RecursionError, ValueError) as exc:  # (see load_scene: deep nesting, a number of 4300 digits)
        raise TourError(f"{path}: cannot read it ({type(exc).__name__})") from None
    deep_path = _too_deep(doc, _TOUR_DEPTH)
    if deep_path is not None:
        raise error(fail(deep_path, f"nested deeper than {_TOUR_DEPTH} levels of tables and arrays",
                         line=_nesting_line(text, _TOUR_DEPTH) or None))
    for key in doc:
        if key not in ("title", "size", "fps", "chapter"):
            raise error(fail(key, "unknown field; known: chapter, fps, size, title"))
    tour = Tour(path=path)
    if "title" in doc:
        if not isinstance(doc["title"], str) or len(doc["title"]) > MAX_SCENE_TEXT:
            raise error(fail("title", f"expected a string of at most {MAX_SCENE_TEXT} characters"))
        tour.title = doc["title"]
    if "size" in doc:
        size = doc["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in size)
                and MIN_SIZE <= size[0] <= MAX_SIZE[0] and MIN_SIZE <= size[1] <= MAX_SIZE[1]):
            raise error(fail("size", f"expected [width, height] in pixels within {MIN_SIZE}..{MAX_SIZE[0]} and "
                                     f"{MIN_SIZE}..{MAX_SIZE[1]}"))
        tour.size = (size[0], size[1])
    if "fps" in doc:
        fps = doc["fps"]
        if isinstance(fps, bool) or not isinstance(fps, int) or not 1 <= fps <= MAX_FPS:
            raise error(fail("fps", f"expected a whole number of frames per second within 1..{MAX_FPS}"))
        tour.fps = fps
    chapters = doc.get("chapter")
    if not isinstance(chapters, list) or not chapters:
        raise error(fail("chapter", "a tour needs [[chapter]] tables", "[[chapter]]"))
    if len(chapters) > MAX_TOUR_CHAPTERS:
        raise error(fail("chapter", f"{len(chapters)} chapters, over the limit of {MAX_TOUR_CHAPTERS}",
                         "[[chapter]]"))
    # each chapter's fields are looked up from its own [[chapter]] header on (inline tables: from the chapter's)
    starts = [text.count("\n", 0, m.start()) + 1 for m in _HEADER.finditer(text)]
    lines = text.splitlines(keepends=True)
    for i, ch in enumerate(chapters):
        first = starts[i] if i < len(starts) else 1
        last = starts[i + 1] - 1 if i + 1 < len(starts) else len(lines)
        part = "".join(lines[first - 1:last])
        tour.chapters.append(_chapter(path, part, first, i, ch, labs, lab_fields))
    return tour


def _chapter(path: str, text: str, first: int, i: int, ch, labs, lab_fields) -> Chapter:
    """Chapter ``i`` (its table ``ch``; ``text``: its part of the file, from line ``first``) checked."""
    name = f"chapter[{i}]"
    fail = _failer(path, text, f"{name}.", first)

    def error(fieldname: str, msg: str, needle: str | None = None) -> TourError:
        return TourError(str(fail(fieldname, msg, needle)))

    if not isinstance(ch, dict):
        raise TourError(f"{path}: line {first}, field '{name}': expected a table")
    for k in ch:
        if k not in _CHAPTER_FIELDS:
            raise error(k, f"unknown field; known: {', '.join(_CHAPTER_FIELDS)}")

    def string(d: dict, key: str, where: str, limit: int = MAX_SCENE_TEXT, needle: str | None = None) -> str:
        v = d.get(key, "")
        if not isinstance(v, str):
            raise error(where, f"expected a string, got {_shown(v)}", needle or key)
        if len(v) > limit:
            raise error(where, f"{len(v)} characters, over the limit of {limit}", needle or key)
        return v

    title = string(ch, "title", "title")
    if not title.strip():
        raise error("title", "every chapter needs a title (the chapter list and the video's chapters show it)")
    chapter = Chapter(title=title, caption=string(ch, "caption", "caption"),
                      notes=string(ch, "notes", "notes", MAX_TOUR_NOTES))
    if ("scene" in ch) == ("card" in ch):
        raise error("scene", "a chapter has either a 'scene' (a file or an inline table) or a 'card'", "title")
    if "card" in ch:
        card = ch["card"]
        if not isinstance(card, dict):
            raise error("card", "expected a table like { heading = \"...\", text = \"...\", formula = \"...\" }")
        for k in card:
            if k not in _CARD_FIELDS:
                raise error(f"card.{k}", f"unknown field; known: {', '.join(_CARD_FIELDS)}", "card")
        chapter.card = Card(heading=string(card, "heading", "card.heading", needle="card") or title,
                            text=string(card, "text", "card.text", needle="card"),
                            formula=string(card, "formula", "card.formula", needle="card"))
        if chapter.card.formula:
            why = check_formula(chapter.card.formula)
            if why:
                raise error("card.formula", f"matplotlib's mathtext cannot typeset it: {why}", "card")
        if "duration" in ch:
            d = ch["duration"]
            if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or not 0.5 <= d <= 600:
                raise error("duration", f"expected seconds within [0.5, 600], got {_shown(d)}")
            chapter.card_seconds = float(d)
    else:
        if "duration" in ch:
            raise error("duration", "a scene chapter lasts as long as its scene (its own 'duration')")
        chapter.scene = _scene(path, text, first, name, ch["scene"], labs, lab_fields)
    pauses = ch.get("pauses", [])
    if not isinstance(pauses, list) or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in pauses):
        raise error("pauses", "expected a list of times in seconds, like [3.0, 6.5]")
    if len(pauses) > MAX_TOUR_CHAPTERS:
        raise error("pauses", f"{len(pauses)} pause points, over the limit of {MAX_TOUR_CHAPTERS}")
    if any(not 0 < t < chapter.duration for t in pauses) or pauses != sorted(set(pauses)):
        raise error("pauses", f"times in increasing order, each within the chapter (0 < t < {chapter.duration:g} s)")
    chapter.pauses = [float(t) for t in pauses]
    return chapter


def _scene(path: str, text: str, first: int, name: str, value, labs, lab_fields) -> Scene:
    """A chapter's scene: a file relative to the tour's folder (which must exist), or an inline table."""
    fail = _failer(path, text, f"{name}.", first)
    if isinstance(value, dict):
        try:
            return parse_scene(value, path, labs, lab_fields, text, prefix=f"{name}.scene.", first_line=first)
        except SceneError as exc:
            raise TourError(str(exc)) from None
    if not isinstance(value, str) or not value.strip():
        raise TourError(str(fail("scene", "expected a scene file's path (relative to the tour) or a table")))
    where = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), value))
    if not os.path.isfile(where):
        raise TourError(str(fail("scene", f"no scene file {shown_text(repr(value), 200)} (looked for {where})")))
    return load_scene(where, labs, lab_fields)


def formula_image(tex: str, pixels: int, color: str = CARD_TEXT):
    """``tex`` (mathtext, without the $ signs) typeset by matplotlib at a font size of ``pixels``, as a QImage
    with a transparent background (the formula's ink in ``color``)."""
    import numpy as np
    from matplotlib.font_manager import FontProperties
    from matplotlib.mathtext import MathTextParser
    from PySide6.QtGui import QColor, QImage

    parsed = MathTextParser("agg").parse(f"${tex}$", dpi=72, prop=FontProperties(size=pixels, math_fontfamily="cm"))
    ink = np.asarray(parsed.image, np.uint8)
    h, w = ink.shape
    c = QColor(color)
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = c.blue(), c.green(), c.red()  # ARGB32 in memory: B, G, R, A
    rgba[..., 3] = ink
    return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_ARGB32).copy()  # (a copy owns its pixels)


def card_image(card, width: int, height: int, footer: str = ""):
    """A title card at (width, height) as a QImage: the heading, the formula, the text (wrapped), on the app's
    background; ``footer`` (the tour's title) small at the bottom."""
    from PySide6.QtCore import QRectF, Qt
    from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter

    img = QImage(width, height, QImage.Format.Format_ARGB32)
    img.fill(QColor(CARD_BACKGROUND))
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setRenderHint(QPainter.RenderHint.TextAntialiasing)
    p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    margin = width * 0.08
    flags = Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap

    def text_block(pixels: float, bold: bool, color: str, text: str):
        """(its height, draw(top)) of ``text`` wrapped to the card's width."""
        f = QFont("Sans", 1)
        f.setPixelSize(max(8, round(pixels)))
        f.setBold(bold)
        box = QRectF(margin, 0, width - 2 * margin, height)

        def draw(y: float) -> None:
            p.setFont(f)
            p.setPen(QColor(color))
            p.drawText(box.translated(0, y), flags, text)

        return QFontMetrics(f).boundingRect(box.toRect(), flags, text).height(), draw

    blocks = [text_block(height / 13, True, CARD_ACCENT, card.heading)]  # (height, draw(top)) from the top
    if card.formula:  # (scaled down when wider than the card)
        formula = formula_image(card.formula, max(8, round(height / 14)))
        scale = min(1.0, (width - 2 * margin) / max(formula.width(), 1))
        fw, fh = formula.width() * scale, formula.height() * scale
        blocks.append((fh, lambda y: p.drawImage(QRectF((width - fw) / 2, y, fw, fh), formula)))
    if card.text:
        blocks.append(text_block(height / 26, False, CARD_TEXT, card.text))
    gap = height / 18
    total = sum(h for h, _ in blocks) + gap * (len(blocks) - 1)
    y = max(height * 0.06, (height - total) / 2)
    for h, draw in blocks:
        draw(y)
        y += h + gap
    if footer:
        _, draw = text_block(height / 40, False, "#5c6370", footer)
        draw(height * 0.92)
    p.end()
    return img
