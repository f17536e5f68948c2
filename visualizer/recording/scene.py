"""Scene files (TOML): a lab, its settings, a seed, the output size and rate, and a timeline of camera
keyframes, setting changes and captions. Parsed with the standard library's tomllib (never eval'd) and
checked field by field: an error names the file, the line where it can be found, and the field.

    lab = "manifold2d"
    seed = 0
    size = [1920, 1080]
    fps = 30
    duration = 12.0
    steps_per_frame = 5

    [settings]            # the lab's own state fields
    model = "tanh"

    [[camera]]            # keyframes
    time = 0.0
    azimuth = -60
    elevation = 28
    distance = 9

    [[event]]             # a setting change or an action at a time
    time = 2.0
    set = { lr = 0.2 }    # or: action = "descent", start = [1.5, -2.0]
    over = 1.5            # optional: numbers move there gradually (a slider moving, a point dragged)

    [[caption]]
    start = 0.5
    end = 4.0
    text = "Gradient descent lands on the nearest solution"

Optional: ``view = "window"`` (record the whole lab, its plots and its 3D view, laid out at the scene's size;
the default "3d" records the 3D view), ``title = "..."`` (burned in at the top left), ``overlays = { step = true, loss = true }`` (the
latest run's step and loss at the top right), ``easing`` of the camera moves, and a keyframe's ``center``
and ``distance`` (default: those the lab chose for its view).

Limits (checked before anything is rendered; ``models.limits`` and below): the file at most MAX_SCENE_BYTES,
tables and arrays nested at most MAX_SCENE_DEPTH deep, a title or caption at most MAX_SCENE_TEXT characters,
at most MAX_SCENE_EVENTS events (and as many keyframes and captions), fps within 1..MAX_FPS, a size within
16x16..3840x2160, and an event's ``start`` exactly as many numbers as the lab's parameters.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field

from models.limits import (
    MAX_FPS,
    MAX_SCENE_BYTES,
    MAX_SCENE_DEPTH,
    MAX_SCENE_EVENTS,
    MAX_SCENE_TEXT,
    human_bytes,
    shown_text,
)
from visualizer.recording.keyframes import EASINGS, Camera

ACTIONS = ("descent", "random_starts", "reset")  # of the descent labs; each lab names its own (scene_actions)
START_ACTIONS = ("descent",)  # the actions above that take a 'start' (a lab says so with Action.with_start)
#: limits of scene files beside those of models.limits (defined here): keyframes and captions are capped like
#: events; a start's coordinates like the labs' own start setting and data values
MAX_SCENE_KEYFRAMES = MAX_SCENE_EVENTS
MAX_SCENE_CAPTIONS = MAX_SCENE_EVENTS
START_RANGE = 1e6
#: nesting past this is refused before tomllib parses the text (it recurses ~3 frames a level); nesting past
#: MAX_SCENE_DEPTH is refused after, with the field
_PARSE_DEPTH = 100
#: a video frame (also the recorder's --size)
MIN_SIZE = 16
MAX_SIZE = (3840, 2160)
#: the fields a table of each timeline array may have
_TABLE_FIELDS = {"camera": ("time", "azimuth", "elevation", "distance", "center"),
                 "event": ("time", "set", "action", "start", "over"),
                 "caption": ("start", "end", "text")}


class SceneError(ValueError):
    """A malformed scene: the message names the file, the line and the field."""


@dataclass
class Event:
    time: float
    set: dict = field(default_factory=dict)
    action: str | None = None
    start: list | None = None
    over: float = 0.0  # > 0: numeric settings move there gradually over this many seconds (a slider, a drag)


@dataclass
class Caption:
    start: float
    end: float
    text: str


@dataclass
class Scene:
    lab: str
    seed: int = 0
    size: tuple[int, int] = (1920, 1080)
    fps: int = 30
    duration: float = 10.0
    steps_per_frame: int = 1
    easing: str = "ease-in-out"
    settings: dict = field(default_factory=dict)
    camera: list[tuple[float, Camera]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    captions: list[Caption] = field(default_factory=list)
    title: str = ""
    overlays: dict = field(default_factory=dict)
    view: str = "3d"  # what is recorded: "3d" (the lab's 3D view) or "window" (the whole lab)
    path: str = ""

    @property
    def frames(self) -> int:
        return max(1, round(self.duration * self.fps))


#: what a scene records: the lab's 3D view, or the whole lab (plots and 3D view)
VIEWS = ("3d", "window")


def _line_of(text: str, needle: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith(needle):
            return i
    return 0


def _shown(v) -> str:
    """A value from the file quoted in an error: short, plain."""
    return shown_text(repr(v), 60)


def _skip_string(text: str, i: int) -> tuple[int, int]:
    """From the quote at ``i``: the index after the string and the newlines inside it."""
    c, n = text[i], len(text)
    quote = c * 3 if text.startswith(c * 3, i) else c
    i += len(quote)
    newlines = 0
    while i < n:
        if c == '"' and text[i] == "\\":
            i += 2
            continue
        if text.startswith(quote, i):
            return i + len(quote), newlines
        if text[i] == "\n":
            if len(quote) == 1:
                return i, newlines
            newlines += 1
        i += 1
    return i, newlines


def _key_parts(text: str, i: int, stop: str) -> tuple[int, int]:
    """The number of dotted parts of the key starting at ``i`` (``a."b.c".d``: 3), up to ``stop``; and the
    index of ``stop`` (or of the line's end)."""
    parts, n = 1, len(text)
    while i < n and text[i] not in stop and text[i] != "\n":
        if text[i] in "\"'":
            i, _ = _skip_string(text, i)
            continue
        parts += text[i] == "."
        i += 1
    return parts, i


def _nesting_line(text: str, limit: int) -> int:
    """The first line where tables and arrays nest deeper than ``limit``, counted as ``_too_deep`` counts them
    (a ``[a.b]`` header: 2 levels, ``[[a]]``: 2, a dotted key ``x.y = ...`` one more, then each ``[`` and ``{``),
    else 0. Strings and comments are skipped; dotted keys inside inline tables are not counted (never more than
    the parsed document's depth, so it can be read before tomllib, whose recursive parser overflows the stack
    on deep nesting, and refuse only what is too deep)."""
    base = extra = depth = 0  # the current header's levels, the current key's dotted ones, open brackets
    line, i, n = 1, 0, len(text)
    line_start = True
    while i < n:
        c = text[i]
        if c == "\n":
            line, line_start, i = line + 1, True, i + 1
            continue
        if c in " \t\r":
            i += 1
            continue
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if depth == 0 and line_start:
            line_start = False
            if c == "[":  # a [table] or [[array]] header
                array = text.startswith("[[", i)
                parts, i = _key_parts(text, i + (2 if array else 1), "]")
                base, extra = parts + array, 0
                if base > limit:
                    return line
                j = text.find("\n", i)
                i = n if j < 0 else j
                continue
            parts, i = _key_parts(text, i, "=")  # a key = value line
            extra = parts - 1
            if base + extra > limit:
                return line
            i += 1
            continue
        line_start = False
        if c in "\"'":
            i, newlines = _skip_string(text, i)
            line += newlines
            continue
        if c in "[{":
            depth += 1
            if base + extra + depth > limit:
                return line
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return 0


def _too_deep(doc: dict, limit: int = MAX_SCENE_DEPTH) -> str | None:
    """The path of the first table or array nested deeper than ``limit`` (the document is level 0; an
    ``[[event]]`` is level 2, its ``set`` 3, a list in it 4), else None. Iterative: no recursion on any input."""
    stack: list = [(doc, "", 0)]
    while stack:
        value, where, level = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            if isinstance(v, (dict, list)):
                path = f"{where}[{k}]" if isinstance(value, list) else (f"{where}.{k}" if where else str(k))
                if level + 1 > limit:
                    return path
                stack.append((v, path, level + 1))
    return None


def start_dimension(lab_cls) -> int | None:
    """How many numbers a 'start' of ``lab_cls`` has (its parameters), or None when the lab does not say.

    A lab declares it with ``start_dim``; else it is the length of its state's ``start`` setting
    (manifold3d: 3), else the length of the lab's ``default_start()`` on its default settings (manifold2d: 2)."""
    dim = getattr(lab_cls, "start_dim", None)
    if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0:
        return dim
    state_cls = getattr(lab_cls, "state_cls", None)
    if state_cls is None:
        return None
    try:
        state = state_cls()
        default = getattr(state, "start", None)
        if isinstance(default, (list, tuple)) and default:
            return len(default)
        fn = getattr(lab_cls, "default_start", None)
        if fn is None:
            return None
        from types import SimpleNamespace

        import numpy as np

        size = int(np.size(fn(SimpleNamespace(state=state))))  # the lab's own default start, without a lab
        return size if size > 0 else None
    except Exception:  # a lab whose default start needs more than its settings: not checked here
        return None


def _read(path: str, kind: str = "scene file") -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_SCENE_BYTES + 1)  # never more than the limit, whatever the file (/dev/zero)
    except OSError as exc:
        raise SceneError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_SCENE_BYTES:
        raise SceneError(f"{path}: the file is over the {human_bytes(MAX_SCENE_BYTES)} limit of a {kind}")
    return raw.decode("utf-8", errors="replace")


def _failer(path: str, text: str, prefix: str = "", first_line: int = 1):
    """The error maker of a scene's checks: the field's line is looked up in ``text`` (which starts at line
    ``first_line`` of ``path``), its name shown after ``prefix`` (an inline scene: ``chapter[2].scene.``)."""

    def fail(fieldname: str, msg: str, needle: str | None = None, line: int | None = None) -> SceneError:
        if line is None:
            line = _line_of(text, needle or fieldname.split(".")[0].split("[")[0])
            line = line and line + first_line - 1
        where = f"line {line}, " if line else ""
        return SceneError(f"{path}: {where}field '{shown_text(prefix + fieldname, 80)}': {msg}")

    return fail


def load_scene(path: str, labs: dict | None = None, lab_fields: dict | None = None) -> Scene:
    """Read and check a scene file. ``labs``: the known lab keys; ``lab_fields``: lab -> set of setting names.
    Raises SceneError (naming the file, the line and the field) and nothing else on any file."""
    text = _read(path)
    fail = _failer(path, text)

    deep = _nesting_line(text, _PARSE_DEPTH)  # far too deep to even parse (tomllib would recurse)
    if deep:
        key = text.splitlines()[deep - 1].split("=")[0].strip().strip("[]").strip()
        raise fail(key or "?", f"nested deeper than {MAX_SCENE_DEPTH} levels of tables and arrays", line=deep)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SceneError(f"{path}: {exc}") from None
    except RecursionError:  # (the check above should have caught it)
        raise SceneError(f"{path}: nested deeper than {MAX_SCENE_DEPTH} levels of tables and arrays") from None
    except ValueError as exc:  # tomllib lets int()'s own errors through: a number of over 4300 digits
        m = re.search(r"\d{4000}", text)
        line = text.count("\n", 0, m.start()) + 1 if m else 0
        raise SceneError(f"{path}: {f'line {line}: ' if line else ''}cannot read a number ({exc})") from None
    deep_path = _too_deep(doc)
    if deep_path is not None:
        raise fail(deep_path, f"nested deeper than {MAX_SCENE_DEPTH} levels of tables and arrays",
                   line=_nesting_line(text, MAX_SCENE_DEPTH) or None)
    return parse_scene(doc, path, labs, lab_fields, text)


def parse_scene(doc: dict, path: str, labs: dict | None = None, lab_fields: dict | None = None, text: str = "",
                prefix: str = "", first_line: int = 1) -> Scene:
    """Check a scene already parsed from TOML (``load_scene``'s checks; a tour's inline scene): ``text`` is
    where its fields' lines are looked up, starting at line ``first_line`` of ``path``; field names are shown
    after ``prefix``. Raises SceneError."""
    fail = _failer(path, text, prefix, first_line)

    def number(d: dict, key: str, name: str, lo: float | None = None, hi: float | None = None, cast=float):
        v = d.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise fail(name, f"expected a number, got {_shown(v)}", key)
        if not math.isfinite(v):
            raise fail(name, f"expected a finite number, got {v}", key)
        if cast is int and isinstance(v, float) and not v.is_integer():
            raise fail(name, f"expected a whole number, got {v}", key)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise fail(name, f"{_shown(v)} is outside [{lo}, {hi}]", key)
        return cast(v)

    def text_field(d: dict, key: str, name: str) -> str:
        v = d.get(key)
        if not isinstance(v, str):
            raise fail(name, "expected a string", key)
        if len(v) > MAX_SCENE_TEXT:
            raise fail(name, f"{len(v)} characters, over the limit of {MAX_SCENE_TEXT}", key)
        return v

    def tables(key: str, header: str, limit: int) -> list[tuple[str, dict]]:
        """The tables of a timeline array (``[[event]]``), each checked to be a table of known fields."""
        items = doc.get(key, [])
        if not isinstance(items, list):
            raise fail(key, f"expected {header} tables", key)
        if len(items) > limit:
            raise fail(key, f"{len(items)} {header} tables, over the limit of {limit}", header)
        out = []
        for i, item in enumerate(items):
            name = f"{key}[{i}]"
            if not isinstance(item, dict):
                raise fail(name, "expected a table", header)
            for k in item:
                if k not in _TABLE_FIELDS[key]:
                    raise fail(f"{name}.{k}", f"unknown field; known: {', '.join(_TABLE_FIELDS[key])}", k)
            out.append((name, item))
        return out

    known = {"lab", "seed", "size", "fps", "duration", "steps_per_frame", "easing", "settings", "camera", "event",
             "caption", "title", "overlays", "view"}
    for key in doc:
        if key not in known:
            raise fail(key, f"unknown field; known: {', '.join(sorted(known))}", key)
    lab = doc.get("lab")
    if not isinstance(lab, str):
        raise fail("lab", "missing or not a string", "lab")
    if labs is not None and lab not in labs:
        raise fail("lab", f"unknown lab {_shown(lab)}; labs: {', '.join(labs)}", "lab")
    sc = Scene(lab=lab, path=path)
    lab_cls = None
    if labs is not None and hasattr(labs[lab], "load"):
        lab_cls = labs[lab].load()
    actions = tuple(lab_cls.scene_actions) if lab_cls is not None else ACTIONS
    start_actions = (tuple(a.name for a in getattr(lab_cls, "actions", ()) if a.scene and a.with_start)
                     if lab_cls is not None else START_ACTIONS)
    start_dim = start_dimension(lab_cls) if lab_cls is not None else None

    in_force: dict = {}  # the settings set by the scene and its events so far (dependent ranges read them)

    def check_values(values: dict, where: str, needle: str) -> dict:
        if lab_cls is None or lab_cls.state_cls is None:
            return dict(values)
        from visualizer.labs.base import SettingError, check_settings

        try:
            out = check_settings(lab_cls.state_cls, values, where, in_force)
            in_force.update(out)
            return out
        except SettingError as exc:
            name = str(exc).split(":")[0]
            raise fail(name, f"the {lab} lab: {str(exc).split(': ', 1)[1]}", name.split(".")[-1]) from None

    if "title" in doc:
        sc.title = text_field(doc, "title", "title")
    if "overlays" in doc:
        ov = doc["overlays"]
        if not isinstance(ov, dict) or any(k not in ("step", "loss") or not isinstance(v, bool) for k, v in ov.items()):
            raise fail("overlays", "expected a table like { step = true, loss = true }", "overlays")
        sc.overlays = dict(ov)
    if "view" in doc:
        if doc["view"] not in VIEWS:
            raise fail("view", f"one of {', '.join(VIEWS)}", "view")
        sc.view = doc["view"]
    if "seed" in doc:
        sc.seed = number(doc, "seed", "seed", 0, 2**31, int)
    if "size" in doc:
        size = doc["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in size)):
            raise fail("size", "expected [width, height] in pixels", "size")
        if not (MIN_SIZE <= size[0] <= MAX_SIZE[0] and MIN_SIZE <= size[1] <= MAX_SIZE[1]):
            raise fail("size", f"width and height must be within {MIN_SIZE}..{MAX_SIZE[0]} and "
                               f"{MIN_SIZE}..{MAX_SIZE[1]}", "size")
        sc.size = (size[0], size[1])
    if "fps" in doc:
        sc.fps = number(doc, "fps", "fps", 1, MAX_FPS, int)
    if "duration" in doc:
        sc.duration = number(doc, "duration", "duration", 0.04, 3600)
    if "steps_per_frame" in doc:
        sc.steps_per_frame = number(doc, "steps_per_frame", "steps_per_frame", 0, 100000, int)
    if "easing" in doc:
        if not isinstance(doc["easing"], str) or doc["easing"] not in EASINGS:
            raise fail("easing", f"one of {', '.join(EASINGS)}", "easing")
        sc.easing = doc["easing"]
    settings = doc.get("settings", {})
    if not isinstance(settings, dict):
        raise fail("settings", "expected a table of the lab's settings", "[settings]")
    if lab_fields is not None and lab in lab_fields:
        for k in settings:
            if k not in lab_fields[lab]:
                raise fail(f"settings.{k}", f"the {lab} lab has no setting '{shown_text(k, 60)}'", k)
    sc.settings = check_values(settings, "settings", "[settings]")
    for name, cam in tables("camera", "[[camera]]", MAX_SCENE_KEYFRAMES):
        t = number(cam, "time", f"{name}.time", 0, sc.duration)
        az = number(cam, "azimuth", f"{name}.azimuth") if "azimuth" in cam else -60.0
        el = number(cam, "elevation", f"{name}.elevation", -89.9, 89.9) if "elevation" in cam else 28.0
        dist = number(cam, "distance", f"{name}.distance", 1e-3, 1e6) if "distance" in cam else None
        center = cam.get("center")
        if center is not None and not (isinstance(center, list) and len(center) == 3 and all(
                isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and abs(c) <= 1e6
                for c in center)):
            raise fail(f"{name}.center", "expected [x, y, z] (each within ±1e6)", "center")
        sc.camera.append((t, Camera(az, el, dist, None if center is None else tuple(float(c) for c in center))))
    if [t for t, _ in sc.camera] != sorted(t for t, _ in sc.camera):
        raise fail("camera", "keyframes must be in time order", "[[camera]]")
    for name, ev in tables("event", "[[event]]", MAX_SCENE_EVENTS):
        t = number(ev, "time", f"{name}.time", 0, sc.duration)
        e = Event(t)
        if "set" in ev:
            if not isinstance(ev["set"], dict):
                raise fail(f"{name}.set", "expected a table like { lr = 0.2 }", "set")
            if lab_fields is not None and lab in lab_fields:
                for k in ev["set"]:
                    if k not in lab_fields[lab]:
                        raise fail(f"{name}.set.{k}", f"the {lab} lab has no setting '{shown_text(k, 60)}'", "set")
            e.set = check_values(ev["set"], f"{name}.set", "set")
        if "action" in ev:
            if not isinstance(ev["action"], str) or ev["action"] not in actions:
                raise fail(f"{name}.action", f"the {lab} lab's actions are {', '.join(actions)}", "action")
            e.action = ev["action"]
        if "start" in ev:
            st = ev["start"]
            if e.action not in start_actions:
                raise fail(f"{name}.start", f"'start' goes with the action "
                                            f"{' or '.join(map(repr, start_actions)) or '(none in this lab)'}",
                           "start")
            if not (isinstance(st, list) and st and all(
                    isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in st)):
                raise fail(f"{name}.start", "expected a list of numbers (one start)", "start")
            if start_dim is not None and len(st) != start_dim:
                raise fail(f"{name}.start", f"the {lab} lab's starts have {start_dim} numbers (one per "
                                            f"parameter), not {len(st)}", "start")
            if any(abs(a) > START_RANGE for a in st):
                raise fail(f"{name}.start", f"each number must be within ±{START_RANGE:g}", "start")
            e.start = [float(a) for a in st]
        if "over" in ev:
            e.over = number(ev, "over", f"{name}.over", 0, sc.duration)
            if e.over > 0 and not e.set:
                raise fail(f"{name}.over", "'over' moves the settings in 'set' gradually: give 'set' too", "over")
            for k, v in e.set.items():
                if e.over > 0 and (isinstance(v, (bool, str)) or (isinstance(v, list) and not v)):
                    raise fail(f"{name}.set.{k}", "only numbers (and lists of numbers) can move gradually", "set")
        if not e.set and not e.action:
            raise fail(name, "an event needs 'set' or 'action'", "[[event]]")
        sc.events.append(e)
    for name, cap in tables("caption", "[[caption]]", MAX_SCENE_CAPTIONS):
        start = number(cap, "start", f"{name}.start", 0, sc.duration)
        end = number(cap, "end", f"{name}.end", start, sc.duration)
        sc.captions.append(Caption(start, end, text_field(cap, "text", f"{name}.text")))
    return sc


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"{v} cannot be written to a scene")
        return repr(v)
    if isinstance(v, str):
        # JSON's escapes are TOML basic-string escapes; TOML also wants DEL escaped (JSON leaves it as is)
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(a) for a in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(a)}" for k, a in v.items()) + " }"
    raise ValueError(f"{v!r} cannot be written to a scene")


def dump_scene(sc: Scene, comment: str = "") -> str:
    """The scene as TOML text that ``load_scene`` reads back to an equal scene."""
    out = [f"# {line}" for line in comment.splitlines()]
    out += [f"lab = {_toml_value(sc.lab)}", f"seed = {sc.seed}", f"size = [{sc.size[0]}, {sc.size[1]}]",
            f"fps = {sc.fps}", f"duration = {_toml_value(float(sc.duration))}",
            f"steps_per_frame = {sc.steps_per_frame}", f"easing = {_toml_value(sc.easing)}"]
    if sc.title:
        out.append(f"title = {_toml_value(sc.title)}")
    if sc.overlays:
        out.append(f"overlays = {_toml_value(sc.overlays)}")
    if sc.view != "3d":
        out.append(f"view = {_toml_value(sc.view)}")
    out += ["", "[settings]"] + [f"{k} = {_toml_value(v)}" for k, v in sc.settings.items()]
    for t, c in sc.camera:
        out += ["", "[[camera]]", f"time = {_toml_value(float(t))}", f"azimuth = {_toml_value(float(c.azimuth))}",
                f"elevation = {_toml_value(float(c.elevation))}"]
        if c.distance is not None:
            out.append(f"distance = {_toml_value(float(c.distance))}")
        if c.center is not None:
            out.append(f"center = {_toml_value([float(a) for a in c.center])}")
    for e in sc.events:
        out += ["", "[[event]]", f"time = {_toml_value(float(e.time))}"]
        if e.set:
            out.append(f"set = {_toml_value(e.set)}")
        if e.over:
            out.append(f"over = {_toml_value(float(e.over))}")
        if e.action:
            out.append(f"action = {_toml_value(e.action)}")
        if e.start is not None:
            out.append(f"start = {_toml_value([float(a) for a in e.start])}")
    for c in sc.captions:
        out += ["", "[[caption]]", f"start = {_toml_value(float(c.start))}", f"end = {_toml_value(float(c.end))}",
                f"text = {_toml_value(c.text)}"]
    return "\n".join(out) + "\n"


def save_scene(sc: Scene, path: str, comment: str = "") -> None:
    """Write the scene atomically (a temporary file in the same folder, then a rename)."""
    from models.export import atomic_write

    atomic_write(path, dump_scene(sc, comment).encode("utf-8"))
